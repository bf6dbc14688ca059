"""s6ipc.serve.children: the ChildTable (per-key counts, reaping every exited child, killing all).

``reap`` waits for *any* child (``waitpid(-1)``), as a server must; so that it never collects a
child of pytest's own, each test runs in a process forked for it, which forks the children.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from typing import Callable, List, NoReturn, Tuple

import pytest

from s6ipc.base.errors import SystemFailure
from s6ipc.serve.children import ChildTable


class Who:
    """A peer as the table sees it: its key (a uid, an IP)."""

    def __init__(self, key: object) -> None:
        self.key = key


def in_own_process(body: Callable[[], None]) -> None:
    """Run *body* in a forked process; its assertion errors fail the test with their traceback."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            body()
        except BaseException:
            os.write(w, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report


def child(code: int = 0, gate: Tuple[int, int] = (-1, -1)) -> int:
    """A child that exits with *code*, at once or once the pipe *gate* (read end, write end) reads
    end of file: when the caller closes its write end."""
    pid = os.fork()
    if pid == 0:
        r, w = gate
        if r >= 0:
            os.close(w)
            os.read(r, 1)
        os._exit(code)
    return pid


def reap_until(table: ChildTable, n: int) -> List[Tuple[int, object, int]]:
    ended: List[Tuple[int, object, int]] = []
    deadline = time.monotonic() + 10
    while len(ended) < n:
        assert time.monotonic() < deadline, f"only {len(ended)} of {n} children reaped"
        table.reap(lambda pid, peer, status: ended.append((pid, peer, status)))
        time.sleep(0.005)
    return ended


def test_add_counts_per_key_and_reap_gives_back() -> None:
    def body() -> None:
        table = ChildTable()
        alice, bob = Who(1000), Who("127.0.0.1")
        r, w = os.pipe()
        a1, a2, b1 = child(3, (r, w)), child(4, (r, w)), child(5, (r, w))
        assert [table.add(a1, alice), table.add(a2, Who(1000)), table.add(b1, bob)] == [1, 2, 1]
        assert (len(table), table.count(1000), table.count("127.0.0.1"), table.count(0)) == (3, 2, 1, 0)
        table.reap(lambda *_: pytest.fail("nobody exited yet"))  # WNOHANG: returns at once
        os.close(w)  # all three exit
        ended = reap_until(table, 3)
        assert sorted((pid, os.waitstatus_to_exitcode(st)) for pid, _, st in ended) == sorted(
            [(a1, 3), (a2, 4), (b1, 5)])
        assert {pid: peer for pid, peer, _ in ended}[b1] is bob
        assert len(table) == 0 and table.per_key == {} and table.count(1000) == 0
        table.reap(lambda *_: pytest.fail("no child left"))  # ECHILD: returns quietly

    in_own_process(body)


def test_a_key_is_forgotten_with_its_last_child() -> None:
    def body() -> None:
        table = ChildTable()
        r, w = os.pipe()
        late = child(0, (r, w))
        early = child(0)
        table.add(late, Who(7))
        table.add(early, Who(7))
        assert [pid for pid, _, _ in reap_until(table, 1)] == [early]
        assert table.per_key == {7: 1}
        os.close(w)
        reap_until(table, 1)
        assert table.per_key == {}

    in_own_process(body)


def test_children_the_table_does_not_know_are_reaped_and_ignored() -> None:
    def body() -> None:
        table = ChildTable()
        r, w = os.pipe()
        stranger = child(9)  # e.g. inherited from the image that exec'd into the server
        known = child(0, (r, w))
        table.add(known, Who(1))
        deadline = time.monotonic() + 10
        while True:  # the stranger is collected (no zombie left) without a call of on_end
            table.reap(lambda *_: pytest.fail("a stranger was reported"))
            try:
                os.kill(stranger, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert len(table) == 1
        os.close(w)
        assert [pid for pid, _, _ in reap_until(table, 1)] == [known]

    in_own_process(body)


def _report_signals(w: int) -> NoReturn:
    """In a child: say "r" once the handlers are in place; on SIGTERM write the signals got, exit."""
    got: List[int] = []
    signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    signal.signal(signal.SIGTERM, lambda s, f: (os.write(w, bytes([*got, s])), os._exit(0)))
    os.write(w, b"r")
    while True:
        signal.pause()


def test_kill_all_sends_every_signal_to_every_child() -> None:
    def body() -> None:
        table = ChildTable()
        pids = []
        for _ in range(3):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _report_signals(w)
            os.close(w)
            assert os.read(r, 1) == b"r"  # handlers in place
            pids.append((pid, r))
            table.add(pid, Who(0))
        table.kill_all((signal.SIGUSR1, signal.SIGTERM))
        for _, r in pids:
            # both pending at once: CPython runs the handlers in signal-number order, so the bytes
            # say only that each child got both
            assert os.read(r, 8) == bytes([signal.SIGUSR1, signal.SIGTERM])
        ended = reap_until(table, 3)
        assert sorted(pid for pid, _, _ in ended) == sorted(pid for pid, _ in pids)
        table.kill_all((signal.SIGTERM,))  # empty table: nothing to do, nothing raised

    in_own_process(body)


def test_an_unexpected_wait_error_is_a_system_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(pid: int, options: int) -> Tuple[int, int]:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "waitpid", interrupted)
    with pytest.raises(SystemFailure) as failure:
        ChildTable().reap(lambda *_: None)
    assert "wait_nohang" in str(failure.value)
