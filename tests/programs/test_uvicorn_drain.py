"""s6ipc-uvicorn: a request accepted just before the stop is served, where plain uvicorn resets it.

The race of uvicorn#2757 made deterministic, in one event loop: a client connects, the server
accepts it (the connection is registered), the client's request is written and, before the loop has
read it, the server's shutdown starts. Plain ``uvicorn.Server`` closes that connection with the request
unread (the client gets ECONNRESET); :class:`s6ipc.uvicorn_drain.DrainingServer` reads and serves it.
The same under s6-supervise with restarts under load is tests/s6/test_daemons.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable, Dict, Tuple, Type

import pytest

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install '.[test]')")

from s6ipc.integrations.uvicorn_drain import DrainingServer  # noqa: E402
from tests.support.netpeers import read_to_eof  # noqa: E402
from tests.support.processes import wait_listening  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
Scope = Dict[str, Any]


Send = Callable[[Any], Awaitable[None]]


async def hello(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    body = b"hello\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def listener_at(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    return listener


def in_process(server_class: Type[uvicorn.Server], listener: socket.socket, **kw: float) -> uvicorn.Server:
    """*server_class* on *listener*, ready for ``startup()`` in the caller's event loop."""
    config = uvicorn.Config(hello, fd=listener.fileno(), lifespan="off", log_level="critical")
    config.load()
    server = server_class(config, **kw)
    server.lifespan = config.lifespan_class(config)  # what Server.serve() sets before startup()
    return server


async def accepted(server: uvicorn.Server, client: socket.socket, path: str) -> None:
    """Connect *client* and run the loop until the server has registered the connection."""
    client.connect(path)
    deadline = time.monotonic() + 5
    while not server.server_state.connections:  # accepted and registered, nothing read yet
        assert time.monotonic() < deadline, "uvicorn did not accept"
        await asyncio.sleep(0.001)


def request_sent_at_the_stop(server_class: Type[uvicorn.Server], sockdir: str) -> bytes:
    """The reply (or ECONNRESET) of a request written after its accept, before the loop read it."""
    path = os.path.join(sockdir, "app.sock")
    listener = listener_at(path)
    server = in_process(server_class, listener)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    async def scenario() -> None:
        await server.startup()
        await accepted(server, client, path)
        client.sendall(REQUEST)  # no yield to the loop between this and the shutdown
        await server.shutdown()

    try:
        asyncio.run(scenario())
        return read_to_eof(client, timeout=5)
    finally:
        client.close()
        listener.close()


def test_plain_uvicorn_resets_a_request_accepted_before_its_stop(sockdir: str) -> None:
    """The control: the upstream race, so the test below is known to test something."""
    with pytest.raises(ConnectionResetError):
        request_sent_at_the_stop(uvicorn.Server, sockdir)


def test_draining_server_serves_a_request_accepted_before_its_stop(sockdir: str) -> None:
    reply = request_sent_at_the_stop(DrainingServer, sockdir)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nhello\n"), reply


def test_draining_server_closes_an_idle_connection_after_the_grace(sockdir: str) -> None:
    """A connection that sends nothing is not a request in flight: closed once the grace is over."""
    path = os.path.join(sockdir, "idle.sock")
    listener = listener_at(path)
    server = in_process(DrainingServer, listener, grace=0.3)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    took: Dict[str, float] = {}

    async def scenario() -> None:
        await server.startup()
        await accepted(server, client, path)
        start = time.monotonic()
        await server.shutdown()
        took["shutdown"] = time.monotonic() - start

    try:
        asyncio.run(scenario())
        assert read_to_eof(client, timeout=5) == b""
    finally:
        client.close()
        listener.close()
    # the grace (0.3 s) then uvicorn's own 0.1 s pause; far from the 10 s of a hang
    assert 0.3 <= took["shutdown"] < 3, took


def serve_once_and_stop(script: str, sockdir: str) -> Tuple[bytes, int, bytes]:
    """Run *script* ``--fd N app:app``, make one request, SIGTERM it: (reply, status, stderr)."""
    path = os.path.join(sockdir, os.path.basename(script) + ".sock")
    with open(os.path.join(sockdir, "app.py"), "w") as f:
        f.write("async def app(scope, receive, send):\n"
                "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
                "    await send({'type': 'http.response.body', 'body': b'from the app'})\n")
    listener = listener_at(path)
    proc = subprocess.Popen([script, "--fd", str(listener.fileno()), "--app-dir", sockdir,
                             "--lifespan", "off", "--log-level", "debug", "app:app"],
                            pass_fds=[listener.fileno()], stderr=subprocess.PIPE)
    try:
        wait_listening(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(path)  # connects at once (the backlog), answered once uvicorn runs
            c.sendall(REQUEST)
            reply = read_to_eof(c)
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        return reply, proc.returncode, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


def test_the_command_line_is_uvicorns(sockdir: str) -> None:
    """``s6ipc-uvicorn --fd N app:app`` serves and stops as ``uvicorn --fd N app:app`` does."""
    bindir = os.path.dirname(sys.executable)
    ours = serve_once_and_stop(os.path.join(bindir, "s6ipc-uvicorn"), sockdir)
    theirs = serve_once_and_stop(os.path.join(bindir, "uvicorn"), sockdir)
    for reply, _, err in (ours, theirs):
        assert reply.startswith(b"HTTP/1.1 200 ") and b"from the app" in reply, reply
        assert b"Shutting down" in err and b"Traceback" not in err, err
    assert ours[1] == theirs[1], (ours, theirs)  # uvicorn >= 0.29 re-raises the SIGTERM it caught
    assert b"Drained for " in ours[2] and b"Drained for " not in theirs[2], ours[2]  # ours is DrainingServer
