"""asyncio servers on a listening socket the process was given, which must outlive the server.

Some facts about asyncio this module relies on:

* ``asyncio.start_unix_server(cb, sock=sock)`` serves an already listening socket. Since Python
  3.13 it also takes ``cleanup_socket`` (default True): when the server closes, asyncio unlinks
  the socket's path if the inode there is still the one it saw at start. For a socket the daemon
  bound itself, that tidies up; for a socket it was *given* — by s6-ipcserver-socketbinder, by
  systemd (a ``.socket`` unit), by an fd holder — the path belongs to whoever keeps the socket,
  and unlinking it makes every later client fail with ENOENT while the listener itself lives on
  (the next instance of the daemon serves a socket nobody can reach).
* Python 3.9 to 3.12 never unlink; they refuse the ``cleanup_socket`` argument (TypeError).

* ``Server.close()`` stops accepting *and* drops connections the loop has accepted from the kernel
  but not yet handed to a protocol: each accepted connection gets its transport in a task of its
  own (``_accept_connection2``), which fails once the server is closed (``Server._attach`` asserts
  that it still has sockets), and the connection is closed unanswered. Under load some are always
  in flight, so a plain ``close()`` at a restart cuts clients that were already accepted, while
  those still in the kernel's backlog would have waited for the next instance.
* ``loop.remove_reader(fd)`` on the listening socket stops further accepts without that: the
  connections already accepted get their transports and handlers, which can then be awaited.

:func:`start_unix_server` is ``asyncio.start_unix_server`` with the path always kept;
:func:`close_unix_server` stops a server without losing a client it accepted.
"""

from __future__ import annotations

import asyncio
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Collection, Union

if TYPE_CHECKING:
    ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Union[Awaitable[None], None]]

__all__ = ["start_unix_server", "close_unix_server"]



async def start_unix_server(client_connected_cb: ClientConnected, sock: socket.socket,
                            **kwargs: Any) -> asyncio.Server:
    """``asyncio.start_unix_server(client_connected_cb, sock=sock, **kwargs)``, never unlinking the path.

    On Python 3.13 and later ``cleanup_socket=False`` is passed (it cannot be overridden: use
    asyncio directly for a socket you bound yourself). Raises what ``asyncio.start_unix_server``
    raises.
    """
    if sys.version_info >= (3, 13):
        kwargs["cleanup_socket"] = False
    return await asyncio.start_unix_server(client_connected_cb, sock=sock, **kwargs)


async def close_unix_server(server: asyncio.Server, background: Collection[asyncio.Task[Any]] = ()
                            ) -> None:
    """Stop accepting, let every connection already accepted be served, then close *server*.

    Clients still queued in the socket's backlog are left there (for the next instance, when the
    socket is held by systemd, an fd holder or a parent). "Served" means: every other task of the
    running loop has finished, except those in *background* (a watchdog pinger, say), which this
    waits for forever otherwise. The socket's path is not touched.
    """
    loop = asyncio.get_running_loop()
    for sock in server.sockets or ():
        loop.remove_reader(sock.fileno())
    current = asyncio.current_task()
    while True:
        rest = asyncio.all_tasks() - {current, *background}
        if not rest:
            break
        await asyncio.wait(rest)
    server.close()
    await server.wait_closed()
