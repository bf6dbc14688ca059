"""An RFC 1413 (ident) client as s6-networking's ``s6net_ident_client`` is.

Some facts about it this module reproduces:

* The query goes from the connection's local address (port 0: any) to the **remote address, port
  113**, over TCP in the same family; addresses of different families fail with EAFNOSUPPORT.
  It is ``<remote port> , <local port>\\r\\n``.
* One line is read (at most 1024 bytes); only the ``\\n`` is removed, so a ``\\r\\n`` reply
  leaves a trailing CR in the answer. End of file before a newline counts as the server's
  "unknown error" answer (s6 turns EPIPE into EIO, as the RFC says).
* Reply: ``ports : USERID : <os> : <id>`` gives the id (the text after the third colon, one space
  or tab skipped, at most 511 bytes, else ENAMETOOLONG); ``ports : ERROR : <code>`` is a refusal
  (INVALID-PORT, NO-USER, HIDDEN-USER, UNKNOWN-ERROR or an ``X`` token); anything else, or ports
  that are not the connection's, is EPROTO. Spaces and tabs around tokens are free.
* One deadline covers connect, write and read; reaching it is ETIMEDOUT.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time

from ..base.durations import poll_ms
from ..sockets.inet import family_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["PORT", "REPLY_SIZE", "ID_SIZE", "IdentRefused", "parse_reply", "query"]

PORT = 113
REPLY_SIZE = 1024
ID_SIZE = 512

_REFUSALS = (("INVALID-PORT", errno.EINVAL), ("NO-USER", errno.ESRCH),
             ("HIDDEN-USER", errno.EPERM), ("UNKNOWN-ERROR", errno.EIO))
_REFUSAL_TEXT = {errno.EINVAL: "invalid port", errno.ESRCH: "no such user",
                 errno.EPERM: "identification denied", errno.EIO: "unknown error",
                 errno.EEXIST: "X-error-token"}


class IdentRefused(Exception):
    """The ident server answered with an error (or closed without answering): *code* is s6's
    errno for it, :attr:`text` its ``s6net_ident_error_str``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code

    @property
    def text(self) -> str:
        return _REFUSAL_TEXT.get(self.code, "(invalid error code)")


def _skip(s: str, n: int) -> int:
    while n < len(s) and s[n] in " \t":
        n += 1
    return n


def _port(s: str, n: int) -> tuple[int, int]:
    value, start = 0, n
    while n < len(s) and "0" <= s[n] <= "9" and value * 10 + int(s[n]) <= 0xFFFF:
        value = value * 10 + int(s[n])
        n += 1
    if n == start:
        raise OSError(errno.EPROTO, os.strerror(errno.EPROTO))
    return value, n


def parse_reply(line: str, remote_port: int, local_port: int) -> str:
    """The id in an ident reply *line* (newline removed). Raises :class:`IdentRefused` or
    OSError (EPROTO, ENAMETOOLONG)."""
    proto = OSError(errno.EPROTO, os.strerror(errno.EPROTO))

    def expect(n: int, char: str) -> int:
        n = _skip(line, n)
        if n >= len(line) or line[n] != char:
            raise proto
        return _skip(line, n + 1)

    n = _skip(line, 0)
    got, n = _port(line, n)
    if got != remote_port:
        raise proto
    n = expect(n, ",")
    got, n = _port(line, n)
    if got != local_port:
        raise proto
    n = expect(n, ":")
    if n >= len(line):
        raise proto
    if line.startswith("ERROR", n):
        n = expect(n + 5, ":")
        if n >= len(line):
            raise proto
        for token, code in _REFUSALS:
            if line.startswith(token, n):
                raise IdentRefused(code)
        if line[n] == "X":
            raise IdentRefused(errno.EEXIST)
        raise proto
    if not line.startswith("USERID", n):
        raise proto
    n = expect(n + 6, ":")
    colon = line.find(":", n)
    if colon < 0:
        raise proto
    n = colon + 1
    if n < len(line) and line[n] in " \t":
        n += 1
    ident = line[n:]
    if len(os.fsencode(ident)) >= ID_SIZE:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    return ident


def _wait(sock: socket.socket, events: int, deadline: Optional[float]) -> None:
    timeout = poll_ms(None if deadline is None else deadline - time.monotonic())
    poller = select.poll()
    poller.register(sock, events)
    if not poller.poll(timeout):
        raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))


def query(remote_ip: bytes, remote_port: int, local_ip: bytes, local_port: int,
          deadline: Optional[float]) -> str:
    """Ask the ident server of *remote_ip* who holds the connection (remote_port, local_port).

    *deadline* is a ``time.monotonic()`` value (None: none). Returns the id. Raises
    :class:`IdentRefused` (the server said no) or OSError (ETIMEDOUT, EPROTO, ECONNREFUSED…).
    """
    if len(remote_ip) != len(local_ip):
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
    family = family_of(remote_ip)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        sock.bind((socket.inet_ntop(family, local_ip), 0))
        err = sock.connect_ex((socket.inet_ntop(family, remote_ip), PORT))
        if err == errno.EINPROGRESS:
            _wait(sock, select.POLLOUT, deadline)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        request = f"{remote_port} , {local_port}\r\n".encode()
        while request:
            _wait(sock, select.POLLOUT, deadline)
            request = request[sock.send(request):]
        data = b""
        while b"\n" not in data and len(data) < REPLY_SIZE:
            _wait(sock, select.POLLIN, deadline)
            chunk = sock.recv(REPLY_SIZE - len(data))
            if not chunk:
                raise IdentRefused(errno.EIO)
            data += chunk
    end = data.find(b"\n")
    line = data[:end] if end >= 0 else data[: REPLY_SIZE - 1]
    return parse_reply(os.fsdecode(line), remote_port, local_port)
