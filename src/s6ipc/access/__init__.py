"""Who may connect: the rules (``rules``, ``cdb``), the lookups they need (``dns``, ``ident``), and
the access programs as a library (``ipc`` for ipcserver-access, ``tcp`` for tcpserver-access).

Until 0.2, ``s6ipc.access.NAME`` still answers the names of :mod:`s6ipc.access.ipc` (the module
``s6ipc.access`` was before the library was grouped), without importing anything until asked.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    # importlib, not ``from . import``: that asks this very function for the submodule first
    import importlib  # only when a lazy name is asked for: not on the start path

    return getattr(importlib.import_module(f"{__name__}.ipc"), name)
