"""Test peers shared by the activation/readiness tests: a service manager's notify socket, a load client.

``Manager`` is the receiving end of ``$NOTIFY_SOCKET`` as systemd holds it (SOCK_DGRAM, SO_PASSCRED):
it reports each datagram's text, the fds attached and the sender's credentials.

``Load`` connects to a Unix socket over and over from a few threads and sorts every attempt:
*ok* (a complete reply), *refused* (ECONNREFUSED/ENOENT at connect — what a restart must never
cause while the socket is held), *truncated* (connected, but the reply was cut or empty).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from typing import Callable, List, NamedTuple, Optional

from tests.support.processes import request

_UCRED = struct.Struct("3i")


class Message(NamedTuple):
    text: str
    fds: List[int]
    pid: int
    uid: int


class Manager:
    """The receiving end of ``$NOTIFY_SOCKET`` (*address*: a path, or ``@name`` for abstract)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(5)

    def get(self, timeout: float = 5) -> Message:
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(64 * 4))
        fds: List[int] = []
        pid = uid = -1
        for _, kind, payload in ancillary:
            if kind == socket.SCM_RIGHTS:
                fds += list(struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4]))
            elif kind == socket.SCM_CREDENTIALS:
                pid, uid, _ = _UCRED.unpack(payload[:12])
        return Message(data.decode("utf-8", "surrogateescape"), fds, pid, uid)

    def texts_until(self, predicate: Callable[[str], bool], timeout: float = 5) -> List[str]:
        """Texts received until one satisfies *predicate* (included); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        seen: List[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching notification within {timeout}s; got {seen}")
            try:
                m = self.get(left)
            except TimeoutError:
                continue
            for fd in m.fds:
                os.close(fd)
            seen.append(m.text)
            if predicate(m.text):
                return seen

    def empty(self, wait: float = 0.2) -> bool:
        """True when nothing arrives within *wait* seconds."""
        return not select.select([self.sock], [], [], wait)[0]

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            try:
                os.unlink(self.address)
            except OSError:
                pass


def ask(path: str, timeout: float = 10.0) -> bytes:
    """One request: connect, half-close, read the whole reply. OSError from connect propagates."""
    return request(path, timeout=timeout)


class Load:
    """Clients hammering *path* from *threads* threads until :meth:`stop`; *complete* judges a reply."""

    def __init__(self, path: str, complete: Callable[[bytes], bool], threads: int = 4,
                 pause: float = 0.005) -> None:
        self.path, self.complete, self.pause = path, complete, pause
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.replies: List[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = ask(self.path)
                kind = "ok" if self.complete(reply) else "truncated"
                error: Optional[str] = None if kind == "ok" else repr(reply[:80])
            except (ConnectionRefusedError, FileNotFoundError) as e:
                kind, error = "refused", f"{type(e).__name__}: {e}"
            except OSError as e:
                kind, error = "truncated", f"{type(e).__name__}: {e}"
            with self._lock:
                self.counts[kind] += 1
                if kind == "ok" and len(self.replies) < 100000:
                    self.replies.append(reply)
                if error:
                    self.errors[error] += 1
            time.sleep(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def summary(self) -> str:
        return f"{dict(self.counts)} errors={dict(self.errors)}"
