"""A verdict on an in-place upgrade: send SIGUSR2 to a running daemon and wait until its new
generation serves, its preflight refuses, or the time runs out (``s6ipc upgrade``).

Some facts this relies on:

* **The daemon says what happened, in its live view** (:mod:`s6ipc.daemon.liveview`, whose client
  verifies that the socket is held by the PID asked for, under that process's euid). The lifecycle
  (:mod:`s6ipc.daemon.lifecycle`) keeps ``generation``, ``upgrades``, ``upgrade_failures`` and
  ``last_upgrade`` (``result``, ``reason``, ``pause_ms``, ``at``) across images. So a new
  generation is success, one more failure is the refusal (the preflight, or an exec that failed:
  the old image serves on) with its reason; nothing else needs a channel of its own.
* **Between the two images the live view is briefly absent** (the status socket is kept across
  the exec, but nobody answers it until the new image's loop runs): not finding it, or a
  connection refused, is retried until the deadline.
* **SIGUSR2 kills a process that does not catch it** (its default action is to terminate). So
  nothing is signalled before the live view has proved the PID is an s6ipc daemon, and the start
  time of the process (``/proc/PID/stat``) is compared before the signal and after, so a PID
  reused meanwhile is never mistaken for the daemon.
* **A daemon that dies during its upgrade** (its new image could not take over) is gone, or
  restarted by its supervisor under another PID: that is a failure too (exit 111), never a wait
  until the deadline.
"""

from __future__ import annotations

import _signal
import errno
import os
import time

from ..base.errors import Refused, S6ipcError, SystemFailure, Unusable
from .liveview import query
from .upgrade import start_ticks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

__all__ = ["Verdict", "upgrade_daemon", "POLL_INTERVAL"]

#: Seconds between two readings of the live view while waiting.
POLL_INTERVAL = 0.02


class Verdict(S6ipcError):
    """The upgrade did not happen: the preflight refused or the exec failed (exit 1); *document*
    is the live view that says so."""

    exit_code = 1

    def __init__(self, document: Dict[str, Any]) -> None:
        last = document.get("last_upgrade") or {}
        super().__init__(f"{last.get('result', 'refused')}: {last.get('reason')}")
        self.document = document

    def __str__(self) -> str:
        last = self.document.get("last_upgrade") or {}
        return f"unable to upgrade pid {self.document.get('pid')} in place: {last.get('reason')}"


def upgrade_daemon(pid: int, *, timeout: Optional[float] = None,
                   send: Callable[[int, int], None] = os.kill,
                   read: Callable[..., Dict[str, Any]] = query) -> Dict[str, Any]:
    """Ask the daemon running as *pid* to upgrade in place (SIGUSR2), wait for the outcome and
    return the new generation's live view (its ``last_upgrade`` holds the pause).

    *timeout* in seconds (None: no limit); *send* and *read* are :func:`os.kill` and
    :func:`s6ipc.daemon.liveview.query` (``read(pid, timeout=seconds)``). Raises
    :class:`Verdict` (exit 1) when the daemon refused or failed the upgrade and serves on;
    :class:`Unusable` (111) when *pid* is not a
    daemon with a live view this caller may read (it is not signalled); :class:`SystemFailure`
    (111) when it cannot be signalled, when it died during the upgrade, or when the time ran out.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    born = start_ticks(pid)
    try:
        before = read(pid, timeout=_left(deadline))
    except Refused as e:  # no live view, or not ours to read: never signal such a process
        raise Unusable(f"no s6ipc daemon to upgrade as pid {pid}: {e}") from None
    if born is None or start_ticks(pid) != born:
        raise Unusable(f"no s6ipc daemon to upgrade as pid {pid}: it is gone")
    generation, failures = _count(before, "generation", pid), _count(before, "upgrade_failures", pid)
    try:
        send(pid, _signal.SIGUSR2)
    except OSError as e:
        raise SystemFailure(f"send SIGUSR2 to pid {pid}", e.errno or errno.EIO) from None
    while True:
        if start_ticks(pid) != born:
            raise SystemFailure(f"see pid {pid} upgrade in place: it died during the upgrade", errno.ESRCH)
        document = _reading(pid, read, _left(deadline))
        if document is not None:
            if _count(document, "generation", pid) > generation:
                return document
            if _count(document, "upgrade_failures", pid) > failures:
                raise Verdict(document)
        if deadline is not None and time.monotonic() >= deadline:
            raise SystemFailure(f"see pid {pid} upgrade in place within {timeout:g} s", errno.ETIMEDOUT)
        time.sleep(POLL_INTERVAL)


def _count(document: Dict[str, Any], key: str, pid: int) -> int:
    """A count of the live view (0 when a daemon of an older s6ipc does not show it). Raises
    :class:`SystemFailure` (EPROTO) for anything but a JSON integer: a peer's bytes are not trusted."""
    value = document.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SystemFailure(f"read the live view of pid {pid} ({key} is {str(value)[:32]!r})", errno.EPROTO)
    return value


def _left(deadline: Optional[float]) -> float:
    """Seconds one reading may take: 5, or what is left before *deadline*."""
    return 5.0 if deadline is None else max(0.01, min(5.0, deadline - time.monotonic()))


def _reading(pid: int, read: Callable[..., Dict[str, Any]], timeout: float) -> Optional[Dict[str, Any]]:
    """The live view now, or None while it cannot be read (between two images, or while the
    daemon's loop is busy)."""
    try:
        return read(pid, timeout=timeout)
    except (Refused, SystemFailure):
        return None
