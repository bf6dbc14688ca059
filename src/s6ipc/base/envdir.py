"""Environment directories and environment modifications, the skalibs way.

Some facts about skalibs' ``envdir`` (2.13, the non-verbatim mode s6 uses) this module relies on:

* Entries are taken in ``readdir`` order (``os.scandir`` sees the same order); names starting
  with ``.`` and names containing ``=`` are skipped.
* Each file is opened as skalibs 2.13's ``openreadnclose`` opens it, *blocking* (checked on the
  binaries: s6-ipcserver-access and s6-accessrules-cdb-from-fs wait on a FIFO without a writer
  until one comes, then read what it wrote), and its first 4095 bytes are read up to end of
  file. A caller that must never wait (a daemon) asks for regular files only and gets EAGAIN
  for anything else, before any open. An open or read error fails the whole directory; a
  file that vanished between ``readdir`` and ``open`` reports EIDRM, not ENOENT, so that a caller
  ignoring "no env directory" (ENOENT) does not ignore it.
* An empty file means "unset NAME". Otherwise the value is the bytes up to the first newline, with
  trailing spaces, tabs and CRs removed, every NUL turned into a newline: ``NAME=value``.
* Modifications ("modifs") are stored as s6 stores them: ``NAME=value\\0`` sets, ``NAME\\0``
  unsets. Applying them (skalibs ``env_merge``): for each modif, the first variable of that name is
  removed — the *last* variable of the environment takes its place — then, if the modif has a
  ``=``, it is appended at the end. The environment order a program sees therefore follows s6's.

Names and values are ``str`` decoded with ``os.fsdecode`` (surrogateescape): any byte string
survives the round trip to ``execve`` unchanged.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "MAX_VALUE_SIZE", "value_of", "read_file_head", "read_envdir", "encode_modifs", "split_modifs",
    "decode_modifs", "merge_env",
]

#: skalibs reads at most this many bytes of each envdir file.
MAX_VALUE_SIZE = 4095

#: A sequence of modifications in order: ``(NAME, value)`` sets, ``(NAME, None)`` unsets.
if TYPE_CHECKING:
    Modifs = Tuple[Tuple[str, Optional[str]], ...]


def value_of(content: bytes) -> Optional[bytes]:
    """What an envdir file holding *content* (its first 4095 bytes) sets: None means unset."""
    raw = content[:MAX_VALUE_SIZE]
    if not raw:
        return None
    cut = raw.find(b"\n")
    if cut >= 0:
        raw = raw[:cut]
    return raw.rstrip(b" \t\r").replace(b"\0", b"\n")


def read_file_head(path: str, size: int, regular_only: bool = False) -> bytes:
    """Up to *size* bytes from the start of *path* (skalibs ``openreadnclose``). Raises OSError.

    The open blocks as skalibs' does: a FIFO waits for a writer, then is read until its end.
    With *regular_only*, anything but a regular file raises EAGAIN instead and nothing can wait
    (the file is opened with O_NONBLOCK, which no regular file notices, and checked first).
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NONBLOCK if regular_only else 0)
    fd = os.open(path, flags)
    try:
        if regular_only and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        data = b""
        while len(data) < size:
            try:
                chunk = os.read(fd, size - len(data))
            except InterruptedError:
                continue
            if not chunk:
                break
            data += chunk
        return data
    finally:
        os.close(fd)


def read_envdir(path: str, regular_only: bool = False) -> Modifs:
    """The modifications the environment directory *path* describes, in ``readdir`` order.

    With *regular_only*, an entry that is not a regular file (by ``readdir``'s type, following
    symlinks) fails with EAGAIN rather than being opened: a caller that must never block (the
    daemon's fast path) then leaves the work to a process that may.

    Raises :class:`SystemFailure` ``envdir PATH`` with the errno of the failing call: ENOENT only
    when *path* itself does not exist, ENOTDIR when it is not a directory, EIDRM for a file that
    vanished, EISDIR for a subdirectory, EACCES for an unreadable file...
    """
    result: List[Tuple[str, Optional[str]]] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or "=" in name:
                    continue
                if regular_only and not entry.is_file():
                    raise OSError(errno.EAGAIN, "")
                try:
                    content = read_file_head(entry.path, MAX_VALUE_SIZE)
                except OSError as e:
                    code = e.errno or errno.EIO
                    raise OSError(errno.EIDRM if code == errno.ENOENT else code, "") from None
                value = value_of(content)
                result.append((name, None if value is None else os.fsdecode(value)))
    except OSError as e:
        raise SystemFailure(f"envdir {path}", e.errno or errno.EIO) from None
    return tuple(result)


def encode_modifs(modifs: Modifs) -> bytes:
    """The modifications as s6 stores them: ``NAME=value\\0`` or ``NAME\\0`` each."""
    parts = []
    for name, value in modifs:
        if value is None:
            parts.append(os.fsencode(name) + b"\0")
        else:
            parts.append(os.fsencode(name) + b"=" + os.fsencode(value) + b"\0")
    return b"".join(parts)


def split_modifs(block: bytes) -> List[str]:
    """The modif strings of an s6 modif block (NUL-terminated each; an unterminated tail counts)."""
    pieces = block.split(b"\0")
    if pieces and not pieces[-1]:
        pieces.pop()
    return [os.fsdecode(p) for p in pieces]


def decode_modifs(block: bytes) -> Modifs:
    """The inverse of :func:`encode_modifs` (a piece without ``=`` is an unset)."""
    result: List[Tuple[str, Optional[str]]] = []
    for piece in split_modifs(block):
        name, eq, value = piece.partition("=")
        result.append((name, value if eq else None))
    return tuple(result)


def merge_env(env: Mapping[str, str], modifs: Sequence[str]) -> Dict[str, str]:
    """*env* with the modif strings applied in order, exactly as skalibs' ``env_merge`` orders them.

    A modif ``NAME=value`` or ``NAME`` first removes NAME (the last variable moves into its place),
    then ``NAME=value`` is appended. Variables with an empty name, which ``execve`` from Python
    cannot pass, are left out of the result.
    """
    result = dict(env)
    for i, modif in enumerate(modifs):
        name, eq, value = modif.partition("=")
        if name in result:  # a removal reorders: take the exact path from here on
            result = _merge_in_order(result, modifs[i:])
            break
        if eq:
            result[name] = value
    result.pop("", None)
    return result


def _merge_in_order(env: Dict[str, str], modifs: Sequence[str]) -> Dict[str, str]:
    order = list(env)
    where = {name: i for i, name in enumerate(order)}
    values = dict(env)
    for modif in modifs:
        name, eq, value = modif.partition("=")
        i = where.pop(name, None)
        if i is not None:
            last = order.pop()
            if i < len(order):
                order[i] = last
                where[last] = i
            del values[name]
        if eq:
            where[name] = len(order)
            order.append(name)
            values[name] = value
    return {name: values[name] for name in order}
