"""The accept loop's open seams, exercised in a real process: an extra polled fd and an extra
signal (a daemon built on the loop), ``serve()`` ending with "exec this", a spawner of the
caller's, a peer identity of the caller's, and the private CPython socket API the hot path uses.
"""

from __future__ import annotations

import _socket
import json
import os
import socket
import subprocess
import textwrap

from s6ipc.serve import loop as server
from tests.support.processes import VENV_PYTHON, request, wait_for_ready


def test_the_private_socket_api_of_the_hot_path_exists() -> None:
    """If a CPython release drops ``socket._accept`` or ``_socket.socket``, this says so first."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        accept = server._accept_method(s)
        assert callable(accept)
    assert issubclass(socket.socket, _socket.socket)


SCRIPT = r"""
import json, os, signal, sys
from s6ipc.base.execution import Spawner
from s6ipc.base.messages import Reporter
from s6ipc.serve.peers import UnixPeers
from s6ipc.serve.loop import Server, ServerConfig

class Counting(Spawner):
    spawned = 0
    def spawn(self, fd, env):
        Counting.spawned += 1
        return super().spawn(fd, env)

class Tagged(UnixPeers):
    def identify(self, conn, address):
        peer = super().identify(conn, address)
        events.append("identified")
        return peer

events = []
r, w = os.pipe()
config = ServerConfig(["sh", "-c", 'echo "$PROTO $IPCCONNNUM"'], notify=True)
srv = Server(config, Reporter("t"), Reporter("t (child)"), identity=Tagged(),
             spawner=Counting(config.argv), on_ready=[lambda: events.append("ready")],
             on_exit=[lambda: events.append("exit")])
srv.watch(r, lambda mask: (events.append("watched"), os.read(r, 1)))
srv.on_signal(signal.SIGUSR1, lambda: srv.stop_for_exec(["next", "image"]))
try:
    srv.on_signal(signal.SIGTERM, lambda: None)
except ValueError:
    events.append("SIGTERM is the loop's own")
srv.start()
os.write(w, b"x")
ending = srv.serve()
os.write(2, (json.dumps([ending.code, ending.exec_argv, Counting.spawned, events]) + "\n").encode())
"""


def test_watch_on_signal_stop_for_exec_spawner_and_identity(sockdir: str) -> None:
    path = os.path.join(sockdir, "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    r, w = os.pipe()
    proc = subprocess.Popen([VENV_PYTHON, "-c", textwrap.dedent(SCRIPT)], stdin=listener.fileno(),
                            stdout=w, stderr=subprocess.PIPE)
    listener.close()
    os.close(w)
    try:
        wait_for_ready(r)
        assert request(path) == b"IPC 1\n"
        proc.send_signal(__import__("signal").SIGUSR1)
        _, err = proc.communicate(timeout=10)
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    code, argv, spawned, events = json.loads(err.decode().splitlines()[-1])
    assert (code, argv, spawned) == (0, ["next", "image"], 1)
    assert events[0] == "SIGTERM is the loop's own" and events[1] == "ready" and events[-1] == "exit"
    assert "watched" in events and "identified" in events
