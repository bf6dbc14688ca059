"""The access fast paths decide from the peer the daemon identified, never from the environment's text.

ipcserverd's (:class:`FastAccess`) reads the peer's uid and gid, a TCP daemon's (:class:`FastTcpAccess`)
the peer's address bytes; both with a rules directory (``-i``) and a cdb (``-x``), on real connected
sockets (the local address is read from them). The environment handed to the policy lies about the
client here: the decision must follow the peer. The programs (``evaluate``) scan the same client out
of the environment and reach the same decision.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Dict, List, Tuple

import pytest

from s6ipc.access import ipc, tcp
from s6ipc.access.cdb import write_cdb
from s6ipc.access.fastpath import RulesSource
from s6ipc.access.rules import compile_rules
from s6ipc.base.execution import Spawner
from s6ipc.serve.peers import UnixPeers
from s6ipc.serve.tcppeer import TcpPeer, TcpPeers
from tests.support.access import make_rules
from tests.support.fdholder import Quiet

UID, GID = os.geteuid(), os.getegid()
OTHER = UID + 4242  # a uid no rule names


def rules_of(kind: str, root: str, spec: Dict[str, Dict[str, object]]) -> List[str]:
    """The ``-i DIR`` or ``-x CDB`` options for rules *spec*, made under *root*."""
    directory = make_rules(os.path.join(root, "dir"), spec)  # type: ignore[arg-type]
    if kind == "-i":
        return ["-i", directory]
    path = os.path.join(root, "rules.cdb")
    write_cdb(path, compile_rules(directory))
    return ["-x", path]


@pytest.fixture
def unix_connection(tmp_path, opened) -> Callable[[], Tuple[socket.socket, str]]:  # type: ignore[no-untyped-def]
    made = opened
    path = str(tmp_path / "s")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    made.append(listener)

    def connect() -> Tuple[socket.socket, str]:
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        conn, _ = listener.accept()
        made.extend([client, conn])
        return conn, path

    return connect


def _fast(policy: Any, parse: Callable[[List[str]], Any], program: str, args: List[str]
          ) -> Tuple[Any, Quiet, Spawner]:
    """*policy* (a fast path class) over *args* (parsed by *parse*), logging quietly, with the real
    *program* ``args…`` (a path that does not exist) as the spawner it falls back to."""
    log = Quiet()
    fallback = Spawner([f"/nonexistent/{program}", *args])
    return policy(parse(args), log, fallback), log, fallback


def fast_ipc(args: List[str]) -> Tuple[ipc.FastAccess, Quiet, Spawner]:
    return _fast(ipc.FastAccess, ipc.parse_options, "ipcserver-access", args)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["-i", "-x"])
def test_ipc_decides_on_the_peer_ids_not_the_environment(tmp_path, unix_connection, kind: str) -> None:  # type: ignore[no-untyped-def]
    spec = {f"uid/{OTHER}": {"allow": True, "env": {"RULE": b"other\n"}}, "uid/default": {"deny": True}}
    policy, log, fallback = fast_ipc(["-v2", *rules_of(kind, str(tmp_path), spec), "/usr/bin/env"])
    conn, path = unix_connection()
    allowed = UnixPeers().identify(conn, None)
    allowed.uid = OTHER  # the peer says OTHER (the rules allow it) ...
    env: Dict[str, str] = {"PATH": "/usr/bin:/bin"}
    allowed.fill(env, 1, "")
    env["IPCREMOTEEUID"] = str(UID)  # ... the environment's text says otherwise: the peer wins
    got = policy(allowed, env, conn)
    assert got is not None and got[0] is not fallback
    launch, final = got
    assert launch.name == "/usr/bin/env"
    assert final["RULE"] == "other" and final["IPCLOCALPATH"] == path
    assert log.lines == []  # the allow line is written once the program's pid is known

    refused = UnixPeers().identify(conn, None)
    assert (refused.uid, refused.gid) == (UID, GID)
    env = {"PATH": "/usr/bin:/bin"}
    refused.fill(env, 1, "")
    env["IPCREMOTEEUID"] = str(OTHER)
    assert policy(refused, env, conn) is None
    assert log.lines == [f"info: deny pid {os.getpid()} uid {UID} gid {GID}: Permission denied"]


def test_ipc_self_keys_and_gid_rules_from_the_peer(tmp_path, unix_connection) -> None:  # type: ignore[no-untyped-def]
    conn, _ = unix_connection()
    peer = UnixPeers().identify(conn, None)
    env: Dict[str, str] = {"PATH": "/usr/bin:/bin"}
    peer.fill(env, 1, "")
    by_self = {"uid/self": {"allow": True}}
    policy, _, _ = fast_ipc(rules_of("-i", str(tmp_path / "a"), by_self) + ["/usr/bin/env"])
    assert policy(peer, env, conn) is not None
    by_gid = {f"gid/{GID}": {"allow": True, "env": {"G": b"g\n"}}}
    policy, _, _ = fast_ipc(rules_of("-x", str(tmp_path / "b"), by_gid) + ["/usr/bin/env"])
    got = policy(peer, env, conn)
    assert got is not None and got[1]["G"] == "g"


def test_ipc_a_peer_without_ids_goes_to_the_program(tmp_path, unix_connection) -> None:  # type: ignore[no-untyped-def]
    policy, log, fallback = fast_ipc(rules_of("-i", str(tmp_path), {"uid/default": {"allow": True}})
                                     + ["/usr/bin/env"])
    conn, _ = unix_connection()
    env = {"PROTO": "IPC", "IPCREMOTEEUID": "0", "IPCREMOTEEGID": "0"}
    assert policy(object(), env, conn) == (fallback, env)  # type: ignore[arg-type]
    assert log.lines == []


def test_ipc_program_and_fast_path_reach_the_same_outcome(tmp_path, unix_connection) -> None:  # type: ignore[no-untyped-def]
    options = ipc.parse_options(rules_of("-i", str(tmp_path), {"uid/default": {"allow": True,
                                                                                 "env": {"X": b"1\n"}}})
                                + ["/usr/bin/env"])
    conn, _ = unix_connection()
    peer = UnixPeers().identify(conn, None)
    env: Dict[str, str] = {"PATH": "/usr/bin:/bin"}
    peer.fill(env, 1, "")
    source = RulesSource(options)
    local = ipc.connection_local_path(conn)
    from_env = ipc.evaluate(options, env, local, source)
    from_peer = ipc.decide(options, "IPC", peer.uid, peer.gid, env, local, source)
    assert from_env == from_peer and from_env.allowed and from_env.env["X"] == "1"


@pytest.fixture
def tcp_connection(opened) -> Callable[..., Tuple[socket.socket, TcpPeer, Dict[str, str]]]:  # type: ignore[no-untyped-def]
    made = opened

    def make(family: int = socket.AF_INET, client_ip: str = "127.0.0.1"
             ) -> Tuple[socket.socket, TcpPeer, Dict[str, str]]:
        listener = socket.socket(family)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::", 0))
        listener.listen(1)
        client = socket.socket()
        client.bind((client_ip, 0))
        client.connect(("127.0.0.1", listener.getsockname()[1]))
        conn, address = listener.accept()
        listener.close()
        made.extend([client, conn])
        peer = TcpPeers(family).identify(conn, address)
        env = {"PATH": "/usr/bin:/bin"}
        peer.fill(env, 1, address)
        return conn, peer, env

    return make


def fast_tcp(args: List[str]) -> Tuple[tcp.FastTcpAccess, Quiet, Spawner]:
    return _fast(tcp.FastTcpAccess, tcp.parse_options, "tcpserver-access", args)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["-i", "-x"])
def test_tcp_decides_on_the_peer_address_not_the_environment(tmp_path, tcp_connection, kind: str) -> None:  # type: ignore[no-untyped-def]
    spec = {"ip4/127.0.0.2_32": {"allow": True, "env": {"RULE": b"two\n"}}, "ip4/0.0.0.0_0": {"deny": True}}
    policy, log, fallback = fast_tcp(["-v2", "-H", *rules_of(kind, str(tmp_path), spec), "/usr/bin/env"])
    conn, peer, env = tcp_connection(client_ip="127.0.0.2")
    assert (peer.ip, peer.key) == (b"\x7f\x00\x00\x02", "127.0.0.2")
    env["TCPREMOTEIP"] = "127.0.0.3"  # the text lies: the peer's bytes decide
    got = policy(peer, env, conn)
    assert got is not None and got[0] is not fallback
    assert got[1]["RULE"] == "two" and got[1]["TCPLOCALIP"] == "127.0.0.1"

    conn, peer, env = tcp_connection(client_ip="127.0.0.3")
    env["TCPREMOTEIP"] = "127.0.0.2"
    assert policy(peer, env, conn) is None
    assert log.lines == [f"info: deny pid {os.getpid()} ip 127.0.0.3: Permission denied"]


@pytest.mark.parametrize("kind", ["-i", "-x"])
def test_tcp_v4_mapped_peer_is_an_ipv6_client(tmp_path, tcp_connection, kind: str) -> None:  # type: ignore[no-untyped-def]
    """On a dual-stack socket an IPv4 client is 16 bytes (s6-tcpserver6d): ip6 keys decide, not ip4."""
    spec = {"ip6/::ffff:7f00:0_104": {"allow": True, "env": {"MAPPED": b"yes\n"}},
            "ip4/0.0.0.0_0": {"deny": True}}
    policy, log, _ = fast_tcp(["-v2", "-H", *rules_of(kind, str(tmp_path), spec), "/usr/bin/env"])
    conn, peer, env = tcp_connection(socket.AF_INET6)
    assert peer.key == env["TCPREMOTEIP"] == "::ffff:7f00:1" and len(peer.ip) == 16
    got = policy(peer, env, conn)
    assert got is not None and got[1]["MAPPED"] == "yes" and got[1]["TCPLOCALIP"] == "::ffff:7f00:1"


def test_tcp_program_and_fast_path_reach_the_same_outcome(tmp_path, tcp_connection) -> None:  # type: ignore[no-untyped-def]
    rules = rules_of("-x", str(tmp_path), {"ip4/127.0.0.0_8": {"allow": True}})
    options = tcp.parse_options(["-H", "-R", *rules, "/usr/bin/env"])
    conn, peer, env = tcp_connection()
    source = RulesSource(options)
    from_env = tcp.evaluate(options, env, tcp.SocketConnection(conn), source)
    from_peer = tcp.decide(options, "TCP", peer.ip, peer.port, env, tcp.SocketConnection(conn), source,
                           ip_text=peer.key)
    assert from_env == from_peer and from_env.allowed


def test_tcp_peer_made_from_text_has_the_same_bytes() -> None:
    """A TcpPeer built without its bytes (from a saved text) computes them: the fast path needs them."""
    assert TcpPeer("10.0.0.1", 5, False).ip == socket.inet_aton("10.0.0.1")
    assert TcpPeer("::ffff:7f00:1", 5, True).ip == b"\0" * 10 + b"\xff\xff\x7f\0\0\x01"
