"""IPv4 and IPv6 addresses and ports the way skalibs scans and prints them.

Addresses are ``bytes`` of length 4 (IPv4) or 16 (IPv6), in network order; the length is the
family. Some facts about skalibs 2.13's ``ip4_scan``, ``ip6_scan`` and ``ip6_fmt`` this module
reproduces (checked against libskarnet itself by the tests):

* Scanning is a **prefix** parse: a scanner reads what it can and reports how many characters it
  used; callers only check that it used some, so trailing text is ignored (``127.0.0.1:80`` is
  127.0.0.1, ``::1x`` is ::1).
* IPv4: four decimal numbers separated by ``.``; each is scanned greedily while it fits in 32 bits
  and then truncated to a byte (``127.0.0.257`` is 127.0.0.1); leading zeros are decimal. ``127.1``,
  ``""`` and a leading space fail.
* IPv6: hex groups of at most 16 bits (leading zeros are free: ``00001`` is a group) separated by
  ``:``, with at most one ``::`` that stands for **two or more** zero groups; no dotted quad
  (``::ffff:127.0.0.1`` scans as ``::ffff:127``), no brackets.
* ``ip46_scan`` tries IPv6 first, then IPv4: ``1.2.3.4`` is IPv4, ``1::`` IPv6.
* Lists (``ip4_scanlist``…) are addresses separated by runs of ``,;`` space, tab, CR or LF — plus
  ``:`` for IPv4-only lists; scanning stops silently at the first thing that is not an address.
* Ports are whole-string decimal and at most 65535 (``00080`` is 80; ``+1``, ``""``, ``5x`` fail).
* Printing: IPv4 dotted decimal; IPv6 lowercase hex without leading zeros, the **first** longest
  run of two or more zero groups as ``::`` (RFC 5952), and never a dotted quad: an IPv4-mapped
  address prints ``::ffff:7f00:1``. (``inet_ntop`` and Python's socket module print
  ``::ffff:127.0.0.1``; :func:`from_sockaddr` converts.)
"""

from __future__ import annotations

import _socket

from ..base.options import scan_magnitude

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Tuple

__all__ = [
    "IP4_LEN", "IP6_LEN", "V4MAPPED_PREFIX", "PORT_MAX", "ip4_scan", "ip6_scan", "ip46_scan", "scan_list",
    "parse_ip", "parse_port", "family_of", "ip4_fmt", "ip6_fmt", "ip_fmt", "is_v4mapped", "network",
    "from_sockaddr", "to_sockaddr",
]

IP4_LEN = 4
IP6_LEN = 16
#: The first 12 bytes of an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``).
V4MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"
PORT_MAX = 0xFFFF
_UINT32_MAX = 0xFFFFFFFF
_HEX = "0123456789abcdefABCDEF"
_LIST_SEPARATORS = ",; \t\r\n"
_IP4_LIST_SEPARATORS = ",:; \t\r\n"


def _scan_uint32(text: str, pos: int) -> Tuple[int, int]:
    """Greedy decimal scan from *pos* while the value fits in 32 bits: (value, new pos)."""
    value = 0
    end = pos
    while end < len(text) and "0" <= text[end] <= "9":
        digit = ord(text[end]) - 48
        if value * 10 + digit > _UINT32_MAX:
            break
        value = value * 10 + digit
        end += 1
    return value, end


def ip4_scan(text: str) -> Optional[Tuple[bytes, int]]:
    """Scan an IPv4 address at the start of *text*: (4 bytes, characters used), or None."""
    out = bytearray()
    pos = 0
    for index in range(4):
        value, end = _scan_uint32(text, pos)
        if end == pos:
            return None
        out.append(value & 0xFF)
        pos = end
        if index == 3:
            break
        if pos >= len(text) or text[pos] != ".":
            return None
        pos += 1
    return bytes(out), pos


def ip6_scan(text: str) -> Optional[Tuple[bytes, int]]:
    """Scan an IPv6 address at the start of *text*: (16 bytes, characters used), or None."""
    groups: List[int] = []
    gap: Optional[int] = None  # how many groups came before the "::"
    pos, n = 0, len(text)
    if text.startswith("::"):
        gap, pos = 0, 2
    elif pos >= n or text[pos] not in _HEX:
        return None
    while True:
        # a group starts here, except right after a "::", which may end the address
        if pos >= n or text[pos] not in _HEX:
            if pos < n and text[pos] == ":":
                return None  # ":::"
            break
        value = 0
        while pos < n and text[pos] in _HEX:
            value = value * 16 + int(text[pos], 16)
            if value > 0xFFFF:
                return None
            pos += 1
        groups.append(value)
        if pos < n and text[pos] == ":":
            if len(groups) == 8:
                return None
            if pos + 1 < n and text[pos + 1] == ":":
                if gap is not None:
                    return None
                gap = len(groups)
                pos += 2
            else:
                pos += 1
                if pos >= n or text[pos] not in _HEX:
                    return None
            continue
        break
    if gap is None:
        if len(groups) != 8:
            return None
        full = groups
    else:
        if len(groups) > 6:
            return None
        full = groups[:gap] + [0] * (8 - len(groups)) + groups[gap:]
    return b"".join(g.to_bytes(2, "big") for g in full), pos


def ip46_scan(text: str) -> Optional[Tuple[bytes, int]]:
    """Scan an IPv6 address, else an IPv4 one, at the start of *text*: (bytes, used), or None."""
    return ip6_scan(text) or ip4_scan(text)


def _scan_list(text: str, scan: Callable[[str], Optional[Tuple[bytes, int]]], separators: str,
               limit: int) -> List[bytes]:
    found: List[bytes] = []
    pos = 0
    while pos < len(text) and len(found) < limit:
        got = scan(text[pos:])
        if got is None:
            break
        found.append(got[0])
        pos += got[1]
        while pos < len(text) and text[pos] in separators:
            pos += 1
    return found


def scan_list(text: str, family: Optional[int] = None, limit: int = 16) -> List[bytes]:
    """The addresses at the start of *text* (skalibs ``ip4_scanlist``, ``ip6_scanlist`` or
    ``ip46full_scanlist`` for *family* ``socket.AF_INET``, ``AF_INET6`` or None), at most *limit*."""
    if family == _socket.AF_INET:
        return _scan_list(text, ip4_scan, _IP4_LIST_SEPARATORS, limit)
    if family == _socket.AF_INET6:
        return _scan_list(text, ip6_scan, _LIST_SEPARATORS, limit)
    return _scan_list(text, ip46_scan, _LIST_SEPARATORS, limit)


def parse_ip(text: str, family: Optional[int] = None) -> bytes:
    """The address *text* starts with (prefix parse), of *family* (None: either, IPv6 first).

    Raises ValueError when no address of that family starts *text*.
    """
    if family == _socket.AF_INET:
        got = ip4_scan(text)
    elif family == _socket.AF_INET6:
        got = ip6_scan(text)
    else:
        got = ip46_scan(text)
    if got is None:
        raise ValueError(f"not an IP address: {text!r}")
    return got[0]


def parse_port(text: str) -> int:
    """A port number: the whole string decimal, at most 65535 (skalibs ``uint160_scan``).

    Raises ValueError.
    """
    value = scan_magnitude(text, 10, PORT_MAX)  # ValueError for anything but ASCII digits
    if value is None:
        raise ValueError(f"not a port number: {text!r}")
    return value


def family_of(ip: bytes) -> int:
    """``socket.AF_INET`` for 4 bytes, ``socket.AF_INET6`` for 16. Raises ValueError."""
    if len(ip) == IP4_LEN:
        return _socket.AF_INET
    if len(ip) == IP6_LEN:
        return _socket.AF_INET6
    raise ValueError(f"an IP address has 4 or 16 bytes, not {len(ip)}")


def ip4_fmt(ip: bytes) -> str:
    """Dotted decimal."""
    return ".".join(str(b) for b in ip)


def ip6_fmt(ip: bytes) -> str:
    """skalibs' ``ip6_fmt``: RFC 5952 compression, lowercase, never a dotted quad."""
    groups = [int.from_bytes(ip[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_len = -1, 1  # a run must be at least 2 groups long
    i = 0
    while i < 8:
        if groups[i] == 0:
            j = i
            while j < 8 and groups[j] == 0:
                j += 1
            if j - i > best_len:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    if best_start < 0:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
    return f"{head}::{tail}"


def ip_fmt(ip: bytes) -> str:
    """:func:`ip4_fmt` or :func:`ip6_fmt`, by the length of *ip*. Raises ValueError."""
    return ip4_fmt(ip) if family_of(ip) == _socket.AF_INET else ip6_fmt(ip)


def is_v4mapped(ip: bytes) -> bool:
    """True for an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``)."""
    return len(ip) == IP6_LEN and ip[:12] == V4MAPPED_PREFIX


def network(ip: bytes, prefix_len: int) -> bytes:
    """*ip* with every bit after the first *prefix_len* cleared (the network address).

    Raises ValueError if *prefix_len* is not between 0 and the address's bit length.
    """
    bits = len(ip) * 8
    if not 0 <= prefix_len <= bits:
        raise ValueError(f"prefix length {prefix_len} out of range for a {bits}-bit address")
    value = int.from_bytes(ip, "big")
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix_len)) - 1)
    return (value & mask).to_bytes(len(ip), "big")


def from_sockaddr(address: Tuple[object, ...], family: int) -> Tuple[bytes, int]:
    """(ip bytes, port) of a Python socket address of *family* (``getpeername()`` and friends).

    A scope suffix (``fe80::1%lo``) is dropped, as skalibs' 16-byte addresses have none.
    Raises ValueError for anything that is not an AF_INET / AF_INET6 address.
    """
    if family not in (_socket.AF_INET, _socket.AF_INET6) or len(address) < 2:
        raise ValueError(f"not an IP socket address: {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str) or not isinstance(port, int):
        raise ValueError(f"not an IP socket address: {address!r}")
    try:
        return _socket.inet_pton(family, host.split("%", 1)[0]), port
    except OSError:
        raise ValueError(f"not an IP socket address: {address!r}") from None


def to_sockaddr(ip: bytes, port: int) -> Tuple[int, Tuple[object, ...]]:
    """(family, Python socket address) for *ip* and *port*; scope id and flow info are 0."""
    family = family_of(ip)
    host = _socket.inet_ntop(family, ip)
    if family == _socket.AF_INET:
        return family, (host, port)
    return family, (host, port, 0, 0)
