"""A daemon speaking sd_notify through a real client library, for the sdnotify-bridge tests.

Usage: notify_daemon.py CLIENT SOCKET DELAY
CLIENT: ``sdnotify`` (bb4242/sdnotify), ``python-systemd`` (systemd.daemon.notify), ``never`` (no
READY=1), ``child`` (a forked child sends READY=1, not the main process), ``mainpid`` (the main
process names the child with MAINPID= first). The daemon sleeps DELAY seconds (start-up work),
binds and listens on SOCKET, says READY=1, then serves "CLIENT PID\\n" to each connection and sends
``STATUS=`` every 50 ms — with python-systemd a send to a vanished socket would raise and kill it.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from typing import Callable

client, path, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])

send: Callable[[str], object]
if client == "python-systemd":
    from systemd import daemon

    def send(message: str) -> object:
        return daemon.notify(message)
else:
    import sdnotify

    notifier = sdnotify.SystemdNotifier(debug=True)

    def send(message: str) -> object:
        notifier.notify(message)
        return None

time.sleep(delay)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if os.path.exists(path):
    os.unlink(path)
listener.bind(path)
listener.listen(64)
if client in ("sdnotify", "python-systemd"):
    send("READY=1\nSTATUS=serving")
elif client in ("child", "mainpid"):
    child = os.fork()
    if child == 0:
        time.sleep(0.2)
        send("READY=1")
        os._exit(0)
    if client == "mainpid":
        send(f"MAINPID={child}")
    os.waitpid(child, 0)
ticks = 0
while True:
    if select.select([listener], [], [], 0.05)[0]:
        conn, _ = listener.accept()
        conn.sendall(f"{client} {os.getpid()}\n".encode())
        conn.close()
    ticks += 1
    send(f"STATUS=tick {ticks}")
