"""applyuidgid against /usr/bin/s6-applyuidgid: the ids the exec'd program ends up with.

The program run after the drop reads its own ``/proc/self/status`` (real, effective, saved and
filesystem uids and gids; the supplementary groups, which the kernel shows sorted) and the
variables UID/GID/GIDLIST. Both implementations run the same options; the exact list handed to
setgroups(2), in order, is compared under strace.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import pytest

from tests.support.processes import needs_reachable_interpreter, nobody_ids, ours, requires_root, run, theirs

NOBODY_UID, NOBODY_GID = nobody_ids()
REPORT = ["sh", "-c", 'grep -E "^(Uid|Gid|Groups):" /proc/self/status; '
          'echo "UID=${UID-unset} GID=${GID-unset} GIDLIST=${GIDLIST-unset}"']
BASE_ENV = {"PATH": "/usr/bin:/bin"}

Result = Tuple[int, str, str]
UNCHANGED = " ".join(str(g) for g in sorted(os.getgroups()))  # this process's supplementary groups


def strip_name(stderr: bytes) -> str:
    return "".join(line.split(": ", 1)[1] for line in stderr.decode().splitlines(keepends=True))


def apply(who: str, args: List[str], env: Optional[Dict[str, str]] = None,
          prog: Optional[List[str]] = None, user: Optional[List[str]] = None) -> Result:
    """Run ``applyuidgid args prog``, optionally after *user* (a command prefix such as setpriv)."""
    prefix = {"ours": ours, "s6": theirs}[who]("applyuidgid")
    argv = [*(user or []), *prefix, *args, *(REPORT if prog is None else prog)]
    p = run(argv, env={**BASE_ENV, **(env or {})})
    return p.returncode, p.stdout.decode(), strip_name(p.stderr).replace("s6-applyuidgid", "NAME").replace(
        "applyuidgid", "NAME")


def both(args: List[str], **kw) -> Result:  # type: ignore[no-untyped-def]
    s6 = apply("s6", args, **kw)
    mine = apply("ours", args, **kw)
    assert mine == s6
    return s6


def status(out: str) -> Dict[str, List[str]]:
    return {m[0]: m[1].split() for m in re.findall(r"^(Uid|Gid|Groups):[ \t]*(.*)$", out, re.M)}


# --- as root: the ids the program ends up with -----------------------------------------------------


@requires_root
@pytest.mark.parametrize(
    "args, uid, gid, groups",
    [
        (["-u", "1000", "-g", "1001", "-G", "5,6,7"], "1000", "1001", "5 6 7 1001"),
        (["-u", str(NOBODY_UID), "-g", str(NOBODY_GID), "-G", ""], str(NOBODY_UID), str(NOBODY_GID),
         str(NOBODY_GID)),
        (["-g", "1001"], "0", "1001", UNCHANGED),
        (["-u", "1000"], "1000", "0", UNCHANGED),
        (["-G", ""], "0", "0", "0"),
        (["-g", "1001", "-G", ""], "0", "1001", "1001"),
        (["-G", "5,0,0"], "0", "0", "0 0 5"),
        (["-g", "3", "-G", "5,3,3"], "0", "3", "3 3 5"),
        (["-g", "3", "-G", "3,5,3"], "0", "3", "3 3 5"),
        (["-G", "7,5,7,0,5"], "0", "0", "0 5 5 7 7"),
        (["-u", "123456", "-g", "654321", "-G", "4294967294 1;2"], "123456", "654321",
         "1 2 654321 4294967294"),
        (["-u", "0", "-g", "0", "-G", "0"], "0", "0", "0"),
        (["-u", "0", "-g", "0"], "0", "0", UNCHANGED),
        (["-u5", "-g6", "-G", "1,2,abc"], "5", "6", "1 2 6"),
        (["-z", "-u", "7"], "7", "0", UNCHANGED),
    ],
)
def test_ids(args: List[str], uid: str, gid: str, groups: str) -> None:
    code, out, err = both(args)
    assert (code, err) == (0, ""), out
    st = status(out)
    assert st["Uid"] == [uid] * 4  # real, effective, saved, filesystem
    assert st["Gid"] == [gid] * 4
    assert " ".join(st["Groups"]) == groups


@requires_root
@pytest.mark.parametrize(
    "args", [["-G", "5,0,0"], ["-G", "7,5,7,0,5"], ["-g", "3", "-G", "5,3,3"], ["-g", "3", "-G", "3,5"],
             ["-g", "9", "-G", "1,2"], ["-G", ""], ["-g", "4", "-G", ""]],
)
def test_setgroups_argument_in_order(args: List[str]) -> None:
    """The list given to setgroups(2), in order (the kernel sorts what /proc shows)."""
    lists = []
    for who in ("s6", "ours"):
        d = tempfile.mkdtemp(prefix="s6a")
        trace = os.path.join(d, "t")
        prefix = {"ours": ours, "s6": theirs}[who]("applyuidgid")
        if shutil.which("strace") is None:
            pytest.skip("strace is not installed")
        p = run(["strace", "-f", "-qq", "-e", "trace=setgroups", "-o", trace, *prefix, *args, "true"])
        assert p.returncode == 0, p.stderr
        with open(trace) as f:
            lists.append([line.split(None, 1)[1].strip() for line in f])
        shutil.rmtree(d)
    assert len(lists[0]) == 1
    assert lists[1] == lists[0]


@requires_root
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-g", "4294967295"], 111, "fatal: unable to setgid: Invalid argument\n"),
        (["-u", "4294967295"], 111, "fatal: unable to setuid: Invalid argument\n"),
        (["-G", "4294967295"], 111, "fatal: unable to set supplementary group list: Invalid argument\n"),
    ],
)
def test_invalid_ids(args: List[str], code: int, message: str) -> None:
    assert both(args) == (code, "", message)


# --- -U and -z ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "UID not set"),
        ({"UID": ""}, "invalid $UID"),
        ({"UID": "x", "GID": "1"}, "invalid $UID"),
        ({"UID": " 5"}, "invalid $UID"),
        ({"UID": "4294967296"}, "invalid $UID"),
        ({"UID": "+5"}, "invalid $UID"),
        ({"UID": "5"}, "GID not set"),
        ({"UID": "5", "GID": "abc", "GIDLIST": "abc"}, "invalid $GID"),
        ({"UID": "5", "GID": ""}, "invalid $GID"),
        ({"UID": "5", "GID": "6"}, "GIDLIST not set"),
        ({"UID": "5", "GID": "6", "GIDLIST": "abc"}, "invalid $GIDLIST"),
        ({"UID": "5", "GID": "6", "GIDLIST": ",5"}, "invalid $GIDLIST"),
        ({"UID": "5", "GID": "6", "GIDLIST": " 5"}, "invalid $GIDLIST"),
    ],
)
@pytest.mark.parametrize("args", [["-U"], ["-U", "-u", "5"], ["-zU"]])
def test_env_errors_in_order(env: Dict[str, str], message: str, args: List[str]) -> None:
    """-U reads the variables where it stands, before the rest of the command line is checked."""
    assert both(args, env=env) == (100, "", f"fatal: {message}\n")
    assert both(args, env=env, prog=[]) == (100, "", f"fatal: {message}\n")


@requires_root
@pytest.mark.parametrize(
    "args, uid, gid, groups, kept",
    [
        (["-U"], "11", "12", "3 12", "UID=11 GID=12 GIDLIST=3,abc"),
        (["-Uz"], "11", "12", "3 12", "UID=unset GID=unset GIDLIST=unset"),
        (["-U", "-z"], "11", "12", "3 12", "UID=unset GID=unset GIDLIST=unset"),
        (["-z", "-U"], "11", "12", "3 12", "UID=unset GID=unset GIDLIST=unset"),
        (["-U", "-u", "5"], "5", "12", "3 12", "UID=11 GID=12 GIDLIST=3,abc"),
        (["-u", "5", "-U"], "11", "12", "3 12", "UID=11 GID=12 GIDLIST=3,abc"),
        (["-U", "-G", ""], "11", "12", "12", "UID=11 GID=12 GIDLIST=3,abc"),
        (["-z"], "0", "0", UNCHANGED, "UID=unset GID=unset GIDLIST=unset"),
    ],
)
def test_ids_from_env(args: List[str], uid: str, gid: str, groups: str, kept: str) -> None:
    code, out, err = both(args, env={"UID": "11", "GID": "12", "GIDLIST": "3,abc"})
    assert (code, err) == (0, "")
    st = status(out)
    assert (st["Uid"], st["Gid"], " ".join(st["Groups"])) == ([uid] * 4, [gid] * 4, groups)
    assert out.splitlines()[-1] == kept


def test_z_keeps_the_rest_of_the_environment() -> None:
    env = {"UID": "0", "GID": "0", "GIDLIST": "", "FOO": "bar", "UIDX": "1"}
    code, out, _ = both(["-z"], env=env, prog=["env"])
    assert code == 0
    # skalibs' env_merge: each removed variable's place is taken by the last one
    assert out.splitlines() == ["PATH=/usr/bin:/bin", "UIDX=1", "FOO=bar"]


# --- not permitted --------------------------------------------------------------------------------


AS_NOBODY = ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_GID}", "--clear-groups"]


@requires_root
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-u", "1000"], 111, "fatal: unable to setuid: Operation not permitted\n"),
        (["-g", "1000"], 111, "fatal: unable to setgid: Operation not permitted\n"),
        (["-G", "1"], 111, "fatal: unable to set supplementary group list: Operation not permitted\n"),
        (["-G", ""], 111, "fatal: unable to set supplementary group list: Operation not permitted\n"),
        (["-u", "1000", "-g", "1000", "-G", "1"], 111,
         "fatal: unable to set supplementary group list: Operation not permitted\n"),
        (["-u", str(NOBODY_UID), "-g", str(NOBODY_GID)], 0, ""),
    ],
)
@needs_reachable_interpreter
def test_not_permitted(args: List[str], code: int, message: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    got = both(args, user=AS_NOBODY)
    assert (got[0], got[2]) == (code, message)


@requires_root
def test_not_permitted_after_our_own_drop() -> None:
    """Our applyuidgid drops to nobody, then either implementation cannot climb back."""
    first = ours("applyuidgid") + ["-u", str(NOBODY_UID), "-g", str(NOBODY_GID), "-G", ""]
    assert both(["-u", "1000"], user=first) == (111, "", "fatal: unable to setuid: Operation not permitted\n")


@requires_root
def test_path_is_searched_after_the_drop() -> None:
    """A PATH directory nobody cannot search turns "not found" into EACCES (126), as with s6."""
    d = tempfile.mkdtemp(prefix="s6a")
    os.chmod(d, 0o700)
    try:
        got = both(["-u", str(NOBODY_UID)], env={"PATH": d}, prog=["whatever"])
        assert got == (126, "", "fatal: unable to exec whatever: Permission denied\n")
        got = both([], env={"PATH": d}, prog=["whatever"])
        assert got == (127, "", "fatal: unable to exec whatever: No such file or directory\n")
    finally:
        os.rmdir(d)


def test_exec_of_an_empty_name() -> None:
    assert both([], prog=[""]) == (126, "", "fatal: unable to exec : Permission denied\n")


# --- usage --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], ["-z"], ["-u", "x", "true"], ["-u", "", "true"], ["-g", "-1", "true"], ["-G", "abc", "true"],
     ["-G", ",5", "true"], ["-u", "4294967296", "true"], ["-x", "true"], ["--", ], ["-u"], ["--x", "true"],
     ["-u", "x", "-U"]],
)
def test_usage(args: List[str]) -> None:
    usage = "usage: NAME [ -z ] [ -u uid ] [ -g gid ] [ -G gidlist ] [ -U ] prog...\n"
    assert both(args, prog=[]) == (100, "", usage)
