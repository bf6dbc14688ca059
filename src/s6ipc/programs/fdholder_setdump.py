"""fdholder-setdump: give an fd-holder daemon the descriptors described by ``S6_FD#``,
``S6_FD_i``, ``S6_FDID_i`` and ``S6_FDLIMIT_i`` (what fdholder-getdump sets)."""

from __future__ import annotations

import os

from ..base.messages import Reporter, flush_stdio
from ..chain.options import parse_timeout
from ..fdholder.client import FdHolderClient
from ..fdholder.dump import descriptors_from_env, dump_count

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -t timeout ] socket"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    timeout, rest = parse_timeout(args, 1)
    count = dump_count(os.environ)
    holder = FdHolderClient(rest[0], timeout)
    if count:
        entries = descriptors_from_env(os.environ, count)
        holder.setdump(entries)
    flush_stdio()
    os._exit(0)
