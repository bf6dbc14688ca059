"""tcpclient, written from s6-tcpclient 2.5.1.3's behaviour, against real servers on loopback.

The peers: ucspi-tcp's tcpserver (the server side of most cases), ucspi-tcp's tcpclient (run side
by side against the same server: both give the same variables to their programs), plain Python
listeners for IPv6 and for connections that cannot complete, a fake DNS server and a fake identd.
The program tcpclient runs reports fds 6/7 and its environment as exec'd (/proc/self/environ).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from tests.support.netpeers import FakeDns, FakeIdent, Listener, loopback_address
from tests.support.processes import S6IPC, VENV_PYTHON, run

CLIENT = [S6IPC, "tcpclient"]
DJB_SERVER = "/usr/bin/tcpserver"
DJB_CLIENT = "/usr/bin/tcpclient"
BASE = {"PATH": "/usr/bin:/bin", "DNSCACHEIP": "127.53.0.1"}
needs_ucspi = pytest.mark.skipif(not os.access(DJB_SERVER, os.X_OK),
                                 reason="ucspi-tcp is not installed (apt-get install ucspi-tcp)")
PROBE = [VENV_PYTHON, "-c", r"""
import json, os, socket
env = [e.decode() for e in open("/proc/self/environ", "rb").read().split(b"\0") if e]
s = socket.socket(fileno=os.dup(6))
os.write(7, b"hello from client\n")
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = os.read(6, 65536)
    if not chunk:
        break
    data += chunk
print(json.dumps({"env": env, "same": os.readlink("/proc/self/fd/6") == os.readlink("/proc/self/fd/7"),
                  "nodelay": s.getsockopt(6, 1), "blocking": os.get_blocking(6), "data": data.decode(),
                  "inheritable": os.get_inheritable(6) and os.get_inheritable(7)}))
"""]


@pytest.fixture
def djb_server() -> Iterator[int]:
    """ucspi-tcp's tcpserver on 127.0.0.1, echoing what it got and its TCPREMOTEPORT."""
    if not os.access(DJB_SERVER, os.X_OK):
        pytest.skip("ucspi-tcp is not installed (apt-get install ucspi-tcp)")
    proc = subprocess.Popen([DJB_SERVER, "-1", "-H", "-R", "-l", "srv", "127.0.0.1", "0", "sh", "-c",
                             'read line; echo "got $line from $TCPREMOTEIP:$TCPREMOTEPORT"'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=BASE)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield port
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def client(args: List[str], env: Optional[Dict[str, str]] = None, prog: Optional[List[str]] = None,
           timeout: float = 30) -> Tuple[int, Dict[str, object], str]:
    full = dict(BASE)
    full.update(env or {})
    p = run([*CLIENT, *args, *(prog or PROBE)], env=full, timeout=timeout)
    out = p.stdout.decode()
    report = json.loads(out) if out.startswith("{") else {"raw": out}
    return p.returncode, report, p.stderr.decode()


# -- the connection and its variables --------------------------------------------------------

def test_fds_environment_and_data(djb_server: int) -> None:
    args = ["127.0.0.1", str(djb_server)]
    rc, r, err = client(["-H", "-l", "me", *args], env={"AAA": "1"})
    assert (rc, err) == (0, "")
    assert r["same"] and r["blocking"] and r["inheritable"] and r["nodelay"] == 0
    env = r["env"]
    assert isinstance(env, list)
    local_port = int(re.search(r"127\.0\.0\.1:(\d+)", str(r["data"])).group(1))  # type: ignore[union-attr]
    assert r["data"] == f"got hello from client from 127.0.0.1:{local_port}\n"
    assert env == ["PATH=/usr/bin:/bin", "DNSCACHEIP=127.53.0.1", "AAA=1", "PROTO=TCP",
                   "TCPREMOTEIP=127.0.0.1", f"TCPREMOTEPORT={djb_server}", "TCPLOCALIP=127.0.0.1",
                   f"TCPLOCALPORT={local_port}", "TCPLOCALHOST=me"]


def test_same_variables_as_ucspi_tcps_tcpclient(djb_server: int) -> None:
    if not os.access(DJB_CLIENT, os.X_OK):
        pytest.skip("ucspi-tcp is not installed (apt-get install ucspi-tcp)")
    ours = run([*CLIENT, "-H", "-l", "me", "127.0.0.1", str(djb_server), *PROBE], env=BASE)
    theirs = run([DJB_CLIENT, "-H", "-R", "-l", "me", "127.0.0.1", str(djb_server), *PROBE], env=BASE)
    names = []
    for p in (ours, theirs):
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        assert report["same"] and report["data"].startswith("got hello from client from 127.0.0.1:")
        names.append(sorted(e.split("=", 1)[0] for e in report["env"] if e.startswith(("TCP", "PROTO"))))
    assert names[0] == names[1] == ["PROTO", "TCPLOCALHOST", "TCPLOCALIP", "TCPLOCALPORT", "TCPREMOTEIP",
                                    "TCPREMOTEPORT"]


def test_ipv6_needs_dash_6() -> None:
    listener = Listener("::1")
    try:
        rc, r, err = client(["-6", "-H", "-l", "x", "::1", str(listener.port)])
        assert rc == 0, err
        env = r["env"]
        assert isinstance(env, list) and "TCPREMOTEIP=::1" in env and "TCPLOCALIP=::1" in env
        assert str(r["data"]).startswith("peer ::1 ")
        p = run([*CLIENT, "-H", "-l", "x", "::1", str(listener.port), "true"], env=BASE)
        assert p.returncode == 100 and b"usage:" in p.stderr  # IPv4 only by default
        rc, r, err = client(["-4", "-6", "-H", "-l", "x", "::1,127.0.0.1", str(listener.port)])
        assert rc == 0
    finally:
        listener.close()


def test_nodelay_verbose_line_and_local_address(djb_server: int) -> None:
    rc, r, err = client(["-v", "-D", "-H", "-l", "x", "-i", "127.0.0.9", "127.0.0.1", str(djb_server)])
    assert rc == 0 and r["nodelay"] == 1
    assert err == f"tcpclient: info: connected to 127.0.0.1 port {djb_server}\n"
    assert "from 127.0.0.9:" in str(r["data"]) and "TCPLOCALIP=127.0.0.9" in r["env"]  # type: ignore[operator]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    rc, r, err = client(["-H", "-l", "x", "-p", str(free), "127.0.0.1", str(djb_server)])
    assert f"TCPLOCALPORT={free}" in r["env"]  # type: ignore[operator]


def test_host_zero_means_both_loopbacks(djb_server: int) -> None:
    rc, r, err = client(["-H", "-l", "x", "0", str(djb_server)])
    assert (rc, err) == (0, "")  # ::1 refused in round 1 (queued for round 2), 127.0.0.1 answers
    rc, r, err = client(["-H", "-l", "x", "-T", "1+0", "", str(djb_server)])
    assert rc == 0
    assert err == f"tcpclient: warning: unable to connect to ::1 port {djb_server}: Connection refused\n"


def test_inherited_names_pass_with_dash_H(djb_server: int) -> None:
    rc, r, err = client(["-H", "-l", "x", "127.0.0.1", str(djb_server)],
                        env={"TCPREMOTEHOST": "inherited", "TCPREMOTEINFO": "old"})
    assert "TCPREMOTEHOST=inherited" in r["env"] and "TCPREMOTEINFO=old" in r["env"]  # type: ignore[operator]


# -- failures ----------------------------------------------------------------------------------

def test_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        p = run([*CLIENT, "-H", "-l", "x", "127.0.0.1,127.0.0.2", str(port), "true"], env=BASE)
    assert p.returncode == 111
    assert p.stderr.decode() == (
        f"tcpclient: warning: unable to connect to 127.0.0.1 port {port}: Connection refused\n"
        f"tcpclient: warning: unable to connect to 127.0.0.2 port {port}: Connection refused\n"
        "tcpclient: fatal: : unable to connect to a suitable IP address\n")


@pytest.fixture
def full_backlog() -> Iterator[Tuple[str, int]]:
    """A listener that never completes a handshake: backlog 0, queue filled, never accepting."""
    listener = Listener("127.0.0.1", backlog=0, serve=False)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", listener.port))
        fillers.append(c)
    time.sleep(0.2)
    yield "127.0.0.1", listener.port
    for c in fillers:
        c.close()
    listener.close()


@pytest.mark.parametrize("args,hosts,expected", [
    (["-T", "1"], "127.0.0.1", 1.0),
    (["-T", "1+1"], "127.0.0.1,127.0.0.1", 4.0),
    (["-T", "1+0"], "127.0.0.1,127.0.0.1", 2.0),
    (["-t", "1", "-T", "5"], "127.0.0.1", 1.0),
])
def test_connect_timeouts(full_backlog: Tuple[str, int], args: List[str], hosts: str,
                          expected: float) -> None:
    start = time.monotonic()
    p = run([*CLIENT, "-H", "-l", "x", *args, hosts, str(full_backlog[1]), "true"], env=BASE)
    took = time.monotonic() - start
    assert p.returncode == 111
    assert expected - 0.1 < took < expected + 1.5
    assert "Connection timed out" in p.stderr.decode()
    assert p.stderr.decode().endswith("tcpclient: fatal: : unable to connect to a suitable IP address\n")


@pytest.mark.parametrize("args,message", [
    (["-H", "127.0.0.1", "70000", "true"], "tcpclient: fatal: invalid port number: 70000\n"),
    (["-H", "127.0.0.1", "", "true"], "tcpclient: fatal: invalid port number: \n"),
])
def test_bad_port(args: List[str], message: str) -> None:
    p = run([*CLIENT, *args], env=BASE)
    assert (p.returncode, p.stderr.decode()) == (100, message)


@pytest.mark.parametrize("args", [["127.0.0.1", "1"], ["-T", "x", "127.0.0.1", "1", "true"],
                                  ["-T", "1+", "127.0.0.1", "1", "true"],
                                  ["-T", "1-2", "h", "1", "true"],
                                  ["-i", "nowhere", "127.0.0.1", "1", "true"],
                                  ["-p", "65536", "h", "1", "true"],
                                  ["-t", "x", "h", "1", "true"], ["-H", "localhost", "1", "true"],
                                  ["-x", "h", "1", "true"]])
def test_usage(args: List[str]) -> None:
    p = run([*CLIENT, *args], env=BASE)
    assert p.returncode == 100
    assert p.stderr.decode().startswith("tcpclient: usage: tcpclient [ -q | -Q | -v ]")


def test_exec_failure(djb_server: int) -> None:
    p = run([*CLIENT, "-H", "-l", "x", "127.0.0.1", str(djb_server), "/nonexistent"], env=BASE)
    assert (p.returncode, p.stderr.decode()) == (
        127, "tcpclient: fatal: unable to exec /nonexistent: No such file or directory\n")


# -- DNS and ident -------------------------------------------------------------------------------

@pytest.fixture
def fake_dns() -> Iterator[FakeDns]:
    server = FakeDns()
    server.add_ptr("127.0.0.1", "lo.example.")
    server.records[("srv.example.", 1)] = ["127.0.0.1"]
    server.records[("empty.example.", 1)] = []
    server.records[("empty.example.", 28)] = []
    yield server
    server.close()


def test_default_h_names_with_fake_dns(djb_server: int, fake_dns: FakeDns) -> None:
    rc, r, err = client(["127.0.0.1", str(djb_server)], env={"DNSCACHEIP": fake_dns.ip})
    assert (rc, err) == (0, "")
    env = r["env"]
    assert "TCPLOCALHOST=lo.example." in env and "TCPREMOTEHOST=lo.example." in env  # type: ignore[operator]
    rc, r, err = client(["-N", "srv.example", str(djb_server)], env={"DNSCACHEIP": fake_dns.ip})
    assert rc == 0 and "TCPREMOTEIP=127.0.0.1" in r["env"]  # type: ignore[operator]
    rc, r, err = client(["srv", str(djb_server)], env={"DNSCACHEIP": fake_dns.ip, "DNSQUALIFY": "example"})
    assert rc == 0, err
    assert ("udp", "srv.example.", 1) in fake_dns.queries


def test_name_resolution_failures(fake_dns: FakeDns) -> None:
    env = dict(BASE, DNSCACHEIP=fake_dns.ip)
    p = run([*CLIENT, "-N", "nohost.example", "1", "true"], env=env)
    assert (p.returncode, p.stderr.decode()) == (
        111, "tcpclient: fatal: : unable to resolve nohost.example: no such domain\n")
    p = run([*CLIENT, "-N", "empty.example", "1", "true"], env=env)
    assert (p.returncode, p.stderr.decode()) == (100, "tcpclient: fatal: no IP address for empty.example\n")
    p = run([*CLIENT, "-N", "x.example", "1", "true"], env=dict(BASE, DNSCACHEIP=loopback_address()))
    assert (p.returncode, p.stderr.decode()) == (
        111, "tcpclient: fatal: : unable to resolve x.example: no available DNS server\n")


def test_remote_info() -> None:
    ip = loopback_address(113)
    listener = Listener(ip)
    identd = FakeIdent(ip, lambda q: (q + " : USERID : UNIX : bob\r\n").encode())
    try:
        rc, r, err = client(["-H", "-l", "x", "-r", ip, str(listener.port)])
        assert rc == 0, err
        assert "TCPREMOTEINFO=bob\r" in r["env"]  # type: ignore[operator]
        env = r["env"]
        assert isinstance(env, list)
        local = [e for e in env if e.startswith("TCPLOCALPORT=")][0].split("=")[1]
        assert identd.lines == [f"{listener.port} , {local}\r\n".encode()]
        identd.reply = lambda q: (q + " : ERROR : NO-USER\n").encode()
        rc, r, err = client(["-H", "-l", "x", "-r", ip, str(listener.port)])
        assert rc == 0 and "TCPREMOTEINFO=" in r["env"]  # type: ignore[operator]
        assert err == "tcpclient: warning: ident server replied: no such user\n"
        rc, r, err = client(["-q", "-H", "-l", "x", "-r", ip, str(listener.port)])
        assert err == ""
    finally:
        identd.close()
        listener.close()


def test_overall_deadline_covers_resolution_and_ident(fake_dns: FakeDns) -> None:
    fake_dns.silent.add("slow.example.")
    start = time.monotonic()
    p = run([*CLIENT, "-N", "-t", "1", "slow.example", "1", "true"], env=dict(BASE, DNSCACHEIP=fake_dns.ip))
    assert 0.9 < time.monotonic() - start < 5
    assert (p.returncode, p.stderr.decode()) == (
        111, "tcpclient: fatal: : unable to resolve slow.example: query timed out\n")
    ip = loopback_address(113)
    listener = Listener(ip)
    identd = FakeIdent(ip, lambda q: b"silent")
    try:
        start = time.monotonic()
        rc, r, err = client(["-H", "-l", "x", "-r", "-t", "1", ip, str(listener.port)])
        assert 0.9 < time.monotonic() - start < 5
        assert rc == 0 and "TCPREMOTEINFO=" in r["env"]  # type: ignore[operator]
        assert err == "tcpclient: warning: unable to s6net_ident_client: Connection timed out\n"
    finally:
        identd.close()
        listener.close()
