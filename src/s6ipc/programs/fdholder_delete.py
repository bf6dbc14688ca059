"""fdholder-delete: make an fd-holder daemon close and forget the descriptor held under an id."""

from __future__ import annotations

import os
from typing import List, NoReturn

from ..fdholder.client import FdHolderClient, OperationFailed
from ..messages import Reporter, flush_stdio
from ..options import UsageError, getopt, parse_uint

USAGE = "[ -t timeout ] socket id"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    opts, rest = getopt(args, "t:")
    timeout = 0
    for _, value in opts:
        timeout = parse_uint(value or "")
    if len(rest) < 2:
        raise UsageError("too few arguments")
    holder = FdHolderClient(rest[0], timeout / 1000 if timeout else None)
    try:
        holder.delete(rest[1])
    except OperationFailed as e:
        # s6 2.11.3.2 names the socket where it means the id (fixed upstream); we print the same.
        reporter.fatal(f"unable to delete fd for id {rest[0]}: {e.reason}", 1)
    flush_stdio()
    os._exit(0)
