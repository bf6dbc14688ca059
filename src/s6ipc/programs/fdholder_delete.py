"""fdholder-delete: make an fd-holder daemon close and forget the descriptor held under an id."""

from __future__ import annotations

import os

from ..base.messages import Reporter, flush_stdio
from ..chain.options import holder_client
from ..fdholder.client import OperationFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -t timeout ] socket id"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    holder, rest = holder_client(args, 2)
    try:
        holder.delete(rest[1])
    except OperationFailed as e:
        # s6 2.11.3.2 names the socket where it means the id (fixed upstream); we print the same.
        reporter.fatal(f"unable to delete fd for id {rest[0]}: {e.reason}", 1)
    flush_stdio()
    os._exit(0)
