"""s6ipc.integrations.aioserver: an asyncio server on a socket it was given keeps the socket's path,
and its stop serves the connections it accepted while leaving the backlog to the next instance."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import List

import pytest

from s6ipc.integrations.aioserver import close_unix_server, start_unix_server


def _listener(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    s.setblocking(False)
    return s


def test_the_path_outlives_the_server(sockdir: str) -> None:
    path = os.path.join(sockdir, "given")
    sock = _listener(path)
    inode = os.stat(path).st_ino

    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"you said " + await reader.readline())
            await writer.drain()
            writer.close()

        server = await start_unix_server(echo, sock)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"hi\n")
        answer = await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()
        return answer

    assert asyncio.run(main()) == b"you said hi\n"
    assert os.stat(path).st_ino == inode          # not unlinked, not replaced


@pytest.mark.timeout(20)
def test_close_serves_what_was_accepted_and_leaves_the_backlog(sockdir: str) -> None:
    path = os.path.join(sockdir, "drain")
    sock = _listener(path)
    keeper = socket.socket(fileno=os.dup(sock.fileno()))   # the next instance's copy (a holder's)

    async def main() -> List[bytes]:
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            started.set()
            await release.wait()              # still busy when the stop begins
            writer.write(b"served\n")
            await writer.drain()
            writer.close()

        async def pinger() -> None:
            while True:
                await asyncio.sleep(0.01)

        server = await start_unix_server(slow, sock)
        background = asyncio.ensure_future(pinger())
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"request\n")
        await started.wait()
        seen: List[bool] = []
        late = socket.socket(socket.AF_UNIX)

        async def meanwhile() -> None:
            await asyncio.sleep(0.05)
            seen.append(True)                 # the stop is still waiting for the accepted connection
            late.connect(path)                # not accepted by this server any more: the backlog
            release.set()

        helper = asyncio.ensure_future(meanwhile())
        # awaited from this very task (not wrapped in wait_for, which makes it another task):
        # close_unix_server waits for every other task of the loop but *background*
        await close_unix_server(server, background=[background])
        assert helper.done() and seen == [True]
        answer = await reader.read()
        writer.close()
        background.cancel()
        late.close()
        return [answer]

    assert asyncio.run(main()) == [b"served\n"]
    keeper.settimeout(5)
    conn, _ = keeper.accept()                 # the late client waited for the next instance
    conn.close()
    keeper.close()
    assert os.path.exists(path)
