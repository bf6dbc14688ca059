"""FastTcpAccess: tcpserver-access's decision made inside a TCP daemon, on real loopback connections.

What the daemon gets back for each connection: the program's spawner and final environment (allowed),
None (refused: nothing spawned, the deny line logged with the daemon's pid), or the fallback (the
real program) for everything the fast path does not decide in-process.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Iterator, List, Tuple

import pytest

from s6ipc.access.tcp import FastTcpAccess, parse_options
from s6ipc.base.execution import Spawner
from s6ipc.serve.tcppeer import TcpPeer, TcpPeers
from tests.support.access import make_rules
from tests.support.fdholder import Quiet
from tests.support.netpeers import read_to_eof
from tests.support.processes import S6IPC


@pytest.fixture
def connection() -> Iterator[Callable[..., Tuple[socket.socket, socket.socket, dict, TcpPeer]]]:  # type: ignore[type-arg]
    made: List[socket.socket] = []

    def make(client_ip: str = "127.0.0.1") -> Tuple[socket.socket, socket.socket, dict, TcpPeer]:  # type: ignore[type-arg]
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.socket()
        client.bind((client_ip, 0))
        client.connect(listener.getsockname())
        conn, peer = listener.accept()
        listener.close()
        made.extend([client, conn])
        env = {"PATH": "/usr/bin:/bin"}
        identified = TcpPeers(socket.AF_INET).identify(conn, peer)
        identified.fill(env, 1, peer)
        return client, conn, env, identified

    yield make
    for s in made:
        s.close()


def fast(args: List[str]) -> Tuple[FastTcpAccess, Quiet, Spawner]:
    argv = [S6IPC, "tcpserver-access", *args]
    log = Quiet()
    fallback = Spawner(argv)
    return FastTcpAccess(parse_options(args), log, fallback), log, fallback


def test_allowed_in_process(tmp_path, connection) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {"ip4/127.0.0.0_8": {"allow": True, "env": {"R": b"1\n"}}})
    policy, log, fallback = fast(["-H", "-l", "here", "-i", rules, "/usr/bin/env"])
    assert policy.in_process
    client, conn, env, peer = connection()
    got = policy(peer, env, conn)
    assert got is not None
    spawner, final = got
    assert spawner is not fallback
    assert final["TCPLOCALIP"] == "127.0.0.1" and final["TCPLOCALHOST"] == "here" and final["R"] == "1"
    pid = spawner.spawn(conn.fileno(), final)
    conn.close()
    client.shutdown(socket.SHUT_WR)
    out = read_to_eof(client).decode().splitlines()
    os.waitpid(pid, 0)
    assert out[-1] == "TCPLOCALHOST=here" and "R=1" in out
    assert log.lines == [f"info: allow pid {pid} ip 127.0.0.1"]


def test_refused_in_process(tmp_path, connection) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {"ip4/127.0.0.2_32": {"deny": True}})
    policy, log, _ = fast(["-v2", "-H", "-i", rules, "/usr/bin/env"])
    client, conn, env, peer = connection("127.0.0.2")
    assert policy(peer, env, conn) is None
    assert log.lines == [f"info: deny pid {os.getpid()} ip 127.0.0.2: Permission denied"]


@pytest.mark.parametrize("args", [["-h"], ["-H", "-r"], ["-H", "-B", "banner"], []])
def test_network_or_banner_goes_to_the_program(args: List[str], connection) -> None:  # type: ignore[no-untyped-def]
    policy, log, fallback = fast([*args, "/usr/bin/env"])
    assert not policy.in_process
    client, conn, env, peer = connection()
    assert policy(peer, env, conn) == (fallback, env)
    assert log.lines == []


def test_odd_cases_go_to_the_program(tmp_path, connection) -> None:  # type: ignore[no-untyped-def]
    root = str(tmp_path / "r")
    os.makedirs(root)
    open(os.path.join(root, "ip4"), "w").close()  # damaged rules: the program reports them
    policy, log, fallback = fast(["-H", "-i", root, "/usr/bin/env"])
    client, conn, env, peer = connection()
    assert policy(peer, env, conn) == (fallback, env)
    assert log.lines == []


def test_a_peer_without_an_address_goes_to_the_program(tmp_path, connection) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {"ip4/0.0.0.0_0": {"allow": True}})
    policy, log, fallback = fast(["-H", "-i", rules, "/usr/bin/env"])
    client, conn, env, _ = connection()
    assert policy(object(), env, conn) == (fallback, env)  # type: ignore[arg-type]
    assert log.lines == []


def test_exec_rule_spawner(tmp_path, connection) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {"ip4/0.0.0.0_0": {"allow": True, "exec": b"echo hi"}})
    policy, _, _ = fast(["-H", "-i", rules, "/usr/bin/env"])
    client, conn, env, peer = connection()
    got = policy(peer, env, conn)
    assert got is not None and got[0].target.argv == ["/usr/lib/execline/bin/execlineb", "-c", "echo hi"]




def test_recognised_only_through_our_entry_point() -> None:
    from s6ipc.chain.fastpath import tcp_access_fast_path as fast_path

    policy = fast_path([S6IPC, "s6-tcpserver-access", "-H", "-R", "/usr/bin/env"], 2)
    assert isinstance(policy, FastTcpAccess) and policy.in_process and policy.standin is not None
    assert fast_path([S6IPC, "tcpserver-access", "-H", "/usr/bin/env"], 1).standin is None  # type: ignore[union-attr]
    assert fast_path(["/usr/bin/s6-tcpserver-access", "-H", "/usr/bin/env"], 1) is None
    assert fast_path([S6IPC, "ipcserver-access", "/usr/bin/env"], 1) is None
    assert fast_path([S6IPC, "tcpserver-access", "-B", "x" * 600, "/usr/bin/env"], 1) is None
    assert fast_path([S6IPC, "tcpserver-access", "-Z", "/usr/bin/env"], 1) is None
