"""s6ipc.fdholder.client against a real fd holder: our fdholder-daemon, started once for the module
(tests/support/fdholder.Holder), with every right for this uid."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Iterator, List

import pytest

from s6ipc.base import unixmessage
from s6ipc.base.errors import SystemFailure
from s6ipc.fdholder import protocol, tai
from s6ipc.fdholder.client import FdHolderClient, HeldDescriptor, OperationFailed, connect, setdump_chunks
from tests.support.fdholder import ALL_RIGHTS, Holder, make_rules
from tests.support.processes import ours, scratch_dir


@pytest.fixture(scope="module")
def holder() -> Iterator[str]:
    with scratch_dir("s6tc") as d:
        rules = make_rules(d, {f"uid/{os.geteuid()}": ALL_RIGHTS})
        h = Holder(ours("fdholder-daemon"), os.path.join(d, "holder"), ["-i", rules])
        try:
            yield h.path
        finally:
            h.stop()


@pytest.fixture
def client(holder: str) -> Iterator[FdHolderClient]:
    with FdHolderClient(holder, timeout=10) as c:
        yield c
        for ident in c.list():   # leave the holder empty for the next test
            c.delete(ident)


def _same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def test_store_retrieve_list_delete(client: FdHolderClient) -> None:
    r, w = os.pipe()
    try:
        client.store(r, "pipe:one")
        client.store(w, b"pipe:two")
        assert client.list() == [b"pipe:one", b"pipe:two"]
        got = client.retrieve("pipe:one")
        assert _same_file(got, r)
        assert fcntl.fcntl(got, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        os.close(got)
        client.delete("pipe:one")
        assert client.list() == [b"pipe:two"]
        got = client.retrieve("pipe:two", delete=True)
        assert _same_file(got, w) and client.list() == []
        os.close(got)
    finally:
        os.close(r)
        os.close(w)


def test_the_daemons_errno_is_an_operation_failure_exiting_1(client: FdHolderClient) -> None:
    r, w = os.pipe()
    try:
        client.store(r, "dup")
        with pytest.raises(OperationFailed) as busy:
            client.store(r, "dup")
        assert (str(busy.value), busy.value.exit_code) == ("unable to store fd: Device or resource busy", 1)
        with pytest.raises(OperationFailed) as missing:
            client.retrieve("absent")
        assert str(missing.value) == "unable to retrieve fd for id absent: No such file or directory"
        with pytest.raises(OperationFailed) as gone:
            client.delete("absent")
        assert str(gone.value) == "unable to delete fd for id absent: No such file or directory"
        assert client.list() == [b"dup"]   # the connection goes on after a refusal
    finally:
        os.close(r)
        os.close(w)


def test_bad_requests_are_refused_before_sending(client: FdHolderClient) -> None:
    with pytest.raises(OperationFailed) as bad_fd:
        client.store(-1, "x")
    assert str(bad_fd.value) == "unable to store fd: Bad file descriptor"
    r, w = os.pipe()
    try:
        with pytest.raises(OperationFailed) as long_id:
            client.store(r, "x" * 256)
        assert long_id.value.errno != 0 and str(long_id.value).startswith("unable to store fd: ")
    finally:
        os.close(r)
        os.close(w)
    assert client.list() == []   # nothing was sent: the connection is still good


def test_an_empty_id_is_sent_and_the_daemon_hangs_up(holder: str) -> None:
    """As libs6: the client does not check for an empty id; s6-fdholderd (and ours) drop the client."""
    with FdHolderClient(holder, timeout=10) as c, pytest.raises(OperationFailed) as e:
        c.retrieve("")
    assert e.value.errno in (errno.EPIPE, errno.ECONNRESET) and e.value.exit_code == 1
    assert str(e.value).startswith("unable to retrieve fd for id : ")


def test_a_limit_expires(client: FdHolderClient) -> None:
    r, w = os.pipe()
    try:
        client.store(r, "short", fd_timeout=0.05)
        client.store(r, "long")
        dump = client.getdump()
        limits = {h.id: h.limit for h in dump}
        assert tai.is_finite(limits[b"short"], tai.now())
        assert not tai.is_finite(limits[b"long"], tai.now())
        for h in dump:
            os.close(h.fd)
        deadline = time.monotonic() + 5
        while b"short" in client.list():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.list() == [b"long"]
    finally:
        os.close(r)
        os.close(w)


def test_getdump_then_setdump_restores(client: FdHolderClient) -> None:
    pipes = [os.pipe() for _ in range(3)]
    try:
        for i, (r, _) in enumerate(pipes):
            client.store(r, f"id{i}")
        dump = sorted(client.getdump(), key=lambda h: h.id)
        assert [h.id for h in dump] == [b"id0", b"id1", b"id2"]
        assert all(_same_file(h.fd, r) for h, (r, _) in zip(dump, pipes))
        for h in dump:
            client.delete(h.id)
        assert client.list() == []
        client.setdump(dump)
        assert sorted(client.list()) == [b"id0", b"id1", b"id2"]
        for h in dump:
            os.close(h.fd)
        again = client.getdump()
        assert sorted((h.id, os.fstat(h.fd).st_ino) for h in again) == [
            (b"id%d" % i, os.fstat(r).st_ino) for i, (r, _) in enumerate(pipes)]
        for h in again:
            os.close(h.fd)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_an_empty_dump(client: FdHolderClient) -> None:
    assert client.getdump() == []
    client.setdump([])  # nothing sent
    with pytest.raises(OperationFailed) as e:
        client.setdump([HeldDescriptor(0, b"bad\0id", tai.now())])
    assert e.value.errno == errno.EINVAL


def test_a_held_listening_socket_comes_back_as_a_socket(client: FdHolderClient) -> None:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(b"\0s6ipc-client-test-" + str(os.getpid()).encode())
    s.listen(1)
    client.store(s.fileno(), "unix:abstract")
    back = client.retrieve_socket("unix:abstract", delete=True)
    try:
        assert back.getsockname() == s.getsockname() and back.type == socket.SOCK_STREAM
    finally:
        back.close()
        s.close()


def test_the_deadline_covers_every_operation(holder: str) -> None:
    with FdHolderClient(holder, timeout=0.01) as c:
        time.sleep(0.02)
        with pytest.raises(OperationFailed) as e:
            c.list()
    assert str(e.value) == "unable to get fd list: Connection timed out"


def test_no_daemon_is_a_system_failure_exiting_111(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "none")
    with pytest.raises(SystemFailure) as e:
        FdHolderClient(path)
    assert not isinstance(e.value, OperationFailed)
    assert (str(e.value), e.value.exit_code) == (
        f"unable to connect to a fd-holder daemon at {path}: No such file or directory", 111)
    with pytest.raises(SystemFailure, match="^unable to reach it: No such file"):
        connect(path, deadline=time.monotonic() + 1, operation="reach it")
    with pytest.raises(SystemFailure, match="Protocol error$"):
        connect("/" + "x" * 200)


def _entries(n: int, id_length: int) -> List[HeldDescriptor]:
    return [HeldDescriptor(i, b"x" * id_length, tai.now()) for i in range(n)]


def test_setdump_chunks_stay_within_one_sendmsg_and_one_skb() -> None:
    assert [len(c) for c in setdump_chunks(_entries(300, 1))] == [253, 47]
    long_ids = setdump_chunks(_entries(200, protocol.ID_SIZE))
    assert [len(c) for c in long_ids] == [121, 79]    # 121 * 269 bytes + header fit in 32 KiB
    for chunk in long_ids:
        size = unixmessage.HEADER_SIZE + 1 + sum(protocol.entry_size(len(e.id)) for e in chunk)
        assert size <= unixmessage.ATOMIC_MESSAGE_SIZE
    assert [len(c) for c in setdump_chunks(_entries(1, 1))] == [1]
    assert setdump_chunks([]) == [[]]
