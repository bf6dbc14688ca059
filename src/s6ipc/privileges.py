"""Dropping privileges the way s6-applyuidgid does: setgroups, then setgid, then setuid.

Facts this module relies on: a uid or gid of 0 means "do not change" (s6 can never switch *to*
root explicitly); the supplementary list is normalised so that the primary group comes first and
appears once (the primary being the new gid if one is given, else the current egid); an empty
list still calls setgroups with the primary alone. ``setuid`` as root changes the real, effective
and saved uids together, so nothing can be regained afterwards.
"""

from __future__ import annotations

import errno
import os
from typing import List, Optional, Sequence

from .errors import SystemFailure


def normalise_groups(gids: Sequence[int], primary: int) -> List[int]:
    """The list s6 hands to setgroups: *primary* first, then the others in order, no duplicate of it."""
    return [primary] + [g for g in gids if g != primary]


def apply_uidgid(uid: int = 0, gid: int = 0, groups: Optional[Sequence[int]] = None) -> None:
    """Change ids in s6's order; 0 means unchanged, None means "no group list was given".

    Raises :class:`SystemFailure` ("set supplementary group list", "setgid", "setuid").
    """
    if groups is not None:
        primary = gid if gid else os.getegid()
        try:
            os.setgroups(normalise_groups(groups, primary))
        except OSError as e:
            raise SystemFailure("set supplementary group list", e.errno or errno.EPERM) from None
        except (OverflowError, ValueError):
            raise SystemFailure("set supplementary group list", errno.EINVAL) from None
    if gid:
        try:
            os.setgid(gid)
        except OSError as e:
            raise SystemFailure("setgid", e.errno or errno.EPERM) from None
        except OverflowError:
            raise SystemFailure("setgid", errno.EINVAL) from None
    if uid:
        try:
            os.setuid(uid)
        except OSError as e:
            raise SystemFailure("setuid", e.errno or errno.EPERM) from None
        except OverflowError:
            raise SystemFailure("setuid", errno.EINVAL) from None
