"""The spawning servers' part of their life (ipcserverd, tcpserver4d/6d/tcpserverd): what a
:class:`~s6ipc.serve.loop.Server` hands its next image, shows in its live view and says in
``STATUS=``. The life itself — lineage, SIGUSR2, the exec, the common fields of the live view — is
:mod:`s6ipc.daemon.lifecycle`'s; this is the one place where the servers' document and ``STATUS=``
line are built (a new metric is one edit, in :meth:`ServerLife.describe`).

Some facts about the processes involved that this module relies on:

* **The children stay ours across the exec**: same parent pid, so ``waitpid`` in the new image
  reaps them and their SIGCHLD (blocked across the exec, hence pending) reaches the new image's
  self-pipe. What the new image must be told is only what the old one knew about them: the peer
  each serves (its identity: uid and gid for IPC, address and port for TCP), which the per-peer
  counts (``-C``, ``IPCCONNNUM``/``TCPCONNNUM``) and the ``end pid …`` lines come from.
* **A child's start time is the kernel's** (:func:`s6ipc.daemon.lifecycle.process_ages`): read
  when the live view is asked for, nothing is kept per connection.
"""

from __future__ import annotations

import errno
import os
import stat

from ..base.errors import SystemFailure
from ..base.typeshim import NamedTuple
from ..daemon.counters import read_counts
from ..daemon.lifecycle import our_children, process_ages
from .loop import EXIT_OUTCOMES, REFUSAL_REASONS, Server
from .peers import Peer, PeerIdentity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

    from .admission import Admission
    from .standin import StandIn

    Ages = Callable[[Iterable[int]], Dict[int, Optional[float]]]
    Children = Callable[[Iterable[int]], List[int]]

__all__ = ["ServerLife", "ServerState", "parse_state"]


class ServerState(NamedTuple):
    """A server's part of the state, read back (no descriptor touched): the counters (the
    ``counters`` document of docs/status.md) and the children."""

    counters: Dict[str, Any]
    children: List[Tuple[int, Peer]]


def parse_state(state: Dict[str, Any], identity: PeerIdentity,
                admission: Optional[Admission] = None) -> ServerState:
    """Read what :meth:`ServerLife.to_state` wrote, with the peers of *identity*: what
    :meth:`ServerLife.restore` does first and what the preflight runs in the new code.
    Raises ValueError, KeyError or TypeError when this code cannot read it. A state without
    counters (s6ipc 0.1, 0.2) gives its ``refused`` total under ``access``. *admission* (the new
    command line's ``-A`` limits) takes over the buckets the state carries, if any."""
    handed = state.get("admission")
    if handed is not None and admission is not None:
        admission.restore(dict(handed))
    children = [(int(pid), identity.peer_from_state(peer)) for pid, peer in dict(state["children"]).items()]
    raw = state.get("counters")
    if raw is None:
        total, refused = int(state["accepted"]), int(state["refused"])
        raw = {"accepted": total, "refused": {"access": refused}, "spawned": max(0, total - refused),
               "exits": {}}
    top = read_counts({"accepted": raw["accepted"], "spawned": raw["spawned"]}, ())
    counters = {"accepted": top["accepted"], "refused": read_counts(raw["refused"], REFUSAL_REASONS),
                "spawned": top["spawned"], "exits": read_counts(raw["exits"], EXIT_OUTCOMES)}
    return ServerState(counters, children)


class ServerLife:
    """A :class:`Server`'s part of its life: counters and children, whatever its peer identity.

    *ages* tells how old processes are (the kernel's view, :func:`process_ages` by default);
    *ours* which processes are this one's children (:func:`our_children`).
    """

    def __init__(self, server: Server, ages: Ages = process_ages, ours: Children = our_children) -> None:
        self.server = server
        self.ages = ages
        self.ours = ours
        #: The stand-in serving during the exec under way (:mod:`s6ipc.serve.standin`).
        self.stand_in: Optional[StandIn] = None

    # -- across the exec ------------------------------------------------------------------
    def to_state(self) -> Dict[str, Any]:
        server = self.server
        children = {str(pid): peer.to_state() for pid, peer in server.children.peers.items()}
        # accepted and refused stay at the top for an older version's preflight (a downgrade)
        state = {"accepted": server.accepted, "refused": server.refused, "counters": self.counters(),
                 "children": children}
        if server.admission is not None:
            state["admission"] = server.admission.to_state()
        if self.stand_in is not None:
            state["stand_in"] = {"pid": self.stand_in.pid, "fd": self.stand_in.fd,
                                 "subreaper": self.stand_in.subreaper}
        return state

    def counters(self) -> Dict[str, Any]:
        """The counters since the process started (docs/status.md), carried across upgrades."""
        return self.server.counts()

    def restore(self, state: Dict[str, Any]) -> None:
        """Take over the counters and the children (into the server's child table), before
        :meth:`Server.start`: only the processes that are this one's children — a pid the state
        names that is not (one warning) is never adopted, so never signalled. Raises ValueError,
        KeyError or TypeError for a malformed state."""
        server = self.server
        parsed = parse_state(state, server.identity, server.admission)
        counters = parsed.counters
        server.accepted, server.spawned = counters["accepted"], counters["spawned"]
        server.refusals, server.exits = counters["refused"], counters["exits"]
        self._adopt(parsed.children, "the handoff state")

    def _adopt(self, children: Iterable[Tuple[int, Peer]], source: str) -> None:
        """Add *children* (pid, peer) to the table: only this process's own — a pid that is not
        (one warning naming *source*) is never adopted, so never signalled."""
        server = self.server
        children = list(children)
        mine = set(self.ours(pid for pid, _ in children))
        strangers = sorted(pid for pid, _ in children if pid not in mine)
        if strangers:
            server.log.warn(f"not adopting pid {', '.join(map(str, strangers))} from {source}: "
                            "not a child of this process")
        for pid, peer in children:
            if pid not in mine:
                continue
            server.children.add(pid, peer)
            if server.admission is not None:
                server.admission.spawned(peer)  # the per-prefix / per-gid live counts

    def descriptors(self) -> Dict[str, int]:
        named = {"listen": self.server.listen_fd}
        if self.stand_in is not None:
            named["stand_in"] = self.stand_in.fd
        return named

    # -- the stand-in (:mod:`s6ipc.serve.standin`) ----------------------------------------------
    def guard(self, mask: List[int]) -> Callable[[], None]:
        """Just before the exec, the daemon's signals blocked (*mask*: the mask before): fork the
        stand-in that serves during it; returns what takes it back if the exec fails. Raises
        :class:`SystemFailure` (``fork a stand-in``): the upgrade goes on without one."""
        from .standin import fork_stand_in  # only when upgrading: a daemon's start does not pay for it

        try:
            stand_in = fork_stand_in(self.server, mask)
        except OSError as e:
            raise SystemFailure("fork a stand-in", e.errno or errno.EIO) from None
        self.stand_in = stand_in

        def undo() -> None:
            self.stand_in = None
            self.take_back(stand_in)
        return undo

    def released(self, state: Dict[str, Any]) -> Optional[float]:
        """In the new image, its loop set up, before it serves: stop the stand-in the previous
        image forked (if its state names one), take its children and counts. Returns when the
        stand-in stopped accepting (CLOCK_MONOTONIC), None without one. A stand-in the state names
        that is not this process's child, or a descriptor that is not a socket, is one warning."""
        named = state.get("stand_in")
        if named is None:
            return None
        from .standin import StandIn
        try:
            stand_in = StandIn(int(named["pid"]), int(named["fd"]), bool(named["subreaper"]))
            if not stat.S_ISSOCK(os.fstat(stand_in.fd).st_mode):
                raise ValueError(f"fd {stand_in.fd} is not a socket")
            if not self.ours([stand_in.pid]):
                raise ValueError(f"pid {stand_in.pid} is not a child of this process")
        except (KeyError, TypeError, ValueError, OSError) as e:
            self.server.log.warn(f"ignoring the stand-in the handoff state names: {e}")
            return None
        return self.take_back(stand_in)

    def take_back(self, stand_in: StandIn) -> Optional[float]:
        """Stop *stand_in*, add what it did; returns when it stopped accepting (None: not said)."""
        from . import standin

        server = self.server
        raw = standin.take_back(stand_in, server.log.warn)
        if raw is None:
            return None
        try:
            got = standin.report(raw)
            children = [(pid, server.identity.peer_from_state(peer)) for pid, peer in got["children"].items()]
        except (KeyError, TypeError, ValueError) as e:
            server.log.warn(f"the stand-in (pid {stand_in.pid}) that served during the exec: its report "
                            f"is unusable: {e}; its connections are served on, not counted")
            return None
        counters = got["counters"]
        server.accepted += counters["accepted"]
        server.spawned += counters["spawned"]
        for table, added in ((server.refusals, counters["refused"]), (server.exits, counters["exits"])):
            for key, n in added.items():
                if key in table:
                    table[key] += n
        self._adopt(children, f"the stand-in (pid {stand_in.pid})")
        return got["stopped"]  # type: ignore[no-any-return]

    # -- what it shows --------------------------------------------------------------------
    def _counted(self) -> bool:
        """Whether peers are told apart (not with ``-P``: every IPC peer is the same unknown)."""
        return self.server.identity.unit != "uid" or self.server.config.lookup

    def describe(self) -> Dict[str, Any]:
        """The server's fields of the live view's document (docs/status.md): limits, connections
        (total, and per peer: ``unit`` ``uid`` or ``ip``; IPC keeps its ``uids``/``per_uid``),
        accepted, refused, and each child's pid, peer and age."""
        server = self.server
        config = server.config
        counted = self._counted()
        peers = sorted(server.children.peers.items())
        ages = self.ages([pid for pid, _ in peers])
        children: List[Dict[str, Any]] = []
        for pid, peer in peers:
            age = ages.get(pid)
            children.append({"pid": pid, **peer.describe(), "age": None if age is None else round(age, 2)})
        per_peer = {str(k): n for k, n in sorted(server.children.per_key.items(), key=lambda kn: str(kn[0]))}
        unit = server.identity.unit
        connections: Dict[str, Any] = {"total": len(server.children)}
        if unit == "uid":
            connections.update(uids=len(per_peer) if counted else None, per_uid=per_peer if counted else {})
        connections.update(unit=unit, peers=len(per_peer) if counted else None,
                           per_peer=per_peer if counted else {})
        shown = {
            "limits": {"maxconn": config.maxconn, "localmaxconn": config.localmaxconn},
            "connections": connections,
            "accepted": server.accepted, "refused": server.refused, "counters": self.counters(),
            "children": children,
        }
        if server.admission is not None:
            shown["admission"] = server.admission.describe()
        return shown

    def status_text(self) -> str:
        """systemd's ``STATUS=``: ``12 connections from 3 uids, 4017 accepted, 2 refused``
        (``from 3 addresses`` for TCP)."""
        server = self.server
        n = len(server.children)
        text = f"{n} connection{'' if n == 1 else 's'}"
        if self._counted() and n:
            peers = len(server.children.per_key)
            word = "uid" if server.identity.unit == "uid" else "address"
            text += f" from {peers} {word}{'' if peers == 1 else ('es' if word == 'address' else 's')}"
        return f"{text}, {server.accepted} accepted, {server.refused} refused"
