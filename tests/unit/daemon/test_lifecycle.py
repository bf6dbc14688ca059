"""The life of a daemon across images (daemon/lifecycle.py), with the fake OS seam and a fake clock:
the state record, SIGUSR2's preflight, the exec and its one failure policy, the take-over."""

from __future__ import annotations

import errno
import os
import signal
import time
from typing import Any, Dict, List, Optional, Sequence

import pytest

from s6ipc import __version__
from s6ipc.base.errors import ExecFailure, SystemFailure, Unusable
from s6ipc.daemon.lifecycle import FORMAT, Lifecycle, Lineage, State
from s6ipc.daemon.readiness import Readiness
from tests.support.clock import FakeClock
from tests.support.fdholder import Quiet
from tests.support.lifecycle import Exec, FakeLoop, FakeSystem, RecordingNotifier

HELD = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)
STILL = f"; still serving with s6ipc {__version__}"


class FakeDaemon:
    """A daemon's part: a counter, two descriptors."""

    def __init__(self) -> None:
        self.count = 0
        self.restored: List[Dict[str, Any]] = []

    def to_state(self) -> Dict[str, Any]:
        return {"count": self.count}

    def restore(self, state: Dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.restored.append(state)

    def describe(self) -> Dict[str, Any]:
        return {"count": self.count}

    def status_text(self) -> str:
        return f"{self.count} things"

    def descriptors(self) -> Dict[str, int]:
        return {"listen": 0, "thing": 7}


class Setup:
    def __init__(self, system: FakeSystem) -> None:
        self.system = system
        self.clock = FakeClock()
        self.log = Quiet()
        self.notifier = RecordingNotifier()
        self.daemon = FakeDaemon()
        readiness = Readiness(self.notifier)
        self.loop = FakeLoop()
        self.life = Lifecycle("thingd", "s6-thingd", ["-v", "x"], self.daemon, self.log, readiness,
                              held_signals=lambda: HELD, system=system, loop=self.loop, clock=self.clock)

    def upgrade(self, status: int = 0) -> Optional[List[str]]:
        """SIGUSR2 and the preflight's exit: the command line the loop was stopped for, if any."""
        stopped = len(self.loop.stopped)
        self.life.requested()
        child = self.system.children[-1]
        assert self.life.preflight is child and child.pid in self.loop.expected
        assert child.stderr_fd in self.loop.watched  # the loop polls its output: it never waits
        self.loop.child_exited(child.pid, status)
        assert self.life.preflight is None and child.stderr_fd not in self.loop.watched and child.closed
        return self.loop.stopped[-1] if len(self.loop.stopped) > stopped else None


def test_state_round_trip() -> None:
    lineage = Lineage(3, 1.5e9, 1234.5, [10, 15], 5, {"NOTIFY_SOCKET": "/run/n"})
    state = State("thingd", "1.0", lineage, {"listen": 0, "held 1": 9}, {"count": 2})
    assert State.from_json(state.to_json(), "thingd") == state
    assert state.to_json()["format"] == FORMAT
    with pytest.raises(ValueError, match="this is otherd format"):
        State.from_json(state.to_json(), "otherd")
    broken = state.to_json()
    del broken["lineage"]["started_monotonic"]
    with pytest.raises(KeyError):
        State.from_json(broken, "thingd")


def test_a_refused_preflight_is_one_warning_and_serving_goes_on() -> None:
    s = Setup(FakeSystem(problem="s6ipc preflight: fatal: unable to start thingd: SyntaxError"))
    s.daemon.count = 4
    assert s.upgrade(256) is None
    (program, args, state), = s.system.preflights
    assert (program, args) == ("s6-thingd", ["-v", "x"])
    assert state["daemon"] == {"count": 4} and state["lineage"]["generation"] == 1  # the new code reads it
    assert s.log.lines == ["warning: unable to upgrade in place: s6ipc preflight: fatal: unable to start "
                           "thingd: SyntaxError" + STILL]
    assert s.notifier.sent == ["RELOADING=1", "READY=1"]
    assert not s.system.execs and not s.life.upgrading and not s.system.blocked


def test_a_passed_preflight_execs_with_the_state_descriptors_kept_and_signals_held() -> None:
    s = Setup(FakeSystem())
    s.system.blocked = {signal.SIGPIPE}
    s.daemon.count = 2
    argv = s.upgrade()
    assert argv == ["/venv/bin/s6ipc", "s6-thingd", "-v", "x"] and s.life.upgrading
    assert s.notifier.sent == ["RELOADING=1"]
    with pytest.raises(Exec) as info:
        s.life.replace(argv)
    assert info.value.argv == argv
    assert info.value.kept == {0, 7}
    assert s.system.blocked == {signal.SIGPIPE, *HELD}
    state = State.from_json(info.value.state, "thingd")
    assert state.daemon == {"count": 2} and state.descriptors == {"listen": 0, "thing": 7}
    assert state.lineage.generation == 1 and state.lineage.sigmask == [signal.SIGPIPE]
    assert state.lineage.started_monotonic == s.clock.monotonic()
    assert state.lineage.readiness == {"NOTIFY_SOCKET": "@fake-notify"}


def test_an_exec_failure_is_undone_and_serving_goes_on() -> None:
    s = Setup(FakeSystem(exec_error=ExecFailure("/venv/bin/s6ipc", 2)))
    s.system.blocked = {signal.SIGPIPE}
    argv = s.upgrade()
    assert argv is not None
    s.life.replace(argv)  # returns: the exec failed
    assert s.system.execs == [argv]
    assert s.system.blocked == {signal.SIGPIPE} and s.system.restored == [[signal.SIGPIPE]]
    assert s.system.closed_on_exec == [7] and s.system.kept == {0}  # fd 0 stays as it was
    assert not s.system.memfds and len(s.system.discarded) == 1
    assert s.notifier.sent == ["RELOADING=1", "READY=1"]
    assert s.log.lines == [f"warning: unable to upgrade in place: unable to exec /venv/bin/s6ipc: "
                           f"No such file or directory{STILL}"]
    assert not s.life.upgrading
    # nothing was lost: the next SIGUSR2 tries again, with the same generation
    assert s.upgrade() == argv
    assert s.system.preflights[-1][2]["lineage"]["generation"] == 1


def test_sigusr2_while_a_preflight_runs_or_an_exec_comes_is_coalesced() -> None:
    s = Setup(FakeSystem())
    s.life.requested()
    child = s.system.children[0]
    for _ in range(5):
        s.life.requested()
    assert s.system.children == [child] and s.notifier.sent == ["RELOADING=1"] and child.killed == 0
    s.loop.child_exited(child.pid)
    assert len(s.loop.stopped) == 1 and s.life.upgrading
    s.life.requested()
    assert s.system.children == [child] and len(s.loop.stopped) == 1


def test_a_preflight_that_outlived_its_timeout_is_killed_by_the_next_sigusr2() -> None:
    """The kernel ends it at its timeout (SIGALRM); one that even that did not end (stopped) is
    killed when a SIGUSR2 finds it overdue, and its exit is the verdict as usual."""
    s = Setup(FakeSystem(problem="did not finish"))
    s.life.requested()
    child = s.system.children[0]
    s.clock.advance(child.timeout)
    s.life.requested()
    assert child.killed == 0
    s.clock.advance(2)
    s.life.requested()
    assert child.killed == 1 and len(s.system.children) == 1
    s.loop.child_exited(child.pid, 9)
    assert s.log.lines == [f"warning: unable to upgrade in place: did not finish{STILL}"]


def test_a_preflight_that_cannot_start_is_one_warning() -> None:
    s = Setup(FakeSystem())

    def cannot(program: str, args: Any, state: Any) -> Any:
        raise SystemFailure("fork", 11)

    s.system.start_preflight = cannot  # type: ignore[method-assign]
    s.life.requested()
    assert s.log.lines == [f"warning: unable to upgrade in place: unable to fork: "
                           f"Resource temporarily unavailable{STILL}"]
    assert s.notifier.sent == ["RELOADING=1", "READY=1"] and s.life.preflight is None


def test_the_signals_unread_at_the_exec_stay_pending_for_the_next_image() -> None:
    """Every byte of the self-pipe the loop did not read is raised again while the held signals
    are blocked (pending across the exec); SIGUSR2 is coalesced with the upgrade (consumed)."""
    s = Setup(FakeSystem())
    argv = s.upgrade()
    assert argv is not None
    s.loop.unread = bytes([signal.SIGHUP, signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH])
    with pytest.raises(Exec):
        s.life.replace(argv)
    assert s.system.raised == [signal.SIGHUP, signal.SIGTERM]  # SIGWINCH is not the daemon's
    assert s.system.taken_pending == [signal.SIGUSR2]


def test_a_daemon_that_exits_kills_its_running_preflight() -> None:
    s = Setup(FakeSystem())
    s.life.ending()
    s.life.requested()
    s.life.ending()
    assert s.system.children[0].killed == 1


def test_an_os_error_of_the_exec_is_undone_too() -> None:
    s = Setup(FakeSystem(exec_error=None))

    def fail(argv: List[str]) -> Any:
        raise PermissionError(13, "Permission denied")

    s.system.exec = fail  # type: ignore[method-assign]
    s.life.replace(["/x"])
    assert s.log.lines == [f"warning: unable to upgrade in place: unable to exec /x: "
                           f"Permission denied{STILL}"]


def _taken(**changes: Any) -> Dict[str, Any]:
    lineage = Lineage(2, 1.6e9, 500.0, [int(signal.SIGPIPE)], None, {"NOTIFY_SOCKET": "/run/n"})
    obj = State("thingd", "0.9", lineage, {"listen": 0}, {"count": 9}).to_json()
    obj.update(changes)
    return obj


def test_take_over_restores_lineage_readiness_and_the_daemons_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    system = FakeSystem(taken=_taken())
    state = Lifecycle.take(system, "thingd", Quiet())
    assert state is not None and os.environ["NOTIFY_SOCKET"] == "/run/n"
    s = Setup(system)
    s.life.adopt(state)
    assert s.daemon.restored == [{"count": 9}] and s.life.generation == 2
    s.life.resumed(state)
    assert s.system.blocked == {signal.SIGPIPE}
    assert Lifecycle.take(system, "thingd", Quiet()) is None  # a fresh start


@pytest.mark.parametrize("obj,line", [
    (_taken(kind="otherd"), "a state of format 2 for 'otherd': this is thingd format 2"),
    (_taken(format=1), "a state of format 1 for 'thingd': this is thingd format 2"),
    ({"format": FORMAT, "kind": "thingd"}, "no 'lineage' in the handoff state"),
])
def test_a_state_that_cannot_be_read_is_one_line_and_111(obj: Dict[str, Any], line: str) -> None:
    with pytest.raises(Unusable) as info:
        Lifecycle.take(FakeSystem(taken=obj), "thingd", Quiet())
    assert str(info.value) == f"unable to take over from the previous image: {line}"
    assert info.value.exit_code == 111


def test_a_daemon_part_that_cannot_be_restored_is_one_line_and_111() -> None:
    system = FakeSystem(taken=_taken(daemon={"count": "many"}))
    state = Lifecycle.take(system, "thingd", Quiet())
    assert state is not None
    setup = Setup(system)
    with pytest.raises(Unusable) as info:
        setup.life.adopt(state)
    assert str(info.value) == ("unable to take over from the previous image: "
                               "invalid literal for int() with base 10: 'many'")
    # the previous image said RELOADING=1: this one, which exits, says so (systemd 257 waits otherwise)
    assert setup.notifier.sent == ["STOPPING=1"]


@pytest.mark.parametrize("notify_fails", [False, True])
def test_a_new_image_that_cannot_start_says_stopping_and_raises_its_own_error(notify_fails: bool) -> None:
    """The daemon's own start-up error (its line, its code) after the exec: STOPPING=1 first; a
    notification that cannot be sent is a warning, never in place of the error."""
    system = FakeSystem(taken=_taken())
    state = Lifecycle.take(system, "thingd", Quiet())
    assert state is not None
    setup = Setup(system)

    def restore(_: Dict[str, Any]) -> None:
        raise SystemFailure("bind to fd 0", errno.EBADF)

    if notify_fails:
        def refused(*fields: str, fds: Sequence[int] = (), pid: Optional[int] = None) -> bool:
            raise SystemFailure("notify @fake-notify", errno.ECONNREFUSED)
        setup.notifier.send = refused  # type: ignore[method-assign]
    with pytest.raises(SystemFailure, match="bind to fd 0"):
        setup.life.adopt(state, restore)
    assert setup.notifier.sent == ([] if notify_fails else ["STOPPING=1"])


def test_uptime_and_the_common_fields_come_from_the_lifecycle_and_its_clock() -> None:
    s = Setup(FakeSystem())
    s.clock.advance(90.5)
    document = s.life.document()
    assert document == {"program": "thingd", "pid": os.getpid(), "name": "", "version": __version__,
                        "generation": 0, "uptime": 90.5, "started": round(s.life.started_wall, 3),
                        "upgrades": 0, "upgrade_failures": 0, "last_upgrade": None, "count": 0}
    assert s.life.status_text() == "0 things"
    # after a take-over, the uptime goes on from the first image's start (CLOCK_MONOTONIC)
    system = FakeSystem(taken=_taken())
    state = Lifecycle.take(system, "thingd", Quiet())
    assert state is not None
    t = Setup(system)
    t.life.adopt(state)
    assert t.life.uptime() == pytest.approx(t.clock.monotonic() - 500.0)
    assert t.life.document()["started"] == 1.6e9


def test_the_live_view_serves_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    from s6ipc.daemon.liveview import query

    s = Setup(FakeSystem())
    watched: Dict[int, Any] = {}
    s.life.open_live_view(lambda fd, on_event: watched.update({fd: on_event}))
    assert s.life.status is not None and list(watched) == [s.life.status.fileno()]
    import threading

    result: Dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(query(os.getpid(), "thingd")))
    t.start()
    import select

    poller = select.poll()
    poller.register(s.life.status.fileno(), select.POLLIN)
    while t.is_alive():
        for fd, mask in poller.poll(100):
            watched[fd](mask)
    assert result["count"] == 0 and result["program"] == "thingd"
    s.life.status.close()


def test_the_state_names_the_status_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Setup(FakeSystem())
    s.life.open_live_view(lambda fd, on_event: None)
    assert s.life.status is not None
    state: Optional[State] = s.life.state()
    assert state is not None
    assert state.descriptors["status"] == state.lineage.status_fd == s.life.status.fileno()
    s.life.status.close()


def test_a_daemon_part_that_is_not_json_is_undone_like_a_failed_exec() -> None:
    s = Setup(FakeSystem())
    s.daemon.count = {1, 2}  # type: ignore[assignment]
    s.life.replace(["/x"])
    assert not s.system.execs and not s.system.memfds and s.system.closed_on_exec == [7]
    assert s.log.lines[0].startswith("warning: unable to upgrade in place: unable to write the state: ")


def test_a_state_of_release_0_1_is_taken_over() -> None:
    """A daemon of the release before the lifecycle can be upgraded in place to this one."""
    ipcserverd = {"format": 1, "program": "ipcserverd", "generation": 3, "started": 50.0,
                  "started_wall": 1.7e9, "accepted": 9, "refused": 1, "children": {"12": [0, 0]},
                  "sigmask": [], "environment": {"NOTIFY_SOCKET": "/run/n", "PATH": "/bin"}, "status_fd": 4}
    state = State.from_json(ipcserverd, "ipcserverd")
    assert state.lineage == Lineage(3, 1.7e9, 50.0, [], 4, {"NOTIFY_SOCKET": "/run/n"})
    assert state.daemon == {"accepted": 9, "refused": 1, "children": {"12": [0, 0]}}
    with pytest.raises(ValueError):
        State.from_json(ipcserverd, "tcpserver4d")
    fdholderd = {"kind": "fdholderd", "version": "0.1.0", "generation": 1,
                 "started_ns": 1_700_000_000_000_000_000, "mask": [1], "status_fd": None,
                 "daemon": {"store": {}}}
    state = State.from_json(fdholderd, "fdholderd")
    assert (state.lineage.generation, state.lineage.started_wall, state.lineage.sigmask) == (1, 1.7e9, [1])
    assert state.daemon == {"store": {}} and state.version == "0.1.0"
    # its uptime was on the wall clock: the same age, now counted on CLOCK_MONOTONIC
    uptime = time.monotonic() - state.lineage.started_monotonic
    assert uptime == pytest.approx(time.time() - 1.7e9, abs=5)


def test_the_upgrade_facts_travel_in_the_lineage_and_show_in_the_live_view() -> None:
    """A refusal and a failed exec are counted as failures (with their reason); a successful exec
    counts one upgrade in the new image, with the pause from just before the exec to ``resumed``."""
    s = Setup(FakeSystem(problem="no thingd here"))
    assert s.upgrade(256) is None
    last = s.life.document()["last_upgrade"]
    seen = (s.life.upgrade_failures, last["result"], last["reason"], last["pause_ms"])
    assert seen == (1, "refused", "no thingd here", None)
    s.system.problem, s.system.exec_error = None, ExecFailure("/venv/bin/s6ipc", 2)
    s.life.replace(s.upgrade() or [])
    document = s.life.document()
    assert (document["upgrades"], document["upgrade_failures"]) == (0, 2)
    last = document["last_upgrade"]
    assert last["result"] == "failed" and "unable to exec" in last["reason"]
    s.system.exec_error = None
    s.clock.advance(5)
    with pytest.raises(Exec) as info:
        s.life.replace(s.upgrade() or [])
    obj = info.value.state
    assert obj["lineage"]["exec_monotonic"] == s.clock.monotonic()
    # the new image, 0.0375 s later
    new = Setup(FakeSystem(taken=obj))
    new.clock.now = s.clock.now + 0.0375
    state = Lifecycle.take(new.system, "thingd", Quiet())
    assert state is not None
    new.life.adopt(state)
    new.life.resumed(state)
    document = new.life.document()
    assert (document["generation"], document["upgrades"], document["upgrade_failures"]) == (1, 1, 2)
    assert document["last_upgrade"] == {"result": "ok", "reason": None, "pause_ms": 37.5, "exec_ms": 37.5,
                                        "at": round(new.clock.wall_ns() / 1e9, 3)}
    # and on into the next generation
    assert new.life.state().lineage.upgrades == 1


def test_a_state_without_the_upgrade_facts_is_taken_over() -> None:
    """A state of this format written before the upgrade facts existed (main before issue 18)."""
    obj = _taken()
    for key in ("upgrades", "upgrade_failures", "last_upgrade", "exec_monotonic"):
        del obj["lineage"][key]
    state = Lifecycle.take(FakeSystem(taken=obj), "thingd", Quiet())
    assert state is not None and state.lineage.upgrades == 0 and state.lineage.last_upgrade is None
    s = Setup(FakeSystem())
    s.life.adopt(state)
    s.life.resumed(state)
    assert s.life.document()["last_upgrade"]["pause_ms"] is None and s.life.upgrades == 1
