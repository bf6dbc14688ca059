"""Where a listening socket comes from and where it goes.

``unix`` (bind, connect, the one listener predicate, SO_PEERCRED), ``tcp`` (the TCP binder),
``connect`` (TCP connections out), ``inet`` (skalibs' address text), ``listenfds`` (the systemd
LISTEN_* protocol: taking sockets), ``give`` (giving sockets the LISTEN_FDS way).

Until 0.2, ``s6ipc.sockets.NAME`` still answers the names of :mod:`s6ipc.sockets.unix` (the module
``s6ipc.sockets`` was before the library was grouped), without importing anything until asked.
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

    return getattr(importlib.import_module(f"{__name__}.unix"), name)
