"""The fd-holder wire protocol: s6-fdholder requests and replies over skalibs' ``unixmessage``.

The framing (header, descriptors, reassembly, outboxes) is :mod:`s6ipc.base.unixmessage`; this module
is what s6-fdholderd and its clients say in it (s6 2.11.3.2):

* Identifiers are C strings: 1..255 bytes on the wire (the length byte excludes the trailing
  NUL, which must be there), and everything after an embedded NUL is ignored by s6.
* Replies carry a Linux errno byte: 0 success, EPERM 1, ENOENT 2, EAGAIN 11, EBUSY 16,
  ENFILE 23.

Pure: no state, no system call, so it can be fuzzed in isolation.
"""

from __future__ import annotations

import errno
import os
import struct

from ..base.cstrings import cut_bytes
from ..base.typeshim import dataclass
from ..base.unixmessage import MAX_FDS, ProtocolError
from . import tai

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Sequence, Tuple, Union

__all__ = [
    "ID_SIZE", "ENTRY_MIN", "entry_size", "MAX_REQUEST", "Store", "Delete", "Retrieve", "List_", "GetDump",
    "SetDump", "DumpEntry", "SetDumpData", "parse_entries", "parse_request",
    "encode_store", "encode_delete", "encode_retrieve", "LIST_REQUEST", "GETDUMP_REQUEST", "encode_setdump",
    "encode_entries", "encode_list_reply", "encode_getdump_header", "encode_setdump_reply", "decode_u32",
]

_U32 = struct.Struct(">I")
ID_SIZE = 255
ENTRY_MIN = tai.PACKED_SIZE + 3  # tain, idlen, at least a NUL (s6 counts a 1-byte id minimum)


def entry_size(id_length: int) -> int:
    """The encoded size of a dump entry (limit, id length, id, NUL) whose id has *id_length* bytes."""
    return tai.PACKED_SIZE + 1 + id_length + 1


#: The largest request a client can legitimately send: a setdump chunk of 255 full-size entries.
MAX_REQUEST = 1 + MAX_FDS * entry_size(ID_SIZE)


# -- requests ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Store:
    """``S`` limit (TAIN) idlen id NUL, with one descriptor: hold it under *id* until *limit*."""

    limit: tai.Tain
    id: bytes


@dataclass(frozen=True)
class Delete:
    """``D`` idlen id NUL: close the descriptor held under *id* and forget it."""

    id: bytes


@dataclass(frozen=True)
class Retrieve:
    """``R`` delete-byte idlen id NUL: send the descriptor held under *id*; forget it too when the
    byte is not 0."""

    id: bytes
    delete: bool


@dataclass(frozen=True)
class List_:
    """``L``: the ids held."""


@dataclass(frozen=True)
class GetDump:
    """``?``: every descriptor held, with its id and limit (in chunks of at most 255)."""


@dataclass(frozen=True)
class SetDump:
    """``!`` count (32 bits, big-endian): *count* descriptors follow, in ``.`` chunks."""

    count: int


@dataclass(frozen=True)
class DumpEntry:
    """One descriptor of a dump, as a ``.`` chunk or a getdump reply describes it: limit (TAIN),
    idlen, id, NUL."""

    limit: tai.Tain
    id: bytes


@dataclass(frozen=True)
class SetDumpData:
    """A ``.`` chunk: *count* descriptors; *entries* is None when the entries do not parse (s6
    checks the rights and the room before it parses them, then drops the connection)."""

    count: int
    entries: Optional[Tuple[DumpEntry, ...]]


if TYPE_CHECKING:
    Request = Union[Store, Delete, Retrieve, List_, GetDump, SetDump, SetDumpData]


def _id_at(body: bytes, pos: int) -> Optional[Tuple[bytes, int]]:
    """The id whose length byte is at *pos* and the position after its NUL, if well-formed."""
    if pos >= len(body):
        return None
    idlen = body[pos]
    end = pos + 1 + idlen
    if end >= len(body) or body[end] != 0:
        return None
    return cut_bytes(body[pos + 1 : end]), end + 1


def parse_entries(body: bytes, count: int) -> Optional[Tuple[DumpEntry, ...]]:
    """*count* dump entries filling *body* exactly, or None."""
    entries = []
    pos = 0
    for _ in range(count):
        if len(body) - pos < ENTRY_MIN:
            return None
        limit = tai.unpack(body[pos : pos + tai.PACKED_SIZE])
        parsed = _id_at(body, pos + tai.PACKED_SIZE)
        if parsed is None:
            return None
        ident, pos = parsed
        entries.append(DumpEntry(limit, ident))
    if pos != len(body):
        return None
    return tuple(entries)


def parse_request(payload: bytes, nfds: int, dumping: int) -> Request:
    """Decode one request as s6-fdholderd does; raises :class:`ProtocolError` where s6 drops.

    *dumping* is the number of descriptors a setdump in progress still expects (0: none).
    """
    if not payload:
        raise ProtocolError("empty request")
    op, body = payload[0], payload[1:]
    if dumping and op != 0x2E:
        raise ProtocolError("request during a setdump")
    n = len(body)
    if op == 0x53:  # 'S'
        if n < ENTRY_MIN or nfds != 1:
            raise ProtocolError("bad store")
        idlen = body[tai.PACKED_SIZE]
        if idlen + 2 + tai.PACKED_SIZE != n or body[-1] != 0:
            raise ProtocolError("bad store")
        return Store(tai.unpack(body), cut_bytes(body[tai.PACKED_SIZE + 1 : -1]))
    if op == 0x44:  # 'D'
        if n < 3 or nfds or body[0] + 2 != n or body[-1] != 0:
            raise ProtocolError("bad delete")
        return Delete(cut_bytes(body[1:-1]))
    if op == 0x52:  # 'R'
        if n < 4 or nfds or body[1] + 3 != n or body[-1] != 0:
            raise ProtocolError("bad retrieve")
        return Retrieve(cut_bytes(body[2:-1]), body[0] != 0)
    if op == 0x4C:  # 'L'
        if n or nfds:
            raise ProtocolError("bad list")
        return List_()
    if op == 0x3F:  # '?'
        if n or nfds:
            raise ProtocolError("bad getdump")
        return GetDump()
    if op == 0x21:  # '!'
        if n != 4 or nfds:
            raise ProtocolError("bad setdump")
        return SetDump(_U32.unpack(body)[0])
    if op == 0x2E:  # '.'
        if not nfds or nfds > dumping or n < nfds * ENTRY_MIN:
            raise ProtocolError("bad setdump data")
        return SetDumpData(nfds, parse_entries(body, nfds))
    raise ProtocolError("unknown request")


# -- request and reply encoders (client side) -------------------------------------------------
def _id_bytes(ident: bytes) -> bytes:
    if len(ident) > ID_SIZE:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    return bytes((len(ident),)) + ident + b"\0"


def encode_store(limit: tai.Tain, ident: bytes) -> bytes:
    return b"S" + limit.pack() + _id_bytes(ident)


def encode_delete(ident: bytes) -> bytes:
    return b"D" + _id_bytes(ident)


def encode_retrieve(ident: bytes, delete: bool) -> bytes:
    return b"R" + (b"\1" if delete else b"\0") + _id_bytes(ident)


LIST_REQUEST = b"L"
GETDUMP_REQUEST = b"?"


def encode_setdump(count: int) -> bytes:
    return b"!" + _U32.pack(count)


def encode_entries(entries: Sequence[DumpEntry]) -> bytes:
    return b"".join(e.limit.pack() + _id_bytes(e.id) for e in entries)


def encode_list_reply(ids: Sequence[bytes]) -> bytes:
    return b"\0" + _U32.pack(len(ids)) + b"".join(i + b"\0" for i in ids)


def encode_getdump_header(nfds: int, chunk: int = MAX_FDS) -> bytes:
    nmsg = (nfds + chunk - 1) // chunk
    return b"\0" + _U32.pack(nmsg) + _U32.pack(nfds)


def encode_setdump_reply(count: int, chunk: int = MAX_FDS) -> bytes:
    return b"\0" + _U32.pack((count + chunk - 1) // chunk)


def decode_u32(data: bytes, pos: int) -> int:
    return int(_U32.unpack_from(data, pos)[0])
