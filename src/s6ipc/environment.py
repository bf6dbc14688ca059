"""Environments CPython cannot represent, passed on exactly at every exec and spawn.

Some facts about the environment (Linux, glibc, CPython 3.9-3.13), checked:

* ``execve`` takes any NUL-terminated strings as environment entries: s6's C programs pass on
  whatever they were given — an entry with an empty name (``=x``), one without ``=`` at all,
  the same name twice, bytes that are not UTF-8 — and only change the entries they modify
  (skalibs ``env_merge`` matches a name up to the first ``=``, or the whole entry without one).
* CPython builds ``os.environ`` from that array but cannot hold all of it: an entry without
  ``=`` is dropped, only the first entry of a name is kept, and an entry with an empty name
  becomes the key ``""``, which ``os.execve`` and ``os.posix_spawn`` then refuse with
  ValueError ("illegal environment variable name"). Non-UTF-8 bytes survive (surrogateescape).
* ``/proc/self/environ`` keeps the array the process was executed with, whatever
  ``os.environ``, ``putenv`` or ``setenv`` did since.

So the array given to ``execve`` is read from ``/proc/self/environ`` (once), and when it holds
entries ``os.environ`` cannot carry, :func:`entries` rebuilds the exact array for an exec the way
``env_merge`` would have built it from the mapping's modifications. :func:`execve` and
:func:`posix_spawn` use libc through ctypes for such an array only; the usual case stays on
``os.execve``/``os.posix_spawn``.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

_cache: Optional[Tuple[List[bytes], List[bytes], Dict[bytes, bytes]]] = None


def _name(entry: bytes) -> bytes:
    return entry.split(b"=", 1)[0]


def _scan() -> Tuple[List[bytes], List[bytes], Dict[bytes, bytes]]:
    """(every entry in order, those os.environ cannot carry, the first value of each name)."""
    global _cache
    if _cache is None:
        try:
            with open("/proc/self/environ", "rb") as f:
                raw = [entry for entry in f.read().split(b"\0") if entry]
        except OSError:
            raw = []
        extra: List[bytes] = []
        first: Dict[bytes, bytes] = {}
        for entry in raw:
            name = _name(entry)
            if b"=" not in entry or not name or name in first:
                extra.append(entry)
            else:
                first[name] = entry[len(name) + 1:]
        _cache = raw, extra, first
    return _cache


def adopt(environ: os._Environ[str]) -> None:
    """Take the key ``""`` out of *environ* (``os.environ``) without ``unsetenv`` (which refuses
    it): its entry is among :func:`unrepresented`, and with it there ``os.environ.clear()``,
    ``update`` and every exec from Python would raise ValueError."""
    data = getattr(environ, "_data", None)
    if isinstance(data, dict):
        data.pop(environ.encodekey(""), None)


def unrepresented() -> List[bytes]:
    """The entries of the environment given to ``execve`` that ``os.environ`` does not hold."""
    return list(_scan()[1])


def _passable(key: str) -> bool:
    return bool(key) and "=" not in key[1:]


def entries(env: Mapping[str, str]) -> Optional[List[bytes]]:
    """The exact environment array for an exec with *env*, or None when *env* says it all
    (``os.execve(path, argv, env)`` then passes exactly that).

    As skalibs' ``env_merge``: the entries given at ``execve`` stay in their order unless their
    name was modified (set to another value or unset: every entry of that name goes); then come
    the variables of *env* that are new or changed, in *env*'s order.
    """
    raw, extra, first = _scan()
    if not extra and all(_passable(k) for k in env):
        return None
    current = {os.fsencode(k): os.fsencode(v) for k, v in env.items() if _passable(k)}
    untouched = {name for name, value in current.items() if first.get(name) == value}
    result: List[bytes] = []
    for entry in raw:
        name = _name(entry)
        if name in untouched or (name not in first and name not in current):
            result.append(entry)  # unmodified, or a name no variable of *env* can touch
    result += [name + b"=" + value for name, value in current.items() if name not in untouched]
    return result


# -- libc, for the arrays CPython refuses ---------------------------------------------------
_POSIX_SPAWN_SETSIGDEF, _POSIX_SPAWN_SETSIGMASK = 0x04, 0x08
_libc: Optional[ctypes.CDLL] = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _strings(items: Iterable[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    values: List[Optional[bytes]] = [*items, None]
    return (ctypes.c_char_p * len(values))(*values)


def _argv(argv: Sequence[str]) -> ctypes.Array[ctypes.c_char_p]:
    return _strings(os.fsencode(a) for a in argv)


def execve(path: str, argv: Sequence[str], env: List[bytes]) -> None:
    """``execve`` with the exact array *env*; returns only by raising OSError."""
    _c().execve(os.fsencode(path), _argv(argv), _strings(env))
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e))


def _sigset(signals: Iterable[int]) -> ctypes.Array[ctypes.c_char]:
    libc = _c()
    sigset = ctypes.create_string_buffer(128)  # sigset_t: 1024 bits
    libc.sigemptyset(sigset)
    for sig in signals:
        libc.sigaddset(sigset, int(sig))
    return sigset


def posix_spawn(path: str, argv: Sequence[str], env: List[bytes], dup2: Sequence[Tuple[int, int]],
                sigdef: Sequence[signal.Signals]) -> int:
    """``posix_spawn`` with the exact array *env*, the ``dup2`` file actions *dup2*, an empty
    signal mask and SIG_DFL for *sigdef* (what :class:`~s6ipc.execution.Spawner` asks of
    ``os.posix_spawn``). Returns the pid; raises OSError with the error of the spawn or exec."""
    libc = _c()
    actions = ctypes.create_string_buffer(256)  # posix_spawn_file_actions_t: 80 bytes in glibc
    attr = ctypes.create_string_buffer(1024)  # posix_spawnattr_t: 336 bytes in glibc
    libc.posix_spawn_file_actions_init(actions)
    libc.posix_spawnattr_init(attr)
    try:
        for source, target in dup2:
            libc.posix_spawn_file_actions_adddup2(actions, source, target)
        libc.posix_spawnattr_setsigmask(attr, _sigset(()))
        libc.posix_spawnattr_setsigdefault(attr, _sigset(sigdef))
        libc.posix_spawnattr_setflags(attr, ctypes.c_short(_POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK))
        pid = ctypes.c_int()
        code = libc.posix_spawn(ctypes.byref(pid), os.fsencode(path), actions, attr,
                                _argv(argv), _strings(env))
    finally:
        libc.posix_spawnattr_destroy(attr)
        libc.posix_spawn_file_actions_destroy(actions)
    if code:
        raise OSError(code, os.strerror(code))
    return pid.value
