"""The descriptors a process holds, and making them stay out of children.

Some facts about descriptor inheritance (Linux) this module relies on:

* ``execve`` and ``posix_spawn`` pass on every descriptor that is not close-on-exec. Python opens
  its own descriptors close-on-exec, but a daemon also holds what its parent leaked to it.
* ``dup2(fd, target)`` gives *target* a copy without close-on-exec, whatever *fd* had; ``dup3`` with
  ``O_CLOEXEC`` (``os.dup2(…, inheritable=False)``) gives one with it. ``dup2`` of an fd onto itself
  changes nothing, close-on-exec included: there the flag must be cleared by hand (s6's
  ``uncoe``), which is why s6-fdholder-retrieve has two messages, ``move fd`` and ``uncoe stdin``.
* ``/proc/self/fd`` lists exactly the open descriptors (the listing's own directory fd included,
  closed again before the caller looks). Without /proc the first 1024 numbers are tried.
"""

from __future__ import annotations

import errno
import os

from .errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence

__all__ = ["fd_word", "move_fd", "open_fds", "close_on_exec_above", "close_above"]

_STDIO = ("stdin", "stdout", "stderr")


def fd_word(fd: int) -> str:
    """How s6 names *fd* in a message: ``stdin``, ``stdout``, ``stderr``, else ``fd N``."""
    return _STDIO[fd] if 0 <= fd < len(_STDIO) else f"fd {fd}"


def move_fd(fd: int, target: int, *, inheritable: bool = True) -> None:
    """Put *fd* on *target* and close *fd*: the one "put this socket on fd 0" of every stage.

    *inheritable* (the default, as a chain stage hands the fd on to what it execs) clears
    close-on-exec on *target*; False sets it (a daemon that keeps the fd for itself). Raises
    :class:`SystemFailure` with s6's words: ``move fd`` when the ``dup2`` fails, ``uncoe stdin``
    (``uncoe fd N``…) when *fd* already is *target* and its flag cannot be changed.
    """
    if fd == target:
        try:
            os.set_inheritable(target, inheritable)
        except OSError as e:
            raise SystemFailure(f"{'uncoe' if inheritable else 'coe'} {fd_word(target)}",
                                e.errno or errno.EBADF) from None
        return
    try:
        os.dup2(fd, target, inheritable=inheritable)
    except OSError as e:
        raise SystemFailure("move fd", e.errno or errno.EBADF) from None
    os.close(fd)


def open_fds() -> List[int]:
    """The descriptor numbers open in this process (a best guess, 0..1023, without /proc)."""
    try:
        return sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except OSError:
        return list(range(1024))


def close_on_exec_above(keep_open: int) -> None:
    """Set close-on-exec on every open fd above *keep_open* (the lower ones stay as they are)."""
    for fd in open_fds():
        if fd > keep_open:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def close_above(keep_open: int, keep: Sequence[int] = ()) -> None:
    """Close every open fd above *keep_open* except those in *keep* (errors ignored)."""
    for fd in open_fds():
        if fd > keep_open and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
