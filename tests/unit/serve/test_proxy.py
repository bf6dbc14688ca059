"""The PROXY header reader on bytes in memory: what each header gives, what it refuses, and that it
never takes a byte past the header (checked against HAProxy's doc/proxy-protocol.txt and
s6-networking 2.7.2.0's proxy-server.c)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s6ipc.base.errors import SystemFailure
from s6ipc.serve import proxy
from s6ipc.serve.proxy import V2_SIGNATURE, BadHeader, StdinReader, Unsupported, read_header


class Feed:
    """A reader over *data* that counts what was taken; past the end it fails as EOF does."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.taken = 0

    def __call__(self, count: int) -> bytes:
        chunk = self.data[self.taken : self.taken + count]
        self.taken += len(chunk)
        if len(chunk) < count:
            raise proxy._Short(chunk, errno.EPIPE)
        return chunk


def header(data: bytes, v1: bool = True, v2: bool = True, warnings: Optional[List[str]] = None) -> List[str]:
    feed = Feed(data + b"CLIENT BYTES")
    modifs = read_header(feed, v1, v2, None if warnings is None else warnings.append)
    assert feed.data[feed.taken :] == b"CLIENT BYTES"  # not a byte past the header
    return modifs


def v2(command: int, family: int, transport: int, body: bytes, version: int = 2) -> bytes:
    start = bytes([version << 4 | command, family << 4 | transport])
    return V2_SIGNATURE + start + struct.pack(">H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack(">H", len(value)) + value


INET = socket.inet_aton("192.0.2.1") + socket.inet_aton("198.51.100.2") + struct.pack(">HH", 5555, 443)
TCP4 = ["PROTO=TCP", "TCPREMOTEIP=192.0.2.1", "TCPLOCALIP=198.51.100.2", "TCPREMOTEPORT=5555",
        "TCPLOCALPORT=443"]


def test_v1() -> None:
    assert header(b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\n") == TCP4
    assert header(b"PROXY TCP6 2001:db8::1 ::ffff:7f00:1 1 65535\r\n") == [
        "PROTO=TCP", "TCPREMOTEIP=2001:db8::1", "TCPLOCALIP=::ffff:7f00:1", "TCPREMOTEPORT=1",
        "TCPLOCALPORT=65535"]
    assert header(b"PROXY TCP4 127.0.0.257 10.0.0.1 00080 0\r\n")[1:4] == [  # skalibs' scanners
        "TCPREMOTEIP=127.0.0.1", "TCPLOCALIP=10.0.0.1", "TCPREMOTEPORT=80"]
    assert header(b"PROXY UNKNOWN\r\n") == []
    assert header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") == []
    assert header(b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\n", v2=False) == TCP4


def test_v1_longest_line_and_one_more() -> None:
    longest = b"PROXY UNKNOWN " + b"x" * (proxy.V1_MAX - 16) + b"\r\n"
    assert len(longest) == 107 and header(longest) == []
    with pytest.raises(BadHeader, match="^PROXY line too long$"):
        header(b"PROXY UNKNOWN " + b"x" * (proxy.V1_MAX - 15) + b"\r\n")


@pytest.mark.parametrize("line,message", [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\n", "invalid PROXY line"),
    (b"PROXY TCP5 192.0.2.1 198.51.100.2 5555 443\r\n", "invalid protocol in PROXY line"),
    (b"PROXY TCP4X192.0.2.1 198.51.100.2 5555 443\r\n", "invalid protocol in PROXY line"),
    (b"PROXY TCP4 192.0.2 198.51.100.2 5555 443\r\n", "invalid remote ip in PROXY line"),
    (b"PROXY TCP4 192.0.2.1x 198.51.100.2 5555 443\r\n", "invalid PROXY line"),
    (b"PROXY TCP4 x 198.51.100.2 5555 443\r\n", "invalid remote ip in PROXY line"),
    (b"PROXY TCP4 192.0.2.1 ::1 5555 443\r\n", "invalid local ip in PROXY line"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n", "invalid PROXY line"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n", "invalid remote port in PROXY line"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 x\r\n", "invalid local port in PROXY line"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n", "invalid PROXY line"),
    (b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n", "invalid local ip in PROXY line"),
    (b"PROXY TCP6 ::ffff:127.0.0.1 ::1 1 2\r\n", "invalid PROXY line"),  # ip6_scan: no dotted quad
    (b"PROXY TCP4 1\r\n\r\nmore bytes", "invalid PROXY line"),
    (b"PROXY UNKNOWNX\r\n", "invalid protocol in PROXY line"),
    (b"GET / HTTP/1.1\r\n\r\n", "invalid magic"),
])
def test_v1_refusals(line: bytes, message: str) -> None:
    feed = Feed(line)
    with pytest.raises(BadHeader) as e:
        read_header(feed)
    assert (str(e.value), e.value.exit_code) == (message, 1)
    assert feed.taken <= max(16, line.find(b"\n") + 1)  # never past the first LF


def test_only_v1_refuses_v2_and_only_v2_refuses_v1() -> None:
    with pytest.raises(BadHeader, match="^invalid magic$"):
        header(v2(1, 1, 1, INET), v2=False)
    with pytest.raises(BadHeader, match="^invalid magic$"):
        header(b"PROXY UNKNOWN\r\n\0", v1=False)
    assert header(v2(1, 1, 1, INET), v1=False) == TCP4
    assert read_header(Feed(b""), False, False) == []


def test_v2_families() -> None:
    assert header(v2(1, 1, 1, INET)) == TCP4
    six = b"".join(socket.inet_pton(socket.AF_INET6, a) for a in ("2001:db8::1", "::ffff:127.0.0.1"))
    assert header(v2(1, 2, 1, six + struct.pack(">HH", 1, 2))) == [
        "PROTO=TCP", "TCPREMOTEIP=2001:db8::1", "TCPLOCALIP=::ffff:7f00:1", "TCPREMOTEPORT=1",
        "TCPLOCALPORT=2"]
    remote = b"/run/client.sock".ljust(108, b"\0")
    local = b"\0abstract-name".ljust(108, b"\0")
    assert header(v2(1, 3, 1, remote + local)) == ["PROTO=IPC", "IPCREMOTEPATH=/run/client.sock",
                                                   "IPCLOCALPATH="]
    full = b"/" + b"\xff" * 107
    assert header(v2(1, 3, 1, full + full)) == ["PROTO=IPC", "IPCREMOTEPATH=" + os.fsdecode(full),
                                                "IPCLOCALPATH=" + os.fsdecode(full)]


def test_v2_local_unspec_and_skips() -> None:
    warnings: List[str] = []
    assert header(v2(0, 0, 0, b""), warnings=warnings) == [] and warnings == []
    assert header(v2(0, 1, 1, INET), warnings=warnings) == []  # LOCAL: the real endpoints stay
    assert warnings == ["received LOCAL command with family set to 1"]
    assert header(v2(0, 1, 1, INET)) == []  # verbosity 0: no warning
    assert header(v2(1, 0, 0, b"x" * 300)) == []
    assert header(v2(1, 1, 0, INET)) == []


@pytest.mark.parametrize("data,error,message", [
    (v2(1, 1, 1, INET, version=1), BadHeader, "invalid version"),
    (v2(2, 1, 1, INET), BadHeader, "invalid command"),
    (v2(1, 4, 1, INET), BadHeader, "invalid family"),
    (v2(1, 1, 3, INET), BadHeader, "invalid transport protocol"),
    (v2(1, 1, 2, INET), Unsupported, "unsupported transport protocol: datagram"),
    (v2(1, 2, 1, INET), BadHeader, "invalid address length"),
    (v2(1, 1, 1, INET + b"\x02\x00"), BadHeader, "invalid TLV encoding in extension"),
    (v2(1, 1, 1, INET + tlv(0x02, b"x")[:-1] + b""), BadHeader, "invalid TLV encoding in extension"),
    (v2(1, 1, 1, INET + tlv(0x20, b"\x01\0\0\0")), BadHeader, "invalid sub-TLV encoding in SSL extension"),
    (v2(1, 1, 1, INET + tlv(0x21, b"TLSv1.3")), BadHeader, "invalid main extension type"),
    (v2(1, 1, 1, INET + tlv(0x20, b"\x01\0\0\0\0" + tlv(0x02, b"x"))), BadHeader,
     "invalid sub-extension type"),
    (v2(1, 1, 1, INET + tlv(0x20, b"\x01\0\0\0\0" + tlv(0x20, b"\x01\0\0\0\0"))), BadHeader,
     "invalid sub-extension type"),
    (v2(1, 1, 1, INET + tlv(0x20, b"\x01\0\0\0\0" + b"\x21\x00\x09ab")), BadHeader,
     "invalid TLV encoding in sub-extension"),
    (V2_SIGNATURE[:11] + b"X" + b"\x21\x11\0\x0c" + INET, BadHeader, "invalid magic"),
])
def test_v2_refusals(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error) as e:
        header(data)
    assert str(e.value) == message
    assert e.value.exit_code == (2 if error is Unsupported else 1)  # type: ignore[attr-defined]


def test_v2_extensions() -> None:
    subs = tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client\0cn") + tlv(0x23, b"\xffAES") + tlv(0x99, b"ignored")
    ssl = tlv(0x20, b"\x01" + b"\0\0\0\0" + subs)
    assert header(v2(1, 1, 1, INET + tlv(0x04, b"crc!") + tlv(0x02, b"example.org") + ssl))[5:] == [
        "SSL_TLS_SNI_SERVERNAME=example.org", "SSL_PROTOCOL=TLSv1.3", "SSL_PEER_CERT_CN=client",
        "SSL_CIPHER=\udcffAES"]
    no_client_ssl = tlv(0x20, b"\x00" + b"\0\0\0\0" + tlv(0x21, b"TLSv1.3"))
    assert header(v2(1, 1, 1, INET + no_client_ssl)) == TCP4


def test_short_reads_and_deadline() -> None:
    with pytest.raises(SystemFailure, match="^unable to read from stdin: Broken pipe$"):
        read_header(Feed(b"PROXY TCP4"))
    with pytest.raises(SystemFailure, match="^unable to read from stdin: Broken pipe$"):
        read_header(Feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1"))
    with pytest.raises(SystemFailure, match="^unable to read address block: Broken pipe$"):
        read_header(Feed(v2(1, 1, 1, INET)[:-1]))
    with pytest.raises(SystemFailure, match="^unable to skip 300 bytes: only got 3: Broken pipe$"):
        read_header(Feed(v2(1, 0, 0, b"x" * 300)[:19]))
    r, w = os.pipe()
    try:
        os.write(w, b"PROXY TCP4 ")
        with pytest.raises(SystemFailure, match="^unable to read from stdin: Connection timed out$"):
            read_header(StdinReader(r, time.monotonic() + 0.05))
    finally:
        os.close(r)
        os.close(w)


def test_stdin_reader_takes_exactly_what_is_asked() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"PROXY UNKNOWN\r\nrest")
        assert read_header(StdinReader(r)) == []
        assert os.read(r, 100) == b"rest"
    finally:
        os.close(r)
        os.close(w)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans(), st.booleans())
def test_any_bytes_give_modifs_or_a_documented_error(data: bytes, v1: bool, v2_: bool) -> None:
    feed = Feed(data)
    try:
        modifs = read_header(feed, v1, v2_)
    except (BadHeader, SystemFailure):
        return
    assert all("=" in m and "\0" not in m for m in modifs)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([v2(1, 1, 1, INET), b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\n",
                        v2(1, 3, 1, b"\0" * 216 + tlv(0x02, b"sni"))]),
       st.integers(0, 60), st.binary(min_size=1, max_size=4))
def test_mutated_headers_never_read_past_themselves(good: bytes, where: int, junk: bytes) -> None:
    where = min(where, len(good))
    data = good[:where] + junk + good[where:]
    feed = Feed(data + b"TAIL")
    try:
        read_header(feed)
    except (BadHeader, SystemFailure):
        return
    assert feed.taken <= len(data)
