"""s6ipc.chain.fastpath: a daemon's prog that is our own access program becomes an in-process policy;
anything else (a foreign prog, options the program would refuse, -P) leaves the daemon without one."""

from __future__ import annotations

from typing import List

import pytest

from s6ipc.access.ipc import FastAccess
from s6ipc.access.tcp import FastTcpAccess
from s6ipc.base.execution import installed_prefix
from s6ipc.chain.fastpath import ipc_access_fast_path, tcp_access_fast_path
from s6ipc.serve.loop import ServerConfig

PREFIX = installed_prefix()


def _ipc(argv: List[str], lookup: bool = True, verbosity: int = 1) -> object:
    return ipc_access_fast_path(ServerConfig(argv, lookup=lookup, verbosity=verbosity))


def test_our_ipcserver_access_becomes_a_policy() -> None:
    argv = [*PREFIX, "s6-ipcserver-access", "-v2", "-E", "prog", "a"]
    policy = _ipc(argv)
    assert isinstance(policy, FastAccess)
    assert policy.ipc_options.prog == ("prog", "a") and policy.ipc_options.verbosity == 2
    assert policy.ipc_options.doenv is False
    assert policy.log.name == "s6-ipcserver-access"          # it logs under the word used
    assert policy.fallback.argv == argv                       # the whole command, for the odd cases
    assert policy.standin is None


def test_a_verbose_daemon_gets_a_standin_for_refusals() -> None:
    policy = _ipc([*PREFIX, "ipcserver-access", "prog"], verbosity=2)
    assert isinstance(policy, FastAccess) and policy.standin is not None
    assert policy.standin.argv == ["false"]


@pytest.mark.parametrize("argv, lookup", [
    ([*PREFIX, "ipcserver-access", "prog"], False),           # -P: no ids to decide on
    (["/usr/bin/s6-ipcserver-access", "prog"], True),         # s6's C program
    (["prog"], True),
    ([*PREFIX, "ipcserverd", "prog"], True),                  # ours, but not the access program
    ([*PREFIX, "tcpserver-access", "prog"], True),            # the other family's
    ([*PREFIX, "ipcserver-access"], True),                    # no prog: the program says usage
    ([*PREFIX, "ipcserver-access", "-v", "x", "prog"], True),
    ([*PREFIX, "ipcserver-access", "-z", "prog"], True),
])
def test_no_ipc_policy(argv: List[str], lookup: bool) -> None:
    assert _ipc(argv, lookup=lookup) is None


def test_our_tcpserver_access_becomes_a_policy() -> None:
    argv = [*PREFIX, "s6-tcpserver-access", "-H", "-l", "here", "prog"]
    policy = tcp_access_fast_path(argv, 1)
    assert isinstance(policy, FastTcpAccess)
    assert policy.log.name == "s6-tcpserver-access" and policy.fallback.argv == argv
    assert policy.standin is None
    verbose = tcp_access_fast_path([*PREFIX, "tcpserver-access", "prog"], 3)
    assert isinstance(verbose, FastTcpAccess) and verbose.standin is not None


@pytest.mark.parametrize("argv", [
    ["/usr/bin/s6-tcpserver-access", "prog"],
    [*PREFIX, "ipcserver-access", "prog"],
    [*PREFIX, "tcpserver-access"],
    [*PREFIX, "tcpserver-access", "-t", "x", "prog"],
    [*PREFIX, "tcpserver-access", "-z", "prog"],
    [],
])
def test_no_tcp_policy(argv: List[str]) -> None:
    assert tcp_access_fast_path(argv, 1) is None
