"""In-place upgrades under load: client threads that never stop connecting, long-lived connections,
a private copy of the installed package to break or bump, and "upgrade and wait for it".

Imported as ``from tests.support.upgrade import …`` by the ipcserverd upgrade tests (plain, under
s6-supervise, under a real systemd manager).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import s6ipc
from s6ipc.daemon import liveview

from .processes import Client, wait_until

PACKAGE = os.path.dirname(os.path.abspath(s6ipc.__file__))
#: ``python FORGE KIND COMMAND…``: COMMAND with a hand-over its previous image did not make
#: (the script's docstring says which).
FORGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge_handoff.py")


def copy_package(top: str) -> str:
    """A copy of the s6ipc package under *top* (put *top* first in PYTHONPATH to run it); returns
    the copy's package directory."""
    target = os.path.join(top, "s6ipc")
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def edit(path: str, old: str, new: str) -> None:
    """Replace *old* (present exactly once) by *new* in the file at *path*."""
    with open(path) as f:
        text = f.read()
    assert text.count(old) == 1, (path, old)
    with open(path, "w") as f:
        f.write(text.replace(old, new))


#: Where a bug of the new image's take-over is put (what the preflight cannot see: the state reads,
#: and taking it over fails): ServerLife.restore in the copy's serve/life.py.
TAKE_OVER = ("serve/life.py", "        parsed = parse_state(state, server.identity, server.admission)\n")


def break_take_over(package: str) -> Callable[[], None]:
    """Make the copy at *package* fail in its take-over with ``boom``; returns what repairs it."""
    path = os.path.join(package, *TAKE_OVER[0].split("/"))
    edit(path, TAKE_OVER[1], '        raise RuntimeError("boom")\n' + TAKE_OVER[1])
    return lambda: edit(path, '        raise RuntimeError("boom")\n', "")


class Exchange(Client):
    """One echo exchange with ``handler hold``: PID line, one line echoed, EOF after our EOF.
    A short read raises AssertionError (:meth:`Client.line`)."""

    def __init__(self, path: str, timeout: float = 20.0) -> None:
        super().__init__(path)
        self.sock.settimeout(timeout)
        self.pid = int(self.line())

    def echo(self, text: bytes) -> bool:
        self.sock.sendall(text + b"\n")
        return self.line() == text

    def finish(self) -> bool:
        """Our EOF; True when the handler's whole output ended cleanly (nothing more, then EOF)."""
        self.sock.shutdown(socket.SHUT_WR)
        rest = self.buf
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        self.sock.close()
        return rest == b""


class Load:
    """*threads* clients making short connections to *path* back to back until :meth:`stop`.

    Counts what a client can see go wrong: refused (ECONNREFUSED/ENOENT/EAGAIN at connect),
    truncated (EOF or a wrong echo before the exchange finished), other errors.
    """

    def __init__(self, path: str, threads: int = 2, pause: float = 0.002) -> None:
        self.path, self.pause = path, pause
        self.done = 0
        self.pids: List[int] = []
        self.refused: List[str] = []
        self.truncated: List[str] = []
        self.errors: List[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            token = f"t{n}-{i}".encode()
            try:
                ex = Exchange(self.path)
            except OSError as e:
                with self._lock:
                    (self.refused if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN)
                     else self.errors).append(f"{token.decode()}: {e}")
                continue
            except AssertionError as e:
                with self._lock:
                    self.truncated.append(f"{token.decode()}: {e}")
                continue
            try:
                ok = ex.echo(token) and ex.finish()
            except (OSError, AssertionError) as e:
                ok = False
                with self._lock:
                    self.errors.append(f"{token.decode()}: {e}")
            with self._lock:
                self.pids.append(ex.pid)
                self.done += 1
                if not ok:
                    self.truncated.append(token.decode())
            time.sleep(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def view(pid: int, program: str = "ipcserverd") -> Dict[str, Any]:
    return liveview.query(pid, program, timeout=20)


def upgrade(pid: int, generation: int, timeout: float = 30.0, send: Optional[Any] = None,
            program: str = "ipcserverd") -> Dict[str, Any]:
    """SIGUSR2 to *pid* (or ``send()``), then wait until the live view of its *program* shows *generation*."""
    if send is None:
        os.kill(pid, signal.SIGUSR2)
    else:
        send()

    def reached() -> Optional[Dict[str, Any]]:
        try:
            document = view(pid, program)
        except s6ipc.S6ipcError:
            return None
        return document if document["generation"] == generation else None

    return wait_until(reached, timeout, 0.05)  # type: ignore[no-any-return]


def flat(counters: Dict[str, Any], prefix: str = "") -> Dict[str, int]:
    """{"refused.access": 3, …}: every count of a live view's ``counters``."""
    found: Dict[str, int] = {}
    for key, value in counters.items():
        if isinstance(value, dict):
            found.update(flat(value, f"{prefix}{key}."))
        else:
            found[prefix + key] = value
    return found


class Monotonic:
    """Successive ``counters`` of one daemon: :meth:`check` fails when any count went down or vanished."""

    def __init__(self) -> None:
        self.last: Dict[str, int] = {}
        self.checks = 0

    def check(self, counters: Dict[str, Any]) -> None:
        now = flat(counters)
        lower = {k: (v, now.get(k)) for k, v in self.last.items() if now.get(k, -1) < v}
        assert not lower, f"counters went down across an upgrade: {lower}"
        self.last = now
        self.checks += 1


class Proof:
    """What :func:`prove` saw: the load's clients, the long-lived connections, the last live view."""

    def __init__(self, load: Load, long_lived: List[Exchange], document: Dict[str, Any]) -> None:
        self.load, self.long_lived, self.document = load, long_lived, document


def prove(path: str, pid: int, upgrades: int, send: Optional[Any] = None,
          between: Optional[Any] = None) -> Proof:
    """*upgrades* in-place upgrades of the ``ipcserverd`` *pid* serving ``handler hold`` on *path*,
    under continuous short connections, with long-lived ones open across them (one more every five
    upgrades), each echoing after every upgrade; *between()* is called after each. Checks 0 refused,
    0 truncated, the PID, the live view's counts, then ends the long-lived connections cleanly and
    waits until the daemon has reaped them. The caller checks the log's end lines."""
    long_lived = [Exchange(path) for _ in range(3)]
    load = Load(path, threads=2)
    counters = Monotonic()
    try:
        for generation in range(1, upgrades + 1):
            if generation % 5 == 1:
                long_lived.append(Exchange(path))
            counters.check(view(pid)["counters"])
            after = upgrade(pid, generation, send=send)
            assert after["pid"] == pid
            counters.check(after["counters"])
            for n, ex in enumerate(long_lived):
                assert ex.echo(f"g{generation}-{n}".encode()), "a long-lived connection stopped echoing"
            if between is not None:
                between()
            time.sleep(0.2)
    finally:
        load.stop()
    assert (load.refused, load.truncated, load.errors) == ([], [], [])
    assert load.done > 5 * upgrades, f"only {load.done} short connections during {upgrades} upgrades"

    def settled() -> Dict[str, Any]:
        d = view(pid)
        return d if d["connections"]["total"] == len(long_lived) else {}

    document = wait_until(settled)
    assert document["generation"] == upgrades
    assert document["accepted"] == load.done + len(long_lived) and document["refused"] == 0
    counters.check(document["counters"])
    served = document["counters"]
    clients = load.done + len(long_lived)
    assert served["accepted"] == served["spawned"] == clients, "accepted = clients served"
    assert sum(served["refused"].values()) == 0
    assert served["exits"]["failed"] == served["exits"]["signaled"] == 0
    n = len(long_lived)
    assert document["connections"] == {"total": n, "uids": 1, "per_uid": {"0": n},
                                       "unit": "uid", "peers": 1, "per_peer": {"0": n}}
    assert sorted(c["pid"] for c in document["children"]) == sorted(ex.pid for ex in long_lived)
    for ex in long_lived:
        assert ex.finish(), "a long-lived connection did not end cleanly"
    wait_until(lambda: view(pid)["connections"]["total"] == 0)
    return Proof(load, long_lived, document)


def end_lines(log: str) -> Dict[int, str]:
    """``end pid P uid 0 exitcode N`` lines of a log: pid → ``exitcode N`` / ``signal N``."""
    import re

    return {int(m.group(1)): m.group(2) for m in re.finditer(r"end pid (\d+) uid 0 (\w+ \d+)", log)}


def unended(proof: Proof, log: str) -> List[int]:
    """The connections of *proof* without an ``end pid … exitcode 0`` line in *log*."""
    ends = end_lines(log)
    return [p for p in proof.load.pids + [ex.pid for ex in proof.long_lived] if ends.get(p) != "exitcode 0"]
