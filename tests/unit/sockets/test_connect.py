"""s6ipc.sockets.connect: s6-tcpclient's address lists, rounds and warnings, on loopback only."""

from __future__ import annotations

import socket
import time
from typing import Iterator, List, Tuple

import pytest

from s6ipc.base.errors import SystemFailure
from s6ipc.sockets.connect import LOCAL_ADDRESSES, MAX_ADDRESSES, connect, literal_addresses

V4 = bytes([127, 0, 0, 1])


@pytest.fixture
def server() -> Iterator[Tuple[socket.socket, int]]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    yield s, s.getsockname()[1]
    s.close()


@pytest.fixture
def refusing() -> Iterator[int]:
    """A port bound but not listening on 127.0.0.1: connections are refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def test_the_local_addresses_are_loopback_v6_then_v4() -> None:
    assert (socket.inet_pton(socket.AF_INET6, "::1"), V4) == LOCAL_ADDRESSES
    assert MAX_ADDRESSES == 16


@pytest.mark.parametrize("host, ip4, ip6, expected", [
    ("127.0.0.1", True, False, ["127.0.0.1"]),
    ("127.0.0.1,10.0.0.1", True, False, ["127.0.0.1", "10.0.0.1"]),
    ("127.0.0.1:10.0.0.1", True, False, ["127.0.0.1", "10.0.0.1"]),   # ':' separates IPv4 lists
    ("::1", True, False, []),                                          # IPv4 only by default
    ("::1", False, True, ["::1"]),
    ("127.0.0.1", False, True, []),
    ("::1 127.0.0.1", True, True, ["::1", "127.0.0.1"]),
    ("example.org", True, True, []),
])
def test_literal_addresses(host: str, ip4: bool, ip6: bool, expected: List[str]) -> None:
    got = literal_addresses(host, ip4, ip6)
    assert [socket.inet_ntop(socket.AF_INET if len(a) == 4 else socket.AF_INET6, a) for a in got] == expected


def test_at_most_sixteen_addresses_are_kept() -> None:
    assert len(literal_addresses(",".join(["127.0.0.1"] * 20), True, False)) == 16


def test_connects_to_the_first_that_answers(server: Tuple[socket.socket, int], refusing: int) -> None:
    listener, port = server
    warnings: List[str] = []
    sock = connect([V4], port, warn=warnings.append)
    assert sock is not None
    try:
        assert sock.getpeername() == ("127.0.0.1", port)
        assert sock.getblocking()
        assert warnings == []
    finally:
        sock.close()


def test_a_single_refused_address_warns_once_and_gives_none(refusing: int) -> None:
    warnings: List[str] = []
    start = time.monotonic()
    assert connect([V4], refusing, warn=warnings.append) is None
    assert time.monotonic() - start < 2
    assert warnings == [f"unable to connect to 127.0.0.1 port {refusing}: Connection refused"]


def test_failed_addresses_are_retried_in_the_second_round(refusing: int) -> None:
    other = bytes([127, 0, 0, 2])
    warnings: List[str] = []
    assert connect([V4, other], refusing, rounds=(1, 1), warn=warnings.append) is None
    # the first round says nothing; the second warns for each address it retried
    assert warnings == [f"unable to connect to 127.0.0.1 port {refusing}: Connection refused",
                        f"unable to connect to 127.0.0.2 port {refusing}: Connection refused"]


def test_without_a_second_round_the_first_warns(refusing: int) -> None:
    warnings: List[str] = []
    assert connect([V4, V4], refusing, rounds=(1, 0), warn=warnings.append) is None
    assert len(warnings) == 2


def test_a_local_address_and_port_are_bound_first(server: Tuple[socket.socket, int]) -> None:
    listener, port = server
    sock = connect([V4], port, local_ip=bytes([127, 0, 0, 2]))
    assert sock is not None
    try:
        conn, peer = listener.accept()
        assert peer[0] == "127.0.0.2" and sock.getsockname()[0] == "127.0.0.2"
        conn.close()
    finally:
        sock.close()


def test_a_local_address_of_the_other_family_fails_the_try(server: Tuple[socket.socket, int]) -> None:
    listener, port = server
    warnings: List[str] = []
    v6_local = socket.inet_pton(socket.AF_INET6, "::1")
    try:
        got = connect([V4], port, local_ip=v6_local, warn=warnings.append)
    except SystemFailure as e:  # no IPv6 here: the bind itself fails
        assert "bind socket" in str(e)
        return
    assert got is None
    reason = "Address family not supported by protocol"
    assert warnings == [f"unable to connect to 127.0.0.1 port {port}: {reason}"]
