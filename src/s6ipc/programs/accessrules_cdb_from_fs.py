"""accessrules-cdb-from-fs: compile a rules directory into a cdb, replaced atomically (mode 0600)."""

from __future__ import annotations

import os

from ..access.cdb import write_cdb
from ..access.rules import compile_rules
from ..base.messages import Reporter
from ..base.options import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "cdbfile dir"

#: The tag in the temp file name ``CDBFILE:TAG:XXXXXX``, as s6 names it.
TEMP_TAG = "s6-accessrules-cdb-from-fs"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    if len(args) < 2:
        raise UsageError("too few arguments")
    cdbfile, directory = args[0], args[1]
    records = compile_rules(directory, reporter.warn)
    write_cdb(cdbfile, records, tag=TEMP_TAG)
    os._exit(0)
