"""The guardian of fdholderd's descriptors across an in-place upgrade: nothing is lost when the new
image dies after the exec.

Some facts this relies on:

* **After the exec there is no old image to go back to**, and a new image that dies before its
  first line of ours runs (a module that raises at import, an interpreter that crashes) cannot
  save anything itself. What it held dies with the process: for fdholderd, every held
  descriptor — the one thing a holder exists to keep. Only a process that outlives the new image
  can keep them: a child forked by the old image just before the exec shares every open file
  description (a forked child's descriptors are duplicates, open as long as one copy is).
* **A pipe tells one process that another has ended**: the reader sees EOF once every copy of the
  write end is closed, which the kernel does when the process holding the last one exits,
  however it exits. The write end is kept across the exec (not close-on-exec); the new image
  writes one byte on it once it has taken over (:func:`release`), so EOF *without* that byte
  means it died.
* **The supervisor starts a fresh fdholderd** (s6-supervise's ``run`` again, systemd's
  ``Restart=``) on a new listening socket at the same path. Abstract Unix names (unix(7)) need no
  file and vanish with the process: the guardian listens on ``@s6ipc/fdholder-guardian/PATH``
  (PATH: the holder's socket path), and a fresh fdholderd asks that name once at start
  (:func:`collect`), before it says it is ready. Anyone may bind or connect to an abstract name, so
  each side checks the other with ``SO_PEERCRED``: the same effective uid, nothing else; and a name
  squatted first by someone else does not stop the guardian: it binds ``NAME.XXXXXXXX`` (random
  hex) instead, and the fresh holder tries every listening name that starts with NAME.
* **systemd kills the rest of a unit's control group when its main process dies**
  (``KillMode=control-group``, the default): the guardian survives only with ``KillMode=process``,
  which units/systemd/s6ipc-fdholder.service has. s6-supervise kills nothing but the pid it
  started.

What that means for fdholderd (:func:`guard`, :func:`release`, :func:`collect`):

1. Just before the exec, it forks the guardian, which keeps only the held descriptors and the
   read end of the pipe; the state names the guardian's pid and the write end.
2. The new image, once the state is taken over, writes the byte, closes the write end and reaps
   the guardian (its child: forked by the same process). If the exec fails, the old image does
   the same and serves on.
3. The new image dies (EOF without the byte): the guardian says one line, offers the descriptors
   (ids, limits, slots, then the descriptors, in framed messages) on its abstract name, and exits
   once a fresh fdholderd of the same uid has them, or after :data:`WAIT_FOR_PICKUP`. The fresh
   holder serves them again: same ids, same limits, same open files.
4. A new image that never releases it (an older s6ipc that does not know of guardians) is taken as
   a success after :data:`WAIT_FOR_RELEASE`: the guardian exits without offering anything, so a
   later restart never resurrects descriptors that were deleted meanwhile.
"""

from __future__ import annotations

import _socket
import errno
import os

from ..base import unixmessage
from ..base.log import Log
from ..daemon.readiness import write_newline
from ..sockets.unix import listening_abstract_names, peer_credentials
from .store import FdStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

__all__ = ["NAME_PREFIX", "WAIT_FOR_RELEASE", "WAIT_FOR_PICKUP", "guardian_name", "guard", "release",
           "collect"]

#: The abstract name's prefix (``@`` stands for the leading NUL); the holder's socket path follows.
NAME_PREFIX = "s6ipc/fdholder-guardian"
#: Seconds the guardian waits for the new image to take over before it takes silence as success.
WAIT_FOR_RELEASE = 60.0
#: Seconds the guardian offers the descriptors of a dead image to a restarted holder.
WAIT_FOR_PICKUP = 600.0
_RELEASED = b"k"
_BATCH = 200  # descriptors per message (the kernel's SCM_MAX_FD is 253)
_TIMEOUT = 5.0


def guardian_name(path: str) -> str:
    """The abstract name (without the NUL) of the guardian of the holder listening on *path*."""
    return f"{NAME_PREFIX}{path}"[:107]


def guard(store: FdStore, path: Optional[str], log: Log) -> Tuple[int, int]:
    """In the old image, just before the exec: fork the guardian of *store*'s descriptors (held
    for the holder listening on *path*; None: an unnamed socket, which no restart can find, so the
    guardian only waits). Returns ``(pid, fd)``: the guardian and the pipe's write end, inheritable
    (the state names both). Raises OSError when it cannot fork."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: tests see it through the programs
        code = 0
        try:
            _watch(r, store, path, log)
        except BaseException:  # noqa: BLE001 (a guardian never returns into the daemon's code)
            code = 111
        os._exit(code)
    os.close(r)
    os.set_inheritable(w, True)
    return pid, w


def release(pid: int, fd: int) -> None:
    """The new image took over (or the exec failed and the old one serves on): the guardian exits
    without offering anything; it is reaped here (it is this process's child)."""
    write_newline(fd, _RELEASED)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _keep_only(keep: List[int]) -> None:
    """Close every descriptor but *keep* (the listening socket, the clients, the status socket:
    the guardian must not hold any of them open)."""
    kept = set(keep)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in kept:
            try:
                os.close(fd)
            except OSError:
                pass


def _watch(r: int, store: FdStore, path: Optional[str], log: Log) -> None:
    """The guardian: wait for the release or the death of the new image, then offer."""
    import select
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    held = [e.held.fd for e in store.entries()]
    _keep_only(held + [r, 2])
    ready, _, _ = select.select([r], [], [], WAIT_FOR_RELEASE)
    if not ready or os.read(r, 1) == _RELEASED or path is None or not held:
        return
    deadline = time.monotonic() + WAIT_FOR_PICKUP
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    name = guardian_name(path)
    for attempt in range(8):
        try:
            listener.bind("\0" + name)
            break
        except OSError as e:  # squatted: the fresh holder tries every name that starts with it
            if e.errno != errno.EADDRINUSE or attempt == 7:
                raise
            name = f"{guardian_name(path)[:98]}.{os.urandom(4).hex()}"
    listener.listen(4)
    log.warn(f"the new image died after the exec: holding {len(held)} descriptors for the restarted "
             f"fdholderd at @{name}")
    while time.monotonic() < deadline:
        ready, _, _ = select.select([listener.fileno()], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        fd, _ = listener._accept()  # type: ignore[attr-defined]  # _socket's own accept
        conn = _socket.socket(fileno=fd)
        try:
            if _hand_over(conn, store, path):
                return
        finally:
            conn.close()
    log.warn(f"nobody took the {len(held)} descriptors within {WAIT_FOR_PICKUP:g} s: closing them")


def _hand_over(conn: _socket.socket, store: FdStore, path: str) -> bool:
    """Send the store to one client of the same euid; True once it said it has them."""
    import json

    conn.settimeout(_TIMEOUT)
    try:
        if peer_credentials(conn)[1] != os.geteuid():
            return False
        described = store.to_state()
        fds: List[int] = []
        for slot in described["slots"]:
            if slot is not None:
                fds.append(slot.pop("fd"))
        head = json.dumps({"path": path, "slots": described["slots"], "free": described["free"],
                           "count": len(fds)}).encode()
        unixmessage.send_message(conn, head)
        for start in range(0, len(fds), _BATCH):
            unixmessage.send_message(conn, b"", fds[start:start + _BATCH])
        return conn.recv(1) == _RELEASED
    except OSError:
        return False


def collect(path: Optional[str], log: Log) -> Optional[FdStore]:
    """In a fresh fdholderd listening on *path*, before it is ready: the store a guardian offers
    (the descriptors of an image that died after its exec, close-on-exec, at new numbers), or None
    when there is none (the usual start: no such name in ``/proc/net/unix``). One warning for each
    name that answers but is not such a guardian (a squatter, another user)."""
    if path is None:
        return None
    plain = guardian_name(path)
    short = plain[:98]
    names = [n for n in listening_abstract_names(short)
             if n == plain or (n.startswith(short + ".") and len(n) == len(short) + 9)]
    for name in sorted(names, key=lambda n: n != plain):  # the plain name first
        store = _take(name, path, log)
        if store is not None:
            log.warn(f"took {len(store)} descriptors from the guardian of the image that died after its exec")
            return store
    return None


def _take(name: str, path: str, log: Log) -> Optional[FdStore]:
    """The store offered at abstract *name* for the holder on *path*, or None (one warning when
    something answers there but is not such a guardian)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect("\0" + name)
        except OSError:
            return None
        sock.settimeout(_TIMEOUT)
        store = _receive(sock, path)
        sock.sendall(_RELEASED)
    except (OSError, ValueError, KeyError, TypeError, unixmessage.ProtocolError) as e:
        reason = os.strerror(e.errno or errno.EIO) if isinstance(e, OSError) else str(e)
        log.warn(f"unable to take the descriptors offered at @{name}: {reason}")
        return None
    finally:
        sock.close()
    return store


def _receive(sock: _socket.socket, path: str) -> FdStore:
    """The guardian's messages: the description, then the descriptors. Raises ValueError (a peer
    that is not ours, or not a guardian for *path*), OSError, ProtocolError."""
    import json
    import select

    if peer_credentials(sock)[1] != os.geteuid():
        raise ValueError("it is held by another user")
    decoder = unixmessage.Decoder()
    received: List[int] = []
    head: Optional[Dict[str, Any]] = None
    try:
        while head is None or len(received) < head["count"]:
            message = decoder.next_message()
            if message is None:
                if not select.select([sock], [], [], _TIMEOUT)[0]:
                    raise OSError(errno.ETIMEDOUT, "timed out")
                if unixmessage.recv_into(sock, decoder) == 0:
                    raise OSError(errno.EPIPE, "the guardian closed the connection")
                continue
            received.extend(message.fds)
            if head is None:
                head = json.loads(message.payload)
                if not isinstance(head, dict) or head.get("path") != path \
                        or type(head.get("count")) is not int:
                    raise ValueError("not a guardian of this holder")
        assert head is not None
        numbers = iter(received)
        for slot in head["slots"]:
            if slot is not None:
                slot["fd"] = next(numbers)
        return FdStore.from_state({"slots": head["slots"], "free": head["free"]})
    except BaseException:
        unixmessage.close_fds(received)
        raise
