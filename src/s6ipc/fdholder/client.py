"""A client for fd-holder daemons (ours or s6's ``s6-fdholderd``): store, retrieve, delete, list,
dump and restore descriptors.

Some facts this client relies on (s6 2.11.3.2's libs6 client, skalibs 2.13):

* One deadline covers everything: the connection and every operation (s6's ``-t``). Connecting
  to a Unix socket whose backlog is full does not fail: the kernel makes the client wait (a
  non-blocking connect says EAGAIN), so the connection is retried until the deadline.
* A daemon that refuses a client (access rules) or a request (protocol violation) just closes
  the connection: the client sees EOF (reported as EPIPE, "Broken pipe") or ECONNRESET.
* Every reply is checked as libs6 checks it; anything unexpected is EPROTO ("Protocol error").
  A reply byte other than 0 is the daemon's errno.
* Descriptors received are close-on-exec; the caller owns them.
* Linux carries at most 253 descriptors per ``sendmsg``; skalibs 2.13 (s6 2.11) puts up to 255 in
  one message, skalibs 2.14 (s6 2.12 and later) 253 and refuses more. A daemon announces how many
  messages a dump takes by its own rule (``1 + (n-1)/MAXFDS``, :mod:`s6ipc.base.s6release`), so
  this client accepts the count of either rule and checks the descriptors, not the messages.
* s6-fdholderd drops a client whose message arrives in two pieces, which a message longer
  than one kernel buffer may do (:data:`s6ipc.base.unixmessage.ATOMIC_MESSAGE_SIZE`). So a setdump
  goes out in chunks of at most 253 descriptors and 32 KiB (121 entries with 255-byte ids), which
  daemons of both lines accept (they count descriptors, not messages), and a getdump message of
  255 from a 2.11 daemon is reassembled from the two writes it takes.
* Limits are absolute TAI times; "no limit" is *now + 2**61 s* (:func:`s6ipc.fdholder.tai.infinite_from`).

Usage::

    from s6ipc import FdHolderClient
    with FdHolderClient("/run/fdholder/s", timeout=5) as holder:
        holder.store(sock.fileno(), "unix:/run/app.sock")
        fd = holder.retrieve("unix:/run/app.sock")
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time

from ..base import unixmessage
from ..base.durations import poll_ms
from ..base.errors import Refused, SystemFailure
from ..base.options import INT_MAX
from ..base.s6release import S6_2_11, S6_2_12
from ..base.typeshim import dataclass
from ..base.unixmessage import Message, ProtocolError
from ..sockets.unix import unix_address
from . import protocol, tai
from .protocol import DumpEntry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    Ident = Union[str, bytes]

__all__ = ["OperationFailed", "HeldDescriptor", "connect", "setdump_chunks", "FdHolderClient"]

_CONNECT_RETRY = 0.005


class OperationFailed(Refused):
    """The daemon refused or could not do an operation, or the conversation broke.

    ``str()`` is s6's message tail (``unable to store fd: Device or resource busy``); exit 1 (a
    connection failure is a plain :class:`~s6ipc.base.errors.SystemFailure`, exit 111).
    """


@dataclass(frozen=True)
class HeldDescriptor:
    """One entry of a dump: the descriptor (owned by the caller), its id and its limit."""

    fd: int
    id: bytes
    limit: tai.Tain


def _ident(ident: Ident) -> bytes:
    return os.fsencode(ident) if isinstance(ident, str) else bytes(ident)


def connect(path: Union[str, bytes], deadline: Optional[float] = None,
            operation: Optional[str] = None) -> socket.socket:
    """A blocking stream socket connected to the daemon at *path* (waiting for room in a full
    backlog until the monotonic *deadline*). Raises :class:`SystemFailure`
    ("connect to a fd-holder daemon at PATH" unless *operation* says otherwise)."""
    what = operation or f"connect to a fd-holder daemon at {os.fsdecode(path)}"
    try:
        address = unix_address(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    except OSError as e:
        raise SystemFailure(what, e.errno or errno.EINVAL) from None
    try:
        if deadline is None:
            sock.connect(address)
            return sock
        sock.setblocking(False)
        while True:
            try:
                sock.connect(address)
                break
            except (BlockingIOError, InterruptedError):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)) from None
                time.sleep(min(remaining, _CONNECT_RETRY))
        sock.setblocking(True)
        return sock
    except OSError as e:
        sock.close()
        raise SystemFailure(what, e.errno or errno.EINVAL) from None


def _dump_messages(count: int) -> Tuple[int, ...]:
    """The message counts a daemon of either s6 line announces for a dump of *count* descriptors."""
    return tuple(release.dump_messages(count) for release in (S6_2_11, S6_2_12))


def setdump_chunks(entries: Sequence[HeldDescriptor]) -> List[Sequence[HeldDescriptor]]:
    """*entries* cut into the setdump messages a client sends: each at most
    :data:`~s6ipc.base.unixmessage.KERNEL_MAX_FDS` descriptors and, framed, at most
    :data:`~s6ipc.base.unixmessage.ATOMIC_MESSAGE_SIZE` bytes (never empty: one entry always fits)."""
    chunks: List[Sequence[HeldDescriptor]] = []
    start, size = 0, unixmessage.HEADER_SIZE + 1
    for i, e in enumerate(entries):
        entry_size = protocol.entry_size(len(e.id))
        if i > start and (i - start == unixmessage.KERNEL_MAX_FDS
                          or size + entry_size > unixmessage.ATOMIC_MESSAGE_SIZE):
            chunks.append(entries[start:i])
            start, size = i, unixmessage.HEADER_SIZE + 1
        size += entry_size
    chunks.append(entries[start:])
    return chunks


class FdHolderClient:
    """A connection to an fd-holder daemon.

    *timeout* (seconds, None: wait forever) bounds the connection and every operation made
    through this client, measured from its creation — s6's ``-t``. Each operation raises
    :class:`OperationFailed` with the errno of the failure.
    """

    def __init__(self, path: Union[str, bytes], timeout: Optional[float] = None, *,
                 connect_operation: Optional[str] = None) -> None:
        self.path = path
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.sock = connect(path, self.deadline, connect_operation)
        self._decoder = unixmessage.Decoder()

    # -- plumbing ------------------------------------------------------------------------------
    def close(self) -> None:
        self._decoder.discard()
        self.sock.close()

    def __enter__(self) -> FdHolderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remaining(self) -> Optional[float]:
        if self.deadline is None:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
        return remaining

    def _send(self, payload: bytes, fds: Sequence[int] = ()) -> None:
        self.sock.settimeout(self._remaining())
        try:
            unixmessage.send_message(self.sock, payload, fds)
        except socket.timeout:
            raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)) from None
        finally:
            self.sock.settimeout(None)

    def _receive(self) -> Message:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while True:
            try:
                message = self._decoder.next_message()
            except ProtocolError:
                raise OSError(errno.EPROTO, os.strerror(errno.EPROTO)) from None
            if message is not None:
                return message
            remaining = self._remaining()
            if not poller.poll(None if remaining is None else max(1, poll_ms(remaining) or 0)):
                continue
            try:
                if unixmessage.recv_into(self.sock, self._decoder) == 0:
                    raise OSError(errno.EPIPE, os.strerror(errno.EPIPE))
            except BlockingIOError:
                continue
            except ProtocolError:
                raise OSError(errno.EPROTO, os.strerror(errno.EPROTO)) from None

    def _call(self, operation: str, payload: bytes, fds: Sequence[int] = ()) -> Message:
        try:
            self._send(payload, fds)
            return self._receive()
        except OSError as e:
            raise OperationFailed(operation, e.errno or errno.EIO) from None

    @staticmethod
    def _status(operation: str, message: Message) -> None:
        """A one-byte status reply: 0, or the daemon's errno."""
        if len(message.payload) != 1 or message.fds:
            unixmessage.close_fds(message.fds)
            raise OperationFailed(operation, errno.EPROTO)
        if message.payload[0]:
            raise OperationFailed(operation, message.payload[0])

    @staticmethod
    def _answer(operation: str, message: Message, length: int, at_least: bool = False) -> bytes:
        """A status-first reply without fds: its payload, once the status byte is 0 and the length
        is *length* (or at least that). The daemon's errno, or EPROTO, as OperationFailed."""
        if message.fds or not message.payload:
            unixmessage.close_fds(message.fds)
            raise OperationFailed(operation, errno.EPROTO)
        if message.payload[0]:
            raise OperationFailed(operation, message.payload[0])
        if len(message.payload) < length if at_least else len(message.payload) != length:
            raise OperationFailed(operation, errno.EPROTO)
        return message.payload

    # -- operations ----------------------------------------------------------------------------
    def store(self, fd: int, ident: Ident, limit: Optional[tai.Tain] = None, *,
              fd_timeout: Optional[float] = None) -> None:
        """Give the daemon a copy of *fd* under *ident*, until *limit* (absolute TAI) or for
        *fd_timeout* seconds (default: no limit)."""
        operation = "store fd"
        if not 0 <= fd <= INT_MAX:  # no such descriptor can be open (s6 would cast to an int)
            raise OperationFailed(operation, errno.EBADF)
        if limit is None:
            base = tai.now()
            limit = tai.infinite_from(base) if not fd_timeout else base.add_ms(int(fd_timeout * 1000))
        try:
            payload = protocol.encode_store(limit, _ident(ident))
        except OSError as e:
            raise OperationFailed(operation, e.errno or errno.EINVAL) from None
        self._status(operation, self._call(operation, payload, [fd]))

    def retrieve(self, ident: Ident, delete: bool = False) -> int:
        """A new descriptor (close-on-exec, owned by the caller) for the one held as *ident*;
        with *delete*, the daemon forgets it."""
        raw = _ident(ident)
        operation = f"retrieve fd for id {os.fsdecode(raw)}"
        try:
            payload = protocol.encode_retrieve(raw, delete)
        except OSError as e:
            raise OperationFailed(operation, e.errno or errno.EINVAL) from None
        m = self._call(operation, payload)
        if len(m.payload) != 1 or (m.payload[0] and m.fds) or (not m.payload[0] and len(m.fds) != 1):
            unixmessage.close_fds(m.fds)
            raise OperationFailed(operation, errno.EPROTO)
        if m.payload[0]:
            raise OperationFailed(operation, m.payload[0])
        return m.fds[0]

    def retrieve_socket(self, ident: Ident, delete: bool = False) -> socket.socket:
        """:meth:`retrieve` as a Python socket object (for a held listening socket)."""
        return socket.socket(fileno=self.retrieve(ident, delete))

    def delete(self, ident: Ident) -> None:
        """Make the daemon close and forget the descriptor held as *ident*."""
        raw = _ident(ident)
        operation = f"delete fd for id {os.fsdecode(raw)}"
        try:
            payload = protocol.encode_delete(raw)
        except OSError as e:
            raise OperationFailed(operation, e.errno or errno.EINVAL) from None
        self._status(operation, self._call(operation, payload))

    def list(self) -> List[bytes]:
        """The ids the daemon holds, in its order."""
        operation = "get fd list"
        payload = self._answer(operation, self._call(operation, protocol.LIST_REQUEST), 5, at_least=True)
        count = protocol.decode_u32(payload, 1)
        body = payload[5:]
        if body.count(b"\0") != count:
            raise OperationFailed(operation, errno.EPROTO)
        return body.split(b"\0")[:count]

    def getdump(self) -> List[HeldDescriptor]:
        """Copies of every held descriptor with its id and limit (the caller owns the fds)."""
        operation = "get dump"
        payload = self._answer(operation, self._call(operation, protocol.GETDUMP_REQUEST), 9)
        nmsg, total = protocol.decode_u32(payload, 1), protocol.decode_u32(payload, 5)
        result: List[HeldDescriptor] = []
        if not total:
            return result
        try:
            if nmsg not in _dump_messages(total):
                raise OSError(errno.EPROTO, os.strerror(errno.EPROTO))
            for _ in range(nmsg):
                chunk = self._receive()
                if len(result) + len(chunk.fds) > total:
                    unixmessage.close_fds(chunk.fds)
                    raise OSError(errno.EPROTO, os.strerror(errno.EPROTO))
                entries = protocol.parse_entries(chunk.payload, len(chunk.fds))
                if entries is None:
                    unixmessage.close_fds(chunk.fds)
                    raise OSError(errno.EPROTO, os.strerror(errno.EPROTO))
                result += [HeldDescriptor(fd, e.id, e.limit) for fd, e in zip(chunk.fds, entries)]
        except OSError as e:
            unixmessage.close_fds([h.fd for h in result])
            raise OperationFailed(operation, e.errno or errno.EIO) from None
        return result

    def setdump(self, entries: Sequence[HeldDescriptor]) -> None:
        """Give the daemon copies of *entries* (replacing ids it already holds)."""
        operation = "set dump"
        total = len(entries)
        if not total:
            return
        if any(not e.id or len(e.id) > protocol.ID_SIZE or b"\0" in e.id for e in entries):
            raise OperationFailed(operation, errno.EINVAL)
        payload = self._answer(operation, self._call(operation, protocol.encode_setdump(total)), 5)
        if protocol.decode_u32(payload, 1) not in _dump_messages(total):
            raise OperationFailed(operation, errno.EPROTO)
        chunks = setdump_chunks(entries)
        for i, chunk in enumerate(chunks):
            payload = b"." + protocol.encode_entries([DumpEntry(e.limit, e.id) for e in chunk])
            reply = self._call(operation, payload, [e.fd for e in chunk])
            if len(reply.payload) != 1 or reply.fds:
                unixmessage.close_fds(reply.fds)
                raise OperationFailed(operation, errno.EPROTO)
            code = reply.payload[0]
            last = i == len(chunks) - 1
            if not last and code != errno.EAGAIN:
                raise OperationFailed(operation, code or errno.EPROTO)
            if last and code:
                raise OperationFailed(operation, errno.EPROTO if code == errno.EAGAIN else code)
