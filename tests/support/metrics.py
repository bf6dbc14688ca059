"""A named service for the metrics tests: ``s6ipc ipcserver`` answering ``hi``, ``S6IPC_NAME`` set,
already asked by a few clients."""

from __future__ import annotations

import os
import subprocess

from .processes import S6IPC, request
from .restart_load import start_ready


def named_service(sockdir: str, name: str, clients: int) -> subprocess.Popen[bytes]:
    """The ipcserver (ready), after *clients* clients each got ``hi``; the caller stops it."""
    path = os.path.join(sockdir, "app.sock")
    app = start_ready([S6IPC, "ipcserver", "-1", path, "echo", "hi"], dict(os.environ, S6IPC_NAME=name),
                      os.path.join(sockdir, "app.log"))
    try:
        assert [request(path) for _ in range(clients)] == [b"hi\n"] * clients
    except BaseException:
        app.kill()
        app.wait()
        raise
    return app
