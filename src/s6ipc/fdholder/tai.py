"""TAIN timestamps: the 12-byte absolute times the fd-holder protocol carries.

Some facts about skalibs' ``tain`` that this module relies on (skalibs 2.13, Linux):

* A TAIN is a TAI64 label (uint64, big-endian on the wire) followed by a nanosecond count
  (uint32, big-endian). The label is ``2**62 + TAI seconds`` and TAI is ahead of Unix time by
  10 s plus the leap seconds (27 since 2017-01-01), so ``label = 2**62 + unix + 37``.
* Comparisons are lexicographic on (label, nano); skalibs never normalises what it unpacks, so
  a nano field above 999999999 from the wire is kept as is and compared as is.
* Adding one nanosecond carries into the label when nano reaches 10**9 (``tain_add``); both
  fields wrap modulo their width, as C unsigned arithmetic does.
* The clients' "no limit" is *now + 2**61 s* (first byte ``0x60``); s6-fdholder-getdump treats a
  limit as finite only when it is earlier than *now + 2**60 s*.
* The text form (TAI64N external format) is ``@`` + 24 lowercase hex digits of the 12 packed
  bytes; parsing needs ``@`` + 24 hex digits and ignores whatever follows.
"""

from __future__ import annotations

import struct
import time

from ..base.typeshim import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = [
    "TAI_UNIX_OFFSET", "LABEL_BASE", "NANO", "PACKED_SIZE", "INFINITE_RELATIVE_SECONDS",
    "FINITE_THRESHOLD_SECONDS", "Tain", "unpack", "from_unix_ns", "now", "infinite_from", "is_finite",
    "parse_text",
]

TAI_UNIX_OFFSET = 37
LABEL_BASE = 1 << 62
NANO = 1_000_000_000
PACKED_SIZE = 12
_PACK = struct.Struct(">QI")
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_HEX = frozenset(b"0123456789abcdefABCDEF")

#: The clients' "infinite" relative limit, and getdump's finiteness threshold (seconds).
INFINITE_RELATIVE_SECONDS = 1 << 61
FINITE_THRESHOLD_SECONDS = 1 << 60


class Tain(NamedTuple):
    """An absolute TAI64N time: (label, nano). Ordered like skalibs' ``tain_less``."""

    sec: int
    nano: int

    def pack(self) -> bytes:
        """The 12 wire bytes."""
        return _PACK.pack(self.sec & _U64, self.nano & _U32)

    def text(self) -> str:
        """The TAI64N external form ``@`` + 24 lowercase hex digits."""
        return "@" + self.pack().hex()

    def add_nano(self) -> Tain:
        """This time plus one nanosecond, with skalibs' carry and wrap-around."""
        nano = (self.nano + 1) & _U32
        sec = self.sec
        if nano >= NANO:
            nano -= NANO
            sec = (sec + 1) & _U64
        return Tain(sec, nano)

    def add_ms(self, ms: int) -> Tain:
        """This time plus *ms* milliseconds."""
        total = self.nano + (ms % 1000) * 1_000_000
        return Tain((self.sec + ms // 1000 + total // NANO) & _U64, total % NANO)

    def add_seconds(self, seconds: int) -> Tain:
        return Tain((self.sec + seconds) & _U64, self.nano)

    def unix(self) -> float:
        """Unix time in seconds (for computing poll timeouts)."""
        return (self.sec - LABEL_BASE - TAI_UNIX_OFFSET) + self.nano / NANO


def unpack(data: bytes) -> Tain:
    """The Tain in the first 12 bytes of *data* (no validation, as skalibs)."""
    sec, nano = _PACK.unpack_from(data)
    return Tain(sec, nano)


def from_unix_ns(ns: int) -> Tain:
    sec, nano = divmod(ns, NANO)
    return Tain(LABEL_BASE + sec + TAI_UNIX_OFFSET, nano)


def now() -> Tain:
    """The wall clock as a Tain."""
    return from_unix_ns(time.time_ns())


def infinite_from(base: Tain) -> Tain:
    """The clients' "no limit": *base* + 2**61 s."""
    return base.add_seconds(INFINITE_RELATIVE_SECONDS)


def is_finite(limit: Tain, base: Tain) -> bool:
    """Whether getdump exports *limit* (earlier than *base* + 2**60 s)."""
    return limit < base.add_seconds(FINITE_THRESHOLD_SECONDS)


def parse_text(text: str) -> Optional[Tain]:
    """Parse ``@`` + 24 hex digits (trailing characters ignored); None if it does not parse."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) < 25 or raw[:1] != b"@" or not all(c in _HEX for c in raw[1:25]):
        return None
    return unpack(bytes.fromhex(raw[1:25].decode("ascii")))
