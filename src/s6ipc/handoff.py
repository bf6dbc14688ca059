"""Moved to :mod:`s6ipc.sockets.give` (giving sockets to LISTEN_FDS daemons);
this path stays for one release (0.2)."""

from .sockets.give import *  # noqa: F401,F403
