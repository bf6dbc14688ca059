"""Moved to :mod:`s6ipc.daemon.readiness` (readiness: the -1 newline, sd_notify, the relay);
this path stays for one release (0.2)."""

from .daemon.readiness import *  # noqa: F401,F403
