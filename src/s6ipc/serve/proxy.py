"""The PROXY protocol header a load balancer puts before a client's bytes, read as s6-networking's
``proxy-server`` (2.7.2.0) reads it, turned into the UCSPI variables a direct connection would get.

Some facts about the protocol (HAProxy's ``doc/proxy-protocol.txt``) and about proxy-server
(s6-networking ``src/conn-tools/proxy-server.c``, unchanged from 2.7.2.0 to 2.8.0.1):

* **v1** is one text line: ``PROXY TCP4|TCP6 SRCIP DSTIP SRCPORT DSTPORT\\r\\n`` or ``PROXY
  UNKNOWN…\\r\\n``, at most 107 bytes with the CRLF. proxy-server reads the first 15 bytes (the
  shortest line, ``PROXY UNKNOWN\\r\\n``), then one byte at a time up to the LF, so that not a byte
  of the client's stream is taken. Addresses are skalibs' prefix scans (``ip4_scan``,
  ``ip6_scan``), ports ``uint16_scan``; single spaces between; the CR must end the line.
  ``UNKNOWN`` sets nothing.
* **v2** is binary: the 12-byte signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, a version/command byte
  (version 2; command 0 LOCAL, 1 PROXY), a family/transport byte (family 0 UNSPEC, 1 INET,
  2 INET6, 3 UNIX; transport 0 UNSPEC, 1 STREAM, 2 DGRAM), a 16-bit big-endian length, then that
  many bytes: the addresses (12, 36 or 216 bytes: source then destination address, source then
  destination port; UNIX: two 108-byte paths) and Type-Length-Value extensions. proxy-server
  reads the 16 bytes, then exactly the length.
* With both versions allowed, 15 bytes are read: ``PROXY `` starts v1; else one more byte makes
  the v2 header.
* Variables (added or overridden, never removed; skalibs ``env_mexec`` order): INET/INET6 and v1
  set ``PROTO=TCP``, ``TCPREMOTEIP``, ``TCPLOCALIP``, ``TCPREMOTEPORT``, ``TCPLOCALPORT`` (addresses
  in skalibs' form: ``::ffff:7f00:1``, not ``::ffff:127.0.0.1``); UNIX sets ``PROTO=IPC``,
  ``IPCREMOTEPATH``, ``IPCLOCALPATH`` (each path a C string: up to its first NUL, so an abstract
  path is empty). Extensions: ``PP2_TYPE_AUTHORITY`` (0x02) sets ``SSL_TLS_SNI_SERVERNAME``;
  ``PP2_TYPE_SSL`` (0x20: client byte, 4-byte verify, sub-TLVs read only when the client byte has
  ``PP2_CLIENT_SSL``) gives ``SSL_PROTOCOL`` (0x21), ``SSL_PEER_CERT_CN`` (0x22), ``SSL_CIPHER``
  (0x23); values are C strings; other types are ignored; a TLV that overruns its block, an SSL TLV
  under 5 bytes, a sub-type at the top level or a top-level type inside SSL is a bad header.
* Errors: a bad header exits 1, the DGRAM transport 2 (``unsupported transport protocol:
  datagram``), a short read or the deadline 111 (``unable to read from stdin: Broken pipe`` /
  ``Connection timed out``).

Where we differ from the C program, on purpose (docs/proxy-server.md says so):

* A **LOCAL** command (a health check of the proxy itself) sets nothing: the specification says
  the receiver must use the real connection endpoints and skip the address block, whatever the
  family says. proxy-server 2.7.2.0 warns when LOCAL comes with a family (we do too), but then
  uses the addresses it carries.
* A v1 line whose LF comes within its first 15 bytes is refused at once; proxy-server would read
  on past the LF (into the client's bytes) before refusing it.
* ``TCP4``/``TCP6`` must be followed by a space (proxy-server does not look at that byte).
* An SSL TLV inside an SSL TLV is refused (proxy-server recurses into it, without bound).
"""

from __future__ import annotations

import errno
import os
import select
import time

from ..base.cstrings import peer_text
from ..base.durations import poll_ms
from ..base.errors import BadInput, SystemFailure
from ..sockets.inet import ip4_fmt, ip4_scan, ip6_fmt, ip6_scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Tuple

    Read = Callable[[int], bytes]
    Warn = Callable[[str], None]

__all__ = [
    "V1_MAX", "V2_SIGNATURE", "BadHeader", "Unsupported", "StdinReader", "read_header", "parse_v1",
    "parse_v2_addresses", "parse_extensions",
]

#: The longest v1 line, CRLF included.
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\0\r\nQUIT\n"
_V1_FIRST = 15  # "PROXY UNKNOWN\r\n", the shortest header of either version but one byte
_ADDRESS_SIZE = {1: 12, 2: 36, 3: 216}
_SSL_VARIABLES = {0x21: "SSL_PROTOCOL", 0x22: "SSL_PEER_CERT_CN", 0x23: "SSL_CIPHER"}


class BadHeader(BadInput):
    """The bytes are not a PROXY header proxy-server accepts: exit 1 (``str()`` is the message)."""

    exit_code = 1


class Unsupported(BadHeader):
    """A well-formed header for a transport proxy-server does not serve (datagrams): exit 2."""

    exit_code = 2


class StdinReader:
    """Exact reads from fd *fd* under one deadline (``time.monotonic()``, None: none): never more
    bytes than asked, so what follows the header stays in the socket for the next program."""

    def __init__(self, fd: int = 0, deadline: Optional[float] = None) -> None:
        self.fd = fd
        self.deadline = deadline

    def __call__(self, count: int) -> bytes:
        data = b""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while len(data) < count:
            left = None if self.deadline is None else self.deadline - time.monotonic()
            if not poller.poll(poll_ms(left)):
                if left is not None and time.monotonic() >= self.deadline:  # type: ignore[operator]
                    raise _Short(data, errno.ETIMEDOUT)
                continue  # a long wait comes back in pieces of POLL_MAX_MS
            try:
                chunk = os.read(self.fd, count - len(data))
            except BlockingIOError:
                continue  # a non-blocking stdin: wait again
            except OSError as e:
                raise _Short(data, e.errno or errno.EIO) from None
            if not chunk:
                raise _Short(data, errno.EPIPE)
            data += chunk
        return data


class _Short(Exception):
    """A read that got only *data* before *code* (EPIPE: end of file)."""

    def __init__(self, data: bytes, code: int) -> None:
        super().__init__(data, code)
        self.data = data
        self.code = code


def _read(read: Read, count: int, operation: str) -> bytes:
    try:
        return read(count)
    except _Short as e:
        raise SystemFailure(operation, e.code) from None


def read_header(read: Read, v1: bool = True, v2: bool = True, warn: Optional[Warn] = None) -> List[str]:
    """Read one PROXY header through *read* (:class:`StdinReader`) and return the environment
    modifications it gives (``NAME=value`` strings, in order; none for UNKNOWN, LOCAL and UNSPEC).
    *warn* receives the warning text for a LOCAL command with a family. Raises :class:`BadHeader`,
    :class:`Unsupported` or :class:`SystemFailure`."""
    if not v1 and not v2:
        return []
    if v2 and not v1:
        return _v2(_read(read, 16, "read from stdin"), read, warn)
    first = _read(read, _V1_FIRST, "read from stdin")
    if first.startswith(b"PROXY "):
        return _v1(first, read)
    if not v2:
        raise BadHeader("invalid magic")
    return _v2(first + _read(read, 1, "read from stdin"), read, warn)


# -- v1 --------------------------------------------------------------------------------------------

def _v1(first: bytes, read: Read) -> List[str]:
    line = first
    end = line.find(b"\n")
    if end >= 0:
        if line == b"PROXY UNKNOWN\r\n":
            return []
        raise BadHeader("invalid PROXY line")
    while not line.endswith(b"\n"):
        if len(line) >= V1_MAX:
            raise BadHeader("PROXY line too long")
        line += _read(read, 1, "read from stdin")
    return parse_v1(line)


def _uint16_scan(text: str, pos: int) -> Tuple[int, int]:
    value, end = 0, pos
    while end < len(text) and "0" <= text[end] <= "9" and value * 10 + ord(text[end]) - 48 <= 0xFFFF:
        value = value * 10 + ord(text[end]) - 48
        end += 1
    return value, end


def parse_v1(line: bytes) -> List[str]:
    """The modifications of one whole v1 line (``PROXY …\\r\\n``). Raises :class:`BadHeader`."""
    if not line.endswith(b"\r\n"):
        raise BadHeader("invalid PROXY line")
    body = line[6:-2].decode("latin-1")
    if body.startswith("UNKNOWN"):
        if body[7:8] not in ("", " "):
            raise BadHeader("invalid protocol in PROXY line")
        return []
    if not body.startswith(("TCP4 ", "TCP6 ")):
        raise BadHeader("invalid protocol in PROXY line")
    scan, fmt = (ip6_scan, ip6_fmt) if body[3] == "6" else (ip4_scan, ip4_fmt)
    pos, values = 5, []
    for what in ("remote ip", "local ip"):
        found = scan(body[pos:])
        if found is None:
            raise BadHeader(f"invalid {what} in PROXY line")
        values.append(fmt(found[0]))
        pos += found[1]
        if body[pos : pos + 1] != " ":
            raise BadHeader("invalid PROXY line")
        pos += 1
    for what in ("remote port", "local port"):
        port, end = _uint16_scan(body, pos)
        if end == pos:
            raise BadHeader(f"invalid {what} in PROXY line")
        values.append(str(port))
        pos = end
        if what == "remote port":
            if body[pos : pos + 1] != " ":
                raise BadHeader("invalid PROXY line")
            pos += 1
    if pos != len(body):
        raise BadHeader("invalid PROXY line")
    remote_ip, local_ip, remote_port, local_port = values
    return ["PROTO=TCP", f"TCPREMOTEIP={remote_ip}", f"TCPLOCALIP={local_ip}",
            f"TCPREMOTEPORT={remote_port}", f"TCPLOCALPORT={local_port}"]


# -- v2 --------------------------------------------------------------------------------------------

def _v2(header: bytes, read: Read, warn: Optional[Warn]) -> List[str]:
    if header[:12] != V2_SIGNATURE:
        raise BadHeader("invalid magic")
    version, command = header[12] >> 4, header[12] & 0xF
    family, transport = header[13] >> 4, header[13] & 0xF
    length = int.from_bytes(header[14:16], "big")
    if version != 2:
        raise BadHeader("invalid version")
    if command == 0 and family and warn is not None:
        warn(f"received LOCAL command with family set to {family}")
    elif command > 1:
        raise BadHeader("invalid command")
    if family > 3:
        raise BadHeader("invalid family")
    if command == 0 or not family or not transport:
        _skip(read, length)
        return []
    if transport > 2:
        raise BadHeader("invalid transport protocol")
    if transport == 2:
        raise Unsupported("unsupported transport protocol: datagram")
    size = _ADDRESS_SIZE[family]
    if length < size:
        raise BadHeader("invalid address length")
    block = _read(read, length, "read address block")
    return parse_v2_addresses(family, block[:size]) + parse_extensions(block[size:])


def _skip(read: Read, count: int) -> None:
    if not count:
        return
    try:
        read(count)
    except _Short as e:
        raise SystemFailure(f"skip {count} bytes: only got {len(e.data)}", e.code) from None


def parse_v2_addresses(family: int, block: bytes) -> List[str]:
    """The modifications of a v2 address block of *family* (1 INET, 2 INET6, 3 UNIX)."""
    if family == 3:
        return ["PROTO=IPC", f"IPCREMOTEPATH={peer_text(block[:108])}",
                f"IPCLOCALPATH={peer_text(block[108:216])}"]
    n, fmt = (4, ip4_fmt) if family == 1 else (16, ip6_fmt)
    ports = block[2 * n : 2 * n + 4]
    return ["PROTO=TCP", f"TCPREMOTEIP={fmt(block[:n])}", f"TCPLOCALIP={fmt(block[n : 2 * n])}",
            f"TCPREMOTEPORT={int.from_bytes(ports[:2], 'big')}",
            f"TCPLOCALPORT={int.from_bytes(ports[2:], 'big')}"]


def parse_extensions(block: bytes, inside_ssl: bool = False) -> List[str]:
    """The modifications of a block of v2 TLVs (the SSL sub-TLVs with *inside_ssl*)."""
    where = "sub-extension" if inside_ssl else "extension"
    modifs: List[str] = []
    pos = 0
    while pos < len(block):
        if len(block) - pos < 3:
            raise BadHeader(f"invalid TLV encoding in {where}")
        kind, size = block[pos], int.from_bytes(block[pos + 1 : pos + 3], "big")
        pos += 3
        if size > len(block) - pos:
            raise BadHeader(f"invalid TLV encoding in {where}")
        value = block[pos : pos + size]
        pos += size
        if kind in (0x02, 0x20) and inside_ssl:
            raise BadHeader("invalid sub-extension type")
        if kind in _SSL_VARIABLES and not inside_ssl:
            raise BadHeader("invalid main extension type")
        if kind == 0x02:
            modifs.append(f"SSL_TLS_SNI_SERVERNAME={peer_text(value)}")
        elif kind == 0x20:
            if size < 5:
                raise BadHeader("invalid sub-TLV encoding in SSL extension")
            if value[0] & 0x01:
                modifs += parse_extensions(value[5:], True)
        elif kind in _SSL_VARIABLES:
            modifs.append(f"{_SSL_VARIABLES[kind]}={peer_text(value)}")
    return modifs
