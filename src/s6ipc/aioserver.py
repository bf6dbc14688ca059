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

:func:`start_unix_server` is ``asyncio.start_unix_server`` with the path always kept.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any, Awaitable, Callable, Union

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Union[Awaitable[None], None]]


async def start_unix_server(client_connected_cb: ClientConnected, sock: socket.socket,
                            **kwargs: Any) -> asyncio.AbstractServer:
    """``asyncio.start_unix_server(client_connected_cb, sock=sock, **kwargs)``, never unlinking the path.

    On Python 3.13 and later ``cleanup_socket=False`` is passed (it cannot be overridden: use
    asyncio directly for a socket you bound yourself). Raises what ``asyncio.start_unix_server``
    raises.
    """
    if sys.version_info >= (3, 13):
        kwargs["cleanup_socket"] = False
    return await asyncio.start_unix_server(client_connected_cb, sock=sock, **kwargs)
