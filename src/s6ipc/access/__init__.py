"""Who may connect: the rules (``rules``, ``cdb``), the lookups they need (``dns``, ``ident``), and
the access programs as a library (``ipc`` for ipcserver-access, ``tcp`` for tcpserver-access, and
``fastpath`` for what they share: the outcome record, the rules source, and the daemons' in-process
policy, which decides from the daemon's peer instead of the environment).

Until 0.2, ``s6ipc.access.NAME`` still answers the names of :mod:`s6ipc.access.ipc` (the module
``s6ipc.access`` was before the library was grouped), without importing anything until asked.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    # importlib, not ``from . import``: that asks this very function for the submodule first
    return getattr(importlib.import_module(f"{__name__}.ipc"), name)
