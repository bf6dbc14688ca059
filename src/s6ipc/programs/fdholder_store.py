"""fdholder-store: give a descriptor (fd 0 by default) to an fd-holder daemon under an id."""

from __future__ import annotations

import os

from ..base.durations import scan_timeout
from ..base.messages import Reporter, flush_stdio
from ..base.options import Command, parse_uint, setting
from ..fdholder import tai
from ..fdholder.client import FdHolderClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -d fd ] [ -t timeout ] [ -T fdtimeout ] socket id"
COMMAND = Command({
    "d": setting("fd", parse_uint), "t": setting("timeout", scan_timeout),
    "T": setting("fd_timeout", parse_uint),
}, 2)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, Any] = {}
    rest = COMMAND.parse(args, o)
    base = tai.now()
    fd_timeout = o.get("fd_timeout", 0)
    limit = base.add_ms(fd_timeout) if fd_timeout else tai.infinite_from(base)
    holder = FdHolderClient(rest[0], o.get("timeout"))
    holder.store(o.get("fd", 0), rest[1], limit)
    flush_stdio()
    os._exit(0)
