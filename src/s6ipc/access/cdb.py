"""D. J. Bernstein's constant database (cdb): a reader and a writer, byte-compatible with skalibs.

Some facts about the format this module relies on (cdb as djb specified it, skalibs 2.13):

* A file is a 2048-byte header of 256 ``(position, slot count)`` pairs, then the records
  ``klen dlen key data`` in insertion order, then 256 hash tables of ``(hash, record position)``
  slots. Every number is an unsigned 32-bit little-endian integer, so a file cannot exceed 4 GiB.
* The hash is ``h = 5381; h = ((h << 5) + h) ^ byte`` modulo 2**32. A key goes to table
  ``h & 255``; a table holds twice as many slots as it has records; the search starts at slot
  ``(h >> 8) % slots`` and probes linearly, wrapping around, until a slot with position 0.
* The writer is deterministic: the same records added in the same order give the same bytes as
  skalibs' ``cdb_make`` (tables are laid out table 0 first, right after the last record; an empty
  table's header entry still points at where it would start). ``s6-accessrules-cdb-from-fs``
  adds records in ``readdir`` order, which is also the order ``os.scandir`` sees.
* skalibs reads a cdb through ``mmap``: a file of size 0 fails with EINVAL and a directory with
  ENODEV at open time ("cdb_init"). Its lookups check every header and slot position against the
  file size but not every record length; this reader checks them all and reports a damaged file as
  :class:`CdbFormatError` (EPROTO) instead of reading past the end.
* The end of the records is the position of table 0 (the first header entry): traversal, as
  skalibs' ``cdb_traverse_next`` does it, walks records from byte 2048 up to there.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from ..base.errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Iterator, List, Optional, Tuple

__all__ = [
    "HEADER_SIZE", "CdbFormatError", "cdb_hash", "load_cdb_bytes", "CdbReader", "CdbWriter", "cdb_bytes",
    "make_temp", "write_cdb",
]

HEADER_SIZE = 2048
_U32_MAX = 0xFFFFFFFF
_PAIR = struct.Struct("<II")
_TEMP_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class CdbFormatError(SystemFailure):
    """The file is not a well-formed cdb where a lookup or a traversal needed it to be (EPROTO)."""

    def __init__(self, operation: str) -> None:
        super().__init__(operation, errno.EPROTO)


def cdb_hash(key: bytes) -> int:
    """The cdb hash of *key* (32 bits)."""
    h = 5381
    for c in key:
        h = (((h << 5) + h) ^ c) & _U32_MAX
    return h


def load_cdb_bytes(path: str) -> bytes:
    """The whole content of the cdb file *path*, with skalibs' ``cdb_init`` errors.

    Raises :class:`SystemFailure` ``cdb_init PATH`` (ENOENT, EACCES...; EINVAL for an empty file,
    ENODEV for a directory, as ``mmap`` reports them).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise SystemFailure(f"cdb_init {path}", e.errno or errno.EIO) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if st.st_size == 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if st.st_size > _U32_MAX:
            raise OSError(errno.EOVERFLOW, os.strerror(errno.EOVERFLOW))
        chunks: List[bytes] = []
        left = st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise SystemFailure(f"cdb_init {path}", e.errno or errno.EIO) from None
    finally:
        os.close(fd)


class CdbReader:
    """A cdb held in memory: :meth:`get` looks a key up, iteration yields ``(key, data)`` records.

    ``CdbReader(path)`` reads the file now (see :func:`load_cdb_bytes`); :meth:`from_bytes` wraps
    data already in memory. Lookups and traversal raise :class:`CdbFormatError` on a damaged file.
    """

    def __init__(self, path: str) -> None:
        self.name = path
        self.data = load_cdb_bytes(path)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<memory>") -> CdbReader:
        reader = cls.__new__(cls)
        reader.name = name
        reader.data = bytes(data)
        return reader

    def _pair(self, pos: int, what: str) -> Tuple[int, int]:
        if pos + 8 > len(self.data):
            raise CdbFormatError(what)
        a, b = _PAIR.unpack_from(self.data, pos)
        return int(a), int(b)

    def get(self, key: bytes) -> Optional[bytes]:
        """The data of the first record whose key is *key*, or None (skalibs ``cdb_find``)."""
        data = self.data
        h = cdb_hash(key)
        hpos, hslots = self._pair((h << 3) & 2047, "cdb_find")
        if not hslots:
            return None
        kpos = hpos + ((h >> 8) % hslots) * 8
        end = hpos + hslots * 8
        for _ in range(hslots):
            slot_hash, rpos = self._pair(kpos, "cdb_find")
            if not rpos:
                return None
            kpos += 8
            if kpos == end:
                kpos = hpos
            if slot_hash != h:
                continue
            klen, dlen = self._pair(rpos, "cdb_find")
            if klen != len(key):
                continue
            start = rpos + 8
            if start + klen + dlen > len(data):
                raise CdbFormatError("cdb_find")
            if data[start : start + klen] == key:
                return data[start + klen : start + klen + dlen]
        return None

    def __iter__(self) -> Iterator[Tuple[bytes, bytes]]:
        """Every record in file order (skalibs ``cdb_traverse_next``)."""
        data = self.data
        eod, _ = self._pair(0, "cdb_traverse_next")
        pos = HEADER_SIZE
        while eod >= 8 and pos <= eod - 8:
            klen, dlen = self._pair(pos, "cdb_traverse_next")
            start = pos + 8
            if start + klen + dlen > len(data):
                raise CdbFormatError("cdb_traverse_next")
            yield data[start : start + klen], data[start + klen : start + klen + dlen]
            pos = start + klen + dlen


class CdbWriter:
    """Builds a cdb in memory; :meth:`finish` returns its bytes (identical to skalibs' ``cdb_make``)."""

    def __init__(self) -> None:
        self._parts: List[bytes] = []
        self._entries: List[Tuple[int, int]] = []
        self._pos = HEADER_SIZE

    def add(self, key: bytes, data: bytes) -> None:
        """Append one record. Raises :class:`SystemFailure` ``cdb_make_add`` (EOVERFLOW) past 4 GiB."""
        size = 8 + len(key) + len(data)
        if self._pos + size + 8 * 2 * (len(self._entries) + 1) > _U32_MAX:
            raise SystemFailure("cdb_make_add", errno.EOVERFLOW)
        self._entries.append((cdb_hash(key), self._pos))
        self._parts.append(_PAIR.pack(len(key), len(data)) + key + data)
        self._pos += size

    def finish(self) -> bytes:
        tables: List[List[Tuple[int, int]]] = [[] for _ in range(256)]
        for h, p in self._entries:
            tables[h & 255].append((h, p))
        header = bytearray()
        body: List[bytes] = []
        pos = self._pos
        for entries in tables:
            nslots = 2 * len(entries)
            header += _PAIR.pack(pos, nslots)
            slots = [(0, 0)] * nslots
            for h, p in entries:
                where = (h >> 8) % nslots
                while slots[where][1]:
                    where = (where + 1) % nslots
                slots[where] = (h, p)
            body.append(b"".join(_PAIR.pack(h, p) for h, p in slots))
            pos += 8 * nslots
        return bytes(header) + b"".join(self._parts) + b"".join(body)


def cdb_bytes(records: Iterable[Tuple[bytes, bytes]]) -> bytes:
    """The cdb file content holding *records* in order."""
    writer = CdbWriter()
    for key, data in records:
        writer.add(key, data)
    return writer.finish()


def make_temp(path: str, tag: str) -> Tuple[int, str]:
    """Create ``PATH:TAG:XXXXXX`` as ``mkstemp`` does (O_EXCL, mode 0600); return ``(fd, name)``.

    Raises :class:`SystemFailure` ``mkstemp NAME`` (the name with the random suffix that failed,
    as glibc leaves it).
    """
    rand = os.urandom
    name = path
    for _ in range(100):
        suffix = "".join(_TEMP_CHARS[b % len(_TEMP_CHARS)] for b in rand(6))
        name = f"{path}:{tag}:{suffix}"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        except OSError as e:
            raise SystemFailure(f"mkstemp {name}", e.errno or errno.EIO) from None
        return fd, name
    raise SystemFailure(f"mkstemp {name}", errno.EEXIST)


def write_cdb(path: str, records: Iterable[Tuple[bytes, bytes]], *, tag: str = "s6ipc") -> None:
    """Write *records* as a cdb at *path*, atomically: temp file ``PATH:TAG:XXXXXX`` (mode 0600)
    in the same directory, written, fsync'ed, then renamed over *path*.

    A reader sees either the old file or the new one, never a partial one. On failure the temp file
    is removed and :class:`SystemFailure` raised (``mkstemp``, ``cdb_make_finish``, ``fd_sync``,
    ``rename TMP to PATH``).
    """
    content = cdb_bytes(records)
    fd, tmp = make_temp(path, tag)
    operation = "cdb_make_finish"
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        operation = "fd_sync"
        os.fsync(fd)
        os.close(fd)
        fd = -1
        operation = f"rename {tmp} to {path}"
        os.rename(tmp, path)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SystemFailure(operation, e.errno or errno.EIO) from None
