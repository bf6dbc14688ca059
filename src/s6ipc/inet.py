"""Moved to :mod:`s6ipc.sockets.inet` (skalibs' address scanning and printing);
this path stays for one release (0.2)."""

from .sockets.inet import *  # noqa: F401,F403
