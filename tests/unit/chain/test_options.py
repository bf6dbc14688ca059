"""s6ipc.chain.options: what s6-ipcserver and s6-tcpserver share, and the naming of their stages;
the option families several programs share, and each program's option table pinned to s6's letters.

The option strings of :func:`test_each_program_takes_s6s_letters` are s6's own
(``subgetopt_r(argc, argv, "…")`` in each program's main, s6 2.11 / s6-networking 2.5.1.3), ours
where the program is ours (listen-fds, systemd-socket…): a table that gains or loses a letter, or
lets one take a value it should not, fails there.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import pytest

from s6ipc.access import ipc as access_ipc
from s6ipc.access import tcp as access_tcp
from s6ipc.base.durations import scan_timeout
from s6ipc.base.execution import installed_prefix
from s6ipc.base.messages import Reporter
from s6ipc.base.options import Command, UsageError, getopt
from s6ipc.chain import daemon
from s6ipc.chain.options import (
    CLIENT_VERBOSITY,
    ServerOptions,
    backlog_at_least_one,
    naming_style,
    parse_timeout,
    take_common,
    wrapper_backlog,
)
from s6ipc.programs import (
    applyuidgid,
    fdholder_daemon,
    fdholder_retrieve,
    fdholder_store,
    fdholder_transferdump,
    fdholderd,
    ipcclient,
    ipcserver,
    ipcserver_socketbinder,
    listen_fds,
    listen_pid,
    sdnotify_bridge,
    status,
    systemd_accept,
    systemd_socket,
    tcp_socketbinder,
    tcpclient,
    tcpserver,
)


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


def test_the_module_exports_what_it_declares() -> None:
    """``__all__`` at run time is what the module declares after its imports (a second assignment
    further down would replace it: ``from s6ipc.chain.options import *`` would then miss names)."""
    from s6ipc.chain import options

    assert sorted(options.__all__) == sorted([
        "ServerOptions", "take_common", "parse_timeout", "holder_client", "naming_style", "one_or_more",
        "wrapper_backlog", "backlog_at_least_one", "SERVER_OPTIONS", "PRIVILEGE_OPTIONS", "BINDER_OPTIONS",
        "DATAGRAM_OPTIONS", "PERMS_OPTIONS", "CLIENT_VERBOSITY",
    ])


def _letters(optstring: str) -> Dict[str, bool]:
    return {c: optstring[i + 1 : i + 2] == ":" for i, c in enumerate(optstring) if c != ":"}


@pytest.mark.parametrize("command, optstring", [
    (applyuidgid.COMMAND, "zu:g:G:U"),
    (fdholder_daemon.COMMAND, "v:dD1c:n:b:G:g:u:Ut:T:i:x:"),
    (fdholder_retrieve.COMMAND, "Dt:"),
    (fdholder_store.COMMAND, "d:t:T:"),
    (fdholder_transferdump.COMMAND, "t:"),
    (fdholderd.COMMAND, "v:1c:n:i:x:t:T:"),
    (ipcclient.COMMAND, "qQvp:l:"),
    (ipcserver.COMMAND, "qQvdDPp1c:C:b:a:G:g:u:USA:"),
    (ipcserver_socketbinder.COMMAND, "dDb:mMa:B"),
    (listen_fds.COMMAND, "n:f:x:"),
    (listen_pid.COMMAND, ""),
    (sdnotify_bridge.COMMAND, "d:t:av"),
    (status.COMMAND, "j"),
    (systemd_accept.COMMAND, "c:"),
    (systemd_socket.COMMAND, "n:l:fsdDb:a:BN"),
    (tcp_socketbinder.COMMAND, "dDb:mMB"),
    (tcpclient.COMMAND, "qQv46dDrRhHnNt:l:T:i:p:"),
    (tcpserver.COMMAND, "qQv46dD1c:C:b:G:g:u:UA:"),
    (tcpserver.FAMILY_COMMAND, "v:dD1c:C:b:G:g:u:UA:"),
    (daemon._IPC_COMMAND, "v:1Ppc:C:A:"),
    (daemon._TCP_COMMAND, "v:1c:C:A:"),
    (access_ipc._COMMAND, "v:Eel:i:x:"),
    (access_tcp._COMMAND, "WwDdHhRrPpv:l:B:t:i:x:"),
])
def test_each_program_takes_s6s_letters(command: Command, optstring: str) -> None:
    """s6's letters, and our extensions: ``-A`` (admission limits) and ipcserver's ``-S``."""
    assert _letters(command.optstring) == _letters(optstring)


#: The getopt strings of every program an s6 or s6-networking chain runs, s6 2.11.0.0-2.15.0.0 and
#: s6-networking 2.5.0.0-2.8.0.1 (read from the sources of each tag), the TLS chain's included.
S6_CHAIN_OPTSTRINGS = (
    "zUu:g:G:", "Dd1Uv:c:n:b:u:g:G:t:T:i:x:", "v:Eel:i:x:", "DdMmBb:a:", "qQvDd1UPpc:C:b:a:u:g:G:",
    "Pp1c:C:v:", "WwDdHhRrPpv:l:B:t:i:x:", "DdMmBb:", "qQvDd1U46c:C:b:u:g:G:", "qQvDd1Uc:C:b:u:g:G:",
    "Dd1Uv:c:C:b:u:g:G:", "1c:C:v:", "qQv461c:C:b:G:g:u:UWwDdHhRrPpl:eB:t:i:x:SsYyK:Zzk:",
    "qQv1c:C:b:G:g:u:UWwDdHhRrPpl:B:t:i:x:SsJjYyK:Zzk:", "SsJjyYv:K:Zzk:", "d:SsJjYyv:K:k:",
    "qQv46DdHhRrnNt:l:T:i:p:SsJjYyK:k:Zz", "SsJjyYv:K:k:Zz6:7:",
    # the short letters of the programs parsed with skalibs' gol (s6-networking 2.7.2+)
    "12tv", "dDMmBb", "qQv1LUWwdDHhRrPpsSjJYyzZcCbGgulBtixKk", "sSjJYyzZvKk67",
    "qQv46dDHhRrNnsSjJYyzZtlTipKk",
)


def test_the_admission_letter_is_no_s6_letter() -> None:
    """``-A`` is free in every s6 and s6-networking program of the chains."""
    assert "A" not in "".join(S6_CHAIN_OPTSTRINGS)


class _Verbose:
    verbosity = 1


@pytest.mark.parametrize("args, verbosity", [
    (["-q"], 0), (["-q", "-q"], 0), (["-v", "-v", "-q"], 2), (["-vvv", "-Q"], 1), (["-qv"], 1),
])
def test_the_clients_verbosity_steps(args: List[str], verbosity: int) -> None:
    """s6-ipcclient and s6-tcpclient: -q one less (not below 0), -Q back to 1, -v one more."""
    target = _Verbose()
    Command(CLIENT_VERBOSITY).parse(args + ["p"], target)
    assert target.verbosity == verbosity


def test_take_common_records_the_shared_letters_only() -> None:
    o = ServerOptions()
    for letter, value in (("v", ""), ("D", ""), ("c", "0"), ("C", "7"), ("u", "5"), ("U", "")):
        assert take_common(o, letter, value)
    assert (o.verbosity, o.reuse, o.maxconn, o.localmaxconn) == (2, False, 1, 7)
    assert (o.privileges.from_env, o.privileges.uid) == (True, 0)  # -U resets an earlier -u
    assert not take_common(o, "b", "5")
    with pytest.raises(UsageError):
        take_common(o, "G", ",")


@pytest.mark.parametrize("text, verbatim, at_least_one", [
    ("0", 0, 1), ("5", 5, 5), ("4294967295", None, None), ("4294967294", 4294967294, 4294967294),
])
def test_the_wrappers_backlogs(text: str, verbatim: object, at_least_one: object) -> None:
    assert (wrapper_backlog(text), backlog_at_least_one(text)) == (verbatim, at_least_one)


def test_the_fdholder_clients_timeout() -> None:
    assert (scan_timeout("0"), scan_timeout("1500")) == (None, 1.5)
    assert parse_timeout(["-t", "250", "s", "id"], 2) == (0.25, ["s", "id"])
    assert parse_timeout(["s"], 1) == (None, ["s"])
    with pytest.raises(UsageError):
        parse_timeout(["-t", "250", "s"], 2)
