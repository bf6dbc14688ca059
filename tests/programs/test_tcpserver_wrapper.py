"""tcpserver, tcpserver4, tcpserver6: the chain they build is s6-networking 2.5.1.3's, and it runs.

s6-networking is not packaged by Debian, so the expected chains are the ones observed on the real
2.5.1.3 binaries with strace (written out below, absolute ``/usr/bin/s6-X`` paths as that build
had them); our ``build_chain`` must give the same argv word for word, with each ``/usr/bin/s6-X``
replaced by our stage words (``chain.stage``).
"""

from __future__ import annotations

import os
import socket
from typing import List, Sequence

import pytest

from s6ipc.chain.run import stage
from s6ipc.programs import tcpserver
from tests.support.processes import nobody_ids, ours, requires_root, run
from tests.support.tcp import TcpServer, env_items, tcp_request

S6 = "/usr/bin/s6-"
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


def our_words(s6_argv: Sequence[str], style: str = "") -> List[str]:
    result: List[str] = []
    for word in s6_argv:
        result += stage(word[len(S6):], style) if word.startswith(S6) else [word]
    return result


def our_chain(args: Sequence[str], family: int = 0, style: str = "") -> List[str]:
    o, rest = tcpserver.parse(list(args), family)
    return tcpserver.build_chain(o, rest[0], rest[1], rest[2:], style, wrapper_verbosity=not family)


B4, B6, D4, D6, A = (S6 + "tcpserver4-socketbinder", S6 + "tcpserver6-socketbinder", S6 + "tcpserver4d",
                     S6 + "tcpserver6d", S6 + "applyuidgid")
T = ["/bin/true"]

# (wrapper family: 0 = s6-tcpserver, 4, 6), arguments, the chain s6 execs
OBSERVED = [
    (0, ["127.0.0.1", "0", *T], [B4, "--", "127.0.0.1", "0", D4, "--", *T]),
    (0, ["-q", "-D", "-1", "-c", "5", "-C", "3", "-b", "0", "::1", "0", *T],
     [B6, "-D", "-b", "0", "--", "::1", "0", D6, "-v0", "-1", "-c", "5", "-C", "3", "--", *T]),
    (0, ["-v", "-4", "-u", "1000", "-g", "100", "-G", "5,6:7", "127.0.0.1", "0", *T],
     [B4, "--", "127.0.0.1", "0", A, "-u", "1000", "-g", "100", "-G", "5,6,7", "--", D4, "-v2", "--", *T]),
    (0, ["-U", "-c", "0", "-C", "0", "-b", "7", "127.0.0.1", "0", *T],
     [B4, "-b", "7", "--", "127.0.0.1", "0", A, "-Uz", "--", D4, "-c", "1", "-C", "1", "--", *T]),
    (0, ["-U", "-u", "5", "127.0.0.1", "0", *T],
     [B4, "--", "127.0.0.1", "0", A, "-Uz", "-u", "5", "--", D4, "--", *T]),
    (0, ["-u", "5", "-U", "127.0.0.1", "0", *T], [B4, "--", "127.0.0.1", "0", A, "-Uz", "--", D4, "--", *T]),
    (0, ["-G", "", "127.0.0.1", "0", *T], [B4, "--", "127.0.0.1", "0", A, "-G", "", "--", D4, "--", *T]),
    (0, ["-u", "0", "-g", "0", "127.0.0.1", "0", *T], [B4, "--", "127.0.0.1", "0", D4, "--", *T]),
    (0, ["-b", "99999", "-c", "99999", "127.0.0.1", "0", *T],
     [B4, "-b", "99999", "--", "127.0.0.1", "0", D4, "-c", "99999", "--", *T]),
    (0, ["-6", "127.0.0.1", "0", *T], [B6, "--", "127.0.0.1", "0", D6, "--", *T]),
    (0, ["-4", "::1", "0", *T], [B4, "--", "::1", "0", D4, "--", *T]),
    (4, ["-v", "3", "-b", "0", "-c", "0", "-C", "0", "-1", "-D", "-u", "7", "127.0.0.1", "0", *T],
     [B4, "-D", "-b", "1", "--", "127.0.0.1", "0", A, "-u", "7", "--", D4, "-v", "3", "-1", "-c", "1",
      "-C", "1", "--", *T]),
    (6, ["-v", "1", "::1", "0", "prog", "-x", "--", "arg"],
     [B6, "--", "::1", "0", D6, "--", "prog", "-x", "--", "arg"]),
    (6, ["127.0.0.1", "0", *T], [B6, "--", "127.0.0.1", "0", D6, "--", *T]),
]


def _ids(x: object) -> str:
    return " ".join(x)[:50] if isinstance(x, list) else str(x)


@pytest.mark.parametrize("family,args,expected", OBSERVED, ids=_ids)
def test_chain_is_s6_tcpservers(family: int, args: List[str], expected: List[str]) -> None:
    assert our_chain(args, family) == our_words(expected)
    assert our_chain(args, family, "s6-") == our_words(expected, "s6-")


@pytest.mark.parametrize(
    "name,args",
    [
        ("tcpserver", []),
        ("tcpserver", ["127.0.0.1", "0"]),
        ("tcpserver", ["-x", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["-a", "0700", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["-P", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["-p", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["-c", "+5", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["-b", "-1", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["-u", "4294967296", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["-G", "abc", "127.0.0.1", "0", "true"]),
        ("tcpserver", ["localhost", "0", "true"]),
        ("tcpserver", ["1.2.3", "0", "true"]),
        ("tcpserver", ["127.0.0.1", "65536", "true"]),  # from the binder
        ("tcpserver", ["127.0.0.1", "x", "true"]),
        ("tcpserver", ["-6", "127.0.0.1", "0", "true"]),  # the IPv6 binder rejects it
        ("tcpserver4", ["-q", "127.0.0.1", "0", "true"]),
        ("tcpserver4", ["-4", "127.0.0.1", "0", "true"]),
        ("tcpserver4", ["::1", "0", "true"]),
        ("tcpserver6", ["127.0.0.1", "0", "true"]),
        ("tcpserver-socketbinder", ["127.0.0.1", "-1", "true"]),
        ("tcpserver4-socketbinder", ["127.0.0.1", "0"]),
        ("tcpserver6-socketbinder", ["[::1]", "0", "true"]),
        ("tcpserverd", []),
        ("tcpserver4d", ["-P", "true"]),
        ("tcpserver6d", [""]),
    ],
    ids=_ids,
)
def test_usage_errors(name: str, args: List[str]) -> None:
    p = run(ours(name) + args)
    assert (p.returncode, p.stdout) == (100, b""), p.stderr
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and ": usage: " in lines[0], lines


def test_usage_lines_are_s6s() -> None:
    privileges = "[ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] ip port prog..."
    expected = {
        "tcpserver": "[ -q | -Q | -v ] [ -4 | -6 ] [ -d | -D ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] "
                     f"[ -b backlog ] {privileges}",
        "tcpserver4": "[ -v verbosity ] [ -d | -D ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] "
                      f"[ -b backlog ] {privileges}",
        "tcpserver6-socketbinder": "[ -d | -D ] [ -b backlog ] [ -M | -m ] [ -B ] ip6 port prog...",
        "tcpserver4d": "[ -v verbosity ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] prog...",
    }
    for name, line in expected.items():
        assert run(ours(name)).stderr.decode() == f"{name}: usage: {name} {line}\n"


# --- the chain runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapper,host", [("tcpserver", "127.0.0.1"), ("tcpserver", "::1"),
                                          ("tcpserver4", "127.0.0.1"), ("tcpserver6", "::1")])
def test_chain_serves_with_s6s_environment(wrapper: str, host: str) -> None:
    """The handler's environment is env_merge of the daemon's four modifs, stale values included."""
    env = {**CLEAN_ENV, "AAA": "1", "TCPCONNNUM": "stale", "TCPLOCALIP": "kept", "ZZZ": "2"}
    srv = TcpServer(ours(wrapper) + ["-1", host, "0", "env"], env=env)
    try:
        items = env_items(tcp_request(srv.port, host=host))
        names = [k for k, _ in items]
        # TCPCONNNUM's slot is taken by the last entry (TCPREMOTEPORT), then it is appended
        assert names == ["PATH", "AAA", "TCPREMOTEPORT", "TCPLOCALIP", "ZZZ",
                         "PROTO", "TCPREMOTEIP", "TCPCONNNUM"]
        values = dict(items)
        assert (values["PROTO"], values["TCPREMOTEIP"], values["TCPCONNNUM"]) == ("TCP", host, "0")
        assert values["TCPLOCALIP"] == "kept"
        assert 0 < int(values["TCPREMOTEPORT"]) < 65536
    finally:
        srv.stop()


def test_b0_kills_the_chain() -> None:
    """s6-tcpserver passes -b 0: the binder does not listen, the daemon dies (111). s6's dies
    ``trouble with socket`` after its -1 line; ours at start, before it (as ipcserverd)."""
    p = run(ours("tcpserver") + ["-1", "-b", "0", "127.0.0.1", "0", "true"])
    assert (p.returncode, p.stdout) == (111, b"")
    assert p.stderr == b"tcpserver4d: fatal: stdin is not a listening socket\n"


def test_tcpserver4_b0_means_backlog_1() -> None:
    srv = TcpServer(ours("tcpserver4") + ["-1", "-b", "0", "127.0.0.1", "0", "echo", "hi"])
    try:
        assert tcp_request(srv.port) == b"hi\n"
        ss = run(["ss", "-ltnH", f"sport = :{srv.port}"]).stdout.decode().split()
        assert ss[2] == "1", ss  # Send-Q of a LISTEN line: the backlog
    finally:
        srv.stop()


def test_log_prefix_follows_the_invoked_name() -> None:
    for word, prefix in (("tcpserver", "tcpserver4d"), ("s6-tcpserver", "s6-tcpserver4d")):
        srv = TcpServer(ours(word) + ["-v", "-1", "127.0.0.1", "0", "true"])
        try:
            assert srv.log().splitlines()[0] == f"{prefix}: info: starting"
        finally:
            srv.stop()


def test_ucspi_tcp_tcpclient_talks_to_our_tcpserver() -> None:
    """djb's tcpclient (fds 6/7) against our chain: data both ways, the server's variables."""
    if not os.access("/usr/bin/tcpclient", os.X_OK):
        pytest.skip("ucspi-tcp is not installed: apt-get install ucspi-tcp")
    srv = TcpServer(ours("tcpserver") + ["-1", "127.0.0.1", "0", "sh", "-c",
                                         'read x; echo "got $x from $TCPREMOTEIP #$TCPCONNNUM"'])
    try:
        p = run(["/usr/bin/tcpclient", "-RHl0", "127.0.0.1", str(srv.port), "sh", "-c",
                 'echo hello >&7; cat <&6; echo "client saw $TCPREMOTEPORT"'])
        assert p.returncode == 0, p.stderr
        lines = p.stdout.decode().splitlines()
        assert lines == ["got hello from 127.0.0.1 #0", f"client saw {srv.port}"]
    finally:
        srv.stop()


def test_make_run_tcp_demo_service() -> None:
    """``make run-tcp``'s command line, on port 0: examples/tcp-whoami answers with the variables."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "Makefile")) as f:
        recipe = ("exec $(S6IPC) tcpserver -v -c 100 $(DEMO_TCP_IP) $(DEMO_TCP_PORT) "
                  "$(CURDIR)/examples/tcp-whoami")
        assert recipe in f.read()
    srv = TcpServer(ours("tcpserver") + ["-1", "-v", "-c", "100", "127.0.0.1", "0",
                                         os.path.join(root, "examples", "tcp-whoami")], env=CLEAN_ENV)
    try:
        reply = tcp_request(srv.port).decode()
        assert reply.startswith("hello 127.0.0.1 port ")
        assert reply.endswith(", TCPCONNNUM 0\n")  # no other connection from 127.0.0.1
    finally:
        srv.stop()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@requires_root
def test_privilege_drop_after_binding_a_privileged_port() -> None:
    """Bind port 1023 as root, then serve as nobody: the applyuidgid stage sits between binder and daemon."""
    uid, gid = nobody_ids()
    port = next(p for p in range(1023, 900, -1) if _free(p))
    drop = ["-u", str(uid), "-g", str(gid), "-G", ""]
    srv = TcpServer(ours("tcpserver") + ["-1", *drop, "127.0.0.1", str(port), "sh", "-c", "id -u; id -g"],
                    env=CLEAN_ENV)
    try:
        assert srv.port == port
        assert tcp_request(port).split() == [str(uid).encode(), str(gid).encode()]
        assert os.stat(f"/proc/{srv.proc.pid}/fd").st_uid == uid  # the daemon itself runs as nobody
    finally:
        srv.stop()
