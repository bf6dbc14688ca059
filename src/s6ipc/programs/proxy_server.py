"""proxy-server: read one PROXY protocol header on stdin, set the client's variables, exec prog.

As s6-networking 2.7.2.0's ``proxy-server`` (the library: :mod:`s6ipc.serve.proxy`). Messages name
the program and its pid (``proxy-server: pid 1234: fatal: invalid magic``) once the options are
parsed, as skalibs' ``PROG_pid`` does.
"""

from __future__ import annotations

import os
import time

from ..base.errors import BadInput
from ..base.messages import Reporter
from ..base.options import UsageError, gol, parse_uint
from ..chain.run import exec_into, modify_environ
from ..serve.proxy import StdinReader, read_header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = "[ -1|--only-v1 | -2|--only-v2 ] [ -t timeout ] [ -v verbosity ] prog..."
_LONG = {"only-v1": "1", "only-v2": "2", "timeout": "t", "verbosity": "v"}


def _uint(what: str, text: str) -> int:
    try:
        return parse_uint(text)
    except UsageError:
        raise BadInput(f"{what} must be an unsigned integer") from None


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    options, rest = gol(args, "12", "tv", _LONG)
    v1 = v2 = True
    timeout: Optional[str] = None
    verbosity: Optional[str] = None
    for letter, value in options:
        if letter in "12":
            v1, v2 = letter == "1", letter == "2"
        elif letter == "t":
            timeout = value
        else:
            verbosity = value
    if not rest:
        raise UsageError("prog")
    ms = 0 if timeout is None else _uint("timeout", timeout)
    level = 1 if verbosity is None else _uint("verbosity", verbosity)
    reporter.name = f"{reporter.name}: pid {os.getpid()}"
    reader = StdinReader(0, time.monotonic() + ms / 1000 if ms else None)
    modify_environ(read_header(reader, v1, v2, reporter.warn if level else None))
    exec_into(reporter, rest)
