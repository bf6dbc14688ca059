"""The stand-in: a copy of a spawning server's loop that serves while the daemon execs its next image.

An in-place upgrade keeps the PID, so for the time the new image takes to start (an interpreter and
its modules: about 20–30 ms of CPU) the process serves no one; clients wait in the backlog. The
stand-in closes that gap: forked by the old image just before its ``execve``, it goes on
accepting and spawning with everything the old loop had, until the new image takes over.

Some facts this relies on:

* **A fork copies the loop as it is** — its objects, the child table and per-peer counts, the
  access rules, the admission buckets — and shares the **listening socket** (the same open file
  description): both processes may accept on it, the kernel hands each connection to one of them.
  It costs page tables only (copy-on-write): well under a millisecond for a daemon of 12 MB.
* **The stand-in's children are its own**, not the daemon's. So that they end up the daemon's,
  the daemon becomes a *subreaper* (``PR_SET_CHILD_SUBREAPER``, :mod:`s6ipc.base.libc`) before the
  fork: when the stand-in exits, the children it leaves are re-parented to the daemon — whatever
  image it runs by then — which reaps, counts and signals them as its own. The daemon stops being
  a subreaper once it has them (unless it was one before), so an orphan of its connections later
  goes to init, as without an upgrade.
* **A socket pair links the two.** The daemon's end is kept across the exec (the sealed state
  names it, with the stand-in's pid); the new image writes one byte on it once it is ready to
  serve (:func:`take_back`); the stand-in stops accepting, writes what it did (the counters it
  added, the children still running and whom they serve) as JSON, and exits. EOF instead of the
  byte (every copy of the daemon's end closed: the new image died) stops it too; so does
  :data:`LIMIT` seconds without either (a new image of a release that knows no stand-in, one that
  hangs): clients then wait in the backlog, as without a stand-in.
* **Signals.** The daemon blocks its signals *before* the fork: a child does not inherit pending
  signals, so nothing meant for the daemon is heard by the stand-in, and the daemon's stay pending
  across its exec, for the new image. The stand-in makes its own self-pipe and acts on one signal
  only, SIGTERM, by stopping (systemd stopping the unit signals every process of its cgroup); what
  signals mean for the connections (SIGHUP, SIGQUIT, SIGABRT) is the daemon's to do, once it holds
  the stand-in's children: the stand-in ignores them, and SIGUSR2.
* **The state of the stand-in's children** — the peer each serves — comes only from the stand-in
  the daemon forked (its pid named in the sealed state, a child of this process), and a pid is
  adopted only if it is this process's child once the stand-in is gone
  (:func:`s6ipc.daemon.lifecycle.our_children`).

What that means for the daemon (:class:`s6ipc.serve.life.ServerLife`): ``guard`` forks the stand-in
just before the exec; the new image, once its loop is set up and before it serves, takes it back
and merges its report; if the exec fails, the old image does the same and serves on. The pause a
client can see is then the hand-back (the stand-in stops, the new image starts polling): about a
millisecond, not the new image's start.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import os
import select

from ..base.libc import child_subreaper, libc, set_child_subreaper
from ..base.options import INT_MAX, scan_magnitude
from ..base.typeshim import NamedTuple
from ..daemon.lifecycle import our_children

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

    from .loop import Server

__all__ = ["LIMIT", "StandIn", "fork_stand_in", "take_back", "report"]

#: Seconds a stand-in serves at most without hearing from the new image.
LIMIT = 10.0
#: Seconds the daemon waits for a stand-in's report once told to stop.
REPORT_TIMEOUT = 5.0
_STOP = b"s"
_MAX_REPORT = 64 * 1024 * 1024
#: What a stand-in does with the signals it may get: SIGTERM stops it, SIGCHLD reaps its children.
_CAUGHT = (_signal.SIGCHLD, _signal.SIGTERM)
_IGNORED = (_signal.SIGHUP, _signal.SIGQUIT, _signal.SIGABRT, _signal.SIGUSR2)


class StandIn(NamedTuple):
    """A stand-in forked by this process: its *pid*, the daemon's end of the pair (*fd*), and
    whether this process was a subreaper before (*subreaper*: then it stays one)."""

    pid: int
    fd: int
    subreaper: bool


def fork_stand_in(server: Server, mask: List[int]) -> StandIn:
    """In the old image, with the daemon's signals blocked (*mask*: the mask before they were):
    fork the stand-in of *server*. The daemon's end is inheritable (kept across the exec).
    Raises OSError (no subreaper, no socket pair, no fork): the upgrade goes on without one."""
    was = child_subreaper()
    if not was:
        set_child_subreaper(True)
    try:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
    except OSError:
        if not was:
            set_child_subreaper(False)
        raise
    if pid == 0:  # pragma: no cover - the child: the program tests see it
        code = 0
        try:
            ours.close()
            _serve(server, theirs.detach(), mask)
        except BaseException:  # noqa: BLE001 (a stand-in never returns into the daemon's code)
            code = 111
        os._exit(code)
    theirs.close()
    fd = ours.detach()
    os.set_inheritable(fd, True)
    return StandIn(pid, fd, was)


def _serve(server: Server, channel: int, mask: List[int]) -> None:
    """The stand-in: serve until told to stop (or EOF, SIGTERM, :data:`LIMIT`), then report."""
    import json

    before = server.counts()
    known = set(server.children.peers)
    server.stand_in(channel, LIMIT, _CAUGHT, _IGNORED)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
    server.serve()
    stopped = server.clock.monotonic()
    after = server.counts()
    added: Dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            added[key] = {k: v - before[key].get(k, 0) for k, v in value.items()}
        else:
            added[key] = value - before[key]
    children = {str(pid): peer.to_state() for pid, peer in server.children.peers.items() if pid not in known}
    data = json.dumps({"counters": added, "children": children, "stopped": stopped},
                      separators=(",", ":")).encode()
    os.set_blocking(channel, True)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(channel, view):]
    except OSError:  # the daemon is gone: its children will be init's
        pass


def take_back(stand_in: StandIn, warn: Any, timeout: float = REPORT_TIMEOUT) -> Optional[Dict[str, Any]]:
    """Stop the stand-in (one byte), read its report, reap it, and stop being a subreaper (unless
    this process was one before): its children are this process's now. Returns the report (the
    counters it added, its children by pid), or None — with one line to *warn* — when there is
    none to trust (it died, it did not answer within *timeout*: then it is killed)."""
    import json
    import time

    pid, fd = stand_in.pid, stand_in.fd
    if not our_children([pid]):  # never a word to, nor a signal for, a process that is not ours
        warn(f"the stand-in (pid {pid}) that served during the exec: it is not a child of this process; "
             "its connections are served on, not counted")
        return None
    chunks: List[bytes] = []
    problem: Optional[str] = None
    if not stand_in.subreaper:
        libc()  # ctypes loaded while the stand-in still serves: not in the pause, after it stops
    channel = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
    try:
        channel.send(_STOP, _socket.MSG_NOSIGNAL)
    except OSError:  # it stopped already (SIGTERM, its limit): its report may still be there
        pass
    finally:
        channel.detach()
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            problem = f"no report within {timeout:g} s"
            break
        try:
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except ConnectionResetError:  # it ended with the byte unread: its exit status tells
            break
        except OSError as e:
            problem = os.strerror(e.errno or errno.EIO)
            break
        if not chunk:
            break
        size += len(chunk)
        if size > _MAX_REPORT:
            problem = f"a report larger than {_MAX_REPORT} bytes"
            break
        chunks.append(chunk)
    os.close(fd)
    if problem is not None:
        try:
            os.kill(pid, _signal.SIGKILL)
        except OSError:
            pass
    status = _reap(pid)
    if not stand_in.subreaper:
        try:
            set_child_subreaper(False)
        except OSError:
            pass
    if problem is None and not (status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        problem = "it ended without a report" if status is not None else "it is not a child of this process"
    if problem is None:
        try:
            got = json.loads(b"".join(chunks))
            if not isinstance(got, dict):
                raise ValueError("not a JSON object")
            return got
        except ValueError as e:
            problem = f"its report is unusable: {e}"
    warn(f"the stand-in (pid {pid}) that served during the exec: {problem}; "
         "its connections are served on, not counted")
    return None


def _reap(pid: int) -> Optional[int]:
    """Wait for the stand-in (a child); its wait status, None if it is not one of ours."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return None


def report(raw: Dict[str, Any]) -> Dict[str, Any]:
    """A stand-in's report, checked: ``counters`` (accepted, spawned: ints; refused, exits: str →
    int), ``children`` (pid → the peer's state) and ``stopped`` (when it stopped accepting, on
    CLOCK_MONOTONIC; None if not said). Raises ValueError, KeyError, TypeError."""
    counters = dict(raw["counters"])
    checked: Dict[str, Any] = {}
    for key in ("accepted", "spawned"):
        checked[key] = _count(counters[key])
    for key in ("refused", "exits"):
        checked[key] = {str(k): _count(v) for k, v in dict(counters[key]).items()}
    children = {_pid(pid): peer for pid, peer in dict(raw["children"]).items()}
    stopped = raw.get("stopped")
    return {"counters": checked, "children": children,
            "stopped": float(stopped) if isinstance(stopped, (int, float)) else None}


def _pid(text: object) -> int:
    """A pid of the report (a JSON object's key: a string of digits, as any peer's bytes, checked)."""
    value = scan_magnitude(str(text), 10, INT_MAX)
    if value is None or value < 1:
        raise ValueError(f"a pid of {text!r}")
    return value


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"a count of {value!r}")
    return value
