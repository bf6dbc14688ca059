"""The restart-under-load harness of units/fdholder-restart (no tests here): client threads that
connect in a loop and check every reply byte for byte, processes started until their readiness
newline, the environment of the unit's scripts.

Used by tests/programs/test_fdholder_restart.py (restarts of the service) and
tests/programs/test_fdholder_upgrade.py (in-place upgrades of the holder meanwhile).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

import pytest

from tests.support.processes import S6IPC, scratch_dir, wait_for_ready

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "units", "fdholder-restart")
CLIENT_THREADS = 4
PAYLOAD = bytes(range(256)) * 64  # 16 KiB: a reply cut short anywhere is noticed
OUTCOMES = ("ok", "refused", "truncated", "error")


@dataclass
class Load:
    """Client threads connecting in a loop to a Unix *path* or a TCP (host, port); counts outcomes."""

    path: Union[str, Tuple[str, int]]
    payload: bytes
    counts: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    #: when each successful connection was made (monotonic), to see which ones a restart made wait
    starts: List[float] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: List[threading.Thread] = field(default_factory=list)

    def _count(self, key: str, detail: Optional[str] = None) -> None:
        with self._lock:
            self.counts[key] += 1
            if detail and len(self.errors) < 10:
                self.errors.append(detail)

    def _client(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                family = socket.AF_UNIX if isinstance(self.path, str) else socket.AF_INET
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(20)
                    s.connect(self.path)
                    chunks = []
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
            except ConnectionRefusedError:
                self._count("refused")
                continue
            except OSError as e:
                self._count("error", repr(e))
                continue
            reply = b"".join(chunks)
            if reply != self.payload:
                self._count("truncated", f"{len(reply)} bytes")
            else:
                self._count("ok")
                with self._lock:
                    self.starts.append(start)

    def start(self, threads: int = CLIENT_THREADS) -> None:
        for _ in range(threads):
            t = threading.Thread(target=self._client, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> Dict[str, int]:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return dict(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def start_ready(argv: List[str], env: Dict[str, str], log: str) -> subprocess.Popen:  # type: ignore[type-arg]
    r, w = os.pipe()
    with open(log, "ab") as err:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=w, stderr=err)
    os.close(w)
    try:
        wait_for_ready(r, timeout=20)
    finally:
        os.close(r)
    return p


@pytest.fixture
def rundir() -> Iterator[str]:
    with scratch_dir("s6r") as d:
        yield d


def unit_env(rundir: str, ipcserverd: Optional[str] = None, port: Optional[int] = None) -> Dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "S6IPC": S6IPC, "RUNDIR": rundir}
    if ipcserverd:
        env["IPCSERVERD"] = ipcserverd
    if port is not None:  # the TCP variant: tcp:127.0.0.1:PORT held, tcpserverd serving it
        env["PORT"] = str(port)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(p: Optional[subprocess.Popen]) -> Optional[int]:  # type: ignore[type-arg]
    if p is None:
        return None
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(5)
