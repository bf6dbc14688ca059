"""systemd-accept's variables come from the daemons' own identities (UnixPeers, TcpPeers).

For a Unix and a TCP connection: the names and their order are the identity's ``variables``, the
values what ipcserverd's and tcpserverd's peers write; an IPv4 client of a dual-stack socket is
spelled as s6-tcpserver6d spells it (skalibs' ``::ffff:7f00:1``, not CPython's ``::ffff:127.0.0.1``);
the count (``-c``) is per uid or per address, and only with a count directory.
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import List, Set, Tuple

import pytest

from s6ipc.base.errors import BadInput
from s6ipc.base.s6release import S6_2_11, S6_2_12
from s6ipc.serve.peers import UnixPeers
from s6ipc.serve.tcppeer import TcpPeers
from s6ipc.serve.ucspi import connection_variables

MAPPED_LOOPBACK = "::ffff:7f00:1"


def unix_pair(made: List[socket.socket], where: str, bind: bool) -> Tuple[socket.socket, str]:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(where, "l"))
    listener.listen(1)
    client = socket.socket(socket.AF_UNIX)
    client_path = os.path.join(where, "c") if bind else ""
    if bind:
        client.bind(client_path)
    client.connect(os.path.join(where, "l"))
    conn, _ = listener.accept()
    made.extend([listener, client, conn])
    return conn, client_path


def tcp_pair(made: List[socket.socket], family: int) -> Tuple[socket.socket, socket.socket, int]:
    """(server side, client, listening port): an IPv4 client, on a dual-stack socket for AF_INET6."""
    listener = socket.socket(family)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    made.extend([listener, client, conn])
    return conn, client, port


@pytest.mark.parametrize("bind", [False, True])
def test_unix_peer_variables_are_ipcserverd_s(tmp_path, opened, bind: bool) -> None:  # type: ignore[no-untyped-def]
    conn, client_path = unix_pair(opened, str(tmp_path), bind)
    env = connection_variables(conn.fileno())
    assert list(env) == list(UnixPeers.variables)
    assert env == {"PROTO": "IPC", "IPCREMOTEEUID": str(os.geteuid()), "IPCREMOTEEGID": str(os.getegid()),
                   "IPCCONNNUM": None, "IPCREMOTEPATH": client_path}


def test_tcp_peer_variables_are_tcpserver4d_s_plus_the_local_address(opened) -> None:  # type: ignore[no-untyped-def]
    conn, client, port = tcp_pair(opened, socket.AF_INET)
    env = connection_variables(conn.fileno())
    assert list(env) == [*TcpPeers.variables, "TCPLOCALIP", "TCPLOCALPORT"]
    assert env == {"PROTO": "TCP", "TCPREMOTEIP": "127.0.0.1", "TCPREMOTEPORT": str(client.getsockname()[1]),
                   "TCPCONNNUM": None, "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": str(port)}


def test_v4_mapped_peer_is_spelled_as_tcpserver6d_spells_it(opened) -> None:  # type: ignore[no-untyped-def]
    conn, client, port = tcp_pair(opened, socket.AF_INET6)
    assert conn.getpeername()[0] == "::ffff:127.0.0.1"  # CPython's text, which is not skalibs'
    env = connection_variables(conn.fileno())
    assert env["TCPREMOTEIP"] == env["TCPLOCALIP"] == MAPPED_LOOPBACK
    daemon: dict = {}  # type: ignore[type-arg]
    TcpPeers(socket.AF_INET6).identify(conn, conn.getpeername()).fill(daemon, 1, None)
    assert {k: env[k] for k in ("PROTO", "TCPREMOTEIP", "TCPREMOTEPORT")} == {
        k: daemon[k] for k in ("PROTO", "TCPREMOTEIP", "TCPREMOTEPORT")}


def _close_new_fds(before: Set[str]) -> None:
    """Close what this process opened since *before* (``/proc/self/fd`` names): the count lock
    ``connection_variables`` keeps for the program it would exec."""
    for fd in set(os.listdir("/proc/self/fd")) - before:
        try:
            os.close(int(fd))
        except OSError:
            pass


def test_count_per_address_and_only_live_ones(tmp_path, opened) -> None:  # type: ignore[no-untyped-def]
    countdir = str(tmp_path / "count")
    os.makedirs(countdir)
    held = os.open(os.path.join(countdir, "127.0.0.1.1"), os.O_WRONLY | os.O_CREAT, 0o600)  # a live one
    fcntl.flock(held, fcntl.LOCK_EX)
    open(os.path.join(countdir, "127.0.0.1.2"), "w").close()  # stale: unlocked
    other = os.open(os.path.join(countdir, "127.0.0.10.3"), os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)  # live, but another address (a prefix of it is ours)
    try:
        conn, _, _ = tcp_pair(opened, socket.AF_INET)
        before = set(os.listdir("/proc/self/fd"))  # then the lock the program would inherit
        env = connection_variables(conn.fileno(), countdir)
        assert env["TCPCONNNUM"] == "1"  # s6 2.12+: the live others
        assert sorted(os.listdir(countdir)) == ["127.0.0.1.1", f"127.0.0.1.{os.getpid()}", "127.0.0.10.3"]
    finally:
        _close_new_fds(before)
        os.close(held)
        os.close(other)


@pytest.mark.parametrize(("release", "first"), [(S6_2_12, "0"), (S6_2_11, "1")])
def test_unix_count_is_per_uid(tmp_path, opened, release, first) -> None:  # type: ignore[no-untyped-def]
    """The first connection is IPCCONNNUM 0 as s6 2.12+ numbers it, 1 as s6 2.11 did."""
    countdir = str(tmp_path / "count")
    os.makedirs(countdir)
    conn, _ = unix_pair(opened, str(tmp_path), False)
    before = set(os.listdir("/proc/self/fd"))
    try:
        env = connection_variables(conn.fileno(), countdir, release)
        assert env["IPCCONNNUM"] == first
        assert os.listdir(countdir) == [f"{os.geteuid()}.{os.getpid()}"]
    finally:
        _close_new_fds(before)


def test_neither_unix_nor_ip(opened) -> None:  # type: ignore[no-untyped-def]
    odd = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    opened.append(odd)
    with pytest.raises(BadInput, match="neither a Unix nor an IP socket"):
        connection_variables(odd.fileno())
