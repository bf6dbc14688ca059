"""applyuidgid: set supplementary groups, gid and uid, then exec the rest of the command line."""

from __future__ import annotations

import os

from ..base.errors import BadInput
from ..base.messages import Reporter
from ..base.options import UsageError, env_uint, getopt, parse_gidlist, parse_uint
from ..base.privileges import apply_uidgid, dumpable_as_after_exec
from ..chain.run import exec_into, import_stage, modify_environ

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = "[ -z ] [ -u uid ] [ -g gid ] [ -G gidlist ] [ -U ] prog..."

def _env_id(name: str) -> int:
    return env_uint(os.environ, name)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    opts, rest = getopt(args, "zu:g:G:U")
    uid, gid, unexport = 0, 0, False
    groups: Optional[List[int]] = None
    for letter, value in opts:
        if letter == "z":
            unexport = True
        elif letter == "u":
            uid = parse_uint(value or "")
        elif letter == "g":
            gid = parse_uint(value or "")
        elif letter == "G":
            groups = parse_gidlist(value or "")
            if groups is None:
                raise UsageError(letter)
        elif letter == "U":
            uid = _env_id("UID")
            gid = _env_id("GID")
            if "GIDLIST" not in os.environ:
                raise BadInput("GIDLIST not set")
            groups = parse_gidlist(os.environ["GIDLIST"])
            if groups is None:
                raise BadInput("invalid $GIDLIST")
    if not rest:
        raise UsageError("too few arguments")
    try:
        import_stage(rest)  # while the interpreter's files are still readable (see .chain)
    except (ImportError, OSError):
        pass  # the stage itself will say it in one line, with the ids it runs under
    apply_uidgid(uid, gid, groups)
    if uid or gid:
        dumpable_as_after_exec()  # the next stage may run in this process: look as after an exec
    if unexport:
        modify_environ(("UID", "GID", "GIDLIST"))
    exec_into(reporter, rest)
