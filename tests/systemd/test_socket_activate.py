"""Socket activation without a service manager: systemd-socket-activate(1) as the real peer.

``systemd-socket-activate`` binds, waits for the first connection, then execs its program with
``LISTEN_FDS``/``LISTEN_PID``(/``LISTEN_FDNAMES``) — exactly what a ``.socket`` unit does for its
service — or, with ``--inetd``, with the listening socket on fd 0, or, with ``-a``, per connection.
The program is our ``systemd-socket`` stage in front of our ``ipcserverd`` or s6's C
``s6-ipcserverd``, or our ``ipcserverd`` alone; the same clients must see the same replies.
Error cases use tests/support/passfds.py, which can pass what systemd never would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

from tests.support.peers import Manager, ask
from tests.support.processes import (
    S6IPC,
    SUPPORT,
    VENV_PYTHON,
    env_of,
    installed_s6,
    wait_listening,
    wait_until,
)

PASSFDS = os.path.join(SUPPORT, "passfds.py")
ME = os.getpid()  # in abstract socket names: concurrent test runs must not collide
SSA = "/usr/bin/systemd-socket-activate"
C_IPCSERVERD = "/usr/bin/s6-ipcserverd"
PRIVATE = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

pytestmark = pytest.mark.skipif(not os.access(SSA, os.X_OK), reason="systemd-socket-activate not installed")


class Activated:
    """``systemd-socket-activate ARGS`` running in the background, its stderr kept."""

    def __init__(self, args: Sequence[str], wait_for: Sequence[str], log: str) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - kept open while the process runs
        self.proc = subprocess.Popen([SSA, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log)
        for path in wait_for:
            wait_listening(path)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def activate(sockdir: str) -> Iterator:  # type: ignore[type-arg]
    started: List[Activated] = []

    def start(args: Sequence[str], wait_for: Sequence[str]) -> Activated:
        a = Activated(args, wait_for, os.path.join(sockdir, f"log{len(started)}"))
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


_SPAWNED: List[subprocess.Popen[bytes]] = []


def spawn(argv: Sequence[str], **kw) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    """Popen, remembered: whatever a failing test leaves running is killed at teardown."""
    proc = subprocess.Popen(list(argv), **kw)
    _SPAWNED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _reap_spawned() -> Iterator[None]:
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def child_env(path: str) -> Dict[str, str]:
    return env_of(ask(path))


def installed_s6_line() -> List[str]:
    """systemd-socket-activate's option giving our daemons the installed s6's line (S6IPC_S6): the
    tests here compare them with /usr/bin/s6-ipcserverd."""
    return ["-E", f"S6IPC_S6={installed_s6().name}"]


DAEMONS = {
    "stage+ours": lambda: [S6IPC, "systemd-socket", "-n", "ipc", S6IPC, "ipcserverd", "--", "/usr/bin/env"],
    "stage+s6": lambda: [S6IPC, "systemd-socket", "-n", "ipc", C_IPCSERVERD, "--", "/usr/bin/env"],
    "ours-alone": lambda: [S6IPC, "ipcserverd", "--", "/usr/bin/env"],
}


def test_first_connection_activates_and_every_daemon_serves_the_same(activate, sockdir: str) -> None:  # type: ignore[no-untyped-def]
    seen = {}
    for n, (who, argv) in enumerate(DAEMONS.items()):
        path = f"{sockdir}/s{n}"
        a = activate(["-l", path, "--fdname=ipc", *installed_s6_line(), *argv()], [path])
        first = child_env(path)  # queued in the backlog until the daemon runs, then served
        second = child_env(path)
        assert first["PROTO"] == second["PROTO"] == "IPC", (who, first, a.log())
        assert not [k for k in first if k in PRIVATE], (who, first)
        seen[who] = first
        assert a.stop() == 0, a.log()
    assert seen["stage+ours"] == seen["stage+s6"] == seen["ours-alone"]


def test_names_choose_among_several_sockets(activate, sockdir: str) -> None:  # type: ignore[no-untyped-def]
    a_path, b_path = f"{sockdir}/a", f"{sockdir}/b"
    a = activate(["-l", a_path, "-l", b_path, "--fdname=alpha:beta",
                  S6IPC, "systemd-socket", "-n", "beta", S6IPC, "ipcserverd", "--", "/bin/echo", "beta"],
                 [a_path, b_path])
    # the first connection, on either socket, triggers the exec; only beta is served afterwards
    with socket.socket(socket.AF_UNIX) as poke:
        poke.connect(a_path)
        assert ask(b_path) == b"beta\n"
    with pytest.raises(ConnectionRefusedError):
        ask(a_path)  # alpha was closed by the stage: nobody listens on it any more
    assert a.proc.poll() is None


def test_ambiguity_without_a_name_is_an_error(activate, sockdir: str) -> None:  # type: ignore[no-untyped-def]
    a_path, b_path = f"{sockdir}/a", f"{sockdir}/b"
    a = activate(["-l", a_path, "-l", b_path, "--fdname=alpha:beta",
                  S6IPC, "systemd-socket", S6IPC, "ipcserverd", "--", "/bin/true"], [a_path, b_path])
    with socket.socket(socket.AF_UNIX) as poke:
        poke.connect(a_path)
        assert a.wait() == 100
    assert (f"systemd-socket: fatal: 2 listening stream sockets were passed by systemd "
            f"(fd 3 alpha {a_path}, fd 4 beta {b_path}): choose one by name or path") in a.log()


def test_inetd_mode_is_the_s6_convention(activate, sockdir: str) -> None:  # type: ignore[no-untyped-def]
    """``--inetd`` without ``-a`` puts the listening socket on fd 0 (and 1): s6's input convention."""
    replies = {}
    for who, daemon in (("ours", [S6IPC, "ipcserverd"]), ("s6", [C_IPCSERVERD])):
        path = f"{sockdir}/{who}"
        a = activate(["--inetd", "-l", path, *installed_s6_line(), *daemon, "--", "/usr/bin/env"], [path])
        replies[who] = child_env(path)
        assert a.stop() == 0, a.log()
    assert replies["ours"] == replies["s6"] and replies["ours"]["PROTO"] == "IPC"


def test_accept_mode_passes_connections_which_the_stage_refuses_clearly(activate, sockdir: str) -> None:  # type: ignore[no-untyped-def]
    path = f"{sockdir}/a"
    a = activate(["-a", "-l", path, S6IPC, "systemd-socket", "/bin/echo", "unreachable"], [path])
    assert ask(path) == b""
    wait_until(lambda: "is not listening" in a.log())
    assert "systemd-socket: fatal: the socket passed by systemd as fd 3 (unknown) is not listening" in a.log()


# -- errors of the stage: what systemd would never pass, or a wrapper got wrong ------------------------
def stage(specs: Sequence[str], options: Sequence[str], stage_args: Sequence[str],
          prog: Sequence[str] = ("/bin/true",),
          env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[bytes]:
    argv = [VENV_PYTHON, PASSFDS, *specs, *options, "--", S6IPC, "systemd-socket", *stage_args, *prog]
    return subprocess.run(argv, capture_output=True, timeout=20, env=env)


@pytest.mark.parametrize("specs,options,args,message", [
    ([], ["--unset-pid"], [], "no socket passed by systemd (LISTEN_PID is not set)"),
    ([f"listen:@s6t-p{ME}"], ["--pid", "1"], [],
     "the sockets passed by systemd are for another process (LISTEN_PID=1, "),
    ([f"listen:@s6t-g{ME}"], ["--pid", "12x"], [], "invalid LISTEN_PID: '12x'"),
    ([f"listen:@s6t-f{ME}"], ["--fds", "one"], [], "invalid LISTEN_FDS: 'one'"),
    ([f"listen:@s6t-c{ME}", "closed"], [], [],
     "unable to use fd 4 listed in LISTEN_FDS=2: Bad file descriptor"),
    ([f"listen:@s6t-n{ME}"], ["--names", "a:b"], [], "LISTEN_FDNAMES gives 2 names for LISTEN_FDS=1 fds"),
    ([f"listen:@s6t-m{ME}"], ["--names", "web"], ["-n", "ctl"],
     f"no socket named ctl among those passed by systemd (fd 3 web @s6t-m{ME})"),
    ([f"dgram:@s6t-d{ME}"], [], [], "the socket passed by systemd as fd 3 (unknown) is not a stream socket"),
    (["pipe"], [], [], "the socket passed by systemd as fd 3 (unknown) is not a socket"),
    ([f"listen:@s6t-l{ME}"], [], ["-l", "/run/elsewhere.sock"],
     "no socket bound to /run/elsewhere.sock among"),
])
def test_stage_errors_are_clear(specs: List[str], options: List[str], args: List[str], message: str) -> None:
    result = stage(specs, options, args)
    assert result.returncode == (111 if "unable to" in message else 100), result.stderr
    assert result.stderr.decode().startswith("systemd-socket: fatal: " + message), result.stderr


def test_stage_usage_errors() -> None:
    for args in ([], ["-f"], ["-s", "-n", "x"], ["-f", "-s", "-l", "/x"], ["-x"]):
        result = subprocess.run([S6IPC, "systemd-socket", *args] + (["/bin/true"] if args else []),
                                capture_output=True, timeout=20)
        assert result.returncode == 100
        assert result.stderr.decode().startswith("systemd-socket: usage: systemd-socket [ -n fdname ]")


def test_the_rest_of_the_chain_sees_fd0_and_no_listen_variables(sockdir: str) -> None:
    probe = ("import json, os, sys; from s6ipc.sockets import listenfds as activation, unix as sockets; "
             "print(json.dumps(["
             "sockets.listener_problem(0), activation.socket_address(0),"
             "sorted(os.listdir('/proc/self/fd')),"
             "sorted(k for k in os.environ if k.startswith('LISTEN_'))]))")
    result = stage([f"listen:{sockdir}/a", "tcp", f"listen:{sockdir}/b"], ["--names", "a:t:b"], ["-n", "b"],
                   prog=[VENV_PYTHON, "-c", probe])
    assert result.returncode == 0, result.stderr
    problem, address, fds, env = json.loads(result.stdout)
    assert (problem, address, env) == (None, f"{sockdir}/b", [])
    assert set(fds) <= {"0", "1", "2", "3"}  # the other passed fds are gone (3: listdir's own fd)


# -- the wrapper: ipcserver -S -------------------------------------------------------------------------
def test_ipcserver_S_adopts_the_passed_socket_or_binds(activate, sockdir: str) -> None:  # type: ignore[no-untyped-def]
    path = f"{sockdir}/w"
    a = activate(["-l", path, S6IPC, "ipcserver", "-S", path, "/usr/bin/env"], [path])
    inode = os.stat(path).st_ino
    assert child_env(path)["PROTO"] == "IPC"
    assert os.stat(path).st_ino == inode  # adopted: systemd's socket, never re-bound
    a.stop()
    # the same line without systemd binds the path itself
    plain_path = f"{sockdir}/plain"
    proc = spawn([S6IPC, "ipcserver", "-S", "-1", plain_path, "/usr/bin/env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.read(1) == b"\n"
        assert child_env(plain_path)["PROTO"] == "IPC"
    finally:
        proc.terminate()
        proc.wait(10)
    # a socket on another path is not adopted: the path is bound, with a warning naming what was passed
    other = f"{sockdir}/other"
    b = activate(["-l", other, S6IPC, "ipcserver", "-S", path, "/usr/bin/env"], [other])
    with socket.socket(socket.AF_UNIX) as poke:
        poke.connect(other)
        wait_until(lambda: "binding" in b.log())
    assert (f"systemd-socket: warning: no socket bound to {path} among those passed by systemd "
            f"(fd 3 unknown): binding {path}") in b.log()
    wait_listening(path)  # the warning comes before the bind
    assert child_env(path)["PROTO"] == "IPC"


# -- the fd store round trip, with a stand-in manager ------------------------------------------------
def test_fallback_bind_pushes_to_the_fd_store_and_adopts_it_back(sockdir: str) -> None:
    manager = Manager(f"{sockdir}/notify")
    path = f"{sockdir}/stored"
    env = dict(os.environ, NOTIFY_SOCKET=manager.address)
    argv = [S6IPC, "systemd-socket", "-n", "ipc", "-l", path, "-f", "-s",
            S6IPC, "ipcserverd", "-1", "--", "/usr/bin/env"]
    try:
        first = spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stored = manager.get()
        assert stored.text == "FDSTORE=1\nFDNAME=ipc" and len(stored.fds) == 1 and stored.pid == first.pid
        held = stored.fds[0]
        node = os.stat(path).st_ino
        assert first.stdout is not None and first.stdout.read(1) == b"\n"
        assert manager.get().text.startswith("READY=1\nSTATUS=accepting connections on " + path)
        first.terminate()
        first.wait(10)
        assert manager.get().text == "STOPPING=1"
        # "restart": the manager passes the stored fd back, named ipc; nothing is bound or stored again
        with socket.socket(socket.AF_UNIX) as early:
            early.connect(path)  # the socket is held: a client connecting between the two generations waits
            second = spawn([VENV_PYTHON, PASSFDS, f"inherit:{held}", "--names", "ipc", "--",
                                       *argv], env=env, pass_fds=[held], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
            assert second.stdout is not None and second.stdout.read(1) == b"\n"
            early.shutdown(socket.SHUT_WR)
            early.settimeout(10)
            assert b"PROTO=IPC" in early.recv(65536)
        assert manager.get().text.startswith("READY=1")
        assert os.stat(path).st_ino == node  # never re-bound
        assert os.readlink(f"/proc/{second.pid}/fd/0") == f"socket:[{os.fstat(held).st_ino}]"
        second.terminate()
        second.wait(10)
        os.close(held)
    finally:
        manager.close()


# -- readiness: ipcserverd and the -N forwarder, with a stand-in manager ------------------------------
@pytest.mark.parametrize("backend", ["stdlib", "python-systemd"])
def test_ipcserverd_notifies_ready_status_stopping_and_hides_the_socket(backend: str, sockdir: str) -> None:
    if backend == "python-systemd":
        pytest.importorskip("systemd.daemon")
    manager = Manager(f"@s6t-notify-{os.getpid()}")
    path = f"{sockdir}/srv"
    env = dict(os.environ, NOTIFY_SOCKET=manager.address, S6IPC_SYSTEMD_BACKEND=backend,
               WATCHDOG_USEC="200000", WATCHDOG_PID="1")  # a watchdog for someone else: no pings
    try:
        proc = spawn([S6IPC, "ipcserver", "-1", path, "/usr/bin/env"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.read(1) == b"\n"
        ready = manager.get()
        assert ready.text == f"READY=1\nSTATUS=accepting connections on {path} (at most 40 at once)"
        assert ready.pid == proc.pid
        reply = child_env(path)  # READY means accepting
        assert reply["PROTO"] == "IPC" and not [k for k in reply if k in PRIVATE]
        later = []
        while not manager.empty(1.3):  # no watchdog pings for another pid; STATUS= follows the counts
            later.append(manager.get().text)
        assert later and all(re.fullmatch(r"STATUS=(0 connections|1 connection from 1 uid), 1 accepted, "
                                          r"0 refused", t) for t in later), later
        proc.terminate()
        assert proc.wait(10) == 0
        assert manager.get().text == "STOPPING=1"
    finally:
        manager.close()


def test_ipcserverd_pings_the_watchdog_from_its_loop(sockdir: str) -> None:
    manager = Manager(f"@s6t-wd-{os.getpid()}")
    path = f"{sockdir}/wd"
    env = dict(os.environ, NOTIFY_SOCKET=manager.address, WATCHDOG_USEC="200000")
    try:
        proc = spawn([S6IPC, "ipcserver", path, "/usr/bin/env"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        texts = manager.texts_until(lambda t: t.startswith("READY=1"))
        start = time.monotonic()
        pings = 0
        while time.monotonic() - start < 0.55:
            if manager.get(1).text == "WATCHDOG=1":
                pings += 1
        assert pings >= 3, texts  # every 0.1 s (half the interval): 5 expected, 3 under heavy load
        assert child_env(path)["PROTO"] == "IPC"
        proc.kill()
        proc.wait(10)
        time.sleep(0.15)
        while not manager.empty(0.15):
            pass
        assert manager.empty(0.3)  # a dead loop pings no more: systemd would kill and restart it
    finally:
        manager.close()


def test_forwarder_turns_s6_ipcserverd_newline_into_ready(sockdir: str) -> None:
    manager = Manager(f"@s6t-fwd-{os.getpid()}")
    path = f"{sockdir}/c"
    env = dict(os.environ, NOTIFY_SOCKET=manager.address)
    try:
        proc = spawn([VENV_PYTHON, PASSFDS, f"listen:{path}", "--", S6IPC, "systemd-socket", "-N",
                                 C_IPCSERVERD, "-1", "--", "/usr/bin/env"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready = manager.get()
        assert ready.text == "READY=1"
        if os.geteuid() == 0:
            assert ready.pid == proc.pid  # spoken for the main pid (root may); else NotifyAccess=all
        assert os.readlink(f"/proc/{proc.pid}/exe") == C_IPCSERVERD
        reply = child_env(path)
        assert reply["PROTO"] == "IPC" and "NOTIFY_SOCKET" not in reply
        proc.terminate()
        assert proc.wait(10) == 0
        assert manager.empty(0.2)
    finally:
        manager.close()
