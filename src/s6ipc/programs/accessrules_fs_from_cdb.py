"""accessrules-fs-from-cdb: expand an access-rules cdb into a new rules directory."""

from __future__ import annotations

import os

from ..access.cdb import CdbReader
from ..access.rules import expand_rules
from ..base.errors import SystemFailure
from ..base.messages import Reporter
from ..base.options import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "dir cdbfile"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    if len(args) < 2:
        raise UsageError("too few arguments")
    directory, cdbfile = args[0], args[1]
    try:
        reader = CdbReader(cdbfile)
    except SystemFailure as e:
        raise SystemFailure("cdb_init", e.errno) from None
    expand_rules(reader, directory, cdbfile)
    os._exit(0)
