"""s6ipc.base.options: skalibs' subgetopt and number scanners, pinned by examples and checked on s6.

The examples pin the rules. The property tests compare with the real binaries:
``parse_gidlist`` with the list s6-ipcserver re-emits for ``-G`` (read under strace, so the exact
order is seen), and whole command lines with s6-applyuidgid, whose option string ``zUu:g:G:`` has
flags, valued options and a gid list, and which shows the rest of its command line by exec'ing it.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s6ipc.base.errors import BadInput
from s6ipc.base.options import (
    UINT32_MAX,
    Command,
    Option,
    UsageError,
    collect,
    flag,
    getopt,
    gol,
    parse_gidlist,
    parse_gids,
    parse_octal,
    parse_uint,
    setting,
)
from tests.support.processes import ours, run, theirs, traced_execs

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --- getopt ------------------------------------------------------------------------------------------

OPTSTRING = "qvc:C:"


@pytest.mark.parametrize(
    "args, options, rest",
    [
        ([], [], []),
        (["-q", "path", "-v"], [("q", None)], ["path", "-v"]),  # stops at the first non-option
        (["path", "-q"], [], ["path", "-q"]),
        (["-q", "--", "-v", "x"], [("q", None)], ["-v", "x"]),  # -- is consumed
        (["--", "--"], [], ["--"]),
        (["-q", "-", "-v"], [("q", None)], ["-", "-v"]),  # lone - is a positional argument
        (["-"], [], ["-"]),
        (["-c5", "x"], [("c", "5")], ["x"]),  # attached value
        (["-c", "5", "x"], [("c", "5")], ["x"]),  # detached value
        (["-c", "-q", "x"], [("c", "-q")], ["x"]),  # a value may look like an option
        (["-c", "--", "x"], [("c", "--")], ["x"]),
        (["-c", "", "x"], [("c", "")], ["x"]),
        (["-qvc7", "x"], [("q", None), ("v", None), ("c", "7")], ["x"]),  # grouped flags, then a value
        (["-qc", "7", "x"], [("q", None), ("c", "7")], ["x"]),
        (["-cqv", "x"], [("c", "qv")], ["x"]),  # everything after a valued letter is its value
        (["-q", "-q", "-c1", "-c2"], [("q", None), ("q", None), ("c", "1"), ("c", "2")], []),  # order kept
        (["", "-q"], [], ["", "-q"]),  # an empty argument is a non-option
    ],
)
def test_getopt(args: List[str], options: List[Tuple[str, Optional[str]]], rest: List[str]) -> None:
    assert getopt(args, OPTSTRING) == (options, rest)


@pytest.mark.parametrize(
    "args",
    [["--foo"], ["--q"], ["---"], ["-x"], ["-qx"], ["-q-"], ["-c"], ["-q", "-c"], ["-qc"], ["-:"],
     ["-q", "--v"]],
)
def test_getopt_usage(args: List[str]) -> None:
    with pytest.raises(UsageError):
        getopt(args, OPTSTRING)


# --- numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("0", 0), ("010", 10), ("00", 0), ("4294967295", UINT32_MAX),
                                         ("0004294967295", UINT32_MAX), ("123", 123),
                                         ("0" * 5000 + "1", 1)])
def test_parse_uint(text: str, value: int) -> None:
    assert parse_uint(text) == value


@pytest.mark.parametrize("text", ["", "+5", " 5", "5 ", "5x", "-1", "4294967296", "99999999999", "0x10",
                                  "1e3", "\u0665", "５", "1_000", "9" * 5000, "1" + "0" * 10])
def test_parse_uint_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_uint(text)


@pytest.mark.parametrize("text, value", [("0", 0), ("777", 0o777), ("0700", 0o700), ("1777", 0o1777),
                                         ("37777777777", UINT32_MAX), ("0" * 5000 + "7", 7)])
def test_parse_octal(text: str, value: int) -> None:
    assert parse_octal(text) == value


@pytest.mark.parametrize("text", ["", "0800", "8", "+7", " 7", "7 ", "0o7", "40000000000", "\u0667",
                                  "7" * 5000])
def test_parse_octal_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_octal(text)


@pytest.mark.parametrize(
    "text, gids",
    [
        ("", []),
        ("5,6:7", [5, 6, 7]),
        ("1,2,abc", [1, 2]),
        ("5,,x,6", [5]),
        ("5;; \t\r\n6", [5, 6]),
        ("5 ", [5]),
        ("0", [0]),
        ("5x6", [5]),
        ("1,1,1", [1, 1, 1]),
        ("42949672951", [UINT32_MAX, 1]),  # a number is scanned while it fits in 32 bits
        ("4294967296", [429496729, 6]),
        ("07,08", [7, 8]),
        (",5", None),
        (" 5", None),
        ("abc", None),
        ("-1", None),
        ("+5", None),
    ],
)
def test_parse_gidlist(text: str, gids: Optional[List[int]]) -> None:
    assert parse_gidlist(text) == gids


def s6_gidlist(text: str) -> Optional[List[int]]:
    """What s6-ipcserver makes of ``-G text``: the re-emitted list, or None for a usage error."""
    proc, execs = traced_execs(theirs("ipcserver") + ["-G", text, "/nonexistent-s6ipc/s", "true"])
    if proc.returncode == 100:
        assert len(execs) == 1
        return None
    argv = execs[1]
    emitted = argv[argv.index("-G") + 1]
    return [int(g) for g in emitted.split(",")] if emitted else []


@pytest.mark.parametrize("text", ["", "5,6:7", "1,2,abc", ",5", "5,,x,6", "42949672951", "4294967296", " 5",
                                  "5;; \t\r\n6", "abc", "5x6", "-1", "+5", "07,08", "\u0665"])
def test_parse_gidlist_is_s6s(text: str) -> None:
    assert parse_gidlist(text) == s6_gidlist(text)


GID_TEXT = st.lists(
    st.one_of(
        st.integers(0, 2**34).map(str),
        st.sampled_from([",", ":", ";", " ", "\t", "\n", "\r", ",,", "x", "-", "+", "0", "00", "4294967295",
                         "é"]),
    ),
    max_size=8,
).map("".join)


@PROPERTY
@given(GID_TEXT)
def test_parse_gidlist_property(text: str) -> None:
    assert parse_gidlist(text) == s6_gidlist(text)


# --- Command: a program's option table ---------------------------------------------------------------

class _Target:
    def __init__(self) -> None:
        self.reuse = True
        self.backlog = 0
        self.names: List[str] = []
        self.seen: List[str] = []


def _table() -> Dict[str, Option]:
    def note(into: _Target, value: str) -> None:
        into.seen.append(value)

    return {"d": flag("reuse", True), "D": flag("reuse", False), "b": setting("backlog", parse_uint),
            "n": collect("names"), "x": Option(False, note)}


def test_the_optstring_comes_from_the_table() -> None:
    assert Command(_table()).optstring == "dDb:n:x"


@pytest.mark.parametrize("args, reuse, backlog, names, rest", [
    (["-Db5", "-d", "-n", "a", "-nb", "p"], True, 5, ["a", "b"], ["p"]),
    (["-b", "7", "-b8", "-D", "--", "-d"], False, 8, [], ["-d"]),  # the last value wins; -- ends
    (["-", "-D"], True, 0, [], ["-", "-D"]),                      # a lone - is an operand
])
def test_options_land_on_an_object_in_command_line_order(args: List[str], reuse: bool, backlog: int,
                                                         names: List[str], rest: List[str]) -> None:
    target = _Target()
    assert Command(_table()).parse(args, target) == rest
    assert (target.reuse, target.backlog, target.names) == (reuse, backlog, names)


def test_options_land_in_a_dict_as_keyword_arguments() -> None:
    got: Dict[str, object] = {}
    assert Command(_table(), 1).parse(["-D", "-n", "a", "-n", "b", "p", "q"], got) == ["p", "q"]
    assert got == {"reuse": False, "names": ["a", "b"]}  # what is not given stays the callee's default


def test_an_option_of_its_own_gets_the_value_or_nothing() -> None:
    target = _Target()
    Command(_table()).parse(["-x", "-x", "p"], target)
    assert target.seen == ["", ""]


@pytest.mark.parametrize("args", [["-z", "p"], ["--reuse", "p"], ["-b"], ["-b", "x", "p"], ["-b", "-1", "p"]])
def test_what_s6_rejects_is_a_usage_error(args: List[str]) -> None:
    with pytest.raises(UsageError):
        Command(_table()).parse(args, _Target())


def test_operands_and_the_program() -> None:
    with pytest.raises(UsageError, match="too few arguments"):
        Command(_table(), 2).parse(["-d", "p"], {})
    with pytest.raises(UsageError, match="no path"):
        Command(_table(), 1, missing="no path").parse([], {})
    assert Command(_table(), 2).parse(["", "q"], {}) == ["", "q"]  # an operand may be empty...
    for args in ([], ["-d"], ["", "q"]):
        with pytest.raises(UsageError, match="no program"):  # ...but not the program to run
            Command(_table(), program=True).parse(args, {})
    assert Command({}, program=True).parse(["prog", ""], {}) == ["prog", ""]


def test_parse_gids_is_parse_gidlist_with_a_usage_error() -> None:
    assert parse_gids("5,6") == [5, 6]
    assert parse_gids("") == []
    with pytest.raises(UsageError):
        parse_gids(",5")


# --- whole command lines, on s6-applyuidgid ---------------------------------------------------------

TOKENS = st.sampled_from(["-z", "-u", "-g", "-G", "-U", "-zu", "-u0", "-g00", "-G1,2", "-z-", "-x", "--", "-",
                          "--z", "0", "00", "", "x", "-1", "4294967296", "1,2", "/bin/echo", "-zzG"])


@PROPERTY
@given(st.lists(TOKENS, max_size=6))
def test_command_lines_parse_as_s6s(args: List[str]) -> None:
    """Same exit code, output and diagnostics as s6-applyuidgid for any mix of options and words."""
    argv = [*args, "/bin/echo", "end"]
    env = {"PATH": "/usr/bin:/bin", "UID": "0", "GID": "0", "GIDLIST": ""}
    s6 = run(theirs("applyuidgid") + argv, env=env)
    mine = run(ours("s6-applyuidgid") + argv, env=env)
    if s6.stderr.startswith(b"s6-applyuidgid: fatal: unable to exec : "):
        # the rest starts with "": parsed alike; exec'ing "" is a known difference
        # (tests/programs/test_applyuidgid.py::test_exec_of_an_empty_name)
        assert mine.stderr.startswith(b"s6-applyuidgid: fatal: unable to exec : ")
        return
    assert (mine.returncode, mine.stdout, mine.stderr) == (s6.returncode, s6.stdout, s6.stderr)


# -- gol (skalibs 2.14+: long options) -------------------------------------------------------------

GOL_LONG = {"only-v1": "1", "only-v2": "2", "timeout": "t", "verbosity": "v"}


@pytest.mark.parametrize("args,parsed", [
    (["-12", "-t5", "-v", "3", "prog", "-t"],
     ([("1", None), ("2", None), ("t", "5"), ("v", "3")], ["prog", "-t"])),
    (["--only-v2", "--timeout=", "--verbosity=0", "--", "-1"],
     ([("2", None), ("t", ""), ("v", "0")], ["-1"])),
    (["-t", "--", "prog"], ([], ["prog"])),  # no value before "--": the option is not set
    (["-t"], ([], [])),
    (["-", "x"], ([], ["-", "x"])),
])
def test_gol(args: List[str], parsed: object) -> None:
    assert gol(args, "12", "tv", GOL_LONG) == parsed


@pytest.mark.parametrize("args,message", [
    (["-x"], "unrecognized short option: x"),
    (["-1x"], "unrecognized short option: x"),
    (["--=5"], "invalid option: --=5"),
    (["--nope"], "unrecognized boolean option: --nope"),
    (["--timeout"], "unrecognized boolean option: --timeout"),
    (["--only-v1=1"], "unrecognized option with argument: --only-v1=1"),
])
def test_gol_errors(args: List[str], message: str) -> None:
    with pytest.raises(BadInput) as e:
        gol(args, "12", "tv", GOL_LONG)
    assert (str(e.value), e.value.exit_code) == (message, 100)


def test_parse_one_takes_exactly_one_non_empty_operand() -> None:
    command = Command({"j": flag("json")})
    into: Dict[str, object] = {}
    assert command.parse_one(["-j", "4242"], into) == "4242" and into == {"json": True}
    for args in ([], ["-j"], ["1", "2"], [""]):
        with pytest.raises(UsageError):
            command.parse_one(args, {})
