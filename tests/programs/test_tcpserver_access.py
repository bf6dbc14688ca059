"""tcpserver-access on real loopback TCP connections, written from s6-tcpserver-access 2.5.1.3's behaviour.

s6-networking is not packaged by Debian, so the reference is the behaviour recorded from its
binaries; the real peers that run here are Debian's s6-accessrules-cdb-from-fs (rules cdbs),
ucspi-tcp's tcpserver (a foreign TCP super-server running us), a loopback DNS server and a loopback
ident server run by the tests. Each case runs the program on one accepted connection with the
environment s6-tcpserverd gives (PROTO, TCPREMOTEIP, TCPREMOTEPORT, TCPCONNNUM) and ``env`` as prog,
so the client reads the final environment in order.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Optional

import pytest

from s6ipc.access.cdb import write_cdb
from tests.support.access import make_rules
from tests.support.netpeers import (
    FakeDns,
    FakeIdent,
    Served,
    environ_lines,
    loopback_address,
    read_to_eof,
    serve_one,
)
from tests.support.processes import S6IPC, VENV_PYTHON, run

ACCESS = [S6IPC, "tcpserver-access"]
BASE = {"PATH": "/usr/bin:/bin"}
ENV = ["/usr/bin/env"]
# nothing listens there: DNS queries are refused at once (never the network's resolver)
NO_DNS = {"DNSCACHEIP": "127.53.0.1"}


def access(args: List[str], env: Optional[Dict[str, str]] = None, prog: Optional[List[str]] = None,
           **kw) -> Served:  # type: ignore[no-untyped-def]
    full = dict(BASE)
    full.update(NO_DNS)
    full.update(env or {})
    return serve_one([*ACCESS, *args, *(prog or ENV)], full, **kw)


def lines(err: str) -> List[str]:
    return [re.sub(r"pid \d+", "pid P", line) for line in err.splitlines()]


@pytest.fixture
def rules(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path / "rules")


# -- environment -----------------------------------------------------------------------------

def test_environment_order_and_stale_values() -> None:
    """Spec 4.1: the daemon's four modifs, then LOCALIP, LOCALPORT and three unsets, env_merge order."""
    env = {"AAA": "1", "TCPREMOTEHOST": "stale", "TCPREMOTEINFO": "stale", "TCPLOCALHOST": "stale",
           "ZZZ": "2"}
    full = dict(BASE)
    full.update(env)
    got = serve_one([*ACCESS, "-H", *ENV], full)
    assert got.returncode == 0, got.stderr
    port = got.client[1]
    assert environ_lines(got.received) == [
        "PATH=/usr/bin:/bin", "AAA=1", "TCPCONNNUM=1", f"TCPLOCALPORT={got.server[1]}",
        "TCPLOCALIP=127.0.0.1", "ZZZ=2", "PROTO=TCP", "TCPREMOTEIP=127.0.0.1", f"TCPREMOTEPORT={port}"]
    assert lines(got.stderr) == ["tcpserver-access: info: allow pid P ip 127.0.0.1"]


def test_localname_and_verbosity() -> None:
    got = access(["-v0", "-H", "-l", "me.example"])
    env = environ_lines(got.received)
    assert "TCPLOCALHOST=me.example" in env and not any(e.startswith("TCPREMOTEHOST") for e in env)
    assert got.stderr == ""
    got = access(["-v2", "-H"])
    assert lines(got.stderr) == ["tcpserver-access: warning: invoked without a ruleset!",
                                 "tcpserver-access: info: allow pid P ip 127.0.0.1"]


def test_pid_in_log_is_the_programs() -> None:
    got = access(["-H"], prog=["sh", "-c", "echo $$"])
    assert got.stderr == f"tcpserver-access: info: allow pid {got.received.decode().strip()} ip 127.0.0.1\n"


def test_proto_prefix() -> None:
    got = serve_one([*ACCESS, "-H", *ENV], dict(BASE, PROTO="FOO", FOOREMOTEIP="127.0.0.1",
                                                  FOOREMOTEPORT="5"), tcp_env=False)
    env = environ_lines(got.received)
    assert "FOOLOCALIP=127.0.0.1" in env and not any(e.startswith("TCPLOCALIP") for e in env)


@pytest.mark.parametrize("env,message", [
    ({}, "PROTO not set"),
    ({"PROTO": "TCP"}, "TCPREMOTEIP not set"),
    ({"PROTO": "TCP", "TCPREMOTEIP": "localhost", "TCPREMOTEPORT": "1"}, "invalid $TCPREMOTEIP"),
    ({"PROTO": "TCP", "TCPREMOTEIP": "127.0.0.1"}, "TCPREMOTEPORT not set"),
    ({"PROTO": "TCP", "TCPREMOTEIP": "127.0.0.1", "TCPREMOTEPORT": "65536"}, "invalid $TCPREMOTEPORT"),
    ({"PROTO": "TCP", "TCPREMOTEIP": "::1", "TCPREMOTEPORT": "+1"}, "invalid $TCPREMOTEPORT"),
    ({"PROTO": "", "REMOTEIP": "1.2.3", "REMOTEPORT": "1"}, "invalid $REMOTEIP"),
])
def test_required_environment(env: Dict[str, str], message: str) -> None:
    p = run([*ACCESS, "-H", "true"], env=dict(BASE, **env), stdin=subprocess.DEVNULL)
    assert (p.returncode, p.stderr.decode()) == (100, f"tcpserver-access: fatal: {message}\n")


def test_prefix_parsed_remote_ip_is_logged_canonically() -> None:
    p = run([*ACCESS, "-v2", "-H", "-i", "/nonexistent", "true"], stdin=subprocess.DEVNULL,
            env=dict(BASE, PROTO="TCP", TCPREMOTEIP="::ffff:127.0.0.1", TCPREMOTEPORT="1"))
    assert p.returncode == 1
    assert lines(p.stderr.decode()) == [
        "tcpserver-access: info: deny pid P ip ::ffff:127: No such file or directory"]


def test_stdin_not_a_socket() -> None:
    p = run([*ACCESS, "-H", "true"], stdin=subprocess.DEVNULL,
            env=dict(BASE, PROTO="TCP", TCPREMOTEIP="127.0.0.1", TCPREMOTEPORT="1"))
    assert (p.returncode, p.stderr.decode()) == (
        111, "tcpserver-access: fatal: unable to socket_local: Socket operation on non-socket\n")


@pytest.mark.parametrize("args", [[], ["-H"], ["-H", ""], ["-v", "x", "true"], ["-t", "-1", "true"],
                                  ["-e", "true"], ["-E", "true"]])
def test_usage(args: List[str]) -> None:
    p = run([*ACCESS, *args], env=BASE, stdin=subprocess.DEVNULL)
    assert p.returncode == 100
    assert p.stderr.decode().startswith("tcpserver-access: usage: tcpserver-access [ -v verbosity ]")


def test_exec_failure_after_allow_line() -> None:
    got = access(["-H"], prog=["/nonexistent/prog"])
    assert got.returncode == 127
    assert lines(got.stderr) == ["tcpserver-access: info: allow pid P ip 127.0.0.1",
                                 "tcpserver-access: fatal: unable to exec /nonexistent/prog: "
                                 "No such file or directory"]


def test_nodelay() -> None:
    probe = [VENV_PYTHON, "-c",
             "import socket; s = socket.socket(fileno=1); print(s.getsockopt(6, 1)); s.detach()"]
    assert access(["-H"], prog=probe).received == b"0\n"
    assert access(["-H", "-D"], prog=probe).received == b"1\n"
    assert access(["-H", "-D", "-d"], prog=probe).received == b"0\n"


# -- ip rules ----------------------------------------------------------------------------------

def test_ip4_longest_prefix_deny_and_notfound(rules: str) -> None:
    make_rules(rules, {"ip4/127.0.0.0_8": {"allow": True, "env": {"NET": b"lo\n"}},
                       "ip4/127.0.0.2_32": {"deny": True},
                       "ip4/127.000.0.3_32": {"deny": True}})
    allowed = access(["-v2", "-H", "-i", rules], client_ip="127.0.0.3")
    assert allowed.returncode == 0 and "NET=lo" in environ_lines(allowed.received)
    denied = access(["-v2", "-H", "-i", rules], client_ip="127.0.0.2")
    assert (denied.returncode, denied.received) == (1, b"")
    assert lines(denied.stderr) == ["tcpserver-access: info: deny pid P ip 127.0.0.2: Permission denied"]
    make_rules(rules + "2", {"ip4/10.0.0.0_8": {"allow": True}})
    nothing = access(["-v2", "-H", "-i", rules + "2"])
    assert nothing.returncode == 1
    assert lines(nothing.stderr) == [
        "tcpserver-access: info: deny pid P ip 127.0.0.1: No such file or directory"]
    quiet = access(["-H", "-i", rules], client_ip="127.0.0.2")
    assert (quiet.returncode, quiet.stderr) == (1, "")
    missing = access(["-H", "-i", rules + "-missing"])
    assert missing.returncode == 1


def test_rule_env_first_then_tcp_modifs(rules: str) -> None:
    make_rules(rules, {"ip4/0.0.0.0_0": {"allow": True, "env": {
        "PROTO": b"OVERRIDDEN\n", "TCPLOCALIP": b"9.9.9.9\n", "TCPREMOTEHOST": b"fake\n", "RULE": b"yes\n"}}})
    env = environ_lines(access(["-H", "-i", rules]).received)
    assert "PROTO=OVERRIDDEN" in env and "RULE=yes" in env
    assert "TCPLOCALIP=127.0.0.1" in env and not any(e.startswith("TCPREMOTEHOST") for e in env)


def test_exec_rule_runs_execlineb_c(rules: str) -> None:
    make_rules(rules, {"ip4/127.0.0.1_32": {"allow": True, "exec": b"/usr/bin/env"}})
    got = access(["-H", "-i", rules], prog=["/nonexistent"])
    env = environ_lines(got.received)
    assert got.returncode == 0, got.stderr
    assert "#=0" in env and "0=/usr/lib/execline/bin/execlineb" in env


def test_ipv6_rules_name_the_network() -> None:
    """The difference from s6 2.11.3.2 (docs/tcpserver-access.md): ip6/::_127 matches ::1."""
    root = f"/tmp/s6t-ip6-{os.getpid()}"
    make_rules(root, {"ip6/::_127": {"allow": True, "env": {"SIX": b"127\n"}}, "ip6/::1_128": {}})
    try:
        got = access(["-v2", "-H", "-i", root], family=socket.AF_INET6, listen_ip="::1")
        assert got.returncode == 0, got.stderr
        env = environ_lines(got.received)
        assert "SIX=127" in env and "TCPLOCALIP=::1" in env and "TCPREMOTEIP=::1" in env
    finally:
        subprocess.run(["rm", "-rf", root])


def test_mapped_address_is_looked_up_under_ip6(rules: str) -> None:
    make_rules(rules, {"ip6/::ffff:7f00:0_104": {"allow": True, "env": {"MAPPED": b"1\n"}},
                       "ip4/127.0.0.0_8": {"deny": True}})
    p = run([*ACCESS, "-H", "-i", rules, "true"], stdin=subprocess.DEVNULL,
            env=dict(BASE, PROTO="TCP", TCPREMOTEIP="::ffff:7f00:5", TCPREMOTEPORT="1"))
    # allowed by the ip6 rule, then getsockname on /dev/null fails: the rules were passed
    assert p.returncode == 111 and b"socket_local" in p.stderr


def test_mapped_client_on_a_dual_stack_socket(rules: str, client_ip: str) -> None:
    """An IPv4 client of a V6ONLY=0 socket is ::ffff:a.b.c.d: ip6 rules, mapped TCPLOCALIP, and
    the ident query goes over IPv6 to the mapped address (reaching an IPv4 identd)."""
    make_rules(rules, {"ip6/::ffff:7f00:0_104": {"allow": True, "env": {"MAPPED": b"1\n"}},
                       "ip4/0.0.0.0_0": {"deny": True}})
    identd = _identd(client_ip, " : USERID : UNIX : mapped\n")
    try:
        got = access(["-H", "-r", "-i", rules], family=socket.AF_INET6, listen_ip="::",
                     dual_stack_client=True, client_ip=client_ip)
    finally:
        identd.close()
    assert got.returncode == 0, got.stderr
    env = environ_lines(got.received)
    packed = socket.inet_aton(client_ip)
    mapped = f"::ffff:{int.from_bytes(packed[:2], 'big'):x}:{int.from_bytes(packed[2:], 'big'):x}"
    assert f"TCPREMOTEIP={mapped}" in env and "TCPLOCALIP=::ffff:7f00:1" in env
    assert "MAPPED=1" in env and "TCPREMOTEINFO=mapped" in env


def test_cdb_from_debians_compiler(rules: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    compiler = "/usr/bin/s6-accessrules-cdb-from-fs"
    if not os.access(compiler, os.X_OK):
        pytest.skip("Debian's s6 is not installed (apt-get install s6)")
    make_rules(rules, {"ip4/127.0.0.0_8": {"allow": True, "env": {"FROMCDB": b"yes\n"}},
                       "ip4/127.0.0.2_32": {"deny": True},
                       "ip6/::_127": {"allow": True, "env": {"SIX": b"yes\n"}},
                       "reversedns/example": {"allow": True, "env": {"BYNAME": b"yes\n"}}})
    cdb = str(tmp_path / "rules.cdb")
    assert run([compiler, cdb, rules]).returncode == 0
    got = access(["-H", "-x", cdb])
    assert got.returncode == 0 and "FROMCDB=yes" in environ_lines(got.received)
    assert access(["-H", "-x", cdb], client_ip="127.0.0.2").returncode == 1
    got = access(["-H", "-x", cdb], family=socket.AF_INET6, listen_ip="::1")
    assert "SIX=yes" in environ_lines(got.received)
    # -i and -x: the last one wins
    assert access(["-H", "-x", cdb, "-i", rules + "-none"]).returncode == 1
    assert access(["-H", "-i", rules + "-none", "-x", cdb]).returncode == 0
    dns = FakeDns()
    try:
        dns.add_ptr("127.0.0.2", "host.example.")
        got = access(["-x", cdb], env={"DNSCACHEIP": dns.ip}, client_ip="127.0.0.2")  # ip deny first
        assert got.returncode == 1
        dns.add_ptr("127.1.0.2", "host.example.")
        os.unlink(cdb)
        os.rename(os.path.join(rules, "ip4"), os.path.join(rules, "ip4.off"))
        assert run([compiler, cdb, rules]).returncode == 0
        got = access(["-x", cdb], env={"DNSCACHEIP": dns.ip}, client_ip="127.1.0.2")
        assert got.returncode == 0 and "BYNAME=yes" in environ_lines(got.received)
    finally:
        dns.close()


def test_rules_errors(rules: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    os.makedirs(rules)
    open(os.path.join(rules, "ip4"), "w").close()
    got = access(["-H", "-i", rules])
    assert (got.returncode, got.stderr) == (
        111, f"tcpserver-access: fatal: unable to check fs ruleset for IP in {rules}: Not a directory\n")
    missing = str(tmp_path / "missing.cdb")
    got = access(["-H", "-x", missing])
    assert (got.returncode, got.stderr) == (
        111, f"tcpserver-access: fatal: unable to cdb_init {missing}: No such file or directory\n")
    bad = str(tmp_path / "bad.cdb")
    with open(bad, "wb") as f:
        f.write(b"short")
    got = access(["-H", "-x", bad])
    assert got.returncode == 111 and len(got.stderr.splitlines()) == 1 and "Traceback" not in got.stderr
    damaged = str(tmp_path / "damaged.cdb")
    write_cdb(damaged, [(b"ip4/127.0.0.1_32", b"A\xff\xffjunk")])  # env length past the value
    got = access(["-H", "-x", damaged])
    assert (got.returncode, got.stderr) == (
        111, f"tcpserver-access: fatal: unable to check cdb ruleset for IP in {damaged}: Invalid argument\n")


# -- banner ------------------------------------------------------------------------------------

def test_banner_before_the_check_and_concatenated(rules: str) -> None:
    make_rules(rules, {"ip4/127.0.0.2_32": {"deny": True}})
    denied = access(["-H", "-B", "hello ", "-B", "world\n", "-i", rules], client_ip="127.0.0.2")
    assert (denied.returncode, denied.received) == (1, b"hello world\n")
    allowed = access(["-H", "-B", "hi\n"], prog=["echo", "after"])
    assert allowed.received == b"hi\nafter\n"


def test_banner_limit() -> None:
    assert access(["-H", "-B", "x" * 511], prog=["true"]).received == b"x" * 511
    p = run([*ACCESS, "-B", "x" * 300, "-B", "y" * 212, "true"], env=BASE, stdin=subprocess.DEVNULL)
    assert (p.returncode, p.stderr) == (100, b"tcpserver-access: fatal: banner too long\n")


# -- DNS ---------------------------------------------------------------------------------------

@pytest.fixture
def fake_dns() -> Iterator[FakeDns]:
    server = FakeDns()
    server.add_ptr("127.0.0.1", "lo.example.")
    server.add_ptr("127.0.0.2", "two.example.")
    server.records[("two.example.", 1)] = ["10.9.9.9"]
    server.add_ptr("127.0.0.4", "four.sub.example.")
    server.records[("four.sub.example.", 1)] = ["127.0.0.4"]
    yield server
    server.close()


def test_reverse_dns_names_with_final_dot(fake_dns: FakeDns) -> None:
    got = access([], env={"DNSCACHEIP": fake_dns.ip}, client_ip="127.0.0.2")
    env = environ_lines(got.received)
    assert "TCPLOCALHOST=lo.example." in env and "TCPREMOTEHOST=two.example." in env
    assert {(n, t) for _, n, t in fake_dns.queries} == {("1.0.0.127.in-addr.arpa.", 12),
                                                        ("2.0.0.127.in-addr.arpa.", 12)}
    fake_dns.queries.clear()
    got = access(["-l", "given"], env={"DNSCACHEIP": fake_dns.ip}, client_ip="127.0.0.2")
    assert "TCPLOCALHOST=given" in environ_lines(got.received)
    assert [n for _, n, _ in fake_dns.queries] == ["2.0.0.127.in-addr.arpa."]


def test_no_ptr_leaves_unset_and_reversedns_at_is_not_a_default(fake_dns: FakeDns, rules: str) -> None:
    make_rules(rules, {"reversedns/@": {"allow": True}})
    got = access(["-v2", "-i", rules], env={"DNSCACHEIP": fake_dns.ip}, client_ip="127.0.0.3")
    assert got.returncode == 1
    assert lines(got.stderr) == ["tcpserver-access: info: deny pid P ip 127.0.0.3: No such file or directory"]
    got = access(["-i", rules], env={"DNSCACHEIP": fake_dns.ip}, client_ip="127.0.0.2")
    assert got.returncode == 0  # two.example. has a name: @ matches


def test_reversedns_rules_order(fake_dns: FakeDns, rules: str) -> None:
    make_rules(rules, {"reversedns/example": {"allow": True, "env": {"WHICH": b"example\n"}},
                       "reversedns/sub.example": {"deny": True},
                       "ip4/127.0.0.2_32": {"allow": True, "env": {"WHICH": b"ip\n"}}})
    env = {"DNSCACHEIP": fake_dns.ip}
    assert access(["-i", rules], env=env, client_ip="127.0.0.4").returncode == 1
    got = access(["-i", rules], env=env, client_ip="127.0.0.2")  # ip rules first
    assert "WHICH=ip" in environ_lines(got.received)
    os.rename(os.path.join(rules, "ip4"), os.path.join(rules, "ip4.off"))
    got = access(["-i", rules], env=env, client_ip="127.0.0.2")
    assert "WHICH=example" in environ_lines(got.received)
    got = access(["-H", "-i", rules], env=env, client_ip="127.0.0.2")  # -H: never reversedns
    assert got.returncode == 1


def test_paranoid(fake_dns: FakeDns) -> None:
    env = {"DNSCACHEIP": fake_dns.ip}
    got = access(["-p"], env=env, client_ip="127.0.0.2")  # two.example. is 10.9.9.9: unset, allowed
    assert got.returncode == 0 and not any(e.startswith("TCPREMOTEHOST") for e in environ_lines(got.received))
    got = access(["-p"], env=env, client_ip="127.0.0.4")
    assert "TCPREMOTEHOST=four.sub.example." in environ_lines(got.received)
    fake_dns.add_ptr("127.0.0.5", "nowhere.example.")
    got = access(["-v3", "-p"], env=env, client_ip="127.0.0.5")
    assert got.returncode == 111
    assert lines(got.stderr) == [
        "tcpserver-access: warning: invoked without a ruleset!",
        "tcpserver-access: warning: unable to (paranoidly) resolve nowhere.example.: no such domain",
        "tcpserver-access: fatal: reject pid P ip 127.0.0.5"]
    got = access(["-p", "-W"], env=env, client_ip="127.0.0.5")
    assert got.returncode == 0 and not any(e.startswith("TCPREMOTEHOST") for e in environ_lines(got.received))


def test_refused_and_silent_servers(fake_dns: FakeDns) -> None:
    start = time.monotonic()
    got = access([], env={"DNSCACHEIP": loopback_address()})  # nothing there: refused at once
    assert got.returncode == 0 and time.monotonic() - start < 5
    assert not any(e.startswith(("TCPLOCALHOST", "TCPREMOTEHOST")) for e in environ_lines(got.received))
    fake_dns.silent.update({"1.0.0.127.in-addr.arpa.", "2.0.0.127.in-addr.arpa."})
    start = time.monotonic()
    got = access(["-t", "1000"], env={"DNSCACHEIP": fake_dns.ip}, client_ip="127.0.0.2")
    took = time.monotonic() - start
    assert got.returncode == 0 and 0.9 < took < 5
    assert not any(e.startswith(("TCPLOCALHOST", "TCPREMOTEHOST")) for e in environ_lines(got.received))


def test_truncated_answer_goes_to_tcp(fake_dns: FakeDns) -> None:
    fake_dns.truncate.add("2.0.0.127.in-addr.arpa.")
    got = access([], env={"DNSCACHEIP": fake_dns.ip}, client_ip="127.0.0.2")
    assert "TCPREMOTEHOST=two.example." in environ_lines(got.received)
    assert ("tcp", "2.0.0.127.in-addr.arpa.", 12) in fake_dns.queries


def test_dnscacheip_overrides_resolv_conf_and_unusable_servers(fake_dns: FakeDns) -> None:
    """DNSCACHEIP wins (the machine's resolver is never asked); 0.0.0.0 leaves no usable server:
    a failure of the whole resolver, fatal with -w."""
    got = access(["-v2"], env={"DNSCACHEIP": "0.0.0.0"})
    assert got.returncode == 111
    assert lines(got.stderr) == ["tcpserver-access: warning: invoked without a ruleset!",
                                 "tcpserver-access: warning: unable to init DNS: Network is unreachable",
                                 "tcpserver-access: fatal: reject pid P ip 127.0.0.1"]
    got = access(["-W"], env={"DNSCACHEIP": "0.0.0.0"})
    assert got.returncode == 0
    got = access([], env={"DNSCACHEIP": f"{loopback_address()},{fake_dns.ip}"}, client_ip="127.0.0.2")
    assert "TCPREMOTEHOST=two.example." in environ_lines(got.received)  # the second server answers


# -- ident -------------------------------------------------------------------------------------

@pytest.fixture
def client_ip() -> str:
    return loopback_address(113)


def _identd(ip: str, answer: str) -> FakeIdent:
    def reply(query: str) -> Optional[bytes]:
        if answer == "close":
            return None
        if answer == "silent":
            return b"silent"
        return (query + answer).encode()

    return FakeIdent(ip, reply)


def test_ident_userid_keeps_the_cr(client_ip: str) -> None:
    identd = _identd(client_ip, " : USERID : UNIX : alice\r\n")
    try:
        got = access(["-H", "-r"], client_ip=client_ip)
    finally:
        identd.close()
    assert got.returncode == 0, got.stderr
    assert "TCPREMOTEINFO=alice\r" in environ_lines(got.received)
    assert identd.lines == [f"{got.client[1]} , {got.server[1]}\r\n".encode()]


@pytest.mark.parametrize("answer,code,warning", [
    (" : ERROR : NO-USER\r\n", 2, "ident server replied: no such user"),
    (" : ERROR : HIDDEN-USER\n", 2, "ident server replied: identification denied"),
    (" : ERROR : X-SOMETHING\n", 2, "ident server replied: X-error-token"),
    ("close", 2, "ident server replied: unknown error"),
    (" : garbage\n", 111, "unable to s6net_ident_client: Protocol error"),
    ("silent", 99, "unable to s6net_ident_client: Connection timed out"),
])
def test_ident_failures(client_ip: str, answer: str, code: int, warning: str) -> None:
    identd = _identd(client_ip, answer)
    try:
        got = access(["-v3", "-H", "-r", "-t", "500"], client_ip=client_ip)
        lenient = access(["-H", "-r", "-W", "-t", "500"], client_ip=client_ip)
    finally:
        identd.close()
    assert got.returncode == code
    assert lines(got.stderr) == ["tcpserver-access: warning: invoked without a ruleset!",
                                 f"tcpserver-access: warning: {warning}",
                                 f"tcpserver-access: fatal: reject pid P ip {client_ip}"]
    assert lenient.returncode == 0
    assert not any(e.startswith("TCPREMOTEINFO") for e in environ_lines(lenient.received))


def test_ident_refused_and_not_asked(client_ip: str) -> None:
    got = access(["-H", "-r"], client_ip=client_ip)  # nothing on port 113
    assert (got.returncode, got.stderr) == (111, "")
    got = serve_one([*ACCESS, "-H", *ENV], dict(BASE, TCPREMOTEINFO="stale"))
    assert not any(e.startswith("TCPREMOTEINFO") for e in environ_lines(got.received))


# -- peers -------------------------------------------------------------------------------------

def test_under_ucspi_tcps_tcpserver(rules: str) -> None:
    """djb's tcpserver sets TCPLOCALHOST and friends; tcpserver-access resets them (spec 9)."""
    if not os.access("/usr/bin/tcpserver", os.X_OK):
        pytest.skip("ucspi-tcp is not installed (apt-get install ucspi-tcp)")
    make_rules(rules, {"ip4/127.0.0.0_8": {"allow": True, "env": {"DJB": b"ok\n"}}})
    proc = subprocess.Popen(["/usr/bin/tcpserver", "-1", "-H", "-R", "-l", "djbname", "127.0.0.1", "0",
                             *ACCESS, "-H", "-i", rules, *ENV], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=BASE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.shutdown(socket.SHUT_WR)
            data = read_to_eof(c)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    env = environ_lines(data)
    assert "DJB=ok" in env and "PROTO=TCP" in env and f"TCPLOCALPORT={port}" in env
    assert not any(e.startswith("TCPLOCALHOST") for e in env)  # djb set it, -H without -l unsets it


def test_nodelay_failure_is_a_warning() -> None:
    """fd 1 not a socket: -D warns (verbosity >= 1) and goes on; fd 0 still gives the local address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with socket.create_connection(listener.getsockname()), listener:
        conn, peer = listener.accept()
        with conn:
            env = dict(BASE, PROTO="TCP", TCPREMOTEIP=peer[0], TCPREMOTEPORT=str(peer[1]))
            p = subprocess.run([*ACCESS, "-D", "-H", "sh", "-c", "echo $TCPLOCALIP"], stdin=conn,
                               capture_output=True, env=env, timeout=20)
            quiet = subprocess.run([*ACCESS, "-v0", "-D", "-H", "true"], stdin=conn, capture_output=True,
                                   env=env, timeout=20)
    assert (p.returncode, p.stdout) == (0, b"127.0.0.1\n")
    assert lines(p.stderr.decode()) == [
        "tcpserver-access: warning: unable to socket_tcpnodelay: Socket operation on non-socket",
        "tcpserver-access: info: allow pid P ip 127.0.0.1"]
    assert (quiet.returncode, quiet.stderr) == (0, b"")


def test_ipv6_reverse_dns_and_paranoid_aaaa(fake_dns: FakeDns) -> None:
    fake_dns.add_ptr("::1", "six.example.")
    fake_dns.records[("six.example.", 28)] = ["::1"]
    got = access(["-p"], env={"DNSCACHEIP": fake_dns.ip}, family=socket.AF_INET6, listen_ip="::1")
    env = environ_lines(got.received)
    assert got.returncode == 0, got.stderr
    assert "TCPREMOTEHOST=six.example." in env and "TCPLOCALHOST=six.example." in env
    arpa = "1." + "0." * 31 + "ip6.arpa."
    assert ("udp", arpa, 12) in fake_dns.queries and ("udp", "six.example.", 28) in fake_dns.queries
