"""libc through :mod:`ctypes`, for the few calls CPython has no wrapper for.

Some facts about these calls (Linux, glibc):

* ``prctl(PR_SET_CHILD_SUBREAPER, 1)`` (Linux 3.4) makes this process a *subreaper*: a descendant
  whose parent dies is re-parented to the nearest living subreaper ancestor instead of to init,
  so it becomes this process's child — ``waitpid`` reaps it, ``kill`` reaches it as ours. An
  orphan that had already exited (a zombie) is handed over too, and the new parent gets its
  SIGCHLD. The attribute belongs to the process: an ``execve`` keeps it, a ``fork`` does not
  pass it on. ``PR_GET_CHILD_SUBREAPER`` reads it back.
* :mod:`ctypes` costs about a millisecond to import: it is imported on the first call here, never
  by a program that does not need one of these calls.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from typing import Optional

__all__ = ["libc", "child_subreaper", "set_child_subreaper"]

_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37
_libc: Optional[ctypes.CDLL] = None


def libc() -> ctypes.CDLL:
    """The C library of this process (loaded once, ``errno`` kept for :func:`ctypes.get_errno`)."""
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def child_subreaper() -> bool:
    """Whether this process is a subreaper. Raises OSError."""
    import ctypes

    value = ctypes.c_int(0)
    if libc().prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        code = ctypes.get_errno() or errno.EINVAL
        raise OSError(code, os.strerror(code))
    return bool(value.value)


def set_child_subreaper(on: bool) -> None:
    """Make this process a subreaper (*on*) or not. Raises OSError."""
    import ctypes

    if libc().prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        code = ctypes.get_errno() or errno.EINVAL
        raise OSError(code, os.strerror(code))
