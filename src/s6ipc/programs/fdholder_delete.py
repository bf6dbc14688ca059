"""fdholder-delete: make an fd-holder daemon close and forget the descriptor held under an id."""

from __future__ import annotations

import os

from ..base.messages import Reporter, flush_stdio
from ..chain.options import parse_timeout
from ..fdholder.client import FdHolderClient, OperationFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -t timeout ] socket id"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    timeout, rest = parse_timeout(args, 2)
    holder = FdHolderClient(rest[0], timeout)
    try:
        holder.delete(rest[1])
    except OperationFailed as e:
        # s6 2.11.3.2 names the socket where it means the id (fixed upstream); we print the same.
        reporter.fatal(f"unable to delete fd for id {rest[0]}: {e.reason}", 1)
    flush_stdio()
    os._exit(0)
