"""s6ipc.serve.peers: s6-ipcserverd's peer identity over real AF_UNIX connections."""

from __future__ import annotations

import json
import os
import socket
from typing import Dict, Iterator, Tuple

import pytest

from s6ipc.serve.peers import PeerUnknown, UnixPeer, UnixPeers

Conn = Tuple[socket.socket, socket.socket, object]


@pytest.fixture
def accepted(sockdir: str) -> Iterator[Conn]:
    """(client, accepted connection, the address accept returned) with the client bound to a path."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(sockdir, "srv"))
    listener.listen(1)
    client = socket.socket(socket.AF_UNIX)
    client.bind(os.path.join(sockdir, "cli"))
    client.connect(os.path.join(sockdir, "srv"))
    conn, address = listener.accept()
    listener.close()
    yield client, conn, address
    client.close()
    conn.close()


def test_the_identity_is_s6_ipcserverds() -> None:
    peers = UnixPeers()
    assert peers.family == socket.AF_UNIX
    assert peers.variables == ("PROTO", "IPCREMOTEEUID", "IPCREMOTEEGID", "IPCCONNNUM", "IPCREMOTEPATH")
    assert peers.unset == ()
    assert UnixPeers(lookup=False).unset == ("IPCREMOTEEUID", "IPCREMOTEEGID")
    assert peers.unit == "uid" and peers.ready_first is False
    assert peers.ready_line(0) == b"\n"


def test_identify_reads_the_peers_credentials(accepted: Conn, sockdir: str) -> None:
    client, conn, address = accepted
    peer = UnixPeers().identify(conn, address)
    assert (peer.uid, peer.gid, peer.key) == (os.geteuid(), os.getegid(), os.geteuid())
    env: Dict[str, str] = {}
    peer.fill(env, 3, address)
    assert list(env.items()) == [
        ("PROTO", "IPC"), ("IPCREMOTEEUID", str(os.geteuid())), ("IPCREMOTEEGID", str(os.getegid())),
        ("IPCCONNNUM", "3"), ("IPCREMOTEPATH", os.path.join(sockdir, "cli"))]
    u, g = os.geteuid(), os.getegid()
    assert peer.allow_line(1234, 3, 40) == f"allow {u}:{g} pid 1234 count 3/40"
    assert peer.deny_line(40, 40) == f"deny {u}:{g} count 40/40: Success"
    assert peer.end_name() == f"uid {u}"
    assert peer.describe() == {"uid": u, "gid": g}


def test_an_unbound_client_has_an_empty_path() -> None:
    a, b = socket.socketpair()
    try:
        peer = UnixPeers().identify(b, "")
        env: Dict[str, str] = {}
        peer.fill(env, 1, "")
        assert env["IPCREMOTEPATH"] == ""
        peer.fill(env, 1, b"\0abstract")
        assert env["IPCREMOTEPATH"] == ""
    finally:
        a.close()
        b.close()


def test_without_lookup_the_peer_is_anonymous(accepted: Conn) -> None:
    client, conn, address = accepted
    peers = UnixPeers(lookup=False)
    peer = peers.identify(conn, address)
    assert (peer.uid, peer.gid, peer.key) == (0, 0, 0)
    env: Dict[str, str] = {}
    peer.fill(env, 7, address)
    assert env == {"PROTO": "IPC", "IPCCONNNUM": "", "IPCREMOTEPATH": address}
    assert peer.allow_line(9, 7, 40) == "allow ?:? pid 9 count ?/40"
    assert peer.deny_line(7, 40) == "deny ?:? count 7/40: Success"
    assert peer.end_name() == "uid ?"
    assert peer.describe() == {"uid": None, "gid": None}
    assert peers.identify(conn, address) is peer   # one anonymous peer for all


def test_a_peer_survives_the_state_round_trip(accepted: Conn) -> None:
    client, conn, address = accepted
    peers = UnixPeers()
    peer = peers.identify(conn, address)
    state = json.loads(json.dumps(peer.to_state()))
    assert state == [os.geteuid(), os.getegid()]
    back = peers.peer_from_state(state)
    assert isinstance(back, UnixPeer)
    assert (back.uid, back.gid, back.key, back.describe()) == (peer.uid, peer.gid, peer.key, peer.describe())
    assert peers.peer_from_state([4294967295, 4294967294]).end_name() == "uid 4294967295"
    anonymous = UnixPeers(lookup=False)
    assert anonymous.peer_from_state([5, 6]).describe() == {"uid": None, "gid": None}


@pytest.mark.parametrize("state, error", [
    ([-1, 0], ValueError),
    ([2**32, 0], ValueError),
    (["0", 0], TypeError),
    ([True, 0], TypeError),
    ([0.0, 0], TypeError),
    ([1], ValueError),
    (None, TypeError),
])
def test_a_broken_state_is_refused(state: object, error: type) -> None:
    with pytest.raises(error):
        UnixPeers().peer_from_state(state)


def test_an_unidentifiable_peer_is_s6s_warning() -> None:
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(PeerUnknown) as e:
        UnixPeers().identify(b, "")
    assert str(e.value) == "unable to getpeereid: Bad file descriptor"


def test_credentials_are_those_of_another_process(sockdir: str) -> None:
    """The peer is the connecting process, not us: a child of another uid when we are root."""
    path = os.path.join(sockdir, "srv")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    os.chmod(path, 0o777)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the client
        try:
            if os.geteuid() == 0:
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            c.recv(1)
        finally:
            os._exit(0)
    conn, address = listener.accept()
    try:
        peer = UnixPeers().identify(conn, address)
        expected = (65534, 65534) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        assert (peer.uid, peer.gid) == expected
    finally:
        conn.close()
        listener.close()
        os.waitpid(pid, 0)
