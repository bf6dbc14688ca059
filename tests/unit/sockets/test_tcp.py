"""s6ipc.sockets.tcp: s6-tcpserver-socketbinder's socket, on loopback (127.0.0.1 and ::1) only."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import Iterator, List

import pytest

from s6ipc.base.errors import SystemFailure
from s6ipc.sockets.tcp import bind_tcp_socket

V4 = bytes([127, 0, 0, 1])
V6 = bytes(15) + b"\1"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 here")


@pytest.fixture
def fds() -> Iterator[List[int]]:
    made: List[int] = []
    yield made
    for fd in made:
        os.close(fd)


def _sock(fd: int) -> socket.socket:
    return socket.socket(fileno=os.dup(fd))


def test_a_listening_ipv4_socket(fds: List[int]) -> None:
    fd = bind_tcp_socket(V4, 0, "127.0.0.1")
    fds.append(fd)
    with _sock(fd) as s:
        assert (s.family, s.type) == (socket.AF_INET, socket.SOCK_STREAM)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        host, port = s.getsockname()
        assert host == "127.0.0.1" and port > 0
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client, _sock(fd) as s:
        s.setblocking(True)
        conn, peer = s.accept()
        client.sendall(b"hi")
        assert conn.recv(2) == b"hi" and peer == client.getsockname()
        conn.close()


@ipv6
def test_ipv6_is_v6only(fds: List[int]) -> None:
    fd = bind_tcp_socket(V6, 0, "::1")
    fds.append(fd)
    with _sock(fd) as s:
        assert s.family == socket.AF_INET6
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        host, port, flow, scope = s.getsockname()
        assert (host, flow, scope) == ("::1", 0, 0)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_options_blocking_no_reuse_no_listen_and_udp(fds: List[int]) -> None:
    fd = bind_tcp_socket(V4, 0, "127.0.0.1", reuse=False, backlog=0, blocking=True)
    fds.append(fd)
    with _sock(fd) as s:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    udp = bind_tcp_socket(V4, 0, "127.0.0.1", datagram=True, backlog=0)  # listen(2) on UDP: EOPNOTSUPP
    fds.append(udp)
    with _sock(udp) as s:
        assert s.type == socket.SOCK_DGRAM and s.getsockname()[1] > 0


def test_a_port_taken_by_a_live_listener_is_refused_even_with_reuse(fds: List[int]) -> None:
    fd = bind_tcp_socket(V4, 0, "127.0.0.1")
    fds.append(fd)
    with _sock(fd) as s:
        port = s.getsockname()[1]
    with pytest.raises(SystemFailure) as e:
        bind_tcp_socket(V4, port, f"127.0.0.1 {port}")
    # s6's message has a space before the colon
    assert str(e.value) == f"unable to bind to 127.0.0.1 {port} : Address already in use"
    assert e.value.errno == errno.EADDRINUSE and e.value.exit_code == 111


def test_a_huge_backlog_is_capped_not_refused(fds: List[int]) -> None:
    fd = bind_tcp_socket(V4, 0, "127.0.0.1", backlog=2**40)
    fds.append(fd)
    with _sock(fd) as s:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_an_address_not_of_this_host_cannot_be_bound() -> None:
    with pytest.raises(SystemFailure) as e:
        bind_tcp_socket(bytes([192, 0, 2, 1]), 0, "192.0.2.1")   # TEST-NET-1: never local
    assert str(e.value) == "unable to bind to 192.0.2.1 : Cannot assign requested address"
