"""Who is at the other end of an accepted connection, as a super-server counts, logs and tells it.

The accept loop (:class:`s6ipc.serve.loop.Server`) is the same for every kind of socket; what differs is
the *peer identity*: what ``-C`` counts connections per (a uid for UCSPI-IPC, an address for TCP),
how the ``allow``/``deny``/``end`` log lines name the peer, and which per-connection variables a
child gets, in which order. :class:`UnixPeers` is s6-ipcserverd's identity; a TCP server is the
same loop given another :class:`PeerIdentity`.

Some facts about SO_PEERCRED (Linux) that :class:`UnixPeers` relies on:

* ``getsockopt(SO_PEERCRED)`` on an accepted AF_UNIX stream socket returns the ``struct ucred``
  (pid, euid, egid) the peer had when it called ``connect``, not its current ids.
* It cannot fail on a connected AF_UNIX socket short of the peer's socket being gone in a way
  the kernel reports; when it does fail, s6 logs ``unable to getpeereid`` and drops the
  connection, and so does the loop (:class:`PeerUnknown`).
* uid and gid are unsigned in the kernel; CPython's ``struct`` reads them as signed ints, so
  they are masked to 32 bits (uid 4294967295, "nobody" on some systems, stays positive).
"""

from __future__ import annotations

import _socket

from ..base.typeshim import Protocol
from ..sockets.unix import address_text, peer_credentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Hashable, Tuple

__all__ = ["PeerUnknown", "Peer", "PeerIdentity", "UnixPeer", "UnixPeers"]


class PeerUnknown(Exception):
    """The peer of a connection cannot be identified: the text of s6's warning (the connection
    is then closed)."""


class Peer(Protocol):
    """One connection's peer."""

    @property
    def key(self) -> Hashable:
        """What ``-C`` (the per-peer connection limit) counts by."""
        ...

    def fill(self, env: Dict[str, str], count: int, address: object) -> None:
        """Set the per-connection variables in *env* (their slots are already in place)."""
        ...

    def allow_line(self, pid: int, count: int, limit: int) -> str: ...

    def deny_line(self, count: int, limit: int) -> str: ...

    def end_name(self) -> str:
        """How the ``end pid P …`` line names the peer (``uid 0``, ``ip 127.0.0.1``)."""
        ...

    def to_state(self) -> Any:
        """The peer as JSON data, for the next image of an in-place upgrade
        (:meth:`PeerIdentity.peer_from_state` reads it back)."""
        ...

    def describe(self) -> Dict[str, Any]:
        """The peer's fields in the live view's child entry (``uid``/``gid``, ``ip``/``port``)."""
        ...


class PeerIdentity(Protocol):
    """A kind of peer: how to identify one, and the variables every child gets."""

    @property
    def family(self) -> int:
        """The socket family of the listener and its connections."""
        ...

    @property
    def variables(self) -> Tuple[str, ...]:
        """The per-connection variables, in the order the server merges them (s6's env_merge)."""
        ...

    @property
    def unset(self) -> Tuple[str, ...]:
        """Those of :attr:`variables` that are removed from the children's environment, not set."""
        ...

    def identify(self, conn: _socket.socket, address: object) -> Peer:
        """The peer of *conn*; raises :class:`PeerUnknown`."""
        ...

    @property
    def ready_first(self) -> bool:
        """Whether the ``-1`` line precedes the ``-v2`` ``starting``/``status`` lines (s6-tcpserver6d)."""
        ...

    def ready_line(self, fd: int) -> bytes:
        """What ``-1`` writes on fd 1 about listener *fd*: a newline (IPC), the port and a newline (TCP)."""
        ...

    @property
    def unit(self) -> str:
        """What a peer is counted as in the live view and ``STATUS=``: ``uid`` or ``ip``."""
        ...

    def peer_from_state(self, obj: Any) -> Peer:
        """A peer from what its :meth:`Peer.to_state` wrote. Raises ValueError/TypeError/KeyError."""
        ...


class UnixPeer:
    """A UCSPI-IPC peer: its euid and egid (both 0 and unprinted without credential lookup)."""

    __slots__ = ("uid", "gid", "key", "_lookup")

    def __init__(self, uid: int, gid: int, lookup: bool) -> None:
        self.uid = uid
        self.gid = gid
        self.key = uid
        self._lookup = lookup

    def fill(self, env: Dict[str, str], count: int, address: object) -> None:
        env["PROTO"] = "IPC"
        if self._lookup:
            env["IPCREMOTEEUID"] = str(self.uid)
            env["IPCREMOTEEGID"] = str(self.gid)
            env["IPCCONNNUM"] = str(count)
        else:
            env["IPCCONNNUM"] = ""
        env["IPCREMOTEPATH"] = address_text(address) if address else ""

    def _who(self) -> str:
        return f"{self.uid}:{self.gid}" if self._lookup else "?:?"

    def allow_line(self, pid: int, count: int, limit: int) -> str:
        if self._lookup:
            return f"allow {self.uid}:{self.gid} pid {pid} count {count}/{limit}"
        return f"allow ?:? pid {pid} count ?/{limit}"

    def deny_line(self, count: int, limit: int) -> str:
        return f"deny {self._who()} count {count}/{limit}: Success"

    def end_name(self) -> str:
        return f"uid {self.uid}" if self._lookup else "uid ?"

    def to_state(self) -> Any:
        return [self.uid, self.gid]

    def describe(self) -> Dict[str, Any]:
        if self._lookup:
            return {"uid": self.uid, "gid": self.gid}
        return {"uid": None, "gid": None}


class UnixPeers:
    """s6-ipcserverd's identity: SO_PEERCRED, ``IPC*`` variables; *lookup* False is ``-P``."""

    family: int = _socket.AF_UNIX
    #: s6-ipcserverd's order (docs/ipcserverd.md); ``-P`` removes the two credentials.
    variables: Tuple[str, ...] = ("PROTO", "IPCREMOTEEUID", "IPCREMOTEEGID", "IPCCONNNUM", "IPCREMOTEPATH")

    ready_first = False

    def __init__(self, lookup: bool = True) -> None:
        self.lookup = lookup
        self.unset: Tuple[str, ...] = () if lookup else ("IPCREMOTEEUID", "IPCREMOTEEGID")
        self._anonymous = UnixPeer(0, 0, False)

    def ready_line(self, fd: int) -> bytes:
        return b"\n"

    def identify(self, conn: _socket.socket, address: object) -> UnixPeer:
        if not self.lookup:
            return self._anonymous
        try:
            _, uid, gid = peer_credentials(conn)
        except OSError as e:
            raise PeerUnknown(f"unable to getpeereid: {e.strerror or 'Input/output error'}") from None
        return UnixPeer(uid, gid, True)

    unit = "uid"

    def peer_from_state(self, obj: Any) -> UnixPeer:
        uid, gid = obj
        if not self.lookup:
            return self._anonymous
        return UnixPeer(_id(uid), _id(gid), True)


def _id(value: Any) -> int:
    """A uid or gid read back from a state: an integer 0..2**32-1 (ValueError, TypeError)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not a uid or gid")
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{value!r} is not a uid or gid")
    return int(value)
