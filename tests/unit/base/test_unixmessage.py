"""s6ipc.base.unixmessage: skalibs' framing, descriptors over SCM_RIGHTS, and credentials, over real
AF_UNIX socketpairs."""

from __future__ import annotations

import fcntl
import os
import socket
from typing import List, Tuple

import pytest

from s6ipc.base import unixmessage as um
from s6ipc.base.unixmessage import Decoder, HeldFd, Message, Outbox, ProtocolError


def _pipe_with(data: bytes) -> Tuple[int, int]:
    r, w = os.pipe()
    os.write(w, data)
    return r, w


def _receive_all(sock: socket.socket, decoder: Decoder, count: int = 1) -> List[Message]:
    got: List[Message] = []
    sock.settimeout(5)
    while len(got) < count:
        m = decoder.next_message()
        if m is not None:
            got.append(m)
            continue
        sock.recv(0, socket.MSG_PEEK)  # wait for data (blocking, with the timeout)
        um.recv_into(sock, decoder)
    return got


# -- framing -------------------------------------------------------------------------------------
def test_the_header_is_length_then_fd_count_big_endian() -> None:
    assert um.HEADER_SIZE == 6
    assert um.frame(b"abc", 2) == b"\0\0\0\x03\0\x02abc"
    assert um.frame(b"") == b"\0" * 6
    assert um.frame(b"x" * 70000)[:6] == b"\0\x01\x11\x70\0\0"


def test_a_message_arrives_whole_whatever_the_cut() -> None:
    data = um.frame(b"hello") + um.frame(b"", 0) + um.frame(b"world!")
    d = Decoder()
    got = []
    ends = {11, 17, 29}  # where each message's last byte is
    for i in range(len(data)):
        d.feed(data[i : i + 1])
        m = d.next_message()
        while m is not None:
            got.append(m.payload)
            m = d.next_message()
        assert d.partial == (i + 1 not in ends)
    assert got == [b"hello", b"", b"world!"]
    assert not d.partial and not d.incomplete


def test_incomplete_tells_a_started_message_from_a_finished_one() -> None:
    d = Decoder()
    assert not d.incomplete
    d.feed(b"\0\0")
    assert d.incomplete and d.next_message() is None
    d.feed(b"\0\x02\0\0a")
    assert d.incomplete and d.next_message() is None
    d.feed(b"b")
    assert not d.incomplete
    assert d.next_message() == Message(b"ab", [], False, 0)


def test_a_message_waits_for_its_descriptors() -> None:
    d = Decoder()
    d.feed(um.frame(b"x", 2), [100])
    assert d.incomplete and d.next_message() is None
    d.feed(b"", [101])
    assert d.next_message() == Message(b"x", [100, 101], False, 2)


def test_descriptors_go_to_the_message_that_announces_them() -> None:
    d = Decoder()
    d.feed(um.frame(b"one", 1) + um.frame(b"two") + um.frame(b"three", 2), [7, 8, 9])
    assert [(m.payload, m.fds) for m in (d.next_message(), d.next_message(), d.next_message())] == [
        (b"one", [7]), (b"two", []), (b"three", [8, 9])]


@pytest.mark.parametrize("header", [um.HEADER.pack(um.MAX_PAYLOAD + 1, 0), um.HEADER.pack(1, um.MAX_FDS + 1)])
def test_oversized_headers_are_protocol_errors(header: bytes) -> None:
    d = Decoder()
    d.feed(header)
    with pytest.raises(ProtocolError):
        d.next_message()
    assert ProtocolError.errno == 71  # EPROTO


def test_a_server_bounds_the_payload_it_takes() -> None:
    d = Decoder(max_payload=10)
    d.feed(um.frame(b"x" * 11))
    with pytest.raises(ProtocolError, match="too large"):
        d.next_message()


def test_surplus_descriptors_are_a_protocol_error_and_closed() -> None:
    r, w = os.pipe()
    d = Decoder()
    taken = os.dup(r)
    d.feed(um.frame(b"x", 1), [taken, r])
    with pytest.raises(ProtocolError, match="descriptors without a message"):
        d.next_message()
    with pytest.raises(OSError):
        os.fstat(taken)  # the message's own descriptor was closed with the error
    os.fstat(r)          # the surplus one is still queued...
    d.discard()
    with pytest.raises(OSError):
        os.fstat(r)      # ...until the connection is dropped
    os.close(w)


def test_lost_descriptors_are_reported_with_the_message() -> None:
    d = Decoder()
    d.feed(um.frame(b"x", 3), [], truncated=True)
    m = d.next_message()
    assert m is not None and (m.payload, m.fds, m.fds_lost, m.nfds) == (b"x", [], True, 3)


def test_too_many_queued_descriptors_are_refused() -> None:
    d = Decoder(max_fds=2)
    with pytest.raises(ProtocolError):
        d.feed(b"", [1000, 1001, 1002, 1003, 1004])


def test_discard_closes_the_queue() -> None:
    r, w = os.pipe()
    d = Decoder()
    d.feed(um.frame(b"abc", 1)[:4], [r])
    d.discard()
    assert not d.partial
    with pytest.raises(OSError):
        os.fstat(r)
    os.close(w)


def test_messages_compare_by_value_and_are_unhashable() -> None:
    assert Message(b"a", [1]) == Message(b"a", [1], False, 0)
    assert Message(b"a") != Message(b"b")
    assert repr(Message(b"a")) == "Message(payload=b'a', fds=[], fds_lost=False, nfds=0)"
    with pytest.raises(TypeError):
        hash(Message(b"a"))


# -- over a socketpair ---------------------------------------------------------------------------
def test_a_descriptor_round_trip(pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = _pipe_with(b"through the pipe")
    um.send_message(a, b"take this", [r])
    os.close(r)
    (m,) = _receive_all(b, Decoder())
    assert m.payload == b"take this" and m.nfds == 1 and len(m.fds) == 1
    received = m.fds[0]
    assert fcntl.fcntl(received, fcntl.F_GETFD) & fcntl.FD_CLOEXEC   # MSG_CMSG_CLOEXEC
    assert os.read(received, 100) == b"through the pipe"
    os.close(received)
    os.close(w)


def test_more_descriptors_than_one_sendmsg_carries(pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    sent = [os.dup(r) for _ in range(um.MAX_FDS)]          # 255: two sendmsg (253 + 2)
    um.send_message(a, b"many", sent)
    um.send_message(a, b"after")
    for fd in sent:
        os.close(fd)
    m, after = _receive_all(b, Decoder(), 2)
    assert (m.payload, len(m.fds), m.nfds) == (b"many", um.MAX_FDS, um.MAX_FDS)
    assert all(os.fstat(fd).st_ino == os.fstat(r).st_ino for fd in m.fds)
    assert after == Message(b"after")
    um.close_fds(m.fds)
    os.close(r)
    os.close(w)


def test_recv_into_reports_eof_and_nothing_queued(pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    d = Decoder()
    with pytest.raises(BlockingIOError):
        um.recv_into(b, d)
    a.sendall(um.frame(b"part")[:5])
    assert um.recv_into(b, d) == 5
    assert d.incomplete and d.next_message() is None
    a.close()
    assert um.recv_into(b, d) == 0


def test_a_foreign_control_message_is_a_protocol_error(pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    a.sendmsg([um.frame(b"x")], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                   um.UCRED.pack(os.getpid(), os.getuid(), os.getgid()))])
    with pytest.raises(ProtocolError, match="unexpected control message"):
        um.recv_into(b, Decoder())


def test_held_descriptors_close_with_their_last_holder() -> None:
    r, w = os.pipe()
    held = HeldFd(r)
    assert held.acquire() is held and held.refs == 2
    held.release()
    os.fstat(r)
    held.release()
    assert held.fd == -1
    with pytest.raises(OSError):
        os.fstat(r)
    os.close(w)


def test_the_outbox_sends_in_order_and_releases_what_it_sent(
        pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = _pipe_with(b"held")
    held = HeldFd(r)
    box = Outbox()
    assert not box
    box.put(b"first", [held])
    box.put(b"second")
    assert box and box.size == 6 + 5 + 6 + 6
    assert held.refs == 2
    assert box.flush(a.sendmsg) is True
    assert not box and box.size == 0 and held.refs == 1
    first, second = _receive_all(b, Decoder(), 2)
    assert (first.payload, second.payload) == (b"first", b"second")
    assert os.read(first.fds[0], 10) == b"held"
    os.close(first.fds[0])
    held.release()
    os.close(w)


def test_the_outbox_waits_for_a_full_socket(pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.setblocking(False)
    box = Outbox()
    payload = os.urandom(1 << 20)   # more than the socket buffers take at once
    box.put(payload)
    assert box.flush(a.sendmsg) is False
    assert 0 < box.size < len(payload) + 6
    d = Decoder()
    b.setblocking(False)
    got = None
    while got is None:
        try:
            um.recv_into(b, d)
        except BlockingIOError:
            pass
        box.flush(a.sendmsg)
        got = d.next_message()
    assert got.payload == payload and not box


def test_discarding_the_outbox_releases_unsent_descriptors() -> None:
    r, w = os.pipe()
    held = HeldFd(r)
    box = Outbox()
    box.put(b"never sent", [held])
    held.release()            # the store's reference
    box.discard()
    assert held.fd == -1 and box.size == 0 and not box
    os.close(w)


# -- datagrams with credentials -----------------------------------------------------------------
def test_a_datagram_with_credentials_and_descriptors() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        r, w = _pipe_with(b"dg")
        a.sendmsg([b"READY=1"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, r.to_bytes(4, "little"))])
        got = um.recv_datagram(b)
        assert (got.data, got.pid, len(got.fds)) == (b"READY=1", os.getpid(), 1)
        assert os.read(got.fds[0], 2) == b"dg"
        os.close(got.fds[0])
        os.close(r)
        os.close(w)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
        a.send(b"STATUS=x")
        assert um.recv_datagram(b) == um.Datagram(b"STATUS=x", -1, [])
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            um.recv_datagram(b)
    finally:
        a.close()
        b.close()


def test_the_ucred_layout_is_three_native_ints() -> None:
    a, b = socket.socketpair()
    try:
        raw = a.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, um.UCRED.size)
        assert um.UCRED.unpack(raw) == (os.getpid(), os.geteuid(), os.getegid())
    finally:
        a.close()
        b.close()
