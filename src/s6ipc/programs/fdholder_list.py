"""fdholder-list: print the ids an fd-holder daemon holds, one per line, quoted as s6 does."""

from __future__ import annotations

import os

from ..base.messages import Reporter, flush_stdio, write_stdout
from ..chain.options import holder_client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

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
    holder, rest = holder_client(args, 1)
    ids = holder.list()
    write_stdout(b"".join(quote(i) + b"\n" for i in ids))
    flush_stdio()
    os._exit(0)
