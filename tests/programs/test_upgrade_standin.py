"""The stand-in (issue 18, point 3): while the new image of ipcserverd or tcpserver4d starts, a copy
of the old loop, forked just before the exec, accepts and spawns; the new image takes it back —
its children become the daemon's own (counted, listed, signalled), its counters are added — and a
signal sent to the daemon during the exec acts on the stand-in's connections too.

The new image is held at its start for real (tests/support/phases.py: a ``sitecustomize`` that
waits in the new image while a ``.hold`` file exists), so "during the exec" lasts as long as the
test needs; the stand-in is no interpreter start (a fork), so the hold never applies to it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from s6ipc.daemon import liveview
from tests.support.phases import SERVER_OUTCOME, Phases, after_held, exited, handler_pid, parent_pid
from tests.support.processes import S6IPC, RunningServer, wait_until
from tests.support.tcp import TcpServer, connect


@pytest.fixture
def phases(tmp_path: str) -> Iterator[Phases]:
    yield Phases(str(tmp_path))


def _view(pid: int, kind: str) -> Optional[Dict[str, object]]:
    try:
        return liveview.query(pid, kind, timeout=5)
    except Exception:
        return None


def _upgraded(pid: int, kind: str) -> bool:
    """Whether the live view of *pid* shows generation 1 within 30 s (the new image serves)."""
    return bool(wait_until(lambda: (_view(pid, kind) or {}).get("generation") == 1, 30))


def _stop(server: RunningServer) -> None:
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(20) == 0, server.log()


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    return s


def _total(pid: int, kind: str) -> Optional[int]:
    """The number of connections the live view of *pid* shows (None: no answer)."""
    view = _view(pid, kind)
    return None if view is None else int(view["connections"]["total"])  # type: ignore[index]


@pytest.fixture
def served(phases: Phases, sockdir: str, handler: str,
           server_factory: Callable[..., RunningServer]) -> Tuple[str, RunningServer]:
    """(the socket's path, ``ipcserver -1 PATH handler hold`` running with the phases' PYTHONPATH)."""
    path = os.path.join(sockdir, "s")
    return path, server_factory([S6IPC, "ipcserver", "-1", path, handler, "hold"], env=phases.env())


def _during_the_exec(pid: int, phases: Phases) -> None:
    """SIGUSR2 to *pid*, and return once its new image is held at its start (after the exec)."""
    phases.hold("new-image")
    os.kill(pid, signal.SIGUSR2)
    assert phases.reached("new-image") == pid


def test_clients_are_served_and_taken_over_while_the_new_image_starts(
        phases: Phases, served: Tuple[str, RunningServer]) -> None:
    path, server = served
    pid = server.proc.pid
    before = _connect(path)
    first = handler_pid(before)
    _during_the_exec(pid, phases)
    started = time.monotonic()
    during: List[socket.socket] = []
    children: List[int] = []
    for _ in range(3):  # the new image is held: only the stand-in can answer these
        during.append(_connect(path))
        children.append(handler_pid(during[-1]))
    served_in = time.monotonic() - started
    stand_in = parent_pid(children[0])
    assert stand_in != pid and parent_pid(stand_in) == pid, server.log()
    assert all(parent_pid(c) == stand_in for c in children)
    time.sleep(0.5)  # the exec lasts: what the new image reports below must show it
    phases.release("new-image")
    assert _upgraded(pid, "ipcserverd"), server.log()
    assert served_in < 2.0, f"{served_in:.3f} s to serve three clients during the exec"
    view = _view(pid, "ipcserverd")
    assert view is not None
    listed = {c["pid"]: c for c in view["children"]}  # type: ignore[attr-defined]
    assert set(listed) == {first, *children}, server.log()
    assert all(listed[c]["uid"] == os.getuid() for c in children)
    assert all(parent_pid(c) == pid for c in children), "the stand-in's children are not the daemon's"
    assert wait_until(lambda: exited(stand_in), 10) and not os.path.exists(f"/proc/{stand_in}"), \
        "the stand-in was not reaped"
    counters = view["counters"]
    assert (counters["accepted"], counters["spawned"]) == (4, 4), counters  # type: ignore[index]
    assert view["connections"]["total"] == 4  # type: ignore[index]
    last = view["last_upgrade"]
    assert last["exec_ms"] >= 500 and last["pause_ms"] < 200, last  # type: ignore[index]
    assert "warning" not in server.log(), server.log()
    # SIGHUP: SIGTERM+SIGCONT to every connection, the stand-in's too, as the daemon's own
    os.kill(pid, signal.SIGHUP)
    assert wait_until(lambda: _total(pid, "ipcserverd") == 0, 10)
    for s in [before, *during]:
        assert after_held(s) == b"TERM\n", server.log()
    view = _view(pid, "ipcserverd")
    assert view is not None and sum(view["counters"]["exits"].values()) == 4  # type: ignore[index]
    _stop(server)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGABRT],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_sent_during_the_exec_acts_on_the_stand_ins_connections_too(
        sig: int, phases: Phases, served: Tuple[str, RunningServer]) -> None:
    path, server = served
    pid = server.proc.pid
    before = _connect(path)
    handler_pid(before)
    _during_the_exec(pid, phases)
    during = _connect(path)
    handler_pid(during)
    os.kill(pid, sig)  # pending in the new image until its handlers exist
    time.sleep(0.05)
    phases.release("new-image")
    exits, sees = SERVER_OUTCOME[sig]
    if exits:
        assert server.proc.wait(20) == 0, server.log()
    else:
        assert _upgraded(pid, "ipcserverd"), server.log()
    assert after_held(before) == sees, server.log()
    assert after_held(during) == sees, server.log()
    if not exits:
        _stop(server)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT, signal.SIGABRT, signal.SIGUSR2],
                         ids=lambda s: signal.Signals(s).name)
def test_the_stand_in_ignores_what_is_the_daemons_to_do(
        sig: int, phases: Phases, served: Tuple[str, RunningServer]) -> None:
    """Signals sent to the stand-in itself (a signal to the process group, ``pkill``) are not its to
    act on: it serves on, its connections untouched."""
    path, server = served
    pid = server.proc.pid
    _during_the_exec(pid, phases)
    during = _connect(path)
    stand_in = parent_pid(handler_pid(during))
    os.kill(stand_in, sig)
    time.sleep(0.1)
    later = _connect(path)
    assert parent_pid(handler_pid(later)) == stand_in, "the stand-in stopped serving"
    phases.release("new-image")
    assert _upgraded(pid, "ipcserverd"), server.log()
    assert after_held(during) == b"alive\n" and after_held(later) == b"alive\n"
    assert _total(pid, "ipcserverd") == 2
    _stop(server)


def test_sigterm_to_the_stand_in_stops_it_and_its_connections_are_still_taken_over(
        phases: Phases, served: Tuple[str, RunningServer]) -> None:
    """systemd stopping a unit signals every process of its cgroup: a stand-in that gets SIGTERM
    stops accepting (clients wait in the backlog for the new image) and its report still reaches
    the new image."""
    path, server = served
    pid = server.proc.pid
    _during_the_exec(pid, phases)
    during = _connect(path)
    child = handler_pid(during)
    stand_in = parent_pid(child)
    os.kill(stand_in, signal.SIGTERM)
    assert wait_until(lambda: exited(stand_in), 10)
    waiting = _connect(path)  # in the backlog: nobody accepts until the new image serves
    waiting.settimeout(0.3)
    with pytest.raises(socket.timeout):
        waiting.recv(100)
    waiting.settimeout(10)
    phases.release("new-image")
    assert parent_pid(handler_pid(waiting)) == pid
    assert _upgraded(pid, "ipcserverd"), server.log()
    view = _view(pid, "ipcserverd")
    assert view is not None and child in [c["pid"] for c in view["children"]], server.log()  # type: ignore[attr-defined]
    assert parent_pid(child) == pid
    _stop(server)


def test_a_new_image_that_dies_leaves_no_stand_in_behind(
        phases: Phases, served: Tuple[str, RunningServer]) -> None:
    """The new image exits before it takes over: the stand-in sees its end of the pair closed and
    exits at once; its connections go on (their children are init's, as a dead daemon's are)."""
    path, server = served
    pid = server.proc.pid
    phases.die("new-image")
    _during_the_exec(pid, phases)
    during = _connect(path)
    stand_in = parent_pid(handler_pid(during))
    phases.release("new-image")
    assert server.proc.wait(20) == 111
    assert wait_until(lambda: not os.path.exists(f"/proc/{stand_in}") or exited(stand_in), 10), \
        "the stand-in outlived the daemon"
    assert after_held(during) == b"alive\n"
    during.close()


def test_an_orphan_of_a_connection_is_not_the_daemons_after_an_upgrade(
        sockdir: str, server_factory: Callable[..., RunningServer]) -> None:
    """The daemon is a subreaper only while a stand-in runs: afterwards a process a connection left
    behind goes where it would without an upgrade, never to the daemon."""
    path = os.path.join(sockdir, "s")
    server = server_factory([S6IPC, "ipcserver", "-1", path, "sh", "-c", "sleep 30 & echo $!"])
    pid = server.proc.pid
    os.kill(pid, signal.SIGUSR2)
    assert _upgraded(pid, "ipcserverd"), server.log()
    s = _connect(path)
    orphan = handler_pid(s)
    s.close()
    try:
        assert wait_until(lambda: parent_pid(orphan) != pid and parent_pid(orphan) != 0 and
                          _total(pid, "ipcserverd") == 0, 10)
        time.sleep(0.2)
        assert parent_pid(orphan) != pid, "an orphan was re-parented to the daemon: it is still a subreaper"
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_tcpserver_serves_during_the_exec_and_takes_the_connections_over(
        phases: Phases, handler: str) -> None:
    server = TcpServer([S6IPC, "tcpserver", "-1", "127.0.0.1", "0", handler, "hold"], env=phases.env())
    try:
        pid = server.proc.pid
        _during_the_exec(pid, phases)
        during = connect(server.port)
        during.settimeout(10)
        child = handler_pid(during)
        stand_in = parent_pid(child)
        assert stand_in != pid
        phases.release("new-image")
        assert _upgraded(pid, "tcpserver4d"), server.log()
        view = _view(pid, "tcpserver4d")
        assert view is not None
        listed = {c["pid"]: c for c in view["children"]}  # type: ignore[attr-defined]
        assert child in listed and listed[child]["ip"] == "127.0.0.1", listed
        assert parent_pid(child) == pid
        os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: _total(pid, "tcpserver4d") == 0, 10)
        assert after_held(during) == b"TERM\n"
    finally:
        server.stop()
