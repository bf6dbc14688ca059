"""Moved to :mod:`s6ipc.sockets.listenfds` (the systemd LISTEN_* protocol, receiving side);
this path stays for one release (0.2)."""

from .sockets.listenfds import *  # noqa: F401,F403
