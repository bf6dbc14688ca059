"""The life of a :class:`s6ipc.server.Server` across in-place upgrades, and what it shows of itself.

:class:`ServerLife` is what outlives one image of ``ipcserverd``: its generation (how many in-place
upgrades since it started), when it started, its counters and its children. It turns them into
the state handed to the next image (:meth:`ServerLife.handoff`, read back by
:meth:`ServerLife.adopt`), into the live view's document (:meth:`ServerLife.describe`) and into
systemd's ``STATUS=`` line (:meth:`ServerLife.status_text`). The mechanics of the exec (memfd,
preflight, descriptors, signal mask) are :mod:`s6ipc.upgrade`'s; the live view's socket is
:mod:`s6ipc.liveview`'s.

Some facts about the processes involved that this module relies on:

* **The children stay ours across the exec**: same parent pid, so ``waitpid`` in the new image
  reaps them and their SIGCHLD (blocked across the exec, hence pending) reaches the new image's
  self-pipe. What the new image must be told is only what the old one knew about them: the peer
  (uid, gid) each serves, which the per-uid counts (``-C``, ``IPCCONNNUM``) and the ``end pid …
  uid N`` lines come from.
* **A child's start time is the kernel's** (``/proc/PID/stat`` field 22, clock ticks since boot):
  it survives any number of upgrades and costs nothing per connection; the live view reads it when
  asked. CLOCK_MONOTONIC is system-wide, so the daemon's own start (a monotonic reading) is
  handed over as a number and stays comparable in the new image.
"""

from __future__ import annotations

import os
import time

from .. import __version__
from .loop import Server
from .peers import UnixPeer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

#: The layout of the handoff state; a new image refuses a state of another format.
FORMAT = 1
_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_seconds() -> float:
    """Seconds since boot, as /proc/PID/stat's start times count them."""
    with open("/proc/uptime", "rb") as f:
        return float(f.read().split()[0])


def child_age(pid: int, now: float) -> Optional[float]:
    """Seconds since process *pid* started (*now*: :func:`_boot_seconds`), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    return max(0.0, now - int(fields[19]) / _TICKS)


class ServerLife:
    """A :class:`Server`'s generation, start, counters and children, across its images.

    *program* is the name the live view is found by (``ipcserverd``).
    """

    def __init__(self, server: Server, program: str) -> None:
        self.server = server
        self.program = program
        self.generation = 0
        self.started = time.monotonic()
        self.started_wall = time.time()

    # -- across the exec ------------------------------------------------------------------
    def handoff(self, extra: Dict[str, Any]) -> Dict[str, Any]:
        """The state for the next image: ours (generation + 1) plus *extra* (the program's)."""
        server = self.server
        children = {}
        for pid, peer in server.children.peers.items():
            if isinstance(peer, UnixPeer):
                children[str(pid)] = [peer.uid, peer.gid]
        state = {"format": FORMAT, "program": self.program, "generation": self.generation + 1,
                 "started": self.started, "started_wall": self.started_wall,
                 "accepted": server.accepted, "refused": server.refused, "children": children}
        state.update(extra)
        return state

    def adopt(self, state: Dict[str, Any]) -> None:
        """Take over what the previous image handed over: its generation, start, counters, and its
        children into the server's child table. Raises ValueError for a state of another
        format or program, KeyError/TypeError for a malformed one."""
        if state.get("format") != FORMAT or state.get("program") != self.program:
            raise ValueError(f"handoff state of format {state.get('format')!r} for "
                             f"{state.get('program')!r}: this is {self.program} format {FORMAT}")
        server = self.server
        self.generation = int(state["generation"])
        self.started = float(state["started"])
        self.started_wall = float(state["started_wall"])
        server.accepted = int(state["accepted"])
        server.refused = int(state["refused"])
        lookup = server.config.lookup
        for pid, (uid, gid) in state["children"].items():
            server.children.add(int(pid), UnixPeer(int(uid), int(gid), lookup))

    # -- what it shows --------------------------------------------------------------------
    def describe(self) -> Dict[str, Any]:
        """The live view's document (docs/status.md)."""
        server = self.server
        config = server.config
        lookup = config.lookup
        now = _boot_seconds()
        children: List[Dict[str, Any]] = []
        for pid, peer in sorted(server.children.peers.items()):
            uid = getattr(peer, "uid", None) if lookup else None
            gid = getattr(peer, "gid", None) if lookup else None
            age = child_age(pid, now)
            children.append({"pid": pid, "uid": uid, "gid": gid,
                             "age": None if age is None else round(age, 2)})
        per_uid = {str(k): n for k, n in sorted(server.children.per_key.items(), key=lambda kn: str(kn[0]))}
        return {
            "program": self.program, "pid": os.getpid(), "version": __version__,
            "generation": self.generation, "uptime": round(time.monotonic() - self.started, 3),
            "started": round(self.started_wall, 3),
            "limits": {"maxconn": config.maxconn, "localmaxconn": config.localmaxconn},
            "connections": {"total": len(server.children), "uids": len(per_uid) if lookup else None,
                            "per_uid": per_uid if lookup else {}},
            "accepted": server.accepted, "refused": server.refused, "children": children,
        }

    def status_text(self) -> str:
        """systemd's ``STATUS=``: ``12 connections from 3 uids, 4017 accepted, 2 refused``."""
        server = self.server
        n = len(server.children)
        text = f"{n} connection{'' if n == 1 else 's'}"
        if server.config.lookup and n:
            uids = len(server.children.per_key)
            text += f" from {uids} uid{'' if uids == 1 else 's'}"
        return f"{text}, {server.accepted} accepted, {server.refused} refused"
