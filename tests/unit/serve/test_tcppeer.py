"""TcpPeers.identify: the peer's address as skalibs prints it (the key, TCPREMOTEIP) and as bytes (what
the access fast path decides on), for s6-tcpserver4d's and 6d's sockets, from real loopback connections."""

from __future__ import annotations

import socket
from typing import List, Tuple

import pytest

from s6ipc.serve.tcppeer import TcpPeer, TcpPeers
from s6ipc.sockets.inet import ip_fmt


def accept(made: List[socket.socket], family: int, listen_ip: str, client_ip: str
           ) -> Tuple[socket.socket, Tuple[str, int]]:
    listener = socket.socket(family)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((listen_ip, 0))
    listener.listen(1)
    client = socket.create_connection((client_ip, listener.getsockname()[1]))
    conn, address = listener.accept()
    made.extend([listener, client, conn])
    return conn, address


@pytest.mark.parametrize("family,listen_ip,client_ip,text,packed", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1", "127.0.0.1", b"\x7f\0\0\x01"),
    (socket.AF_INET6, "::", "::1", "::1", b"\0" * 15 + b"\x01"),
    (socket.AF_INET6, "::", "127.0.0.1", "::ffff:7f00:1", b"\0" * 10 + b"\xff\xff\x7f\0\0\x01"),
])
def test_identify_keeps_text_and_bytes(opened, family: int, listen_ip: str, client_ip: str, text: str,  # type: ignore[no-untyped-def]
                                       packed: bytes) -> None:
    conn, address = accept(opened, family, listen_ip, client_ip)
    identity = TcpPeers(family)
    peer = identity.identify(conn, address)
    assert (peer.key, peer.ip, peer.port, peer.v6) == (text, packed, address[1], family == socket.AF_INET6)
    assert ip_fmt(peer.ip) == peer.key
    again = identity.identify(conn, address)  # a repeat client: the same text and bytes
    assert (again.key, again.ip) == (peer.key, peer.ip)
    env: dict = {}  # type: ignore[type-arg]
    peer.fill(env, 3, address)
    assert env == {"PROTO": "TCP", "TCPREMOTEIP": text, "TCPREMOTEPORT": str(address[1]), "TCPCONNNUM": "3"}


def test_peer_from_text_alone_computes_its_bytes() -> None:
    assert TcpPeer("192.0.2.7", 1, False).ip == bytes([192, 0, 2, 7])
    assert TcpPeer("2001:db8::1", 1, True).ip == bytes.fromhex("20010db8000000000000000000000001")
