"""A stub DNS resolver that asks the servers s6-dns 2.3.5.5 would ask, the way it asks them.

Some facts about s6-dns this module reproduces (s6dns_rci_init, s6dns_engine, s6dns_message_parse):

* **Servers**: ``$DNSCACHEIP`` if it is set and at least one address scans from it (skalibs
  ``ip46_scanlist``: IPv6 first, separated by ``,;`` space, tab, CR, LF; at most 16); else every
  ``nameserver`` line of /etc/resolv.conf (the word, at least one space or tab, an address);
  else ``::1``. Always port 53. A resolv.conf that exists but cannot be read fails the init.
* **Qualification** (used by tcpclient without ``-N``): ``$DNSQUALIFY`` (words separated by
  spaces) if set, else the words of ``domain`` and ``search`` lines (only the first word of a
  ``domain`` line); each gets a final dot; the empty suffix comes last. A name ending in ``.`` is
  never qualified.
* **Engine**, per query, UDP first: recursive queries start at the *second* retry level, so a
  server gets 3, 11 then 45 s to answer (59 s); at each level every server is tried in turn. A
  server that refuses (ICMP port unreachable: ECONNREFUSED on the connected UDP socket) is left at
  once for the next one. A reply that is not an answer to this query (id, flags, question) is
  ignored. A truncated reply restarts the query over TCP from the first server (10 s each).
  RCODE 0 and 3 are answers; 1, 4 and 5 take the server out of the list for this query; any other
  makes it try the next server. No server left: ENETUNREACH; the caller's deadline: ETIMEDOUT.
* **Answers**: RCODE 3 is ENOENT ("no such domain"); otherwise the records of the asked type and
  class IN in the answer section, in order (none is not an error). Names are given back as text
  with their final dot (``lo.example.``), as C strings: a label holding a NUL ends the name
  there (``ev\0il.example.`` is ``ev``, without a final dot: what s6-tcpserver-access's
  ``strlen`` sees for the environment and the ``reversedns/`` keys). Any other byte is kept.
* Error texts are s6-dns's (:func:`error_text`).
"""

from __future__ import annotations

import errno
import os
import random
import selectors
import socket
import struct
import time

from ..base.cstrings import peer_text
from ..base.errors import SystemFailure
from ..base.typeshim import dataclass, field
from ..sockets.inet import IP4_LEN, ip46_scan, scan_list

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "T_A", "T_PTR", "T_AAAA", "C_IN", "PORT", "MAX_SERVERS", "error_text", "Config", "load_config",
    "encode_name", "arpa_name", "qualified", "Answer", "Resolver", "deadline_after", "remaining",
    "addresses_of", "first_name",
]

T_A = 1
T_PTR = 12
T_AAAA = 28
C_IN = 1
PORT = 53
MAX_SERVERS = 16
_UDP_TIMEOUTS = (1, 3, 11, 45)
_TCP_TIMEOUT = 10
_LOCALHOST = b"\0" * 15 + b"\1"
_HEADER = struct.Struct(">HHHHHH")

_ERRORS = {
    errno.ENETUNREACH: "no available DNS server",
    errno.EBADMSG: "server did not understand query",
    errno.EBUSY: "server failure",
    errno.ENOENT: "no such domain",
    errno.ENOTSUP: "not implemented in server",
    errno.ECONNREFUSED: "server refused",
    errno.EIO: "unknown network error",
    errno.EAGAIN: "query still processing",
    errno.ETIMEDOUT: "query timed out",
    errno.EPROTO: "malformed packet",
    errno.EDOM: "internal error (please submit a bug-report)",
}


def error_text(code: int) -> str:
    """s6-dns's ``s6dns_constants_error_str``: its own texts, else strerror."""
    return _ERRORS.get(code) or os.strerror(code)


@dataclass(frozen=True)
class Config:
    """Where to send queries (addresses of 4 or 16 bytes) and how to qualify names."""

    servers: Tuple[bytes, ...]
    suffixes: Tuple[str, ...] = ("",)


def _read_conf(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4095)
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise SystemFailure("init DNS", e.errno or errno.EIO) from None


def _suffix_words(text: str) -> List[str]:
    return [w if w.endswith(".") else w + "." for w in text.split()]


def load_config(environ: Optional[Mapping[str, str]] = None, resolv_conf: str = "/etc/resolv.conf") -> Config:
    """The resolver configuration s6dns_init reads. Raises :class:`SystemFailure` ``init DNS``."""
    env = os.environ if environ is None else environ
    servers: List[bytes] = []
    cache = env.get("DNSCACHEIP")
    if cache is not None:
        servers = scan_list(cache, None, MAX_SERVERS)
    conf: Optional[str] = None
    if not servers:
        conf = _read_conf(resolv_conf).decode("latin-1")
        for line in conf.split("\n"):
            rest = line[10:]
            if len(line) > 13 and line.startswith("nameserver") and rest[:1] in (" ", "\t"):
                got = ip46_scan(rest.lstrip(" \t"))
                if got is not None and len(servers) < MAX_SERVERS:
                    servers.append(got[0])
    if not servers:
        servers = [_LOCALHOST]
    qualify = env.get("DNSQUALIFY")
    suffixes: List[str] = []
    if qualify is not None:
        suffixes = _suffix_words(qualify)
    else:
        if conf is None:
            conf = _read_conf(resolv_conf).decode("latin-1")
        for line in conf.split("\n"):
            if len(line) > 8 and line[:6] in ("domain", "search") and line[6] in " \t\r":
                words = _suffix_words(line[7:])
                suffixes.extend(words[:1] if line[0] == "d" else words)
    return Config(tuple(servers), tuple(suffixes) + ("",))


# -- names -------------------------------------------------------------------------------------

def encode_name(name: str) -> bytes:
    """*name* (text, final dot optional) in wire format. Raises ValueError if it cannot be encoded."""
    raw = os.fsencode(name)
    if raw.endswith(b"."):
        raw = raw[:-1]
    out = bytearray()
    if raw:
        for label in raw.split(b"."):
            if not label or len(label) > 63:
                raise ValueError(f"bad domain name: {name!r}")
            out += bytes([len(label)]) + label
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"domain name too long: {name!r}")
    return bytes(out)


def arpa_name(ip: bytes) -> str:
    """The PTR name of an address: ``d.c.b.a.in-addr.arpa.`` or the nibbles under ``ip6.arpa.``."""
    if len(ip) == IP4_LEN:
        return ".".join(str(b) for b in reversed(ip)) + ".in-addr.arpa."
    nibbles = "".join(f"{b:02x}" for b in ip)
    return ".".join(reversed(nibbles)) + ".ip6.arpa."


def qualified(name: str, config: Config, qualify: bool) -> List[str]:
    """The names to try for *name*: itself if it ends with a dot or *qualify* is false, else
    one per suffix of *config* (the bare name last)."""
    if name.endswith(".") or not qualify:
        return [name if name.endswith(".") else name + "."]
    return [f"{name}.{suffix}" if suffix else name + "." for suffix in config.suffixes]


def _read_name(packet: bytes, pos: int) -> Tuple[str, int]:
    """A possibly compressed name at *pos*: (text with final dot, position after it)."""
    labels: List[bytes] = []
    end: Optional[int] = None
    jumps = 0
    total = 0
    while True:
        if pos >= len(packet):
            raise ValueError("name past the end")
        length = packet[pos]
        if length >= 0xC0:
            if pos + 1 >= len(packet) or jumps > 64:
                raise ValueError("bad compression")
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | packet[pos + 1]
            jumps += 1
            continue
        if length > 63:
            raise ValueError("bad label")
        pos += 1
        if length == 0:
            break
        labels.append(packet[pos : pos + length])
        total += length + 1
        if total > 255 or pos + length > len(packet):
            raise ValueError("name too long")
        pos += length
    text = peer_text(b".".join(labels) + b".")  # a C string, as s6dns_domain_tostring's reader sees it
    return text, (end if end is not None else pos)


# -- the engine --------------------------------------------------------------------------------

@dataclass
class Answer:
    """The outcome of one query: *status* 0 and the *records* (names for PTR, 4- or 16-byte
    addresses for A/AAAA), or an errno in *status* (see :func:`error_text`)."""

    status: int = errno.EAGAIN
    records: List[object] = field(default_factory=list)


class _Query:
    def __init__(self, name: str, qtype: int, servers: Sequence[bytes]) -> None:
        self.qname = encode_name(name)
        self.qtype = qtype
        self.servers = list(servers)
        self.level = 1  # recursive: s6-dns starts at the second UDP timeout
        self.server = 0
        self.tcp = False
        self.sock: Optional[socket.socket] = None
        self.local_deadline = 0.0
        self.id = 0
        self.buffer = b""
        self.received = b""
        self.answer = Answer()

    def packet(self) -> bytes:
        header = _HEADER.pack(self.id, 0x0100, 1, 0, 0, 0)
        return header + self.qname + struct.pack(">HH", self.qtype, C_IN)


def _usable(ip: bytes) -> bool:
    return any(ip)


class Resolver:
    """One round of parallel queries (s6dns_resolven_parse) against *config*'s servers."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def resolve(self, questions: Sequence[Tuple[str, int]], deadline: Optional[float]) -> List[Answer]:
        """Ask every (name, qtype) of *questions* at once; *deadline* is a ``time.monotonic()``
        value (None: none). Returns one :class:`Answer` per question, in order."""
        queries = []
        for name, qtype in questions:
            try:
                queries.append(_Query(name, qtype, self.config.servers))
            except ValueError:
                q = _Query(".", qtype, self.config.servers)
                q.answer.status = errno.EPROTO
                queries.append(q)
        selector = selectors.DefaultSelector()
        try:
            for q in queries:
                if q.answer.status == errno.EAGAIN:
                    self._start(q, selector, time.monotonic(), first=True)
            while any(q.answer.status == errno.EAGAIN for q in queries):
                now = time.monotonic()
                live = [q for q in queries if q.answer.status == errno.EAGAIN]
                if deadline is not None and now >= deadline:
                    for q in live:
                        self._finish(q, selector, errno.ETIMEDOUT)
                    break
                wake = min(q.local_deadline for q in live)
                if deadline is not None:
                    wake = min(wake, deadline)
                for key, _ in selector.select(max(0.0, wake - now)):
                    self._event(key.data, selector)
                now = time.monotonic()
                for q in live:
                    if q.answer.status == errno.EAGAIN and now >= q.local_deadline:
                        self._close(q, selector)
                        self._next(q, selector, now)
        finally:
            for q in queries:
                self._close(q, selector)
            selector.close()
        return [q.answer for q in queries]

    # one query's life ---------------------------------------------------------------------------

    def _close(self, q: _Query, selector: selectors.BaseSelector) -> None:
        if q.sock is not None:
            try:
                selector.unregister(q.sock)
            except (KeyError, ValueError):
                pass
            q.sock.close()
            q.sock = None

    def _finish(self, q: _Query, selector: selectors.BaseSelector, status: int) -> None:
        self._close(q, selector)
        q.answer.status = status

    def _start(self, q: _Query, selector: selectors.BaseSelector, now: float, first: bool = False) -> None:
        """Send to the current server, moving on past unusable ones (ENETUNREACH at the end)."""
        while True:
            if q.tcp:
                if q.server >= len(q.servers):
                    self._finish(q, selector, errno.ENETUNREACH)
                    return
            elif q.server >= len(q.servers):
                q.server = 0
                q.level += 1
                if q.level >= len(_UDP_TIMEOUTS):
                    self._finish(q, selector, errno.ENETUNREACH)
                    return
            ip = q.servers[q.server]
            if not _usable(ip):
                q.server += 1
                continue
            if self._send(q, selector, ip, now):
                return
            q.server += 1

    def _next(self, q: _Query, selector: selectors.BaseSelector, now: float) -> None:
        q.server += 1
        self._start(q, selector, now)

    def _send(self, q: _Query, selector: selectors.BaseSelector, ip: bytes, now: float) -> bool:
        family = socket.AF_INET if len(ip) == IP4_LEN else socket.AF_INET6
        q.id = random.getrandbits(16)
        sock = socket.socket(family, socket.SOCK_STREAM if q.tcp else socket.SOCK_DGRAM)
        sock.setblocking(False)
        host = socket.inet_ntop(family, ip)
        try:
            if q.tcp:
                err = sock.connect_ex((host, PORT))
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, os.strerror(err))
                data = q.packet()
                q.buffer = struct.pack(">H", len(data)) + data
                selector.register(sock, selectors.EVENT_WRITE, q)
                q.local_deadline = now + _TCP_TIMEOUT
            else:
                sock.connect((host, PORT))
                sock.send(q.packet())
                selector.register(sock, selectors.EVENT_READ, q)
                q.local_deadline = now + _UDP_TIMEOUTS[q.level]
        except OSError:
            sock.close()
            return False
        q.sock = sock
        return True

    def _event(self, q: _Query, selector: selectors.BaseSelector) -> None:
        sock = q.sock
        if sock is None:
            return
        now = time.monotonic()
        try:
            if q.tcp:
                reply = self._tcp_io(q, selector)
                if reply is None:
                    return
            else:
                reply = sock.recv(513)
        except OSError:
            self._close(q, selector)
            self._next(q, selector, now)
            return
        if not q.tcp and (len(reply) > 512 or len(reply) < 12):
            return
        if not self._relevant(q, reply):
            if q.tcp:
                self._close(q, selector)
                self._next(q, selector, now)
            return
        flags = _HEADER.unpack_from(reply)[1]
        rcode = flags & 0xF
        if flags & 0x0200:  # truncated
            self._close(q, selector)
            if q.tcp:
                self._next(q, selector, now)
            else:
                q.tcp, q.server = True, 0
                self._start(q, selector, now)
            return
        if rcode not in (0, 3):
            if rcode in (1, 4, 5):
                q.servers[q.server] = b"\0" * len(q.servers[q.server])
            self._close(q, selector)
            self._next(q, selector, now)
            return
        self._close(q, selector)
        self._parse(q, reply)

    def _tcp_io(self, q: _Query, selector: selectors.BaseSelector) -> Optional[bytes]:
        """Write the query then read the length-prefixed reply; the reply once complete, else None."""
        assert q.sock is not None
        if q.buffer:
            sent = q.sock.send(q.buffer)
            q.buffer = q.buffer[sent:]
            if not q.buffer:
                selector.modify(q.sock, selectors.EVENT_READ, q)
                q.received = b""
            return None
        chunk = q.sock.recv(65537)
        if not chunk:
            raise OSError(errno.EPIPE, "EOF")
        got = q.received = q.received + chunk
        if len(got) >= 2 and len(got) >= 2 + struct.unpack_from(">H", got)[0]:
            return got[2 : 2 + struct.unpack_from(">H", got)[0]]
        return None

    @staticmethod
    def _relevant(q: _Query, reply: bytes) -> bool:
        if len(reply) < 12:
            return False
        rid, flags, qd = _HEADER.unpack_from(reply)[:3]
        qr, opcode, z, rd = flags >> 15, (flags >> 11) & 0xF, (flags >> 4) & 0x7, (flags >> 8) & 1
        if not qr or opcode or z or qd != 1 or rd != 1 or rid != q.id:
            return False
        try:
            name, pos = _read_name(reply, 12)
        except ValueError:
            return False
        if pos + 4 > len(reply):
            return False
        try:
            same = encode_name(name).lower() == q.qname.lower()
        except ValueError:
            return False
        return same and reply[pos : pos + 4] == struct.pack(">HH", q.qtype, C_IN)

    @staticmethod
    def _parse(q: _Query, reply: bytes) -> None:
        _, flags, qd, an, _ns, _ar = _HEADER.unpack_from(reply)
        if flags & 0xF == 3:
            q.answer.status = errno.ENOENT
            return
        try:
            pos = 12
            for _ in range(qd):
                pos = _read_name(reply, pos)[1] + 4
            for _ in range(an):
                pos = _read_name(reply, pos)[1]
                rtype, rclass, _ttl, rdlength = struct.unpack_from(">HHIH", reply, pos)
                pos += 10
                rdata = reply[pos : pos + rdlength]
                if len(rdata) != rdlength:
                    raise ValueError("record past the end")
                if rclass == C_IN and rtype == q.qtype:
                    if rtype == T_PTR:
                        name, end = _read_name(reply, pos)
                        if end != pos + rdlength:
                            raise ValueError("bad PTR length")
                        q.answer.records.append(name)
                    elif rtype in (T_A, T_AAAA):
                        if rdlength != (4 if rtype == T_A else 16):
                            raise ValueError("bad address length")
                        q.answer.records.append(rdata)
                pos += rdlength
        except (ValueError, struct.error):
            q.answer.records.clear()
            q.answer.status = errno.EPROTO
            return
        q.answer.status = 0


def deadline_after(milliseconds: int) -> Optional[float]:
    """A ``time.monotonic()`` deadline *milliseconds* from now; 0 means none (infinite)."""
    return time.monotonic() + milliseconds / 1000 if milliseconds else None


def remaining(deadline: Optional[float]) -> Optional[float]:
    """Seconds left until *deadline* (None: no deadline), never negative."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def addresses_of(answer: Answer) -> List[bytes]:
    """The address records of an A/AAAA :class:`Answer`."""
    return [r for r in answer.records if isinstance(r, bytes)]


def first_name(answer: Answer) -> Optional[str]:
    """The first name of a PTR :class:`Answer` (None when it failed)."""
    if answer.status:
        return None
    for record in answer.records:
        if isinstance(record, str):
            return record
    return ""

