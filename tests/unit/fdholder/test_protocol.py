"""The fd-holder wire protocol: framing, descriptor passing, request parsing (s6's check order)."""

from __future__ import annotations

import errno
import os
import socket
from typing import List, Tuple

import pytest

from s6ipc.base import unixmessage
from s6ipc.base.unixmessage import Decoder, ProtocolError, frame
from s6ipc.fdholder import protocol, tai

LIMIT = tai.Tain(0x4000000000000000 + 1_000_000_000, 7)


def fds_open() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_store_request_bytes_match_the_observed_wire() -> None:
    """``00 00 00 26 00 01`` + ``S`` + tain + ``17`` + a 23-byte id + NUL."""
    payload = protocol.encode_store(LIMIT, b"unix:/tmp/xyz/held.sock")
    wire = frame(payload, 1)
    assert wire[:6] == bytes.fromhex("000000260001")
    assert wire[6:7] == b"S" and wire[19] == 0x17 and wire.endswith(b"unix:/tmp/xyz/held.sock\0")
    request = protocol.parse_request(payload, 1, 0)
    assert request == protocol.Store(LIMIT, b"unix:/tmp/xyz/held.sock")


def test_list_reply_bytes() -> None:
    assert frame(protocol.encode_list_reply([b"unix:/tmp/xyz/held.sock"])) == (
        bytes.fromhex("0000001d0000") + bytes.fromhex("0000000001") + b"unix:/tmp/xyz/held.sock\0")
    assert frame(protocol.encode_list_reply([])) == bytes.fromhex("000000050000" "0000000000")


def test_decoder_reassembles_any_split() -> None:
    stream = frame(b"L") + frame(b"?") + frame(protocol.encode_delete(b"x"))
    for cut in range(len(stream) + 1):
        d = Decoder()
        got: List[bytes] = []
        for part in (stream[:cut], stream[cut:]):
            d.feed(part)
            while (m := d.next_message()) is not None:
                got.append(m.payload)
        assert got == [b"L", b"?", b"D\x01x\x00"]
        assert not d.partial


@pytest.mark.parametrize("header", [unixmessage.HEADER.pack(protocol.MAX_REQUEST + 1, 0),
                                    unixmessage.HEADER.pack(1, 256),
                                    unixmessage.HEADER.pack(2**32 - 1, 2**16 - 1)])
def test_oversized_headers_are_refused_before_the_payload(header: bytes) -> None:
    d = Decoder(protocol.MAX_REQUEST)
    d.feed(header)
    with pytest.raises(ProtocolError):
        d.next_message()


def test_descriptors_must_match_the_header(pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        # a message announcing 1 fd without any waits for it (as skalibs does): incomplete
        d = Decoder()
        d.feed(frame(b"S", 1))
        assert d.next_message() is None and d.incomplete
        d.feed(b"", [-1])
        m = d.next_message()
        assert m is not None and m.fds == [-1] and not d.incomplete
        # a descriptor riding on a message that announces none: EPROTO, and it is closed on discard
        before = fds_open()
        a.sendmsg([frame(b"L")], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, r.to_bytes(4, "little"))])
        d = Decoder()
        unixmessage.recv_into(b, d)
        assert fds_open() == before + 1
        with pytest.raises(ProtocolError):
            d.next_message()
        d.discard()
        assert fds_open() == before
    finally:
        os.close(r)
        os.close(w)


def test_lost_descriptors_are_reported_not_fatal() -> None:
    d = Decoder()
    d.feed(frame(protocol.encode_store(LIMIT, b"x"), 1), [], truncated=True)
    m = d.next_message()
    assert m is not None and m.fds_lost and m.fds == [] and m.nfds == 1


def test_more_than_253_descriptors_in_one_message(pair: Tuple[socket.socket, socket.socket]) -> None:
    """Linux passes at most 253 fds per sendmsg (SCM_MAX_FD); a 255-fd message (a full getdump chunk
    of skalibs 2.13) goes out over several sendmsg calls and is reassembled."""
    a, b = pair
    r, w = os.pipe()
    try:
        fds = [os.dup(r) for _ in range(255)]
        entries = [protocol.DumpEntry(LIMIT, b"id%d" % i) for i in range(255)]
        held = [unixmessage.HeldFd(fd) for fd in fds]
        box = unixmessage.Outbox()
        box.put(protocol.encode_entries(entries), held)
        for h in held:
            h.release()  # the outbox holds the only references now
        a.setblocking(False)
        while not box.flush(a.sendmsg):
            pass
        d = Decoder()
        message = None
        while message is None:
            unixmessage.recv_into(b, d)
            message = d.next_message()
        assert len(message.fds) == 255
        assert protocol.parse_entries(message.payload, 255) == tuple(entries)
        assert all(os.fstat(fd).st_ino == os.fstat(r).st_ino for fd in message.fds)
        unixmessage.close_fds(message.fds)
        assert all(h.fd == -1 for h in held)  # the sender's copies are closed once sent
    finally:
        os.close(r)
        os.close(w)


def test_send_message_blocking_splits_too(pair: Tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        fds = [r] * 255
        unixmessage.send_message(a, b"x" * 400, fds)
        d = Decoder()
        message = None
        while message is None:
            unixmessage.recv_into(b, d)
            message = d.next_message()
        assert message.payload == b"x" * 400 and len(message.fds) == 255
        unixmessage.close_fds(message.fds)
    finally:
        os.close(r)
        os.close(w)


# -- request parsing: where s6 drops the connection (ProtocolError) -------------------------------
def store(idlen: int, ident: bytes, nul: bytes = b"\0") -> bytes:
    return b"S" + LIMIT.pack() + bytes((idlen,)) + ident + nul


DROPS = [
    (b"", 0, 0),                                   # empty payload
    (b"X", 0, 0),                                  # unknown opcode
    (b"Lx", 0, 0),                                 # list with a payload
    (b"L", 1, 0),                                  # list with a descriptor
    (b"?x", 0, 0),
    (b"!\0\0\0", 0, 0),                            # setdump count on 3 bytes
    (b"!\0\0\0\0\0", 0, 0),
    (store(0, b""), 1, 0),                         # empty id
    (store(1, b"a"), 0, 0),                        # store without its descriptor
    (store(1, b"a"), 2, 0),
    (store(2, b"a"), 1, 0),                        # length byte disagrees
    (store(1, b"a", b"x"), 1, 0),                  # no NUL
    (b"D\x01a", 0, 0),
    (b"D\x01a\0", 1, 0),
    (b"R\0\x01a", 0, 0),
    (b"R\0\x02a\0", 0, 0),
    (b"L", 0, 3),                                  # anything but '.' during a setdump
    (b"." + LIMIT.pack() + b"\x01a\0", 1, 0),      # '.' without a setdump
    (b"." + LIMIT.pack() + b"\x01a\0", 2, 2),      # '.' announcing more entries than its length allows
    (b"." + LIMIT.pack() + b"\x01a\0", 1, 0),
]


@pytest.mark.parametrize(("payload", "nfds", "dumping"), DROPS)
def test_malformed_requests_drop(payload: bytes, nfds: int, dumping: int) -> None:
    with pytest.raises(ProtocolError):
        protocol.parse_request(payload, nfds, dumping)


def test_well_formed_requests() -> None:
    assert protocol.parse_request(b"D\x01a\0", 0, 0) == protocol.Delete(b"a")
    assert protocol.parse_request(b"R\x01\x01a\0", 0, 0) == protocol.Retrieve(b"a", True)
    assert protocol.parse_request(b"R\x07\x01a\0", 0, 0) == protocol.Retrieve(b"a", True)
    assert protocol.parse_request(b"L", 0, 0) == protocol.List_()
    assert protocol.parse_request(b"?", 0, 0) == protocol.GetDump()
    assert protocol.parse_request(b"!\0\0\1\0", 0, 0) == protocol.SetDump(256)
    # an embedded NUL: C sees the id up to it
    assert protocol.parse_request(store(3, b"a\0b"), 1, 0) == protocol.Store(LIMIT, b"a")
    # setdump data: entries that do not parse are reported (s6 checks rights and room first)
    good = b"." + LIMIT.pack() + b"\x01a\0" + LIMIT.pack() + b"\x02bc\0"
    assert protocol.parse_request(good, 2, 2) == protocol.SetDumpData(
        2, (protocol.DumpEntry(LIMIT, b"a"), protocol.DumpEntry(LIMIT, b"bc")))
    bad = b"." + LIMIT.pack() + b"\x01a\0" + LIMIT.pack() + b"\x05bc\0x"
    assert protocol.parse_request(bad, 2, 5) == protocol.SetDumpData(2, None)
    assert protocol.parse_request(good + b"extra", 2, 2) == protocol.SetDumpData(2, None)


def test_client_side_id_length() -> None:
    with pytest.raises(OSError) as info:
        protocol.encode_store(LIMIT, b"x" * 256)
    assert info.value.errno == errno.ENAMETOOLONG
    longest = protocol.encode_store(LIMIT, b"x" * 255)
    assert protocol.parse_request(longest, 1, 0) == protocol.Store(LIMIT, b"x" * 255)
