"""Signals are never lost during an in-place upgrade (issue 18, point 4): SIGTERM, SIGHUP, SIGQUIT
and SIGABRT sent at each moment of an upgrade act exactly as they do without one, for ipcserverd,
tcpserver4d and fdholderd; a storm of SIGUSR2 leaves one process serving.

The phases are held open for real, without any hook in the daemons: the servers run with a
``sitecustomize`` module first on ``PYTHONPATH`` (the test's own, :data:`SITECUSTOMIZE`) that, in
the preflight child (``s6ipc preflight …`` on its command line) or in the new image (it finds
``$S6IPC_HANDOFF`` in its environment, before any s6ipc code runs: its handlers do not exist yet),
writes a marker file and waits while a ``.hold`` file the test made exists. Two signals are read
in the same batch by stopping the daemon (SIGSTOP), sending both, and letting it go on (SIGCONT):
the kernel then delivers both pending signals before the loop reads its self-pipe.

The phases:

* ``before``: the signal, then SIGUSR2 at once;
* ``same-read``: SIGUSR2 and the signal read in one batch;
* ``preflight``: while the preflight runs (the loop serves beside it);
* ``verdict``: in the same read as the preflight's exit (SIGCHLD), which passes and stops the loop
  for the exec; fdholderd: during the drain before its exec (a client holds it with half a request);
* ``new-image``: after the exec, before the new image has its handlers (the signal is blocked,
  pending, until they are in place).

What each signal does without an upgrade (docs/ipcserverd.md, docs/fdholderd.md): ipcserverd and
tcpserverd exit 0 on SIGTERM (children left running), SIGQUIT (children get SIGTERM+SIGCONT) and
SIGABRT (children get SIGKILL), and on SIGHUP send SIGTERM+SIGCONT to the children and go on;
fdholderd exits 0 on SIGTERM (lameduck, nothing held) and dies of SIGQUIT and SIGABRT (s6 does not
catch them). fdholderd's SIGHUP re-reads a cdb, which every new image does anyway: nothing tells a
lost one from one acted on, so it is not among its cases.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable, Iterator, Optional

import pytest

from s6ipc.base import unixmessage
from s6ipc.daemon import liveview
from s6ipc.fdholder import protocol
from tests.support.fdholder import ALL_RIGHTS, make_rules
from tests.support.phases import SERVER_OUTCOME, Phases, after_held, exited, together
from tests.support.processes import S6IPC, RunningServer, wait_until
from tests.support.tcp import TcpServer, connect

PHASES = ["before", "same-read", "preflight", "verdict", "new-image"]


def send_at(phase: str, pid: int, sig: int, phases: Phases,
            drain: Optional[Callable[[], None]] = None) -> None:
    """SIGUSR2 to *pid*, and *sig* at *phase* of the upgrade it starts."""
    if phase == "before":
        os.kill(pid, sig)
        os.kill(pid, signal.SIGUSR2)
    elif phase == "same-read":
        together(pid, signal.SIGUSR2, sig)
    elif phase == "preflight":
        phases.hold("preflight")
        os.kill(pid, signal.SIGUSR2)
        phases.reached("preflight")
        os.kill(pid, sig)
        phases.release("preflight")
    elif phase == "verdict":
        phases.hold("preflight")
        os.kill(pid, signal.SIGUSR2)
        child = phases.reached("preflight")
        if drain is None:  # the preflight's exit and the signal in one read
            os.kill(pid, signal.SIGSTOP)
            phases.release("preflight")
            wait_until(lambda: exited(child), 30)
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)
        else:  # fdholderd: the preflight passed, the drain holds the exec back
            phases.release("preflight")
            wait_until(lambda: not os.path.exists(f"/proc/{child}"), 30)  # reaped by the daemon
            os.kill(pid, sig)
            drain()
    elif phase == "new-image":
        phases.hold("new-image")
        os.kill(pid, signal.SIGUSR2)
        assert phases.reached("new-image") == pid
        os.kill(pid, sig)
        time.sleep(0.05)
        phases.release("new-image")
    else:
        raise AssertionError(phase)


@pytest.fixture
def phases(tmp_path: str) -> Iterator[Phases]:
    yield Phases(str(tmp_path))


def _generation(pid: int, kind: str) -> Optional[int]:
    try:
        return int(liveview.query(pid, kind, timeout=5)["generation"])
    except Exception:
        return None


def _check_server(proc: subprocess.Popen[bytes], pid: int, kind: str, sig: int, held: socket.socket,
                  log: Callable[[], str]) -> None:
    exits, held_sees = SERVER_OUTCOME[sig]
    if exits:
        code = proc.wait(20)
        assert code == 0, f"{signal.Signals(sig).name}: exit {code}\n{log()}"
    else:
        assert wait_until(lambda: _generation(pid, kind) == 1, 30), log()
        assert proc.poll() is None
    assert after_held(held) == held_sees, log()
    if not exits:
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(20) == 0


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGABRT],
                         ids=lambda s: signal.Signals(s).name)
def test_ipcserverd(phase: str, sig: int, phases: Phases, sockdir: str, handler: str,
                    server_factory: Callable[..., RunningServer]) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([S6IPC, "ipcserver", "-1", path, handler, "hold"], env=phases.env())
    pid = server.proc.pid
    held = socket.socket(socket.AF_UNIX)
    held.connect(path)
    held.settimeout(10)
    assert held.recv(100).strip().isdigit()
    send_at(phase, pid, sig, phases)
    _check_server(server.proc, pid, "ipcserverd", sig, held, server.log)
    held.close()


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_tcpserverd(phase: str, sig: int, phases: Phases, handler: str) -> None:
    server = TcpServer([S6IPC, "tcpserver", "-1", "127.0.0.1", "0", handler, "hold"], env=phases.env())
    try:
        held = connect(server.port)
        held.settimeout(10)
        assert held.recv(100).strip().isdigit()
        send_at(phase, server.proc.pid, sig, phases)
        _check_server(server.proc, server.proc.pid, "tcpserver4d", sig, held, server.log)
        held.close()
    finally:
        server.stop()


class Holder:
    """fdholderd (``s6ipc fdholder-daemon -1 -i rules PATH``) with a client holding half a request."""

    def __init__(self, sockdir: str, phases: Phases, server_factory: Callable[..., RunningServer]) -> None:
        rules = make_rules(sockdir, {f"uid/{os.geteuid()}": ALL_RIGHTS})
        self.path = os.path.join(sockdir, "holder")
        argv = [S6IPC, "fdholder-daemon", "-1", "-i", rules, self.path]
        self.server = server_factory(argv, env=phases.env())
        self.pid = self.server.proc.pid
        self.busy = socket.socket(socket.AF_UNIX)
        self.busy.connect(self.path)
        self.busy.sendall(b"\0\0")  # half a message: an upgrade drains (at most 2 s) before its exec

    def finish_request(self) -> None:
        self.busy.close()


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT, signal.SIGABRT],
                         ids=lambda s: signal.Signals(s).name)
def test_fdholderd(phase: str, sig: int, phases: Phases, sockdir: str,
                   server_factory: Callable[..., RunningServer]) -> None:
    holder = Holder(sockdir, phases, server_factory)
    send_at(phase, holder.pid, sig, phases, drain=holder.finish_request)
    holder.finish_request()
    expected = 0 if sig == signal.SIGTERM else -sig
    code = holder.server.proc.wait(20)
    assert code == expected, f"{signal.Signals(sig).name}: exit {code}\n{holder.server.log()}"


def test_a_storm_of_sigusr2_leaves_one_process_serving(sockdir: str, handler: str,
                                                       server_factory: Callable[..., RunningServer]) -> None:
    """200 SIGUSR2 as fast as they go, while upgrades happen: coalesced, the same process serves,
    every connection is answered, and the children it had are still its own."""
    path = os.path.join(sockdir, "s")
    server = server_factory([S6IPC, "ipcserver", "-1", path, handler, "hold"])
    pid = server.proc.pid
    held = socket.socket(socket.AF_UNIX)
    held.connect(path)
    held.settimeout(10)
    assert held.recv(100).strip().isdigit()
    for n in range(200):
        os.kill(pid, signal.SIGUSR2)
        if n % 20 == 0:
            time.sleep(0.05)
    wait_until(lambda: (_generation(pid, "ipcserverd") or 0) >= 1, 30)
    time.sleep(1)  # whatever is still coming lands
    generation = wait_until(lambda: _generation(pid, "ipcserverd"), 30)
    time.sleep(1.5)
    assert _generation(pid, "ipcserverd") == generation, "upgrades went on after the storm"
    assert server.proc.poll() is None
    assert generation < 20, f"{generation} upgrades for one storm: SIGUSR2 was not coalesced"
    assert after_held(held) == b"alive\n"
    fresh = socket.socket(socket.AF_UNIX)
    fresh.connect(path)
    fresh.settimeout(10)
    assert fresh.recv(100).strip().isdigit()
    fresh.close()
    held.close()
    assert "warning" not in server.log() and "fatal" not in server.log()



@pytest.mark.parametrize("daemon", ["ipcserverd", "fdholderd"])
def test_the_loop_serves_while_the_preflight_runs(daemon: str, phases: Phases, sockdir: str, handler: str,
                                                  server_factory: Callable[..., RunningServer]) -> None:
    """With the preflight held open, new clients are served and the live view answers (the old
    code waited for the preflight: clients sat in the backlog); released, the upgrade happens."""
    if daemon == "ipcserverd":
        path = os.path.join(sockdir, "s")
        server = server_factory([S6IPC, "ipcserver", "-1", path, handler, "hold"], env=phases.env())
        pid = server.proc.pid
    else:
        holder = Holder(sockdir, phases, server_factory)
        holder.finish_request()
        server, pid, path = holder.server, holder.pid, holder.path
    phases.hold("preflight")
    os.kill(pid, signal.SIGUSR2)
    child = phases.reached("preflight")
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        if daemon == "ipcserverd":
            assert s.recv(100).strip().isdigit()  # a handler was spawned: the loop accepts
        else:
            s.sendall(unixmessage.frame(protocol.LIST_REQUEST))
            assert s.recv(100) != b""  # answered: the loop serves requests
        s.close()
    assert _generation(pid, daemon) == 0 and not exited(child)
    phases.release("preflight")
    assert wait_until(lambda: _generation(pid, daemon) == 1, 30)
    assert "warning" not in server.log() and "fatal" not in server.log()


def test_the_watchdog_is_fed_while_the_preflight_runs(phases: Phases, sockdir: str, handler: str,
                                                      server_factory: Callable[..., RunningServer]) -> None:
    """``WATCHDOG=1`` keeps coming from the loop while a preflight is held open for a second (the
    old code waited for the preflight: a watchdog shorter than it killed the service)."""
    notify = os.path.join(sockdir, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify)
    receiver.settimeout(10)
    env = dict(phases.env(), NOTIFY_SOCKET=notify, WATCHDOG_USEC="200000")  # a ping every 0.1 s
    path = os.path.join(sockdir, "s")
    server = server_factory([S6IPC, "ipcserver", "-1", path, handler, "hold"], env=env)
    phases.hold("preflight")
    os.kill(server.proc.pid, signal.SIGUSR2)
    phases.reached("preflight")
    while b"RELOADING=1" not in receiver.recv(4096):
        pass
    pings, until = 0, time.monotonic() + 1.0
    while time.monotonic() < until:
        receiver.settimeout(max(0.01, until - time.monotonic()))
        try:
            pings += receiver.recv(4096).split(b"\n").count(b"WATCHDOG=1")
        except socket.timeout:
            break
    phases.release("preflight")
    assert pings >= 5, f"{pings} WATCHDOG=1 in the second the preflight was held"
    assert wait_until(lambda: _generation(server.proc.pid, "ipcserverd") == 1, 30)
    receiver.close()
