"""fdholder-store: give a descriptor (fd 0 by default) to an fd-holder daemon under an id."""

from __future__ import annotations

import os

from ..base.messages import Reporter, flush_stdio
from ..base.options import UsageError, getopt, parse_uint
from ..fdholder import tai
from ..fdholder.client import FdHolderClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -d fd ] [ -t timeout ] [ -T fdtimeout ] socket id"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    opts, rest = getopt(args, "d:t:T:")
    fd, timeout, fd_timeout = 0, 0, 0
    for letter, value in opts:
        number = parse_uint(value or "")
        if letter == "d":
            fd = number
        elif letter == "t":
            timeout = number
        else:
            fd_timeout = number
    if len(rest) < 2:
        raise UsageError("too few arguments")
    base = tai.now()
    limit = base.add_ms(fd_timeout) if fd_timeout else tai.infinite_from(base)
    holder = FdHolderClient(rest[0], timeout / 1000 if timeout else None)
    holder.store(fd, rest[1], limit)
    flush_stdio()
    os._exit(0)
