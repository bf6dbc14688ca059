"""Dropping privileges the way s6-applyuidgid does: setgroups, then setgid, then setuid.

Some facts about Linux credentials and s6 this module relies on:

* A uid or gid of 0 means "do not change" (s6 can never switch *to* root explicitly).
* The supplementary list goes through skalibs' ``setgroups_and_gid(primary, list)``, the primary
  being the new gid if one is given, else the current egid: an empty list becomes ``[primary]``;
  a list that starts with the primary is used as it is; otherwise the *first* occurrence of the
  primary is moved to the front (later duplicates stay), or the primary is prepended when absent.
  The kernel keeps duplicates and shows the list sorted in ``/proc/PID/status``.
* ``setgroups``, then ``setgid``, then ``setuid``: the first two need privileges the last one drops.
  ``setuid`` as root changes the real, effective, saved and filesystem uids together, so nothing
  can be regained afterwards; ``setgid`` likewise for the gids.
* Changing the effective or filesystem ids clears the process's "dumpable" flag: ``/proc/PID/*``
  then belongs to root and no core is dumped. ``execve`` sets it again when the real and effective
  ids agree, so after s6-applyuidgid's exec the next stage is dumpable; a stage that runs in the
  same process must set it itself (:func:`dumpable_as_after_exec`) to look the same.
"""

from __future__ import annotations

import errno
import os

from .errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Sequence

__all__ = ["normalise_groups", "dumpable_as_after_exec", "apply_uidgid"]


def normalise_groups(gids: Sequence[int], primary: int) -> List[int]:
    """The list s6 hands to setgroups (skalibs ``setgroups_and_gid``): *primary* first."""
    groups = list(gids)
    if primary in groups:
        groups.remove(primary)  # the first occurrence only
    return [primary] + groups


_PR_SET_DUMPABLE = 4


def dumpable_as_after_exec() -> None:
    """Set the dumpable flag as ``execve`` would now: on when real and effective ids agree.

    Best effort (a ``prctl`` through ctypes; nothing happens where it is unavailable — an
    interpreter built without libffi has no ``ctypes`` module at all, pyenv's 3.13.0 here).
    :func:`apply_uidgid` imports ctypes before it changes ids, while the interpreter's files are
    surely readable; nothing else on a program's start path needs it.
    """
    if os.getuid() != os.geteuid() or os.getgid() != os.getegid():
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass


def _import_ctypes() -> None:
    try:
        import ctypes  # noqa: F401  (only loaded here, for dumpable_as_after_exec)
    except ImportError:
        pass


def apply_uidgid(uid: int = 0, gid: int = 0, groups: Optional[Sequence[int]] = None) -> None:
    """Change ids in s6's order; 0 means unchanged, None means "no group list was given".

    Raises :class:`SystemFailure` ("set supplementary group list", "setgid", "setuid").
    """
    if uid or gid:
        _import_ctypes()  # for dumpable_as_after_exec, before the ids change
    if groups is not None:
        primary = gid if gid else os.getegid()
        _change("set supplementary group list", os.setgroups, normalise_groups(groups, primary))
    if gid:
        _change("setgid", os.setgid, gid)
    if uid:
        _change("setuid", os.setuid, uid)


def _change(operation: str, call: Callable[[Any], None], value: Any) -> None:
    """Run one id change; any failure becomes ``SystemFailure(operation)`` (EINVAL for out-of-range ids)."""
    try:
        call(value)
    except OSError as e:
        raise SystemFailure(operation, e.errno or errno.EPERM) from None
    except (OverflowError, ValueError):
        raise SystemFailure(operation, errno.EINVAL) from None
