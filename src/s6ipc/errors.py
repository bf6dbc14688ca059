"""Moved to :mod:`s6ipc.base.errors` (the typed errors and their exit codes);
this path stays for one release (0.2)."""

from .base.errors import *  # noqa: F401,F403
