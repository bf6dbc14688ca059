"""Moved to :mod:`s6ipc.access.tcp` (tcpserver-access as a library);
this path stays for one release (0.2)."""

from .access.tcp import *  # noqa: F401,F403
