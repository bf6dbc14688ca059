"""Dumps in the environment: what fdholder-getdump exports and fdholder-setdump reads.

Some facts about s6's dump variables (2.11.3.2) that this module reproduces:

* ``S6_FD#`` is the count, then for each i: ``S6_FD_i`` (the descriptor number),
  ``S6_FDID_i`` (the raw id) and ``S6_FDLIMIT_i`` (``@`` + 24 hex digits of the TAIN).
* getdump sets ``S6_FDLIMIT_i`` only for a limit earlier than *now + 2**60 s*; for a longer one
  it *unsets* the variable (even if it was inherited). The modifications are applied in that
  order with skalibs' ``env_merge``.
* setdump checks ``S6_FD#`` before connecting (100 ``S6_FD# not set`` / ``invalid $S6_FD#``) and
  every entry before sending anything: ``S6_FD_i`` a decimal uint, ``S6_FDID_i`` 1..255 bytes,
  ``S6_FDLIMIT_i`` absent (no limit) or parsable. Numbers are whole-string decimal.
* A POSIX shell drops ``S6_FD#`` from its children's environment (not a valid name).
"""

from __future__ import annotations

import os

from ..base.errors import BadInput
from ..base.options import UsageError, parse_uint
from . import protocol, tai
from .client import HeldDescriptor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Sequence

__all__ = ["dump_count", "descriptors_from_env", "dump_modifs"]


def _uint(text: str) -> int:
    try:
        return parse_uint(text)
    except UsageError:
        raise ValueError(text) from None


def _get(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None:
        raise BadInput(f"{name} not set")
    return value


def dump_count(env: Mapping[str, str]) -> int:
    """``S6_FD#``. Raises :class:`BadInput` (exit 100)."""
    try:
        return _uint(_get(env, "S6_FD#"))
    except ValueError:
        raise BadInput("invalid $S6_FD#") from None


def descriptors_from_env(env: Mapping[str, str], count: int) -> List[HeldDescriptor]:
    """The *count* entries described in *env*. Raises :class:`BadInput` (exit 100)."""
    base = tai.now()
    result = []
    for i in range(count):
        try:
            fd = _uint(_get(env, f"S6_FD_{i}"))
        except ValueError:
            raise BadInput(f"invalid $S6_FD_{i}") from None
        ident = os.fsencode(_get(env, f"S6_FDID_{i}"))
        if not ident or len(ident) > protocol.ID_SIZE:
            raise BadInput(f"invalid $S6_FDID_{i}")
        text = env.get(f"S6_FDLIMIT_{i}")
        if text is None:
            limit = tai.infinite_from(base)
        else:
            parsed = tai.parse_text(text)
            if parsed is None:
                raise BadInput(f"invalid $S6_FDLIMIT_{i}")
            limit = parsed
        result.append(HeldDescriptor(fd, ident, limit))
    return result


def dump_modifs(dump: Sequence[HeldDescriptor], now: tai.Tain) -> List[str]:
    """The environment modifications (``NAME=value`` / ``NAME``) getdump applies, in order."""
    modifs = [f"S6_FD#={len(dump)}"]
    for i, held in enumerate(dump):
        modifs += [f"S6_FD_{i}={held.fd}", f"S6_FDID_{i}={os.fsdecode(held.id)}"]
        modifs.append(f"S6_FDLIMIT_{i}={held.limit.text()}" if tai.is_finite(held.limit, now)
                      else f"S6_FDLIMIT_{i}")
    return modifs
