"""Names answered by another module, imported only when first asked (PEP 562's module ``__getattr__``).

How a package keeps the names of a module it replaced (``s6ipc.sockets.NAME`` is
:mod:`s6ipc.sockets.unix`'s) without importing that module, or anything, at start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["forward_to"]


def forward_to(module: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that answers every public name from *module* (absolute)."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):  # dunders: the import system asks, and must hear "no"
            raise AttributeError(name)
        # importlib, not ``from . import``: that would ask this very function for the submodule;
        # imported only when a lazy name is asked for, not on the start path
        import importlib

        return getattr(importlib.import_module(module), name)

    return __getattr__
