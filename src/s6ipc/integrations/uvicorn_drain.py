"""uvicorn with a stop that serves the requests it has already accepted: ``s6ipc-uvicorn``.

Some facts about uvicorn's stop that this module relies on (uvicorn 0.20 to 0.54, read in its
``server.py`` and ``protocols/http/{h11,httptools}_impl.py``):

- On SIGTERM or SIGINT, ``Server.shutdown()`` closes its listening servers and then, in the same
  event-loop iteration, calls ``shutdown()`` on every open connection. A connection whose protocol
  has no request cycle yet (``protocol.cycle is None``) is closed there and then; one with a request
  in progress gets ``keep_alive = False`` and is served to the end.
- A connection accepted a moment before the signal, whose request bytes are already in the kernel
  but not yet read by the loop, is therefore closed with unread data, and Linux answers a close with
  unread data by a reset: the client gets ECONNRESET (or EPIPE) for a request it sent while the
  server was still accepting. With the listening socket held by someone else (our fd holder,
  systemd), every client that connects after the listeners are closed waits in the kernel's backlog
  for the next generation: that instant is the only place requests are lost across a restart. It is
  upstream's https://github.com/Kludex/uvicorn/issues/2757 (discussion 2315), unfixed in 0.54.
- ``asyncio.Server.close()`` is idempotent, so closing the listeners early and letting uvicorn close
  them again is harmless; the connections stay in ``server_state.connections`` until they are lost.

:class:`DrainingServer` closes the listeners first, then runs the loop for up to *grace* seconds,
until every connection accepted so far has its request read (or the grace is over), and only then
hands over to uvicorn's own shutdown, which now sees those requests in progress and serves them.
Connections still idle after the grace are closed as uvicorn always closes them: an idle
connection at stop is not a request in flight.

``s6ipc-uvicorn`` is uvicorn's own command line, unchanged, with this server in place of uvicorn's.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket

import uvicorn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional

__all__ = ["GRACE", "POLL", "DrainingServer", "main"]

GRACE = 0.1
"""Seconds a connection accepted before the stop has to deliver its request (uvicorn's own pause)."""
POLL = 0.002
logger = logging.getLogger("uvicorn.error")  # uvicorn's own logger: its --log-level applies


class DrainingServer(uvicorn.Server):
    """A :class:`uvicorn.Server` whose shutdown reads the requests already accepted before closing.

    *grace* bounds the wait (seconds); a second SIGINT/SIGTERM (``force_exit``) ends it at once.
    """

    def __init__(self, config: uvicorn.Config, grace: float = GRACE) -> None:
        super().__init__(config)
        self.grace = grace

    async def shutdown(self, sockets: Optional[List[socket.socket]] = None) -> None:
        for server in self.servers:
            server.close()  # no new connection from here on: they wait in the backlog
        await self.drain()
        await super().shutdown(sockets)

    async def drain(self) -> None:
        """Run the loop until no accepted connection is waiting for its request to be read."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not self.force_exit and loop.time() < start + self.grace and self.unread():
            await asyncio.sleep(POLL)
        logger.debug("Drained for %.3f s: %d connection(s) still without a request",
                     loop.time() - start, self.unread())

    def unread(self) -> int:
        """How many open connections have no request read yet."""
        return sum(1 for c in self.server_state.connections if getattr(c, "cycle", None) is None)


def main() -> None:
    """``s6ipc-uvicorn ARGS``: ``uvicorn ARGS`` with :class:`DrainingServer`."""
    # The module, not the attribute: uvicorn/__init__.py rebinds ``uvicorn.main`` to the command.
    command_line: Any = importlib.import_module("uvicorn.main")
    command_line.Server = DrainingServer  # run() builds its server from this name
    command_line.main()


if __name__ == "__main__":
    main()
