"""fdholder-list: print the ids an fd-holder daemon holds, one per line, quoted as s6 does."""

from __future__ import annotations

import errno
import os
from typing import List, NoReturn

from ..errors import SystemFailure
from ..fdholder.client import FdHolderClient
from ..messages import Reporter, flush_stdio
from .fdholder_options import parse_timeout

USAGE = "[ -t timeout ] socket"

_ESCAPES = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r", 92: b"\\\\"}


def quote(ident: bytes) -> bytes:
    """s6's quoting: printable ASCII verbatim, C escapes for 7..13 and ``\\``, ``\\0xHH`` else."""
    out = bytearray()
    for c in ident:
        if c in _ESCAPES:
            out += _ESCAPES[c]
        elif 0x20 <= c <= 0x7E:
            out.append(c)
        else:
            out += b"\\0x%02x" % c
    return bytes(out)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    timeout, rest = parse_timeout(args, 1)
    holder = FdHolderClient(rest[0], timeout)
    ids = holder.list()
    data = memoryview(b"".join(quote(i) + b"\n" for i in ids))
    try:
        while data:
            data = data[os.write(1, data):]
    except OSError as e:
        raise SystemFailure("write to stdout", e.errno or errno.EIO) from None
    flush_stdio()
    os._exit(0)
