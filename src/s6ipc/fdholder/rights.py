"""What a client of the fd holder may do: the rights an allowing access rule gives.

Some facts about s6-fdholderd's rights (2.11.3.2) that this module reproduces:

* **They come from the allowing rule's environment only** (the ``env/`` of a rules directory, the
  ``NAME=value`` records of a cdb), not from the daemon's own environment.
* ``S6_FDHOLDER_RETRIEVE_REGEX`` and ``S6_FDHOLDER_STORE_REGEX`` are POSIX EREs (``regcomp`` with
  ``REG_EXTENDED|REG_NOSUB``) searched in the id: the first definition wins, an empty value means
  "everything", an absent one "nothing"; store rights also govern delete and retrieve-with-delete.
* ``S6_FDHOLDER_LIST``, ``S6_FDHOLDER_GETDUMP`` and ``S6_FDHOLDER_SETDUMP`` grant by mere presence
  (whatever the value); an unset (``NAME`` without ``=``) grants nothing.
* A regex that does not compile makes s6 refuse the client; :class:`RightsError` carries what the
  daemon's log line names (the variable, its value, glibc's message).
"""

from __future__ import annotations

import os

from ..base.typeshim import dataclass
from .ere import Ere, EreError, compile_ere

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and dataclasses stay off fdholderd's start path (names for mypy only)
    from typing import Dict, Sequence

__all__ = ["RETRIEVE_VAR", "STORE_VAR", "Rights", "RightsError", "rights_from_modifs"]

RETRIEVE_VAR = "S6_FDHOLDER_RETRIEVE_REGEX"
STORE_VAR = "S6_FDHOLDER_STORE_REGEX"


class RightsError(Exception):
    """A regex variable does not compile: (variable, value, glibc's message)."""

    def __init__(self, variable: str, value: str, message: str) -> None:
        super().__init__(variable, value, message)
        self.variable = variable
        self.value = value
        self.message = message


@dataclass(eq=False)
class Rights:
    """What one client may do: ids it may retrieve, ids it may store (and delete), and the three
    operations granted by presence. Made once per client, never changed."""

    retrieve: Ere
    store: Ere
    list: bool = False
    getdump: bool = False
    setdump: bool = False


def rights_from_modifs(modifs: Sequence[str]) -> Rights:
    """The rights an allowing rule's environment modifications (``NAME=value``/``NAME``) give.

    Raises :class:`RightsError` for the first regex definition that does not compile.
    """
    found: Dict[str, Ere] = {}
    flags = set()
    for modif in modifs:
        name, eq, value = modif.partition("=")
        if not eq:
            continue
        if name in ("S6_FDHOLDER_LIST", "S6_FDHOLDER_GETDUMP", "S6_FDHOLDER_SETDUMP"):
            flags.add(name)
        elif name in (RETRIEVE_VAR, STORE_VAR) and name not in found:
            pattern = os.fsencode(value) or b".*"
            try:
                found[name] = compile_ere(pattern)
            except EreError as e:
                raise RightsError(name, value, str(e)) from None
    nothing = compile_ere(b".^")
    return Rights(found.get(RETRIEVE_VAR, nothing), found.get(STORE_VAR, nothing),
                  "S6_FDHOLDER_LIST" in flags, "S6_FDHOLDER_GETDUMP" in flags,
                  "S6_FDHOLDER_SETDUMP" in flags)
