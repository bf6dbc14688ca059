"""Peer identities: what the server loop (:mod:`s6ipc.server`) needs to know about its clients.

One accept loop serves Unix and TCP clients; what differs is the *peer identity*:

* what is counted per peer for ``-C`` (a uid for IPC, an IP address for TCP) — the *key*;
* how the allow, deny and end log lines name the peer;
* which variables each child gets, in which order, and how they are filled;
* what fd 0 must be, and what the ``-1`` readiness line says (a newline for IPC, the local port
  for TCP) and whether it comes before or after the ``starting`` lines.

:class:`UnixPeerIdentity` is s6-ipcserverd's; :class:`s6ipc.tcppeer.TcpPeerIdentity` is
s6-tcpserver4d's and s6-tcpserver6d's.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
from typing import Dict, Hashable, Optional, Protocol, Tuple

from .sockets import address_text, check_listening_stream

#: ``(key, name, detail)``: see :meth:`PeerIdentity.identify`.
Peer = Tuple[Hashable, str, object]


class PeerLog(Protocol):
    """Where an identity reports a client it could not identify."""

    def warn(self, text: str) -> None: ...


class PeerIdentity(Protocol):
    """The peer-specific half of the server loop."""

    #: The address family of accepted connections (the listening socket's).
    family: int
    #: The per-connection variables, in the order s6 sets them (see ``child_environment``).
    variables: Tuple[str, ...]
    #: Variables of :attr:`variables` that are removed, not set.
    removed: Tuple[str, ...]
    #: Whether the ``-1`` line precedes the ``starting``/``status`` lines (s6-tcpserver6d) or not.
    ready_first: bool

    def check_listener(self, fd: int) -> None:
        """Check fd 0 at start-up; raise :class:`~s6ipc.errors.BadInput` / ``SystemFailure``."""

    def ready_line(self, fd: int) -> bytes:
        """What ``-1`` writes on fd 1."""

    def identify(self, conn: _socket.socket, address: object, log: PeerLog) -> Optional[Peer]:
        """``(key, name, detail)`` of a new connection's peer, or None (warned on *log*): drop it.

        *key* is what ``-C`` counts; *name* is how allow and deny lines name the peer; *detail*
        is whatever else :meth:`fill` needs.
        """

    def fill(self, env: Dict[str, str], peer: Peer, address: object, num: int) -> None:
        """Set the per-connection variables in *env*; *num* counts this connection too."""

    def count(self, num: int) -> str:
        """How the allow line shows *num* (``?`` when the peer is not identified)."""

    def end_name(self, key: Hashable) -> str:
        """How the end line names the peer of *key* (``uid 0``, ``ip ::1``)."""


class UnixPeerIdentity:
    """s6-ipcserverd's: the peer's euid (SO_PEERCRED), ``IPCREMOTEEUID/EGID``, ``IPCREMOTEPATH``.

    Without *lookup* (``-P``) nobody is identified: every client counts as the same peer, shown
    as ``?:?``, and ``IPCREMOTEEUID``/``IPCREMOTEEGID`` are removed from the children's environment.
    """

    family: int = socket.AF_UNIX
    ready_first = False

    def __init__(self, lookup: bool = True) -> None:
        self.lookup = lookup
        self.variables: Tuple[str, ...] = ("PROTO", "IPCREMOTEEUID", "IPCREMOTEEGID", "IPCCONNNUM",
                                           "IPCREMOTEPATH")
        self.removed: Tuple[str, ...] = () if lookup else ("IPCREMOTEEUID", "IPCREMOTEEGID")

    def check_listener(self, fd: int) -> None:
        check_listening_stream(fd)

    def ready_line(self, fd: int) -> bytes:
        return b"\n"

    def identify(self, conn: _socket.socket, address: object, log: PeerLog) -> Optional[Peer]:
        if not self.lookup:
            return 0, "?:?", 0
        try:
            raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        except OSError as e:
            log.warn(f"unable to getpeereid: {os.strerror(e.errno or errno.EIO)}")
            return None
        uid = int.from_bytes(raw[4:8], "little")
        gid = int.from_bytes(raw[8:12], "little")
        return uid, f"{uid}:{gid}", gid

    def fill(self, env: Dict[str, str], peer: Peer, address: object, num: int) -> None:
        env["PROTO"] = "IPC"
        if self.lookup:
            env["IPCREMOTEEUID"] = str(peer[0])
            env["IPCREMOTEEGID"] = str(peer[2])
            env["IPCCONNNUM"] = str(num)
        else:
            env["IPCCONNNUM"] = ""
        env["IPCREMOTEPATH"] = address_text(address) if address else ""

    def count(self, num: int) -> str:
        return str(num) if self.lookup else "?"

    def end_name(self, key: Hashable) -> str:
        return f"uid {key}" if self.lookup else "uid ?"
