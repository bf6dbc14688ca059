"""The descriptors a process holds, and making them stay out of children.

Some facts about descriptor inheritance (Linux) this module relies on:

* ``execve`` and ``posix_spawn`` pass on every descriptor that is not close-on-exec. Python opens
  its own descriptors close-on-exec, but a daemon also holds what its parent leaked to it.
* ``/proc/self/fd`` lists exactly the open descriptors (the listing's own directory fd included,
  closed again before the caller looks). Without /proc the first 1024 numbers are tried.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence


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
