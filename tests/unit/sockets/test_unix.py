"""s6ipc.sockets.unix: s6-ipcserver-socketbinder's socket, the one listener predicate, peer
credentials and the address texts, on real AF_UNIX sockets."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from typing import Any, Iterator, List

import pytest

from s6ipc.base.errors import BadInput, SystemFailure, Unusable
from s6ipc.sockets import unix
from s6ipc.sockets.unix import (
    ANY_FAMILIES,
    IP_FAMILIES,
    bind_unix_socket,
    check_listening_stream,
    check_socket,
    listener_problem,
    local_path,
    peer_credentials,
    socket_address,
    unix_address,
)
from tests.support.forked import in_child


@pytest.fixture
def fds() -> Iterator[List[int]]:
    made: List[int] = []
    yield made
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


def _sock(fd: int) -> socket.socket:
    return socket.socket(fileno=os.dup(fd))




# -- unix_address / address_text --------------------------------------------------------------------
def test_unix_address_is_skalibs_length_rule() -> None:
    assert unix_address("/run/x") == b"/run/x"
    assert unix_address(b"/run/x") == b"/run/x"
    assert unix_address("") == b"\0" * 108          # the abstract name s6 binds for ""
    assert unix_address("a" * 107) == b"a" * 107
    with pytest.raises(OSError) as e:
        unix_address("a" * 108)                     # Python would take it; skalibs does not
    assert e.value.errno == errno.EPROTO


def test_address_text_stops_at_the_first_nul() -> None:
    assert unix.address_text("/run/x") == "/run/x"
    assert unix.address_text(b"\0abstract") == ""
    assert unix.address_text(b"/a\0b") == "/a"
    assert unix.address_text(None) == ""
    assert unix.address_text(("127.0.0.1", 1)) == ""


# -- bind_unix_socket ---------------------------------------------------------------------------------
def test_bind_makes_a_listener_with_the_asked_mode_whatever_the_umask(sockdir: str, fds: List[int]) -> None:
    path = os.path.join(sockdir, "s")
    old = os.umask(0o077)
    try:
        fd = bind_unix_socket(path, perms=0o760)
    finally:
        os.umask(old)
    fds.append(fd)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o760
    assert os.path.exists(path + ".lock")              # the lock file stays
    assert os.umask(old) == old                         # the umask was given back
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    assert listener_problem(fd) is None
    assert local_path(fd) == path and socket_address(fd) == path
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
        client.sendall(b"x")


def test_reuse_replaces_whatever_is_at_the_path(sockdir: str, fds: List[int]) -> None:
    path = os.path.join(sockdir, "s")
    with open(path, "w") as f:
        f.write("stale")
    fd = bind_unix_socket(path)
    fds.append(fd)
    assert stat.S_ISSOCK(os.stat(path).st_mode)


def test_without_reuse_an_existing_path_is_in_use(sockdir: str) -> None:
    path = os.path.join(sockdir, "s")
    open(path, "w").close()
    with pytest.raises(SystemFailure) as e:
        bind_unix_socket(path, reuse=False)
    assert str(e.value) == f"unable to bind to {path}: Address already in use"
    assert not os.path.exists(path + ".lock")


def test_a_binder_holding_the_lock_keeps_its_socket(sockdir: str, fds: List[int]) -> None:
    path = os.path.join(sockdir, "s")
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the other binder, holding PATH.lock
        lock = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.lockf(lock, fcntl.LOCK_EX)
        os.write(w, b"locked")
        os.read(go_r, 1)
        os._exit(0)
    os.read(r, 6)
    try:
        with pytest.raises(SystemFailure) as e:
            bind_unix_socket(path)
        assert str(e.value) == f"unable to bind to {path}: Device or resource busy"
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (r, w, go_r, go_w):
            os.close(fd)
    fds.append(bind_unix_socket(path))  # the lock is free again


def test_too_long_a_path_is_a_protocol_error(sockdir: str) -> None:
    path = os.path.join(sockdir, "x" * 120)
    with pytest.raises(SystemFailure) as e:
        bind_unix_socket(path)
    assert str(e.value) == f"unable to bind to {path}: Protocol error"


def test_the_empty_path_binds_the_abstract_name_of_nuls(fds: List[int]) -> None:
    try:
        fd = bind_unix_socket("", reuse=False)
    except SystemFailure as e:  # someone else has it (another test run): still the same name
        assert e.errno == errno.EADDRINUSE
        return
    fds.append(fd)
    assert socket_address(fd) == "@" + "\0" * 107
    assert local_path(fd) == ""


def test_no_backlog_and_datagram_and_blocking(sockdir: str, fds: List[int]) -> None:
    fd = bind_unix_socket(os.path.join(sockdir, "a"), backlog=0, blocking=True)
    fds.append(fd)
    assert listener_problem(fd) == "is not listening"
    assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    dg = bind_unix_socket(os.path.join(sockdir, "d"), datagram=True, backlog=0)
    fds.append(dg)
    assert unix.socket_kind(dg) == (socket.AF_UNIX, socket.SOCK_DGRAM, False)
    assert listener_problem(dg) == "is not a stream socket"


# -- listener_problem / checks --------------------------------------------------------------------
def test_listener_problem_names_each_way_to_be_wrong(sockdir: str, fds: List[int]) -> None:
    r, w = os.pipe()
    fds += [r, w]
    closed = os.dup(r)
    os.close(closed)
    assert listener_problem(closed) == "is not open (Bad file descriptor)"
    assert listener_problem(r) == "is not a socket"
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    fds.append(tcp.detach())
    assert listener_problem(fds[-1]) == "is not a Unix domain socket"
    assert listener_problem(fds[-1], IP_FAMILIES) is None
    assert listener_problem(fds[-1], ANY_FAMILIES) is None
    assert listener_problem(fds[-1], (socket.AF_INET6,)) == "is not an IPv6 socket"
    good = bind_unix_socket(os.path.join(sockdir, "l"))
    fds.append(good)
    assert listener_problem(good) is None
    assert listener_problem(good, IP_FAMILIES) == "is not an Internet domain socket"
    a, b = socket.socketpair()
    fds += [a.detach(), b.detach()]
    assert listener_problem(fds[-1]) == "is not listening"


def test_the_daemons_start_up_checks_have_s6s_messages_and_codes(sockdir: str, fds: List[int]) -> None:
    r, w = os.pipe()
    fds += [r, w]
    closed = os.dup(r)
    os.close(closed)
    assert not unix.is_socket(closed)
    with pytest.raises(SystemFailure) as e1:
        check_listening_stream(closed)
    assert (str(e1.value), e1.value.exit_code) == ("unable to fstat stdin: Bad file descriptor", 111)
    with pytest.raises(BadInput) as e2:
        check_socket(r)
    assert (str(e2.value), e2.value.exit_code) == ("stdin is not a socket", 100)
    a, b = socket.socketpair()
    fds += [a.detach(), b.detach()]
    with pytest.raises(Unusable) as e3:
        check_listening_stream(fds[-1])
    assert (str(e3.value), e3.value.exit_code) == ("stdin is not a listening socket", 111)
    good = bind_unix_socket(os.path.join(sockdir, "l"))
    fds.append(good)
    check_listening_stream(good)
    with pytest.raises(Unusable, match="^stdin is not an Internet domain socket$"):
        check_listening_stream(good, IP_FAMILIES)
    assert unix.is_socket(good) and not unix.is_socket(r)


# -- peers and addresses -----------------------------------------------------------------------------
def test_peer_credentials_are_the_connecting_process() -> None:
    a, b = socket.socketpair()
    try:
        assert peer_credentials(b) == (os.getpid(), os.geteuid(), os.getegid())
    finally:
        a.close()
        b.close()


def test_peer_credentials_are_those_at_connect_time(sockdir: str, fds: List[int]) -> None:
    path = os.path.join(sockdir, "l")
    fds.append(bind_unix_socket(path, blocking=True))
    changed_r, changed_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a client that connects, then changes ids
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        if os.geteuid() == 0:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
        os.write(changed_w, b"1")
        os.read(done_r, 1)
        os._exit(0)
    assert os.read(changed_r, 1) == b"1"
    with _sock(fds[-1]) as listener:
        conn, _ = listener.accept()
    try:
        assert peer_credentials(conn) == (pid, os.geteuid(), os.getegid())
    finally:
        conn.close()
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
        for fd in (changed_r, changed_w, done_r, done_w):
            os.close(fd)


def test_the_unsigned_ids_stay_positive() -> None:
    def work() -> Any:
        a, b = socket.socketpair()
        if os.geteuid() == 0:
            os.setresgid(0xFFFFFFFE, 0xFFFFFFFE, 0xFFFFFFFE)
            os.setresuid(0xFFFFFFFE, 0xFFFFFFFE, 0xFFFFFFFE)
        c, d = socket.socketpair()
        return [list(peer_credentials(b))[1:], list(peer_credentials(d))[1:]]

    first, second = in_child(work)
    if os.geteuid() == 0:
        assert second == [0xFFFFFFFE, 0xFFFFFFFE]
    assert first == [os.geteuid(), os.getegid()]


def test_socket_address_for_each_family(sockdir: str, fds: List[int]) -> None:
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    fds.append(tcp.detach())
    assert socket_address(fds[-1]) == f"127.0.0.1:{port}"
    try:
        tcp6 = socket.socket(socket.AF_INET6)
        tcp6.bind(("::1", 0))
    except OSError:
        pass
    else:
        port6 = tcp6.getsockname()[1]
        fds.append(tcp6.detach())
        assert socket_address(fds[-1]) == f"[::1]:{port6}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0s6ipc-test-" + str(os.getpid()).encode())
    fds.append(abstract.detach())
    assert socket_address(fds[-1]) == f"@s6ipc-test-{os.getpid()}"
    assert local_path(fds[-1]) == ""
    unnamed, other = socket.socketpair()
    fds += [unnamed.detach(), other.detach()]
    assert socket_address(fds[-2]) == ""
    r, w = os.pipe()
    fds += [r, w]
    assert socket_address(r) is None
    with pytest.raises(SystemFailure) as e:
        local_path(r)
    assert str(e.value) == "unable to ipc_local: Socket operation on non-socket"


def test_connect_unix_binds_then_connects(sockdir: str, fds: List[int]) -> None:
    path = os.path.join(sockdir, "srv")
    fds.append(bind_unix_socket(path, blocking=True))
    client = unix.connect_unix(path, os.path.join(sockdir, "cli"))
    try:
        with _sock(fds[-1]) as listener:
            conn, address = listener.accept()
        assert unix.address_text(address) == os.path.join(sockdir, "cli")
        conn.close()
    finally:
        client.close()
    with pytest.raises(SystemFailure) as e:
        unix.connect_unix(os.path.join(sockdir, "nobody"))
    assert str(e.value) == f"unable to connect to {sockdir}/nobody: No such file or directory"


def test_a_connected_socket_moves_to_fds_6_and_7(sockdir: str) -> None:
    def work() -> Any:
        a, b = socket.socketpair()
        ino = os.fstat(a.fileno()).st_ino
        unix.move_to_client_fds(a)
        return [os.fstat(6).st_ino == ino, os.fstat(7).st_ino == ino, os.get_inheritable(6),
                os.get_inheritable(7), a.fileno()]

    assert in_child(work) == [True, True, True, True, -1]


def test_listening_abstract_names_finds_listeners_by_prefix() -> None:
    import socket

    from s6ipc.sockets.unix import listening_abstract_names

    prefix = f"s6ipc-test/{os.getpid()}/"
    with socket.socket(socket.AF_UNIX) as a, socket.socket(socket.AF_UNIX) as b, \
            socket.socket(socket.AF_UNIX) as bound_only:
        a.bind("\0" + prefix + "a")
        a.listen(1)
        b.bind("\0" + prefix + "b")
        b.listen(1)
        bound_only.bind("\0" + prefix + "c")  # not listening: not offered
        assert listening_abstract_names(prefix) == [prefix + "a", prefix + "b"]
    assert listening_abstract_names(prefix) == []
