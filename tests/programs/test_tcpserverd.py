"""tcpserver4d, tcpserver6d, tcpserverd: the accept loop with TCP peers, as s6-tcpserver4d/6d 2.5.1.3.

Facts tested (observed on the real 2.5.1.3 binaries, written down in docs/tcpserverd.md): the
``-1`` line is the port; 4d logs it after ``starting``/``status``, 6d before; peers are named
``IP:PORT`` (4d) or ``IP port PORT`` (6d); deny lines at every verbosity, ending ``: Success``;
``TCPCONNNUM`` counts the other live connections from the client IP (s6-networking 2.6+, our
default line; 2.5.1.3 counted this one too: ``S6IPC_S6=2.11``); IPv4-mapped clients show in hex.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

import pytest

from tests.support.processes import (
    needs_reachable_interpreter,
    nobody_ids,
    ours,
    read_all,
    requires_root,
    run,
    wait_until,
)
from tests.support.tcp import TcpServer, connect, tcp_request

CLEAN_ENV = {"PATH": "/usr/bin:/bin"}
HOLD = ["sh", "-c", 'echo "$TCPCONNNUM $TCPREMOTEIP"; exec cat']  # answers, then lives until EOF


def listener(family: int = socket.AF_INET, host: str = "127.0.0.1", v6only: bool = True,
             kind: int = socket.SOCK_STREAM, listen: bool = True) -> socket.socket:
    s = socket.socket(family, kind)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    s.bind((host, 0))
    if listen:
        s.listen(64)
    return s


def daemon(servers: List[TcpServer], name: str, args: List[str], sock: socket.socket,
           env: Optional[Dict[str, str]] = None, **kw: object) -> TcpServer:
    srv = TcpServer(ours(name) + args, stdin=sock.fileno(), env=CLEAN_ENV if env is None else env,
                    **kw)  # type: ignore[arg-type]
    servers.append(srv)
    return srv


def normalise(text: str) -> List[str]:
    text = re.sub(r"\bpid \d+", "pid P", text)
    text = re.sub(r"(127\.0\.0\.\d+:|port )\d+", r"\1N", text)
    return text.splitlines()


@pytest.mark.parametrize("name,host", [("tcpserver4d", "127.0.0.1"), ("tcpserver6d", "::1"),
                                       ("tcpserverd", "127.0.0.1"), ("tcpserverd", "::1")])
def test_verbose_log_sequence(servers: List[TcpServer], name: str, host: str) -> None:
    """What s6-tcpserverd logs at -v2 (starting, a status line after each change, allow with the
    per-IP count, end with the exit code, SIGTERM, exiting), with the port line where 4d and 6d put
    it (one file for both)."""
    v6 = ":" in host
    sock = listener(socket.AF_INET6 if v6 else socket.AF_INET, host)
    port = sock.getsockname()[1]
    srv = daemon(servers, name, ["-v2", "-1", "-c", "20000", "sh", "-c", "exit 3"], sock, merged=True)
    wait_until(lambda: "status: 0/16384" in srv.log())  # -c's ceiling since s6-networking 2.6
    assert tcp_request(port, host=host) == b""
    wait_until(lambda: srv.log().count("status:") == 3)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait() == 0
    peer = f"{host} port N" if v6 else f"{host}:N"
    d = f"{name}: info: "
    start = [f"{d}starting", f"{d}status: 0/16384"]
    head = [str(port), *start] if v6 else [*start, str(port)]
    assert normalise(srv.log()) == head + [
        f"{d}allow {peer} pid P count 1/40", f"{d}status: 1/16384",
        f"{d}end pid P ip {host} exitcode 3", f"{d}status: 0/16384",
        f"{d}received SIGTERM, quitting", f"{d}exiting"]


def test_connnum_per_ip_and_deny_at_v0(servers: List[TcpServer]) -> None:
    sock = listener()
    port = sock.getsockname()[1]
    srv = daemon(servers, "tcpserver4d", ["-v0", "-1", "-C", "2", *HOLD], sock)
    a = connect(port)
    assert a.recv(100) == b"0 127.0.0.1\n"
    b = connect(port)
    assert b.recv(100) == b"1 127.0.0.1\n"
    c = connect(port, source="127.0.0.2")
    assert c.recv(100) == b"0 127.0.0.2\n"
    d = connect(port)
    assert read_all(d) == b""  # denied: closed at once, no child
    assert normalise(srv.log()) == ["tcpserver4d: info: deny 127.0.0.1:N count 2/2: Success"]
    for s in (a, b, c, d):
        s.close()
    # once the children saw EOF and exited, the count per IP starts again from 0 (until then a
    # request may still be denied: closed at once, even before our half-close)
    def served_as_first() -> bool:
        try:
            return tcp_request(port, b"x") == b"0 127.0.0.1\nx"
        except OSError:
            return False
    wait_until(served_as_first, timeout=10)


def test_maxconn_queues_in_the_backlog(servers: List[TcpServer]) -> None:
    sock = listener()
    port = sock.getsockname()[1]
    daemon(servers, "tcpserver4d", ["-1", "-c", "1", *HOLD], sock)
    a = connect(port)
    assert a.recv(100) == b"0 127.0.0.1\n"
    b = connect(port)  # connect succeeds (backlog); not served while a lives
    b.settimeout(0.3)
    with pytest.raises(socket.timeout):
        b.recv(100)
    a.close()
    b.settimeout(5)
    assert b.recv(100) == b"0 127.0.0.1\n"
    b.close()


def test_direct_C0_denies_everyone(servers: List[TcpServer]) -> None:
    sock = listener()
    srv = daemon(servers, "tcpserver4d", ["-1", "-C", "0", "echo", "no"], sock)
    assert tcp_request(sock.getsockname()[1]) == b""
    assert normalise(srv.log()) == ["tcpserver4d: info: deny 127.0.0.1:N count 0/0: Success"]


@pytest.mark.parametrize("name", ["tcpserver6d", "tcpserverd"])
def test_ipv4_mapped_clients_on_a_dual_stack_socket(servers: List[TcpServer], name: str) -> None:
    """Dual-stack (V6ONLY 0, as systemd's ListenStream=PORT): IPv4 clients are ::ffff:7f00:1, hex form."""
    sock = listener(socket.AF_INET6, "::", v6only=False)
    port = sock.getsockname()[1]
    srv = daemon(servers, name, ["-v2", "-1", *HOLD], sock)
    a = connect(port, "127.0.0.1")
    assert a.recv(100) == b"0 ::ffff:7f00:1\n"
    b = connect(port, "::1")
    assert b.recv(100) == b"0 ::1\n"
    c = connect(port, "127.0.0.1")
    assert c.recv(100) == b"1 ::ffff:7f00:1\n"
    for s in (a, b, c):
        s.close()
    assert f"{name}: info: allow ::ffff:7f00:1 port " in srv.log()


@pytest.mark.parametrize(("line", "expected"), [
    (None, "tcpserver4d: warning: unable to spawn /nonexistent/prog: No such file or directory\n"),
    ("2.11", "tcpserver4d (child): fatal: unable to exec /nonexistent/prog: No such file or directory\n")])
def test_child_exec_failure(servers: List[TcpServer], line: Optional[str], expected: str) -> None:
    """s6-networking 2.6+'s warning of the daemon (at -v1), or with S6IPC_S6=2.11 the child line of
    2.5 (at every verbosity); either way there is no child (posix_spawn fails in the daemon), so no
    allow/end lines (docs/tcpserverd.md)."""
    sock = listener()
    env = None if line is None else dict(CLEAN_ENV, S6IPC_S6=line)
    srv = daemon(servers, "tcpserver4d", ["-v1" if line is None else "-v0", "-1", "/nonexistent/prog"], sock,
                 env=env)
    assert tcp_request(sock.getsockname()[1]) == b""
    wait_until(lambda: srv.log())
    assert srv.log() == expected


@pytest.mark.parametrize("sig,child_signal,exits", [
    (signal.SIGHUP, signal.SIGTERM, False),
    (signal.SIGQUIT, signal.SIGTERM, True),
    (signal.SIGABRT, signal.SIGKILL, True),
])
def test_signals(servers: List[TcpServer], sig: int, child_signal: int, exits: bool) -> None:
    sock = listener()
    srv = daemon(servers, "tcpserver4d", ["-v2", "-1", "sh", "-c", "echo up; exec sleep 30"], sock)
    c = connect(sock.getsockname()[1])
    assert c.recv(10) == b"up\n"
    srv.proc.send_signal(sig)
    if exits:
        assert srv.wait() == 0
    else:
        wait_until(lambda: f"signal {child_signal}" in srv.log())
        assert srv.proc.poll() is None
    assert read_all(c) == b""  # the child died
    c.close()
    text = srv.log()
    name = signal.Signals(sig).name
    assert f"tcpserver4d: info: received {name}, " in text


# --- bad input: one line, s6's exit code, no traceback -----------------------------------------------


def one_line(p: subprocess.CompletedProcess[bytes]) -> str:
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_fd0_not_a_socket_or_closed() -> None:
    p = run(ours("tcpserver4d") + ["true"], stdin=subprocess.DEVNULL)
    assert (p.returncode, one_line(p)) == (100, "tcpserver4d: fatal: stdin is not a socket")
    p = run(["sh", "-c", 'exec "$@" <&-', "sh", *ours("tcpserver6d"), "true"])
    assert (p.returncode, one_line(p)) == (
        111, "tcpserver6d: fatal: unable to fstat stdin: Bad file descriptor")


def test_fd0_unix_udp_or_other_family(tmp_path: object) -> None:
    """s6 serves a Unix socket as 0.0.0.0, spins on a UDP one, and dies `trouble with socket` after
    its readiness line on one that does not listen; ours refuse them at start (111), as ipcserverd."""
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(f"/tmp/s6t-tcpd-{os.getpid()}")
    unix.listen(1)
    udp = listener(kind=socket.SOCK_DGRAM, listen=False)
    v6 = listener(socket.AF_INET6, "::1")
    cases = [
        ("tcpserver4d", unix, "stdin is not an IPv4 socket"),
        ("tcpserverd", unix, "stdin is not an Internet domain socket"),
        ("tcpserver4d", udp, "stdin is not a stream socket"),
        ("tcpserverd", udp, "stdin is not a stream socket"),
        ("tcpserver4d", v6, "stdin is not an IPv4 socket"),
        ("tcpserver6d", listener(), "stdin is not an IPv6 socket"),
        ("tcpserverd", listener(listen=False), "stdin is not a listening socket"),
    ]
    try:
        for name, sock, message in cases:
            p = run(ours(name) + ["-1", "true"], stdin=sock.fileno())
            assert (p.returncode, one_line(p), p.stdout) == (111, f"{name}: fatal: {message}", b"")
    finally:
        os.unlink(f"/tmp/s6t-tcpd-{os.getpid()}")


def test_minus_1_with_stdout_closed() -> None:
    sock = listener()
    p = run(["sh", "-c", 'exec "$@" >&-', "sh", *ours("tcpserver4d"), "-1", "true"], stdin=sock.fileno())
    assert (p.returncode, one_line(p)) == (
        100, "tcpserver4d: fatal: called with option -1 but stdout said: Bad file descriptor")


def test_binder_address_in_use_and_not_available() -> None:
    busy = listener()
    port = busy.getsockname()[1]
    p = run(ours("tcpserver4-socketbinder") + ["127.0.0.1", str(port), "true"])
    assert (p.returncode, one_line(p)) == (
        111, f"tcpserver4-socketbinder: fatal: unable to bind to 127.0.0.1:{port} : Address already in use")
    p = run(ours("tcpserver") + ["2001:db8::1", "0", "true"])
    assert (p.returncode, one_line(p)) == (
        111,
        "tcpserver6-socketbinder: fatal: unable to bind to 2001:db8::1:0 : Cannot assign requested address")
    p = run(ours("tcpserver6-socketbinder") + ["::ffff:7f00:1", "0", "true"])
    assert (p.returncode, one_line(p)) == (
        111, "tcpserver6-socketbinder: fatal: unable to bind to ::ffff:7f00:1:0 : Invalid argument")
    p = run(ours("tcpserver-socketbinder") + ["-m", "127.0.0.1", "0", "true"])
    assert (p.returncode, one_line(p)) == (
        111, "tcpserver-socketbinder: fatal: unable to listen to 127.0.0.1:0 : Operation not supported")


@requires_root
@needs_reachable_interpreter
def test_privileged_port_as_nobody() -> None:
    uid, gid = nobody_ids()
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all"]
    p = run(setpriv + ours("tcpserver") + ["127.0.0.1", "80", "true"])
    assert (p.returncode, one_line(p)) == (
        111, "tcpserver4-socketbinder: fatal: unable to bind to 127.0.0.1:80 : Permission denied")


def test_lenient_address_parsing_binds_the_prefix() -> None:
    """skalibs' prefix parse (ip46_scan reads an address at the start of the text, ignores the rest):
    ``127.0.0.1:80`` is 127.0.0.1, as s6 does."""
    show = "import socket; print(socket.socket(fileno=0).getsockname()[0])"
    for address, bound in (("127.0.0.1:80", "127.0.0.1"), ("127.0.0.257", "127.0.0.1"), ("::1x", "::1")):
        p = run(ours("tcpserver-socketbinder") + ["-b0", address, "0", sys.executable, "-c", show])
        assert (p.returncode, p.stdout.decode().strip()) == (0, bound), p.stderr
    p = run(ours("tcpserver-socketbinder") + ["::ffff:127.0.0.1", "0", "true"])  # = ::ffff:127 (0.0.1.39)
    assert (p.returncode, one_line(p)) == (111, "tcpserver-socketbinder: fatal: unable to bind to "
                                                "::ffff:127.0.0.1:0 : Cannot assign requested address")


def test_reuse_default_rebinds_over_time_wait(servers: List[TcpServer]) -> None:
    """-d (the default: SO_REUSEADDR) binds again right after served connections (TIME_WAIT); -D (no
    SO_REUSEADDR) fails with EADDRINUSE, as s6-tcpserver-socketbinder does."""
    srv = TcpServer(ours("tcpserver") + ["-1", "127.0.0.1", "0", "echo", "x"])
    servers.append(srv)
    port = srv.port
    with connect(port) as c:  # the handler exits first: the server's side goes to TIME_WAIT
        assert read_all(c) == b"x\n"
    time.sleep(0.1)
    srv.stop()
    servers.remove(srv)
    p = run(ours("tcpserver4-socketbinder") + ["-D", "127.0.0.1", str(port), "true"])
    assert p.returncode == 111 and b"Address already in use" in p.stderr
    p = run(ours("tcpserver4-socketbinder") + ["127.0.0.1", str(port), "true"])
    assert p.returncode == 0, p.stderr
