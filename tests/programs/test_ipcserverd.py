"""ipcserverd against Debian's s6-ipcserverd: the same scenario, fed by the same socket binder.

Each differential test starts ``/usr/bin/s6-ipcserver-socketbinder PATH DAEMON …`` where DAEMON is
our ``s6ipc ipcserverd`` or ``/usr/bin/s6-ipcserverd``, drives it with real clients and compares
what the clients, the children and the log see. Where we deliberately differ (documented in
docs/ipcserverd.md) the test asserts both behaviours explicitly.

Where s6 releases differ (``IPCCONNNUM``, the ``-c`` ceiling, a program that cannot be executed:
:mod:`s6ipc.base.s6release`), both sides run with ``S6IPC_S6`` naming the line of the s6 installed
(2.11 on Debian 12, 2.12+ on Debian 13: :func:`~tests.support.processes.installed_s6`, from what the
binary does) and the expected values are that line's; the tests at the end check our default line
and ``S6IPC_S6=2.11`` whatever s6 is installed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from s6ipc.base.s6release import DEFAULT, S6_2_11, S6Release
from tests.support.processes import (
    IMPLEMENTATIONS,
    SOCKETBINDER,
    Client,
    RunningServer,
    as_installed_s6,
    installed_s6,
    normalise_log,
    proc_children,
    read_all,
    request,
    run,
    wait_until,
)

WHO = ["ours", "s6"]


def first() -> str:
    """IPCCONNNUM of a first connection, as the installed s6 gives it (1 for 2.11, 0 for 2.12+)."""
    return str(installed_s6().connnum(0))
UID, GID = os.geteuid(), os.getegid()
BASE_ENV = {"PATH": "/usr/bin:/bin"}


def daemon_argv(who: str, path: str, opts: Sequence[str], prog: Sequence[str],
                binder_opts: Sequence[str] = ()) -> List[str]:
    """socketbinder PATH → (ours | s6's) ipcserverd OPTS -- PROG."""
    return [SOCKETBINDER, *binder_opts, path, *IMPLEMENTATIONS[who]("ipcserverd"), *opts, "--", *prog]


Start = Callable[..., Tuple[RunningServer, str]]


@pytest.fixture
def start(server_factory: Callable[..., RunningServer], sockdir: str, handler: str) -> Start:
    """``start(who, opts, *handler_args, env=…, prog=…)`` → (ready server, socket path).

    The prog defaults to the C handler with *handler_args*; ``-1`` is always passed.
    """
    count = [0]

    def go(who: str, opts: Sequence[str], *mode: str, prog: Optional[Sequence[str]] = None,
           env: Optional[Dict[str, str]] = None, **kw: object) -> Tuple[RunningServer, str]:
        count[0] += 1
        path = os.path.join(sockdir, f"{who}{count[0]}")
        argv = daemon_argv(who, path, ["-1", *opts], prog if prog is not None else [handler, *mode])
        env = as_installed_s6(BASE_ENV if env is None else env)
        return server_factory(argv, env=env, **kw), path

    return go


def reaped(server: RunningServer, pid: int) -> Callable[[], bool]:
    return lambda: pid not in proc_children(server.proc.pid)


def log_lines(server: RunningServer) -> List[str]:
    return normalise_log(server.log())


def wait_log(server: RunningServer, n: int) -> List[str]:
    """The normalised log once it has at least *n* lines."""
    return wait_until(lambda: (lambda lines: lines if len(lines) >= n else None)(log_lines(server)))  # type: ignore[no-any-return]


# -- fd 0 checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_stdin_dev_null_is_not_a_socket(who: str) -> None:
    r = run([*IMPLEMENTATIONS[who]("ipcserverd"), "true"], stdin=subprocess.DEVNULL)
    assert (r.returncode, normalise_log(r.stderr.decode())) == (100, ["D: fatal: stdin is not a socket"])


@pytest.mark.parametrize("who", WHO)
def test_stdin_closed(who: str) -> None:
    r = run(["sh", "-c", 'exec "$@" <&-', "sh", *IMPLEMENTATIONS[who]("ipcserverd"), "true"])
    assert r.returncode == 111
    assert normalise_log(r.stderr.decode()) == ["D: fatal: unable to fstat stdin: Bad file descriptor"]


@pytest.mark.parametrize("who", WHO)
def test_bound_but_not_listening_socket(who: str, sockdir: str) -> None:
    """socketbinder -b0: s6 dies when poll reports POLLHUP; we refuse it at start-up (before -1)."""
    r = run(daemon_argv(who, os.path.join(sockdir, "s"), ["-1"], ["true"], binder_opts=["-b0"]))
    lines = normalise_log(r.stderr.decode())
    assert r.returncode == 111
    ours_line, s6_line = "D: fatal: stdin is not a listening socket", "D: fatal: trouble with socket"
    assert lines == [ours_line if who == "ours" else s6_line]
    # s6 announces readiness first and then dies; we never announce a socket we cannot serve.
    assert r.stdout == (b"" if who == "ours" else b"\n")


@pytest.mark.parametrize("who", WHO)
def test_datagram_socket(who: str, sockdir: str) -> None:
    """SOCK_DGRAM on fd 0: s6 hangs forever (never readable); we exit 111 with one line."""
    argv = daemon_argv(who, os.path.join(sockdir, "s"), [], ["true"], binder_opts=["-m", "-b0"])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if who == "s6":
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(1.0)
            assert proc.poll() is None
            return
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 111
        assert normalise_log(err.decode()) == ["D: fatal: stdin is not a stream socket"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


@pytest.mark.parametrize("who", WHO)
def test_tcp_socket(who: str, handler: str) -> None:
    """A listening TCP socket on fd 0: s6 serves it (with meaningless IPCREMOTE* values); we refuse it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        argv = [*IMPLEMENTATIONS[who]("ipcserverd"), "-1", handler, "ok"]
        proc = subprocess.Popen(argv, stdin=listener.fileno(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if who == "ours":
                _, err = proc.communicate(timeout=10)
                assert proc.returncode == 111
                assert normalise_log(err.decode()) == ["D: fatal: stdin is not a Unix domain socket"]
                return
            assert proc.stdout is not None and proc.stdout.read(1) == b"\n"
            with socket.create_connection(listener.getsockname(), timeout=5) as c:
                assert c.recv(16) == b"ok\n"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=5)


@pytest.mark.parametrize("who", WHO)
def test_notify_with_stdout_closed(who: str, sockdir: str) -> None:
    argv = daemon_argv(who, os.path.join(sockdir, "s"), ["-1"], ["true"])
    r = run(["sh", "-c", 'exec "$@" >&-', "sh", *argv], stdin=subprocess.DEVNULL)
    assert r.returncode == 100
    expected = "D: fatal: called with option -1 but stdout said: Bad file descriptor"
    assert normalise_log(r.stderr.decode()) == [expected]


# -- readiness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_readiness_newline_once_then_fd1_closed(who: str, start: Start) -> None:
    server, path = start(who, [], "ok")  # returns once the newline arrived
    assert request(path) == b"ok\n"  # a client right after readiness is served
    rest = wait_until(lambda: _read_or_none(server.ready_fd), timeout=5)
    assert rest == b"EOF"  # nothing after the single newline, and fd 1 is closed


def _read_or_none(fd: int) -> Optional[bytes]:
    try:
        data = os.read(fd, 64)
    except BlockingIOError:
        return None
    return data or b"EOF"


# -- environment ----------------------------------------------------------------------------------
def served_env(start: Start, who: str, opts: Sequence[str], env: Dict[str, str],
               bind: Optional[str] = None) -> List[Tuple[str, str]]:
    _, path = start(who, opts, "env", env=env)
    out = request(path, bind=bind)
    pairs = [line.split("=", 1) for line in out.decode().splitlines()]
    return [(k, v) for k, v in pairs if k not in ("_", "S6IPC_S6")]


INHERITED = {"PATH": "/usr/bin:/bin", "FOO": "bar", "IPCLOCALPATH": "inherited", "PROTO": "XYZ",
             "IPCREMOTEEUID": "77", "IPCREMOTEEGID": "88", "IPCCONNNUM": "99", "IPCREMOTEPATH": "/x"}


def test_env_in_order_equals_s6(start: Start) -> None:
    """The full child environment, in order: the inherited variables, then the five s6 sets."""
    env = dict(BASE_ENV, FOO="bar", IPCLOCALPATH="inherited")
    envs = {who: served_env(start, who, [], env) for who in WHO}
    assert envs["ours"] == envs["s6"]
    assert envs["ours"] == [("PATH", "/usr/bin:/bin"), ("FOO", "bar"), ("IPCLOCALPATH", "inherited"),
                            ("PROTO", "IPC"), ("IPCREMOTEEUID", str(UID)), ("IPCREMOTEEGID", str(GID)),
                            ("IPCCONNNUM", first()), ("IPCREMOTEPATH", "")]


def test_env_with_inherited_connection_variables_equals_s6(start: Start) -> None:
    """Inherited PROTO/IPCREMOTE*/IPCCONNNUM are replaced, in the order skalibs' env_merge gives
    (unsetting moves the last entry into the hole): IPCCONNNUM ends up before PROTO."""
    envs = {who: served_env(start, who, [], INHERITED) for who in WHO}
    assert envs["ours"] == envs["s6"]
    assert envs["ours"] == [("PATH", "/usr/bin:/bin"), ("FOO", "bar"), ("IPCLOCALPATH", "inherited"),
                            ("IPCCONNNUM", first()), ("PROTO", "IPC"), ("IPCREMOTEEUID", str(UID)),
                            ("IPCREMOTEEGID", str(GID)), ("IPCREMOTEPATH", "")]


def test_env_order_when_proto_comes_first_equals_s6(start: Start) -> None:
    """A variable inherited before others is swapped with the last entry, not just dropped."""
    env = {"PROTO": "X", "A": "1", "B": "2", "IPCREMOTEEUID": "5", "PATH": "/usr/bin:/bin"}
    for opts in ([], ["-P"]):
        envs = {who: served_env(start, who, opts, env) for who in WHO}
        assert envs["ours"] == envs["s6"]


def test_env_bound_client_path(start: Start, sockdir: str) -> None:
    envs = {who: served_env(start, who, [], BASE_ENV, bind=os.path.join(sockdir, f"c-{who}")) for who in WHO}
    assert dict(envs["ours"])["IPCREMOTEPATH"] == os.path.join(sockdir, "c-ours")
    assert dict(envs["s6"])["IPCREMOTEPATH"] == os.path.join(sockdir, "c-s6")
    assert [k for k, _ in envs["ours"]] == [k for k, _ in envs["s6"]]


def test_env_without_lookup_equals_s6(start: Start) -> None:
    """-P: IPCREMOTEEUID/EGID unset even when inherited, IPCCONNNUM set but empty."""
    envs = {who: served_env(start, who, ["-P"], INHERITED) for who in WHO}
    assert envs["ours"] == envs["s6"]
    assert envs["ours"] == [("PATH", "/usr/bin:/bin"), ("FOO", "bar"), ("IPCLOCALPATH", "inherited"),
                            ("IPCCONNNUM", ""), ("PROTO", "IPC"), ("IPCREMOTEPATH", "")]


def test_log_without_lookup_equals_s6(start: Start) -> None:
    logs = {}
    for who in WHO:
        server, path = start(who, ["-v2", "-P"], "ok")
        assert request(path) == b"ok\n"
        wait_log(server, 6)
        logs[who] = log_lines(server)
    assert logs["ours"] == logs["s6"] == [
        "D: info: starting", "D: info: status: 0/40", "D: info: allow ?:? pid P count ?/40",
        "D: info: status: 1/40", "D: info: end pid P uid ? exitcode 0", "D: info: status: 0/40"]


# -- child descriptors and signals --------------------------------------------------------------
def child_state(out: bytes) -> Tuple[Dict[int, Tuple[str, str]], Dict[str, str]]:
    fds: Dict[int, Tuple[str, str]] = {}
    status: Dict[str, str] = {}
    for line in out.decode().splitlines():
        if line.startswith("fd "):
            _, n, target, flags = line.split(" ", 3)
            fds[int(n)] = (target, flags)
        else:
            k, v = line.split(":", 1)
            status[k] = " ".join(v.split())
    return fds, status


@pytest.fixture
def extra_fds() -> Iterator[Tuple[int, int]]:
    """Two fds (50, 51) the test process opens so that the server inherits them."""
    opened = []
    for n in (50, 51):
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, n)
        os.close(fd)
        opened.append(n)
    yield (50, 51)
    for n in opened:
        os.close(n)


@pytest.mark.parametrize("who", WHO)
def test_child_descriptors(who: str, start: Start, extra_fds: Tuple[int, int]) -> None:
    """fd 0 and 1: one blocking socket (flags 02); fd 2 inherited; s6 leaks inherited fds, we do not."""
    server, path = start(who, [], "state", pass_fds=extra_fds)
    listening = os.readlink(f"/proc/{server.proc.pid}/fd/0")
    fds, status = child_state(request(path))
    assert fds[0][0].startswith("socket:[") and fds[0] == fds[1] and fds[0][1] == "02"
    assert fds[0][0] != listening
    assert fds[2][0] == server.stderr_path
    leaked = sorted(set(fds) - {0, 1, 2})
    assert leaked == ([] if who == "ours" else list(extra_fds))
    assert status["SigBlk"] == "0000000000000000"
    assert ignored(who, status) == 0


#: glibc's posix_spawn leaves its two internal signals (32, 33) at SIG_IGN in the new program.
GLIBC_INTERNAL_SIGNALS = (1 << 31) | (1 << 32)


def ignored(who: str, status: Dict[str, str]) -> int:
    """The child's ignored-signal mask minus glibc's internal signals.

    Ours spawns with glibc's posix_spawn, which leaves them ignored (documented). No program can
    change them, so s6's children inherit the test run's: ignored too when the run was started
    through posix_spawn (GNU make 4.3 starts recipes that way).
    """
    mask = int(status["SigIgn"], 16)
    if who == "ours":
        assert mask & GLIBC_INTERNAL_SIGNALS in (0, GLIBC_INTERNAL_SIGNALS)
    return mask & ~GLIBC_INTERNAL_SIGNALS


def _ignore_pipe_and_int() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)


@pytest.mark.parametrize("who", WHO)
def test_child_signal_dispositions(who: str, start: Start) -> None:
    """Started with SIGPIPE and SIGINT ignored: the child gets SIGPIPE default, SIGINT stays ignored."""
    server, path = start(who, [], "state", restore_signals=False, preexec_fn=_ignore_pipe_and_int)
    _, status = child_state(request(path))
    assert status["SigBlk"] == "0000000000000000"
    assert ignored(who, status) == 1 << (signal.SIGINT - 1)


# -- limits -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_maxconn_makes_clients_wait(who: str, start: Start, clients: Callable[..., Client]) -> None:
    """-c 1: the second client is connected but served only after the first child exits."""
    server, path = start(who, ["-c", "1"], "hold")
    first = clients(path)
    first_pid = first.pid()
    second = clients(path)  # connect succeeds: the client waits in the backlog
    assert second.silent_for(0.5)
    first.close()
    second_pid = second.pid()
    assert second_pid != first_pid
    second.send(b"still here\n")
    assert second.line() == b"still here"


@pytest.mark.parametrize("who", WHO)
def test_localmaxconn_accepts_and_closes(who: str, start: Start, clients: Callable[..., Client]) -> None:
    """-C 1 -c 2 at -v0: the next clients of the same uid read EOF; a deny line each, even at -v0."""
    server, path = start(who, ["-v0", "-C", "1", "-c", "2"], "hold")
    first = clients(path)
    first.pid()
    assert request(path) == b""
    assert request(path) == b""
    deny = f"D: info: deny {UID}:{GID} count 1/1: Success"
    assert wait_log(server, 2) == [deny, deny]
    first.send(b"x\n")
    assert first.line() == b"x"


@pytest.mark.parametrize("who", WHO)
def test_maxconn_capped_as_the_installed_s6(who: str, start: Start) -> None:
    """-c 20000 is clamped to 1000 by s6 2.11, to 16384 by 2.12+."""
    server, _ = start(who, ["-v2", "-c", "20000"], "ok")
    ceiling = installed_s6().absolute_maxconn
    assert wait_log(server, 2)[:2] == ["D: info: starting", f"D: info: status: 0/{ceiling}"]


@pytest.mark.parametrize("who", WHO)
def test_direct_localmaxconn_zero_denies_everything(who: str, start: Start) -> None:
    server, path = start(who, ["-v0", "-C", "0"], "ok")
    assert request(path) == b""
    assert wait_log(server, 1) == [f"D: info: deny {UID}:{GID} count 0/0: Success"]


# -- signals ------------------------------------------------------------------------------------------
SIGNAL_LINES: Dict[int, List[str]] = {
    signal.SIGTERM: ["D: info: received SIGTERM, quitting", "D: info: exiting"],
    signal.SIGHUP: ["D: info: received SIGHUP, sending SIGTERM+SIGCONT to all connections",
                    f"D: info: end pid P uid {UID} exitcode 0", "D: info: status: 0/40"],
    signal.SIGQUIT: ["D: info: received SIGQUIT, sending SIGTERM+SIGCONT to all connections and quitting",
                     "D: info: exiting"],
    signal.SIGABRT: ["D: info: received SIGABRT, sending SIGKILL to all connections and quitting",
                     "D: info: exiting"],
}


@pytest.mark.parametrize("sig", list(SIGNAL_LINES), ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("who", WHO)
def test_signals(who: str, sig: int, start: Start, clients: Callable[..., Client]) -> None:
    """TERM: child survives; HUP: child TERMed, server stays; QUIT: child TERMed, exit 0; ABRT: SIGKILL."""
    server, path = start(who, ["-v2"], "hold")
    child = clients(path)
    child_pid = child.pid()
    server.signal(sig)
    if sig == signal.SIGHUP:
        assert child.rest() == b"TERM\n"
        wait_log(server, 4 + 3)
        assert server.proc.poll() is None
        assert clients(path).pid() != child_pid  # still serving
    else:
        assert server.wait(10) == 0
        if sig == signal.SIGTERM:
            child.send(b"alive?\n")
            assert child.line() == b"alive?"  # the child kept running with its connection
        elif sig == signal.SIGQUIT:
            assert child.rest() == b"TERM\n"
        else:
            assert child.rest() == b""  # SIGKILL: no chance to write "TERM"
            wait_until(lambda: _gone_or_zombie(child_pid))
    lines = log_lines(server)
    assert lines[:4] == ["D: info: starting", "D: info: status: 0/40",
                         f"D: info: allow {UID}:{GID} pid P count 1/40", "D: info: status: 1/40"]
    if sig in (signal.SIGQUIT, signal.SIGABRT):
        # Both may or may not reap the killed child before exiting (s6 drains its signalfd).
        reaping = ("D: info: end pid", "D: info: status: 0/")
        lines = lines[:4] + [x for x in lines[4:] if not x.startswith(reaping)]
    assert lines[4:4 + len(SIGNAL_LINES[sig])] == SIGNAL_LINES[sig]


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# -- log lines at every verbosity ---------------------------------------------------------------------
def scripted_log(start: Start, clients: Callable[..., Client], who: str, verbosity: int) -> List[str]:
    """-C 1 -c 2: a child exiting 3, a denied client, a child dying of SIGSEGV, then SIGTERM."""
    server, path = start(who, [f"-v{verbosity}", "-C", "1", "-c", "2"], "cmd")
    first = clients(path)
    pid = first.pid()
    assert request(path) == b""  # denied: same uid, -C 1
    first.send(b"exit 3\n")
    assert first.rest() == b""
    wait_until(reaped(server, pid))
    second = clients(path)
    pid = second.pid()
    second.send(b"segv\n")
    assert second.rest() == b""
    wait_until(reaped(server, pid))
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    return log_lines(server)


EXPECTED_V2 = [
    "D: info: starting", "D: info: status: 0/2",
    f"D: info: allow {UID}:{GID} pid P count 1/1", "D: info: status: 1/2",
    f"D: info: deny {UID}:{GID} count 1/1: Success",
    f"D: info: end pid P uid {UID} exitcode 3", "D: info: status: 0/2",
    f"D: info: allow {UID}:{GID} pid P count 1/1", "D: info: status: 1/2",
    f"D: info: end pid P uid {UID} signal 11", "D: info: status: 0/2",
    "D: info: received SIGTERM, quitting", "D: info: exiting",
]


@pytest.mark.parametrize("verbosity", [0, 1, 2])
def test_log_lines_equal_s6(verbosity: int, start: Start, clients: Callable[..., Client]) -> None:
    logs = {who: scripted_log(start, clients, who, verbosity) for who in WHO}
    assert logs["ours"] == logs["s6"]
    expected = EXPECTED_V2 if verbosity == 2 else [line for line in EXPECTED_V2 if " deny " in line]
    assert logs["ours"] == expected


# -- a program that cannot be executed ------------------------------------------------------------
@pytest.mark.parametrize("who", WHO)
def test_nonexistent_program(who: str, start: Start) -> None:
    """The client reads EOF, the exec failure is logged, the daemon keeps serving."""
    server, path = start(who, ["-v2"], prog=["nope"])
    assert request(path) == b""
    assert request(path) == b""
    lines = _nonexistent_program_log(who, server, installed_s6())
    assert lines[:2] == ["D: info: starting", "D: info: status: 0/40"]
    assert server.proc.poll() is None


def _nonexistent_program_log(who: str, server: RunningServer, release: S6Release) -> List[str]:
    """The log after two connections to a daemon whose program is ``nope``, as *release* writes it."""
    if release.spawn_failure_in_daemon:  # s6 2.12+ (posix_spawn): the daemon's warning, no child
        warning = "D: warning: unable to spawn nope: No such file or directory"
        lines = wait_log(server, 4)
        assert lines == ["D: info: starting", "D: info: status: 0/40", warning, warning]
        return lines
    fatal = "C: fatal: unable to exec nope: No such file or directory"
    if who == "ours":  # posix_spawn reports the failure in the parent: no child, no allow/end lines
        lines = wait_log(server, 4)
        assert lines == ["D: info: starting", "D: info: status: 0/40", fatal, fatal]
        return lines
    # s6 2.11: a forked child prints the line and exits 127 (the two connections may overlap)
    end = f"D: info: end pid P uid {UID} exitcode 127"
    lines = wait_until(lambda: (lambda x: x if x.count(end) == 2 and x[-1] == "D: info: status: 0/40"
                                else None)(log_lines(server)))
    assert len(lines) == 12 and lines.count(fatal) == 2
    assert len([x for x in lines if x.startswith(f"D: info: allow {UID}:{GID} pid P count ")]) == 2
    return lines


def test_exec_failure_recovers_when_program_appears(start: Start, sockdir: str, handler: str) -> None:
    """The program's path is re-resolved after a failure: installing it later makes the daemon serve."""
    prog = os.path.join(sockdir, "later")
    server, path = start("ours", [], prog=[prog, "ok"])
    assert request(path) == b""
    os.symlink(handler, prog)
    assert request(path) == b"ok\n"
    if installed_s6().spawn_failure_in_daemon:
        assert log_lines(server) == [f"D: warning: unable to spawn {prog}: No such file or directory"]
    else:
        assert log_lines(server) == [f"C: fatal: unable to exec {prog}: No such file or directory"]


# -- the s6 line: our default (s6 2.12+) and S6IPC_S6=2.11, whatever s6 is installed ----------------
LINES = {"default": (None, DEFAULT), "2.11": ("2.11", S6_2_11), "2.11.3.2": ("2.11.3.2", S6_2_11),
         "2.13": ("2.13", DEFAULT)}


def _line_env(setting: Optional[str]) -> Dict[str, str]:
    return dict(BASE_ENV) if setting is None else dict(BASE_ENV, S6IPC_S6=setting)


@pytest.mark.parametrize("line", list(LINES))
def test_our_lines_connnum_ceiling_and_spawn_failure(line: str, server_factory: Callable[..., RunningServer],
                                                     sockdir: str) -> None:
    """IPCCONNNUM for three connections of one uid, the -c ceiling and the log of a program that
    cannot be executed, as the chosen line's s6 gives them (s6 2.11.3.2: 1 2 3, 1000, a child's
    ``unable to exec``; 2.12+: 0 1 2, 16384, the daemon's ``unable to spawn``)."""
    setting, release = LINES[line]
    env = _line_env(setting)
    path = os.path.join(sockdir, "held")
    hold = ["sh", "-c", 'echo "$IPCCONNNUM"; exec cat']
    server = server_factory(daemon_argv("ours", path, ["-1", "-v2", "-c", "20000"], hold), env=env)
    held = [Client(path) for _ in range(3)]
    try:
        assert [c.line() for c in held] == [str(release.connnum(n)).encode() for n in range(3)]
    finally:
        for c in held:
            c.close()
    assert log_lines(server)[:2] == ["D: info: starting", f"D: info: status: 0/{release.absolute_maxconn}"]
    wait_until(lambda: f"D: info: allow {UID}:{GID} pid P count 3/40" in log_lines(server))
    path = os.path.join(sockdir, "nope")
    server = server_factory(daemon_argv("ours", path, ["-1", "-v2"], ["nope"]), env=env)
    assert request(path) == b"" and request(path) == b""
    _nonexistent_program_log("ours", server, release)


def test_a_bad_s6_line_is_refused(sockdir: str) -> None:
    """An S6IPC_S6 that names no line: one line, exit 100, before serving."""
    path = os.path.join(sockdir, "bad")
    got = run(daemon_argv("ours", path, ["-1"], ["true"]), env=dict(BASE_ENV, S6IPC_S6="2.x"))
    assert got.returncode == 100
    assert got.stderr.decode().endswith("ipcserverd: fatal: invalid $S6IPC_S6: 2.x (2.11 for s6 2.11's "
                                         "behaviour, 2.12 to 2.15 for the newer one)\n")


def test_sigint_kills_like_s6(start: Start) -> None:
    """Signals other than the five handled ones keep their default action (CPython's SIGINT handler
    is removed), as in s6."""
    for who in WHO:
        server, _ = start(who, [], "ok")
        server.signal(signal.SIGINT)
        assert server.wait(10) == -signal.SIGINT


@pytest.mark.parametrize("suffix", [pytest.param(b"\0abstract\xff\x01", id="abstract"),
                                    pytest.param(b"c\xff\x01\x1b[2J\n", id="bytes"),
                                    pytest.param(b"L", id="longest")])
def test_env_client_path_of_any_bytes_equals_s6(start: Start, sockdir: str, suffix: bytes) -> None:
    """IPCREMOTEPATH is a C string of the client's bound address, bytes as they are: an abstract
    name (leading NUL) gives an empty value, a path of invalid UTF-8 and control characters passes
    as it is, the longest path (107 bytes) whole — exactly what s6-ipcserverd gives."""
    if suffix.startswith(b"\0"):
        bind = suffix
    elif suffix == b"L":
        base = os.fsencode(sockdir) + b"/"
        bind = base + b"L" * (107 - len(base))  # what Python binds: sun_path with its NUL
    else:
        bind = os.fsencode(sockdir) + b"/" + suffix
    got = {}
    for who in WHO:
        _, path = start(who, [], prog=["/usr/bin/env", "-0"])
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.bind(bind)
            s.connect(path)
            s.shutdown(socket.SHUT_WR)
            data = read_all(s)
        if not bind.startswith(b"\0"):
            os.unlink(bind)
        env = dict(entry.split(b"=", 1) for entry in data.split(b"\0") if b"=" in entry)
        got[who] = env[b"IPCREMOTEPATH"]
    assert got["ours"] == got["s6"]
    assert got["ours"] == (b"" if bind.startswith(b"\0") else bind)
