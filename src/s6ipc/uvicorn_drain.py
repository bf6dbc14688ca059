"""Moved to :mod:`s6ipc.integrations.uvicorn_drain` (uvicorn behind ipcserverd);
this path stays for one release (0.2)."""

from .integrations.uvicorn_drain import *  # noqa: F401,F403
