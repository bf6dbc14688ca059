"""The spawning servers' part of their life (serve/life.py) for IPC and TCP peers: the state handed
over, its reading back, the live view's fields and STATUS=."""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Dict

import pytest

from s6ipc.serve.admission import Admission, UidSources, parse_limits
from s6ipc.serve.life import ServerLife, parse_state
from s6ipc.serve.loop import Server, ServerConfig
from s6ipc.serve.peers import PeerIdentity, UnixPeer, UnixPeers
from s6ipc.serve.tcppeer import TcpPeer, TcpPeers
from tests.support.fdholder import Quiet


def _server(identity: PeerIdentity, **options: Any) -> Server:
    return Server(ServerConfig(["true"], **options), Quiet(), Quiet(), identity=identity)


def _life(server: Server) -> ServerLife:
    return ServerLife(server, ages=lambda pids: {pid: 1.234 for pid in pids})


def _round_trip(life: ServerLife, identity: PeerIdentity, **options: Any) -> Server:
    """The state through JSON into a new server, as the next image gets it."""
    state = json.loads(json.dumps(life.to_state()))
    other = _server(identity, **options)
    ServerLife(other, ours=list).restore(state)  # every pid is a child of the new image
    return other


def test_only_our_own_children_are_adopted() -> None:
    """A pid in the state that is not a child of this process (here: this test's parent and pid 1)
    is dropped with one warning, never put in the child table (so never signalled); a real child is kept."""
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    try:
        server = _server(UnixPeers(True))
        log = server.log = Quiet()
        ServerLife(server).restore({"accepted": 3, "refused": 0, "children": {
            str(child.pid): [0, 0], str(os.getppid()): [0, 0], "1": [0, 0]}})
        assert list(server.children.peers) == [child.pid]
        assert log.lines == [f"warning: not adopting pid 1, {os.getppid()} from the handoff state: "
                             "not a child of this process"]
    finally:
        child.kill()
        child.wait()


def test_ipc_state_describe_and_status() -> None:
    server = _server(UnixPeers(True), maxconn=7, localmaxconn=5)
    server.children.add(101, UnixPeer(0, 0, True))
    server.children.add(102, UnixPeer(1000, 100, True))
    server.children.add(103, UnixPeer(1000, 100, True))
    server.accepted, server.spawned = 5, 3
    server.refusals.update(localmaxconn=1, access=1)
    server.exits.update(ok=4, signaled=1)
    life = _life(server)
    counters = {"accepted": 5,
                "refused": {"maxconn": 0, "localmaxconn": 1, "access": 1, "spawn": 0, "rate": 0, "prefix": 0},
                "spawned": 3, "exits": {"ok": 4, "failed": 0, "signaled": 1}}
    assert life.to_state() == {"accepted": 5, "refused": 2, "counters": counters,
                               "children": {"101": [0, 0], "102": [1000, 100], "103": [1000, 100]}}
    assert life.descriptors() == {"listen": 0}
    document = life.describe()
    assert document["connections"] == {"total": 3, "uids": 2, "per_uid": {"0": 1, "1000": 2},
                                       "unit": "uid", "peers": 2, "per_peer": {"0": 1, "1000": 2}}
    assert document["limits"] == {"maxconn": 7, "localmaxconn": 5}
    assert document["children"][1] == {"pid": 102, "uid": 1000, "gid": 100, "age": 1.23}
    assert (document["accepted"], document["refused"], document["counters"]) == (5, 2, counters)
    assert life.status_text() == "3 connections from 2 uids, 5 accepted, 2 refused"
    other = _round_trip(life, UnixPeers(True))
    assert other.children.count(1000) == 2 and (other.accepted, other.refused) == (5, 2)
    assert ServerLife(other).counters() == counters, "every counter carried across the exec"
    assert other.children.peers[102].end_name() == "uid 1000"


def test_admission_state_and_per_gid_counts_cross_the_exec() -> None:
    """The buckets are carried (read with the new image's limits); the per-gid live counts are
    rebuilt from the children (so a gidconn= that the new image adds counts those from before)."""
    server = _server(UnixPeers(True))
    server.admission = Admission(parse_limits(["rate=1/m,burst=1"], False), UidSources(),  # type: ignore[arg-type]
                                 Quiet(), lambda: 50.0)
    server.children.add(101, UnixPeer(1000, 100, True))
    assert server.admission.admit(UnixPeer(1000, 100, True)) is None
    state = json.loads(json.dumps(_life(server).to_state()))
    assert state["admission"]["sources"] == {"1000": 1.0}
    other = _server(UnixPeers(True))
    other.admission = Admission(parse_limits(["rate=1/m,burst=1,gidconn=1"], False),  # type: ignore[arg-type]
                                UidSources(), Quiet(), lambda: 50.0)
    ServerLife(other, ours=list).restore(state)
    assert other.admission.live == {100: 1}
    assert other.admission.admit(UnixPeer(1000, 100, True)) == "rate", "the bucket came along"
    assert other.admission.admit(UnixPeer(1001, 100, True)) == "prefix"
    assert _life(other).describe()["admission"]["limits"]["gidconn"] == 1
    assert parse_state(state, UnixPeers(True)).children, "without -A now, the buckets are dropped"


def test_ipc_without_credentials() -> None:
    server = _server(UnixPeers(False), lookup=False)
    server.children.add(101, UnixPeers(False).identify(None, None))  # type: ignore[arg-type]
    life = _life(server)
    connections = life.describe()["connections"]
    assert connections == {"total": 1, "uids": None, "per_uid": {},
                           "unit": "uid", "peers": None, "per_peer": {}}
    assert life.describe()["children"] == [{"pid": 101, "uid": None, "gid": None, "age": 1.23}]
    assert life.status_text() == "1 connection, 0 accepted, 0 refused"
    other = _round_trip(life, UnixPeers(False), lookup=False)
    assert other.children.peers[101].end_name() == "uid ?"


@pytest.mark.parametrize("family,ips", [
    (socket.AF_INET, ["127.0.0.1", "10.0.0.2", "10.0.0.2"]),
    (socket.AF_INET6, ["::1", "::ffff:7f00:1", "::ffff:7f00:1"]),
])
def test_tcp_counts_per_address_and_keeps_identities_across_the_state(family: int, ips: list) -> None:  # type: ignore[type-arg]
    identity = TcpPeers(family)
    server = _server(identity, lookup=False)
    for n, ip in enumerate(ips):
        server.children.add(200 + n, TcpPeer(ip, 40000 + n, family == socket.AF_INET6))
    life = _life(server)
    document = life.describe()
    assert document["connections"] == {"total": 3, "unit": "ip", "peers": 2,
                                       "per_peer": {ips[0]: 1, ips[1]: 2}}
    assert "per_uid" not in document["connections"]
    assert document["children"][0] == {"pid": 200, "ip": ips[0], "port": 40000, "age": 1.23}
    assert life.status_text() == "3 connections from 2 addresses, 0 accepted, 0 refused"
    other = _round_trip(life, TcpPeers(family), lookup=False)
    assert other.children.count(ips[1]) == 2  # -C per IP goes on after the upgrade
    assert other.children.peers[201].end_name() == f"ip {ips[1]}"
    before = life.server.children.peers[201]
    assert other.children.peers[201].allow_line(201, 2, 5) == before.allow_line(201, 2, 5)
    server.children.peers.clear()
    server.children.per_key.clear()
    server.children.add(300, TcpPeer(ips[0], 1, family == socket.AF_INET6))
    assert life.status_text() == "1 connection from 1 address, 0 accepted, 0 refused"


@pytest.mark.parametrize("identity,state", [
    (UnixPeers(True), {"accepted": 0, "refused": 0, "children": {"1": ["0", 0]}}),
    (UnixPeers(True), {"accepted": 0, "refused": 0, "children": {"1": [-1, 0]}}),
    (UnixPeers(True), {"accepted": 0, "children": {}}),
    (TcpPeers(socket.AF_INET), {"accepted": 0, "refused": 0, "children": {"1": ["::1", 80]}}),
    (TcpPeers(socket.AF_INET6), {"accepted": 0, "refused": 0, "children": {"1": ["::1", 70000]}}),
    (TcpPeers(socket.AF_INET), {"accepted": 0, "refused": 0, "children": {"x": ["1.2.3.4", 80]}}),
])
def test_a_malformed_state_is_refused(identity: PeerIdentity, state: Dict[str, Any]) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        parse_state(state, identity)


def test_counters_from_an_older_state_and_a_newer_one() -> None:
    """A state without counters (0.1, 0.2) keeps its totals; a newer one's unknown reasons are kept
    (a downgrade loses no series); a negative or non-integer count is refused."""
    identity = UnixPeers(True)
    old = parse_state({"accepted": 9, "refused": 2, "children": {}}, identity).counters
    assert (old["accepted"], old["spawned"], old["refused"]["access"]) == (9, 7, 2)
    assert sum(old["refused"].values()) == 2
    newer = {"accepted": 3, "refused": {"access": 1, "tarpit": 1}, "spawned": 1, "exits": {"ok": 1, "oom": 0}}
    read = parse_state({"accepted": 3, "refused": 2, "counters": newer, "children": {}}, identity).counters
    assert read["refused"]["tarpit"] == 1 and read["exits"]["oom"] == 0 and read["refused"]["rate"] == 0
    for bad in (-1, 1.5, True, "3"):
        broken = dict(newer, refused={"access": bad})
        with pytest.raises(ValueError, match="counter 'access'"):
            parse_state({"accepted": 3, "refused": 2, "counters": broken, "children": {}}, identity)
