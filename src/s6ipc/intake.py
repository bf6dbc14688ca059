"""Moved to :mod:`s6ipc.serve.intake` (where a listening socket comes from);
this path stays for one release (0.2)."""

from .serve.intake import *  # noqa: F401,F403
