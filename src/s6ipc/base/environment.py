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

So :func:`adopt` rebuilds ``os.environ`` at start from ``/proc/self/environ`` with, in the place
of each entry it cannot carry, a *placeholder*: a key starting with NUL, which no real name can
hold, whose value is the raw entry. The placeholders then move through every dictionary made
from ``os.environ`` exactly as the entries move through skalibs' ``env_merge`` (no modification
can name them: env_merge only matches ``NAME=`` entries, and only the first of a name), and
:func:`entries` turns them back into the raw entries for an exec: the array a C chain would
pass, in its order. :func:`execve` and :func:`posix_spawn` use libc through ctypes for such an
array only; the usual case stays on ``os.execve``/``os.posix_spawn``, so :mod:`ctypes` (a few
milliseconds to import) is imported only when such an array is executed.
"""

from __future__ import annotations

import os

from .cstrings import c_environment
from .libc import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

__all__ = ["is_placeholder", "adopt", "replace", "entries", "execve", "posix_spawn"]

_PLACEHOLDER = "\0"
#: placeholder key -> the raw entry it stands for
_raw: Dict[str, bytes] = {}


def is_placeholder(key: str) -> bool:
    """Whether *key* of ``os.environ`` stands for an entry CPython cannot represent."""
    return key.startswith(_PLACEHOLDER)


def _raw_entries() -> List[bytes]:
    try:
        with open("/proc/self/environ", "rb") as f:
            return [entry for entry in f.read().split(b"\0") if entry]
    except OSError:
        return []


def adopt(environ: os._Environ[str]) -> None:
    """Rebuild *environ* (``os.environ``, as CPython built it) in the order of the array the
    process was executed with, a placeholder standing for each entry it could not carry. Values
    changed since start (LC_CTYPE given back by the locale coercion's undoing) are kept. Does
    nothing when every entry is representable. The C-level environment is left alone: it is not
    what any exec from here passes."""
    data = getattr(environ, "_data", None)
    if not isinstance(data, dict):
        return
    seen: Set[bytes] = set()
    rebuilt: List[Tuple[bytes, bytes]] = []
    for entry in _raw_entries():
        name, eq, _ = entry.partition(b"=")
        if eq and name and name not in seen:
            seen.add(name)
            if name in data:
                rebuilt.append((name, data[name]))
            continue
        key = _PLACEHOLDER + str(len(_raw))
        _raw[key] = entry
        rebuilt.append((os.fsencode(key), entry))
    if not _raw:
        return
    rebuilt += [(k, v) for k, v in data.items() if k and k not in seen]
    data.clear()
    data.update(rebuilt)


def replace(environ: os._Environ[str], env: Mapping[str, str]) -> None:
    """Make *environ* (``os.environ``) hold exactly *env*, in its order, placeholders included
    (``clear()`` and ``update()`` would hand them to ``unsetenv``/``putenv``, which refuse them).
    Names and values are cut at their first NUL, as C's ``putenv`` would see them."""
    env = c_environment(env)
    if list(env.items()) == list(environ.items()):
        return
    for key in list(environ):
        if _passable(key) and not is_placeholder(key) and key not in env:
            del environ[key]
    data = getattr(environ, "_data", None)
    for key, value in env.items():
        if _passable(key) and not is_placeholder(key) and environ.get(key) != value:
            environ[key] = value
    if isinstance(data, dict):
        data.clear()
        data.update((os.fsencode(k), os.fsencode(v)) for k, v in env.items())


def _passable(key: str) -> bool:
    return bool(key) and "=" not in key[1:]


def entries(env: Mapping[str, str]) -> Optional[List[bytes]]:
    """The exact environment array for an exec with *env*, or None when *env* says it all
    (``os.execve(path, argv, env)`` then passes exactly that): placeholders become the entries
    they stand for, in place; keys no exec can pass (``""``) are left out."""
    if not _raw and "" not in env:
        return None  # the per-connection fast case: nothing CPython cannot pass
    if all(_passable(k) and not is_placeholder(k) for k in env):
        return None
    result: List[bytes] = []
    for key, value in env.items():
        if is_placeholder(key):
            raw = _raw.get(key)
            result.append(os.fsencode(value) if raw is None else raw)
        elif _passable(key):
            result.append(os.fsencode(key) + b"=" + os.fsencode(value))
    return result


# -- libc, for the arrays CPython refuses ---------------------------------------------------
_POSIX_SPAWN_SETSIGDEF, _POSIX_SPAWN_SETSIGMASK = 0x04, 0x08

def _strings(items: Iterable[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    import ctypes

    values: List[Optional[bytes]] = [*items, None]
    return (ctypes.c_char_p * len(values))(*values)


def _argv(argv: Sequence[str]) -> ctypes.Array[ctypes.c_char_p]:
    return _strings(os.fsencode(a) for a in argv)


def execve(path: str, argv: Sequence[str], env: List[bytes]) -> None:
    """``execve`` with the exact array *env*; returns only by raising OSError."""
    import ctypes

    libc().execve(os.fsencode(path), _argv(argv), _strings(env))
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e))


def _sigset(signals: Iterable[int]) -> ctypes.Array[ctypes.c_char]:
    import ctypes

    c = libc()
    sigset = ctypes.create_string_buffer(128)  # sigset_t: 1024 bits
    c.sigemptyset(sigset)
    for sig in signals:
        c.sigaddset(sigset, int(sig))
    return sigset


def posix_spawn(path: str, argv: Sequence[str], env: List[bytes], dup2: Sequence[Tuple[int, int]],
                sigdef: Sequence[int]) -> int:
    """``posix_spawn`` with the exact array *env*, the ``dup2`` file actions *dup2*, an empty
    signal mask and SIG_DFL for *sigdef* (what :class:`~s6ipc.base.execution.Spawner` asks of
    ``os.posix_spawn``). Returns the pid; raises OSError with the error of the spawn or exec."""
    import ctypes

    c = libc()
    actions = ctypes.create_string_buffer(256)  # posix_spawn_file_actions_t: 80 bytes in glibc
    attr = ctypes.create_string_buffer(1024)  # posix_spawnattr_t: 336 bytes in glibc
    c.posix_spawn_file_actions_init(actions)
    c.posix_spawnattr_init(attr)
    try:
        for source, target in dup2:
            c.posix_spawn_file_actions_adddup2(actions, source, target)
        c.posix_spawnattr_setsigmask(attr, _sigset(()))
        c.posix_spawnattr_setsigdefault(attr, _sigset(sigdef))
        c.posix_spawnattr_setflags(attr, ctypes.c_short(_POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK))
        pid = ctypes.c_int()
        code = c.posix_spawn(ctypes.byref(pid), os.fsencode(path), actions, attr,
                                _argv(argv), _strings(env))
    finally:
        c.posix_spawnattr_destroy(attr)
        c.posix_spawn_file_actions_destroy(actions)
    if code:
        raise OSError(code, os.strerror(code))
    return pid.value
