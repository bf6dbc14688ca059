"""s6ipc.chain.options and the programs' option tables: each program takes exactly s6's letters.

The option strings below are s6's own (``subgetopt_r(argc, argv, "…")`` in each program's main,
s6 2.11 / s6-networking 2.5.1.3), ours where the program is ours (listen-fds, systemd-socket…): a
table that gains or loses a letter, or lets one take a value it should not, fails here.
"""

from __future__ import annotations

from typing import Dict, List

import pytest

from s6ipc.access import ipc as access_ipc
from s6ipc.access import tcp as access_tcp
from s6ipc.base.durations import scan_timeout
from s6ipc.base.options import Command, UsageError
from s6ipc.chain import daemon
from s6ipc.chain.options import (
    CLIENT_VERBOSITY,
    ServerOptions,
    backlog_at_least_one,
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
    (ipcserver.COMMAND, "qQvdDPp1c:C:b:a:G:g:u:US"),
    (ipcserver_socketbinder.COMMAND, "dDb:mMa:B"),
    (listen_fds.COMMAND, "n:f:x:"),
    (listen_pid.COMMAND, ""),
    (sdnotify_bridge.COMMAND, "d:t:av"),
    (status.COMMAND, "j"),
    (systemd_accept.COMMAND, "c:"),
    (systemd_socket.COMMAND, "n:l:fsdDb:a:BN"),
    (tcp_socketbinder.COMMAND, "dDb:mMB"),
    (tcpclient.COMMAND, "qQv46dDrRhHnNt:l:T:i:p:"),
    (tcpserver.COMMAND, "qQv46dD1c:C:b:G:g:u:U"),
    (tcpserver.FAMILY_COMMAND, "v:dD1c:C:b:G:g:u:U"),
    (daemon._IPC_COMMAND, "v:1Ppc:C:"),
    (daemon._TCP_COMMAND, "v:1c:C:"),
    (access_ipc._COMMAND, "v:Eel:i:x:"),
    (access_tcp._COMMAND, "WwDdHhRrPpv:l:B:t:i:x:"),
])
def test_each_program_takes_s6s_letters(command: Command, optstring: str) -> None:
    assert _letters(command.optstring) == _letters(optstring)


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
