"""skalibs' ``unixmessage``: framed messages with descriptors over an AF_UNIX stream socket.

Used by the fd holder (its wire protocol is this framing, s6ipc.fdholder.protocol), and the
home of the SCM_RIGHTS / SCM_CREDENTIALS ancillary-data handling every receiver here shares (the
sd_notify receiver in s6ipc.daemon.readiness too).

Some facts about the framing and about AF_UNIX sockets that this module relies on (skalibs 2.13,
Linux):

* There is no handshake. Each message on the stream is a 6-byte header — payload length
  (uint32 big-endian) and number of descriptors (uint16 big-endian) — then the payload.
  skalibs refuses headers above 2**28 bytes or 255 descriptors (EPROTO).
* Descriptors travel as one SCM_RIGHTS control message on the ``sendmsg`` that carries the first
  byte of the header. The kernel keeps that control message attached to those bytes: a
  ``recvmsg`` never returns descriptors of a later write together with data that follows them,
  but it may return the tail of an earlier message *before* them. So descriptors are queued in
  arrival order and each message takes as many as its header announces, once its bytes and its
  descriptors are all there (a message whose descriptors are missing waits, as in skalibs); when
  the whole received stream has been consumed no descriptor may be left over (skalibs would keep
  surplus descriptors for a later message; we treat them as the protocol error they are).
* One ``sendmsg`` carries at most :data:`KERNEL_MAX_FDS` (253, the kernel's SCM_MAX_FD)
  descriptors; a message with more sends them over several one-byte writes.
* A message sent with one ``sendmsg`` reaches the receiver whole, in one wake-up, only if the
  kernel queues it as one buffer (skb): Linux splits a stream write into skbs of at most
  ``min(SO_SNDBUF / 2 - 64, about 36 KiB)`` (SKB_MAX_HEAD + 32 KiB of page fragments), queues and
  signals each in turn, so a reader on another core can drain the first before the next is
  there. s6-fdholderd 2.11.3.2 drops a client whose message is not all there when it wakes
  (seen on the binary: a request split over two writes gets EOF), so whatever our clients may
  send to s6's daemon stays within :data:`ATOMIC_MESSAGE_SIZE`, header included.
* If the receiver's descriptor table is full, the kernel drops the descriptors and sets
  MSG_CTRUNC (they are closed, never delivered).
* Received descriptors should be close-on-exec at once (MSG_CMSG_CLOEXEC), and sends use
  MSG_NOSIGNAL so that a vanished peer gives EPIPE rather than SIGPIPE.
* SCM_CREDENTIALS (with SO_PASSCRED on the receiver) carries the sender's ``struct ucred``: pid,
  uid, gid as three native ints — the layout SO_PEERCRED returns too (:data:`UCRED`).

This module makes no system call except in :func:`recv_into`, :func:`send_message`,
:func:`recv_datagram` and :class:`Outbox`, so the parsing half can be fuzzed in isolation.
"""

from __future__ import annotations

import array
import collections
import errno
import os
import socket
import struct

from .typeshim import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Deque, List, Optional, Sequence, Tuple

__all__ = [
    "HEADER", "HEADER_SIZE", "MAX_PAYLOAD", "MAX_FDS", "KERNEL_MAX_FDS", "ATOMIC_MESSAGE_SIZE",
    "CMSG_SPACE_MAX", "ProtocolError", "Message", "frame", "close_fds", "Decoder", "recv_into",
    "send_message", "HeldFd", "Outbox", "UCRED", "DATAGRAM_ANCILLARY", "Datagram", "recv_datagram",
]

HEADER = struct.Struct(">IH")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 28
MAX_FDS = 255
#: What one sendmsg may carry on Linux (SCM_MAX_FD); skalibs 2.13 ignores it, upstream uses 253.
KERNEL_MAX_FDS = 253
#: The largest framed message (header included) that one sendmsg queues as one skb with Linux's
#: default buffers (see above): what a client may send at once to a daemon that reads it whole.
ATOMIC_MESSAGE_SIZE = 32 * 1024

_FD_SIZE = array.array("i").itemsize
CMSG_SPACE_MAX = socket.CMSG_SPACE(MAX_FDS * _FD_SIZE)


class ProtocolError(Exception):
    """The peer broke the protocol (EPROTO): the connection must be dropped."""

    errno = errno.EPROTO


class Message:
    """One framed message: payload bytes and the descriptors that came with it (owned by the
    receiver: close them when done). Compared by value, like the dataclass it was."""

    __slots__ = ("payload", "fds", "fds_lost", "nfds")

    def __init__(self, payload: bytes, fds: Optional[List[int]] = None, fds_lost: bool = False,
                 nfds: int = 0) -> None:
        self.payload = payload
        self.fds: List[int] = [] if fds is None else fds
        #: True when the kernel dropped descriptors of this message (the receiver's table was full).
        self.fds_lost = fds_lost
        #: How many descriptors the header announced (``len(fds)`` unless some were lost).
        self.nfds = nfds

    def _fields(self) -> Tuple[bytes, List[int], bool, int]:
        return (self.payload, self.fds, self.fds_lost, self.nfds)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message) and other.__class__ is self.__class__:
            return self._fields() == other._fields()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value (as a dataclass)

    def __repr__(self) -> str:
        return (f"Message(payload={self.payload!r}, fds={self.fds!r}, fds_lost={self.fds_lost!r}, "
                f"nfds={self.nfds!r})")


def frame(payload: bytes, nfds: int = 0) -> bytes:
    """Header + payload for a message carrying *nfds* descriptors."""
    return HEADER.pack(len(payload), nfds) + payload


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Decoder:
    """Reassembles messages from stream bytes and queued descriptors (pure: no system calls).

    *max_payload* bounds the payload a header may announce (a server passes
    :data:`MAX_REQUEST`, since nothing longer can be a valid request). Any violation raises
    :class:`ProtocolError`; the caller then drops the connection and calls :meth:`discard`,
    which closes the descriptors still queued.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, max_fds: int = MAX_FDS) -> None:
        self.max_payload = max_payload
        self.max_fds = max_fds
        self._buf = bytearray()
        self._fds: List[int] = []
        self._lost = 0
        self._need: Optional[Tuple[int, int]] = None  # header of the message being assembled

    def feed(self, data: bytes, fds: Sequence[int] = (), truncated: bool = False) -> None:
        """Add what one ``recvmsg`` returned. *truncated*: MSG_CTRUNC was set."""
        self._buf += data
        self._fds.extend(fds)
        if truncated:
            self._lost += 1
        if len(self._fds) > 2 * self.max_fds:
            raise ProtocolError("too many descriptors queued")

    @property
    def partial(self) -> bool:
        """Whether part of a message is buffered (a message has started but not completed)."""
        return bool(self._buf)

    @property
    def incomplete(self) -> bool:
        """Whether the buffered bytes end with an incomplete message (more bytes or descriptors
        are awaited)."""
        if not self._buf:
            return False
        if len(self._buf) < HEADER_SIZE:
            return True
        length, nfds = HEADER.unpack_from(self._buf) if self._need is None else self._need
        return len(self._buf) < HEADER_SIZE + length or (len(self._fds) < nfds and not self._lost)

    def next_message(self) -> Optional[Message]:
        """The next complete message, or None if more bytes are needed."""
        if self._need is None:
            if len(self._buf) < HEADER_SIZE:
                if not self._buf and (self._fds or self._lost):
                    raise ProtocolError("descriptors without a message")
                return None
            length, nfds = HEADER.unpack_from(self._buf)
            if length > self.max_payload or nfds > self.max_fds:
                raise ProtocolError("message too large")
            self._need = (length, nfds)
        length, nfds = self._need
        end = HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        lost = False
        if len(self._fds) < nfds:
            if not self._lost:
                return None  # as skalibs: wait for them (a broken client is timed out)
            lost = True
            self._lost -= 1
        payload = bytes(self._buf[HEADER_SIZE:end])
        del self._buf[:end]
        self._need = None
        taken, self._fds = self._fds[:nfds], self._fds[nfds:]
        if not self._buf and (self._fds or self._lost):
            close_fds(taken)
            raise ProtocolError("descriptors without a message")
        return Message(payload, taken, lost, nfds)

    def discard(self) -> None:
        """Close queued descriptors and forget buffered bytes."""
        close_fds(self._fds)
        self._fds = []
        self._buf.clear()
        self._need = None


def recv_into(sock: socket.socket, decoder: Decoder, bufsize: int = 65536) -> int:
    """One non-blocking ``recvmsg`` into *decoder*; returns the byte count (0 at EOF).

    Raises BlockingIOError when nothing is available, OSError on socket errors, and
    :class:`ProtocolError` for a control message that is not SCM_RIGHTS.
    """
    flags = socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
    data, ancdata, msg_flags, _ = sock.recvmsg(bufsize, CMSG_SPACE_MAX, flags)
    fds: List[int] = []
    bad = False
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(cdata) - len(cdata) % _FD_SIZE
            fds.extend(array.array("i", cdata[:usable]))
        else:
            bad = True
    if bad:
        close_fds(fds)
        raise ProtocolError("unexpected control message")
    decoder.feed(data, fds, bool(msg_flags & socket.MSG_CTRUNC))
    return len(data)


def _rights(fds: Sequence[int]) -> List[Tuple[int, int, bytes]]:
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


if TYPE_CHECKING:
    SendMsg = Callable[[List[memoryview], List[Tuple[int, int, bytes]], int], int]


def _send_step(send: SendMsg, data: memoryview, fds: Sequence[int], fds_sent: int, flags: int) -> int:
    """One ``sendmsg`` of a message whose first *fds_sent* descriptors are already gone: the next
    :data:`KERNEL_MAX_FDS` ride on one byte, the last ones on all the remaining bytes."""
    if fds_sent >= len(fds):
        return send([data], [], flags)
    chunk = fds[fds_sent : fds_sent + KERNEL_MAX_FDS]
    last = fds_sent + len(chunk) >= len(fds)
    return send([data if last else data[:1]], _rights(chunk), flags)


def send_message(sock: socket.socket, payload: bytes, fds: Sequence[int] = ()) -> None:
    """Send one message on a blocking (or timeout) socket, descriptors with its first bytes."""
    data = memoryview(frame(payload, len(fds)))
    fds_sent = 0
    while data:
        n = _send_step(sock.sendmsg, data, fds, fds_sent, socket.MSG_NOSIGNAL)
        fds_sent = min(len(fds), fds_sent + KERNEL_MAX_FDS)
        data = data[n:]


class HeldFd:
    """A descriptor shared by the store and by replies waiting to be sent (reference counted):
    it is closed when the last holder releases it."""

    __slots__ = ("fd", "refs")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 1

    def acquire(self) -> HeldFd:
        self.refs += 1
        return self

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


class _Pending:
    __slots__ = ("data", "fds", "fds_sent")

    def __init__(self, data: memoryview, fds: List[HeldFd], fds_sent: int = 0) -> None:
        self.data = data
        self.fds = fds
        self.fds_sent = fds_sent


class Outbox:
    """Messages queued for a non-blocking socket, sent in order as the socket accepts them.

    Descriptors are :class:`HeldFd` references, released once the bytes that carry them are
    sent (or when the outbox is discarded). A message with more descriptors than one
    ``sendmsg`` may carry (:data:`KERNEL_MAX_FDS`) sends them over several one-byte writes,
    which skalibs' receiver (and :class:`Decoder`) queue and reassemble.
    """

    def __init__(self) -> None:
        self._queue: Deque[_Pending] = collections.deque()
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._queue)

    def put(self, payload: bytes, fds: Sequence[HeldFd] = ()) -> None:
        data = frame(payload, len(fds))
        self._queue.append(_Pending(memoryview(data), [h.acquire() for h in fds]))
        self.size += len(data)

    def flush(self, send: SendMsg) -> bool:
        """Send what the socket takes; True once empty. Raises OSError (not EAGAIN)."""
        while self._queue:
            item = self._queue[0]
            try:
                n = _send_step(send, item.data, [h.fd for h in item.fds], item.fds_sent,
                               socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                return False
            if item.fds_sent < len(item.fds):
                chunk = min(KERNEL_MAX_FDS, len(item.fds) - item.fds_sent)
                for h in item.fds[item.fds_sent : item.fds_sent + chunk]:
                    h.release()
                item.fds_sent += chunk
            self.size -= n
            item.data = item.data[n:]
            if item.data:
                return False
            self._queue.popleft()
        return True

    def discard(self) -> None:
        for item in self._queue:
            for h in item.fds[item.fds_sent :]:
                h.release()
        self._queue.clear()
        self.size = 0


# -- datagrams with credentials (sd_notify) -------------------------------------------------------
#: ``struct ucred`` (pid, uid, gid), as SCM_CREDENTIALS and SO_PEERCRED give it.
UCRED = struct.Struct("3i")
#: Room for the credentials and a full SCM_RIGHTS message.
DATAGRAM_ANCILLARY = socket.CMSG_SPACE(UCRED.size) + socket.CMSG_SPACE(KERNEL_MAX_FDS * _FD_SIZE)


class Datagram(NamedTuple):
    """One received datagram: its bytes, the sender's pid (-1 when no credentials came) and the
    descriptors attached (close-on-exec, owned by the receiver)."""

    data: bytes
    pid: int
    fds: List[int]


def recv_datagram(sock: socket.socket, bufsize: int = 4096) -> Datagram:
    """One ``recvmsg`` on a datagram socket (SO_PASSCRED set for the pid). Raises OSError
    (BlockingIOError on a non-blocking socket with nothing queued)."""
    data, ancillary, _, _ = sock.recvmsg(bufsize, DATAGRAM_ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    pid = -1
    fds: List[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = UCRED.unpack(payload[: UCRED.size])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds.extend(array.array("i", payload[:usable]))
    return Datagram(data, pid, fds)
