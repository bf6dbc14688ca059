"""fdholder-transferdump: copy every descriptor (ids and limits) of one fd-holder daemon into
another — s6's or ours, in any combination."""

from __future__ import annotations

import os

from ..base.durations import timeout_seconds
from ..base.messages import Reporter, flush_stdio
from ..base.options import Command, UsageError, parse_uint, setting
from ..fdholder.client import FdHolderClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn, Tuple

USAGE = "[ -t timeoutfrom:timeoutto ] socketfrom socketto"


def parse_timeouts(text: str) -> Tuple[int, int]:
    """``A``, ``A:``, ``:B``, ``A:B`` (empty: infinite) in milliseconds. Raises UsageError."""
    first, colon, second = text.partition(":")
    source = parse_uint(first) if first else 0
    if not first and not colon:
        raise UsageError(text)
    dest = parse_uint(second) if second else 0
    return source, dest


COMMAND = Command({"t": setting("timeouts", parse_timeouts)}, 2)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, Tuple[int, int]] = {}
    rest = COMMAND.parse(args, o)
    timeouts = o.get("timeouts", (0, 0))
    source = FdHolderClient(rest[0], timeout_seconds(timeouts[0]),
                            connect_operation=f"connect to a source fd-holder daemon at {rest[0]}")
    dest = FdHolderClient(rest[1], timeout_seconds(timeouts[1]),
                          connect_operation=f"connect to a destination fd-holder daemon at {rest[1]}")
    dump = source.getdump()
    dest.setdump(dump)
    flush_stdio()
    os._exit(0)
