"""verdict: SIGUSR2 then the live view read until a new generation, one more failure, or the deadline
(with a fake signal and a scripted live view; the process is this one, so its start time is real)."""

from __future__ import annotations

import errno
import os
import signal
from typing import Any, Dict, Iterator, List

import pytest

from s6ipc.base.errors import Refused, SystemFailure, Unusable
from s6ipc.daemon import verdict
from s6ipc.daemon.verdict import Verdict, upgrade_daemon


def _view(generation: int, failures: int = 0, last: Any = None) -> Dict[str, Any]:
    return {"pid": os.getpid(), "program": "thingd", "generation": generation, "upgrade_failures": failures,
            "last_upgrade": last}


class Script:
    """The live views read one after another (an exception is raised); the signals sent."""

    def __init__(self, *views: Any) -> None:
        self.views: Iterator[Any] = iter(views)
        self.sent: List[int] = []

    def read(self, pid: int, timeout: float) -> Dict[str, Any]:
        assert pid == os.getpid() and 0 < timeout <= 5
        view = next(self.views)
        if isinstance(view, Exception):
            raise view
        return view  # type: ignore[no-any-return]

    def send(self, pid: int, sig: int) -> None:
        self.sent.append(sig)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict, "POLL_INTERVAL", 0.001)


def test_a_new_generation_after_the_gap_is_the_answer() -> None:
    ok = {"result": "ok", "reason": None, "pause_ms": 12.5, "at": 1.0}
    s = Script(_view(2), _view(2), Refused("find a live view", errno.ESRCH),
               SystemFailure("connect", errno.ECONNREFUSED), _view(3, last=ok))
    assert upgrade_daemon(os.getpid(), send=s.send, read=s.read)["last_upgrade"] == ok
    assert s.sent == [signal.SIGUSR2]


def test_one_more_failure_is_a_verdict_of_1() -> None:
    last = {"result": "refused", "reason": "s6ipc preflight: fatal: no", "pause_ms": None, "at": 1.0}
    s = Script(_view(0, 4), _view(0, 5, last))
    with pytest.raises(Verdict) as info:
        upgrade_daemon(os.getpid(), send=s.send, read=s.read)
    assert info.value.exit_code == 1
    assert str(info.value) == f"unable to upgrade pid {os.getpid()} in place: s6ipc preflight: fatal: no"


def test_no_live_view_is_111_and_no_signal() -> None:
    s = Script(Refused("find a live view for pid 9", errno.ESRCH))
    with pytest.raises(Unusable) as info:
        upgrade_daemon(os.getpid(), send=s.send, read=s.read)
    assert info.value.exit_code == 111 and s.sent == []
    assert str(info.value) == (f"no s6ipc daemon to upgrade as pid {os.getpid()}: unable to find a live view "
                               "for pid 9: No such process")


def test_the_deadline_is_111() -> None:
    s = Script(*[_view(0)] * 10000)
    with pytest.raises(SystemFailure) as info:
        upgrade_daemon(os.getpid(), timeout=0.05, send=s.send, read=s.read)
    assert info.value.exit_code == 111 and info.value.errno == errno.ETIMEDOUT


def test_a_signal_that_cannot_be_sent_is_111() -> None:
    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(errno.EPERM, "no")

    with pytest.raises(SystemFailure, match="send SIGUSR2 to pid"):
        upgrade_daemon(os.getpid(), send=refuse, read=Script(_view(0)).read)


@pytest.mark.parametrize("bad", ["3", None, True, -1, 1.5])
def test_a_live_view_that_lies_is_111(bad: Any) -> None:
    """The daemon's bytes are not trusted: a count that is not a JSON integer is one line, 111."""
    s = Script({**_view(0), "generation": bad})
    with pytest.raises(SystemFailure) as info:
        upgrade_daemon(os.getpid(), send=s.send, read=s.read)
    assert info.value.exit_code == 111 and info.value.errno == errno.EPROTO and s.sent == []
