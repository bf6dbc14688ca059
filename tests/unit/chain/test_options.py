"""s6ipc.chain.options: what s6-ipcserver and s6-tcpserver share, and the naming of their stages."""

from __future__ import annotations

from typing import List, Tuple

import pytest

from s6ipc.base.execution import installed_prefix
from s6ipc.base.messages import Reporter
from s6ipc.base.options import UsageError, getopt
from s6ipc.chain.options import ServerOptions, naming_style, parse_timeout, take_common


def _take(args: List[str], letters: str = "qQvdD1c:C:u:g:G:U") -> Tuple[ServerOptions, List[str]]:
    opts, rest = getopt(args, letters)
    o = ServerOptions()
    for letter, value in opts:
        assert take_common(o, letter, value or "")
    return o, rest


def test_the_defaults() -> None:
    o = ServerOptions()
    assert (o.verbosity, o.reuse, o.lookup, o.notify, o.maxconn, o.localmaxconn, o.backlog, o.perms,
            o.systemd) == (1, True, True, False, None, None, None, 0o777, False)
    assert o.limits() == []
    assert o.privileges.stage("") == []


def test_verbosity_letters_the_last_wins() -> None:
    assert _take(["-v", "p"])[0].verbosity == 2
    assert _take(["-q", "p"])[0].verbosity == 0
    assert _take(["-v", "-Q", "p"])[0].verbosity == 1
    assert _take(["-q", "-v", "p"])[0].verbosity == 2


def test_reuse_notify_and_limits() -> None:
    o, rest = _take(["-D", "-1", "-c", "10", "-C", "2", "prog", "-c"])
    assert (o.reuse, o.notify, o.maxconn, o.localmaxconn, rest) == (False, True, 10, 2, ["prog", "-c"])
    assert o.limits() == ["-c", "10", "-C", "2"]
    assert _take(["-D", "-d", "p"])[0].reuse is True


def test_a_zero_limit_becomes_one_as_s6_does() -> None:
    o, _ = _take(["-c", "0", "-C", "0", "p"])
    assert (o.maxconn, o.localmaxconn) == (1, 1)
    assert _take(["-C", "5", "p"])[0].limits() == ["-C", "5"]


def test_privilege_options_become_the_applyuidgid_stage() -> None:
    o, _ = _take(["-u", "5", "-g", "6", "-G", "7,8", "p"])
    stage = o.privileges.stage("s6-")
    assert stage == [*installed_prefix(), "s6-applyuidgid", "-u", "5", "-g", "6", "-G", "7,8", "--"]
    u, _ = _take(["-u", "5", "-U", "p"])
    assert u.privileges.stage("")[-3:] == ["applyuidgid", "-Uz", "--"]


def test_other_letters_are_not_taken() -> None:
    o = ServerOptions()
    assert take_common(o, "b", "5") is False
    assert take_common(o, "S", "") is False
    assert o.backlog is None


@pytest.mark.parametrize("letter, value", [("c", "x"), ("C", ""), ("u", "-1"), ("G", "a,b")])
def test_bad_numbers_are_usage_errors(letter: str, value: str) -> None:
    with pytest.raises(UsageError):
        take_common(ServerOptions(), letter, value)


def test_naming_style_follows_the_reporters_name() -> None:
    assert naming_style(Reporter("s6-ipcserver")) == "s6-"
    assert naming_style(Reporter("ipcserver")) == ""
    assert naming_style(Reporter("s6ipc")) == ""


def test_parse_timeout() -> None:
    assert parse_timeout(["-t", "1500", "sock", "id"], 2) == (1.5, ["sock", "id"])
    assert parse_timeout(["-t", "0", "sock"], 1) == (None, ["sock"])
    assert parse_timeout(["sock", "id", "prog", "-t"], 2) == (None, ["sock", "id", "prog", "-t"])
    with pytest.raises(UsageError):
        parse_timeout(["sock"], 2)
    with pytest.raises(UsageError):
        parse_timeout(["-t", "soon", "sock"], 1)


def test_the_module_exports_its_four_names() -> None:
    """``__all__`` at run time is what the module declares after its imports (a second assignment
    further down would replace it: ``from s6ipc.chain.options import *`` would then miss names)."""
    from s6ipc.chain import options

    assert sorted(options.__all__) == ["ServerOptions", "naming_style", "parse_timeout", "take_common"]
