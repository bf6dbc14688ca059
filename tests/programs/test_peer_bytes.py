"""Bytes from peers through the real programs: C-string semantics, bytes kept, bounded, no traceback.

s6-tcpserver-access and s6-tcpclient (2.5.1.3) put an ident reply and a PTR name into the
environment with ``env_addmodif`` (a ``strlen``): the value ends at its first NUL and the program
runs; every other byte (invalid UTF-8, control characters, CR) is passed as it came. Lengths are
bounded where the value is read: 511 bytes of ident id (more is ENAMETOOLONG), 255 bytes of DNS
name. s6-networking is not packaged by Debian: the reference is its sources and the behaviour
recorded in the spec; the peers here are the loopback DNS and ident servers of tests/support.
Each case reads the environment the program exec'd with ``env -0`` (NUL-separated, so values
holding newlines and CRs come back exactly).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Dict, Iterator, Union

import pytest

from tests.support.access import make_rules
from tests.support.netpeers import FakeDns, FakeIdent, Listener, loopback_address, serve_one
from tests.support.processes import S6IPC, run

BASE = {"PATH": "/usr/bin:/bin"}
ENV0 = ["/usr/bin/env", "-0"]

#: (what the peer sends, what the program's environment must hold)
VALUES = [
    pytest.param(b"al\0ice", b"al", id="nul"),
    pytest.param(b"\0starts-with-nul", b"", id="leading-nul"),
    pytest.param(b"caf\xe9\xff\xfe", b"caf\xe9\xff\xfe", id="invalid-utf8"),
    pytest.param(b"a\x01\x1b[2J\tb\x7f", b"a\x01\x1b[2J\tb\x7f", id="control"),
    pytest.param("é-ü".encode(), "é-ü".encode(), id="utf8"),
]


def environment(data: bytes) -> Dict[bytes, bytes]:
    out: Dict[bytes, bytes] = {}
    for entry in data.split(b"\0"):
        if entry:
            name, _, value = entry.partition(b"=")
            out[name] = value
    return out


def no_traceback(err: str) -> None:
    assert "Traceback" not in err and "Error:" not in err, err


# -- ident ----------------------------------------------------------------------------------------

def _identd(ip: str, user: bytes) -> FakeIdent:
    return FakeIdent(ip, lambda query: query.encode() + b" : USERID : UNIX : " + user + b"\r\n")


@pytest.mark.parametrize("sent,expected", VALUES)
def test_ident_reply_into_tcpserver_access(sent: bytes, expected: bytes) -> None:
    ip = loopback_address(113)
    identd = _identd(ip, sent)
    try:
        got = serve_one([S6IPC, "tcpserver-access", "-H", "-r", *ENV0], dict(BASE, DNSCACHEIP="127.53.0.1"),
                        client_ip=ip)
    finally:
        identd.close()
    no_traceback(got.stderr)
    assert got.returncode == 0, got.stderr
    assert environment(got.received)[b"TCPREMOTEINFO"] == expected + (b"\r" if b"\0" not in sent else b"")


@pytest.mark.parametrize("length,code", [(510, 0), (511, 111)])
def test_ident_reply_length_bound(length: int, code: int) -> None:
    """At most 511 bytes of id, the CR included: one more is ENAMETOOLONG, a system failure (111)."""
    ip = loopback_address(113)
    identd = _identd(ip, b"\xff" * length)
    try:
        got = serve_one([S6IPC, "tcpserver-access", "-v3", "-H", "-r", *ENV0],
                        dict(BASE, DNSCACHEIP="127.53.0.1"), client_ip=ip)
    finally:
        identd.close()
    no_traceback(got.stderr)
    assert got.returncode == code
    if code == 0:
        assert environment(got.received)[b"TCPREMOTEINFO"] == b"\xff" * length + b"\r"
    else:
        assert got.stderr.splitlines()[1:] == [
            "tcpserver-access: warning: unable to s6net_ident_client: File name too long",
            f"tcpserver-access: fatal: reject pid {got.stderr.split('pid ')[1].split()[0]} ip {ip}"]


@pytest.mark.parametrize("sent,expected", VALUES)
def test_ident_reply_into_tcpclient(sent: bytes, expected: bytes) -> None:
    ip = loopback_address(113)
    listener = Listener(ip)
    identd = _identd(ip, sent)
    try:
        p = run([S6IPC, "tcpclient", "-H", "-l", "x", "-r", ip, str(listener.port), *ENV0],
                env=dict(BASE, DNSCACHEIP="127.53.0.1"))
    finally:
        identd.close()
        listener.close()
    no_traceback(p.stderr.decode())
    assert p.returncode == 0, p.stderr
    assert environment(p.stdout)[b"TCPREMOTEINFO"] == expected + (b"\r" if b"\0" not in sent else b"")


# -- reverse DNS ----------------------------------------------------------------------------------

LONGEST = b".".join([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]) + b"."  # 255 bytes on the wire

NAMES = [
    pytest.param(b"ev\0il.example.", b"ev", id="nul"),
    pytest.param(b"caf\xe9.\xff.example.", b"caf\xe9.\xff.example.", id="invalid-utf8"),
    pytest.param(b"a\x01\n\x1b.example.", b"a\x01\n\x1b.example.", id="control"),
    pytest.param(LONGEST, LONGEST, id="longest"),
]


@pytest.fixture
def dns() -> Iterator[FakeDns]:
    server = FakeDns()
    yield server
    server.close()


def _ptr(dns: FakeDns, name: Union[str, bytes]) -> str:
    client = loopback_address(7)
    dns.add_ptr(client, name)
    dns.add_ptr("127.0.0.1", name)
    return client


@pytest.mark.parametrize("sent,expected", NAMES)
def test_ptr_name_into_tcpserver_access(dns: FakeDns, sent: bytes, expected: bytes) -> None:
    client = _ptr(dns, sent)
    got = serve_one([S6IPC, "tcpserver-access", "-h", *ENV0], dict(BASE, DNSCACHEIP=dns.ip), client_ip=client)
    no_traceback(got.stderr)
    assert got.returncode == 0, got.stderr
    env = environment(got.received)
    assert (env[b"TCPREMOTEHOST"], env[b"TCPLOCALHOST"]) == (expected, expected)


@pytest.mark.parametrize("sent,expected", NAMES)
def test_ptr_name_into_tcpclient(dns: FakeDns, sent: bytes, expected: bytes) -> None:
    client = _ptr(dns, sent)
    listener = Listener(client)
    try:
        p = run([S6IPC, "tcpclient", "-i", client, client, str(listener.port), *ENV0],
                env=dict(BASE, DNSCACHEIP=dns.ip))
    finally:
        listener.close()
    no_traceback(p.stderr.decode())
    assert p.returncode == 0, p.stderr
    env = environment(p.stdout)
    assert (env[b"TCPREMOTEHOST"], env[b"TCPLOCALHOST"]) == (expected, expected)


def test_ptr_name_with_nul_against_reversedns_rules(dns: FakeDns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The name is a C string for the rules and the paranoid check too (s6's keycheck takes its
    ``strlen``): ``ev\0il.example.`` is looked up as ``reversedns/ev``, never ``il.example.``,
    and ``-p`` asks for the address of ``ev.``."""
    rules = str(tmp_path / "rules")
    make_rules(rules, {"reversedns/ev": {"allow": True}, "reversedns/il.example": {"deny": True}})
    client = _ptr(dns, b"ev\0il.example.")
    got = serve_one([S6IPC, "tcpserver-access", "-i", rules, *ENV0], dict(BASE, DNSCACHEIP=dns.ip),
                    client_ip=client)
    no_traceback(got.stderr)
    assert got.returncode == 0, got.stderr
    assert environment(got.received)[b"TCPREMOTEHOST"] == b"ev"
    dns.queries.clear()
    got = serve_one([S6IPC, "tcpserver-access", "-p", "-i", rules, *ENV0], dict(BASE, DNSCACHEIP=dns.ip),
                    client_ip=client)
    no_traceback(got.stderr)
    assert (got.returncode, got.received) == (111, b"")
    assert ("udp", "ev.", 1) in dns.queries


# -- what a program's own configuration may hold -------------------------------------------------

def test_rules_env_file_with_nul_and_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An env/ file's NULs become newlines (skalibs envdir), other bytes pass as they are."""
    rules = str(tmp_path / "rules")
    make_rules(rules, {"ip4/0.0.0.0_0": {"allow": True, "env": {"V": b"a\0b\xff"}}})
    got = serve_one([S6IPC, "tcpserver-access", "-H", "-i", rules, *ENV0],
                    dict(BASE, DNSCACHEIP="127.53.0.1"))
    no_traceback(got.stderr)
    assert got.returncode == 0
    assert environment(got.received)[b"V"] == b"a\nb\xff"


def test_inherited_names_with_any_byte_pass_under_dash_H() -> None:
    """Values a previous stage put in the environment are C strings already; bytes pass."""
    got = serve_one([S6IPC, "tcpserver-access", "-H", *ENV0],
                    {"PATH": "/usr/bin:/bin", "TCPREMOTEHOST": "x\udcff\x01"})
    no_traceback(got.stderr)
    assert environment(got.received).get(b"TCPREMOTEHOST") in (None, b"x\xff\x01")


def test_listen_fds_names_refuse_what_systemd_refuses() -> None:
    """A name that is not what sd_listen_fds_with_names allows is refused in one line."""
    p = run([S6IPC, "listen-fds", "-n", "n\udcff\x01", "-f", "0", *ENV0], env=BASE)
    err = p.stderr.decode()
    no_traceback(err)
    assert p.returncode == 100 and len(err.splitlines()) == 1


# -- sd_notify texts ---------------------------------------------------------------------------

SENDER = r"""
import os, socket, sys, time
address = os.environ["NOTIFY_SOCKET"]
address = "\0" + address[1:] if address.startswith("@") else address
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for message in (b"READY=1\0junk", b"STATUS=caf\xe9\x01\x1b[2J", b"X=" + b"\xff" * 4000):
    s.sendto(message, address)
time.sleep(0.3)
s.sendto(b"READY=1", address)
time.sleep(1)
"""


def test_sd_notify_texts_through_sdnotify_bridge() -> None:
    """A datagram with a NUL is ignored (systemd ignores it too), so its READY=1 does not count;
    other bytes reach the -v log line as they came (a newline becomes a space); no traceback."""
    from tests.support.processes import VENV_PYTHON

    r, w = os.pipe()
    proc = subprocess.Popen([S6IPC, "sdnotify-bridge", "-v", "-a", "-d", str(w), VENV_PYTHON, "-c", SENDER],
                            pass_fds=[w], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=BASE)
    os.close(w)
    try:
        started = time.monotonic()
        assert os.read(r, 10) == b"\n"
        waited = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait(10)
        os.close(r)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    assert waited >= 0.25  # the READY=1 that came with a NUL did not count
    assert b"Traceback" not in err
    lines = [re.sub(rb"pid \d+", b"pid P", line) for line in err.splitlines()]
    assert lines[:4] == [b"sdnotify-bridge: warning: pid P: notification with a NUL byte: ignored",
                         b"sdnotify-bridge: info: pid P: STATUS=caf\xe9\x01\x1b[2J",
                         b"sdnotify-bridge: info: pid P: X=" + b"\xff" * 4000,
                         b"sdnotify-bridge: info: pid P: READY=1"]
