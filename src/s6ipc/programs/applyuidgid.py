"""applyuidgid: set supplementary groups, gid and uid, then exec the rest of the command line."""

from __future__ import annotations

import os

from ..base.errors import BadInput
from ..base.messages import Reporter
from ..base.options import Command, Option, env_uint, flag, parse_gidlist, parse_gids, parse_uint, setting
from ..base.privileges import apply_uidgid, dumpable_as_after_exec
from ..chain.run import exec_into, import_stage, modify_environ

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -z ] [ -u uid ] [ -g gid ] [ -G gidlist ] [ -U ] prog..."


def _from_environment(ids: Dict[str, Any], _: str) -> None:
    """``-U``: ``$UID``, ``$GID`` and ``$GIDLIST``, read (and checked) where the letter stands."""
    ids["uid"] = env_uint(os.environ, "UID")
    ids["gid"] = env_uint(os.environ, "GID")
    if "GIDLIST" not in os.environ:
        raise BadInput("GIDLIST not set")
    ids["groups"] = parse_gidlist(os.environ["GIDLIST"])
    if ids["groups"] is None:
        raise BadInput("invalid $GIDLIST")


#: The ids land as apply_uidgid's keyword arguments (its defaults: no change).
COMMAND = Command({
    "z": flag("unexport"), "u": setting("uid", parse_uint), "g": setting("gid", parse_uint),
    "G": setting("groups", parse_gids), "U": Option(False, _from_environment),
}, 1)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    ids: Dict[str, Any] = {}
    rest = COMMAND.parse(args, ids)
    unexport = ids.pop("unexport", False)
    try:
        import_stage(rest)  # while the interpreter's files are still readable (see .chain)
    except (ImportError, OSError):
        pass  # the stage itself will say it in one line, with the ids it runs under
    apply_uidgid(**ids)
    if ids.get("uid") or ids.get("gid"):
        dumpable_as_after_exec()  # the next stage may run in this process: look as after an exec
    if unexport:
        modify_environ(("UID", "GID", "GIDLIST"))
    exec_into(reporter, rest)
