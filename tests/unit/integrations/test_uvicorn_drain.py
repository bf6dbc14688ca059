"""s6ipc.integrations.uvicorn_drain: DrainingServer's stop reads the requests already accepted before
uvicorn's own shutdown, on a real uvicorn over a loopback socket."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable, Dict, Tuple

import pytest

uvicorn = pytest.importorskip("uvicorn")   # installed in the test venv (the test extra)

from s6ipc.integrations.uvicorn_drain import GRACE, POLL, DrainingServer  # noqa: E402


async def app(scope: Dict[str, Any], receive: Callable[[], Awaitable[Any]],
              send: Callable[[Dict[str, Any]], Awaitable[None]]) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _listener() -> Tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, s.getsockname()[1]


async def _started(grace: float) -> Tuple[DrainingServer, asyncio.Task[None], int]:
    sock, port = _listener()
    config = uvicorn.Config(app, log_level="critical", lifespan="off", http="h11")
    server = DrainingServer(config, grace=grace)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    return server, task, port


async def _until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.002)


def test_the_defaults() -> None:
    assert (GRACE, POLL) == (0.1, 0.002)
    assert DrainingServer(uvicorn.Config(app)).grace == GRACE


def test_an_idle_connection_holds_the_drain_for_the_grace_only() -> None:
    async def main() -> Tuple[int, float, int]:
        server, task, port = await _started(grace=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: len(server.server_state.connections) == 1)
        unread = server.unread()
        start = time.monotonic()
        await server.drain()
        waited = time.monotonic() - start
        still = server.unread()
        server.should_exit = True
        await task
        writer.close()
        return unread, waited, still

    unread, waited, still = asyncio.run(main())
    assert unread == 1 and still == 1
    assert 0.18 <= waited < 2


def test_a_request_sent_before_the_stop_is_served() -> None:
    async def main() -> Tuple[bytes, int]:
        server, task, port = await _started(grace=2.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: len(server.server_state.connections) == 1)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        server.should_exit = True             # the stop: listeners closed, then the drain
        answer = await asyncio.wait_for(reader.read(), 5)
        await task
        writer.close()
        return answer, server.unread()

    answer, unread = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
    assert unread == 0


def test_a_forced_exit_ends_the_drain_at_once() -> None:
    async def main() -> float:
        server, task, port = await _started(grace=5.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: len(server.server_state.connections) == 1)
        server.force_exit = True
        start = time.monotonic()
        await server.drain()
        waited = time.monotonic() - start
        server.should_exit = True
        await task
        writer.close()
        return waited

    assert asyncio.run(main()) < 1


def test_the_command_line_is_uvicorns_with_this_server() -> None:
    code = ("import importlib, json, sys\nfrom s6ipc.integrations import uvicorn_drain as d\n"
            "sys.argv = ['s6ipc-uvicorn', '--version']\n"
            "try:\n    d.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(json.dumps([code, importlib.import_module('uvicorn.main').Server is d.DrainingServer]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().split("\n")
    assert lines[0].startswith("Running uvicorn ")
    assert json.loads(lines[-1]) == [0, True]
