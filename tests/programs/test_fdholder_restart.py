"""Zero-downtime restarts through the fd holder, under load (units/fdholder-restart).

The listening socket lives in our fd holder; the service is ``fdholder-retrieve HOLDER ID
ipcserverd -1 -- cat PAYLOAD`` (the unit's ``server`` script). While client threads open short
connections back to back and check every reply byte for byte, the service is restarted 20 times
the way s6-supervise does it on ``s6-svc -r``: SIGTERM, wait for the exit, start the next instance.
Between the two, no process accepts: clients queue in the backlog of the socket, which the holder
keeps open. Target: 0 refused connections, 0 truncated replies — with our ipcserverd and with s6's
C s6-ipcserverd retrieved from our holder. The control run restarts a server that binds its own
socket at each start (no holder): there, clients are refused, which shows the harness can tell.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import pytest

from tests.support.processes import S6IPC, wait_for_ready

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "units", "fdholder-restart")
RESTARTS = 20
CLIENT_THREADS = 4
PAYLOAD = bytes(range(256)) * 64  # 16 KiB: a reply cut short anywhere is noticed
OUTCOMES = ("ok", "refused", "truncated", "error")


@dataclass
class Load:
    """Client threads connecting in a loop; counts outcomes."""

    path: str
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
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
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
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="s6r", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def unit_env(rundir: str, ipcserverd: Optional[str] = None) -> Dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "S6IPC": S6IPC, "RUNDIR": rundir}
    if ipcserverd:
        env["IPCSERVERD"] = ipcserverd
    return env


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


@pytest.mark.parametrize("ipcserverd", ["ours", "s6"])
def test_restarts_under_load_refuse_nobody(rundir: str, ipcserverd: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if ipcserverd == "s6" and not os.access("/usr/bin/s6-ipcserverd", os.X_OK):
        pytest.skip("Debian's s6 is not installed (/usr/bin/s6-ipcserverd)")
    env = unit_env(rundir, "/usr/bin/s6-ipcserverd" if ipcserverd == "s6" else None)
    log = os.path.join(rundir, "log")
    payload = os.path.join(rundir, "payload")
    with open(payload, "wb") as f:
        f.write(PAYLOAD)
    holder = start_ready([os.path.join(UNIT, "holder")], env, log)
    server = None
    load = None
    try:
        subprocess.run([os.path.join(UNIT, "park")], env=env, check=True, timeout=20)
        server_argv = [os.path.join(UNIT, "server"), "/bin/cat", payload]
        server = start_ready(server_argv, env, log)
        load = Load(os.path.join(rundir, "app.sock"), PAYLOAD)
        load.start()
        time.sleep(0.2)
        gaps = []
        started = time.monotonic()
        for _ in range(RESTARTS):
            before = load.total
            while load.total == before:  # at least one connection served by every instance
                time.sleep(0.005)
            t0 = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert server.wait(10) == 0
            t_exit = time.monotonic()
            server = start_ready(server_argv, env, log)
            gaps.append((t0, t_exit, time.monotonic()))
        elapsed = time.monotonic() - started
        time.sleep(0.2)
        counts = load.stop()
        starts = list(load.starts)
        load = None
    finally:
        if load is not None:
            load.stop()
        stop(server)
        held = stop(holder)
    # connections made between an exit and the next readiness: they waited in the held socket's backlog
    waited = sum(1 for t in starts if any(exited <= t <= ready for _, exited, ready in gaps))
    spans = [ready - term for term, _, ready in gaps]
    total = sum(counts.values())
    with capsys.disabled():
        print(f"\nzero-downtime restarts ({ipcserverd} ipcserverd, socket held by our fdholderd): "
              f"{RESTARTS} restarts in {elapsed:.1f} s, {total} connections, {counts['refused']} refused, "
              f"{counts['truncated']} truncated, {counts['error']} other errors; {waited} connections made "
              f"between an old server's exit and the new one's readiness; TERM-to-ready per restart "
              f"{min(spans) * 1000:.0f}-{max(spans) * 1000:.0f} ms")
    assert counts["refused"] == 0, counts
    assert counts["truncated"] == 0
    assert counts["error"] == 0
    assert counts["ok"] >= 2 * RESTARTS
    assert waited >= RESTARTS // 2  # the gaps were really crossed by clients
    assert held == 1  # the holder still held the socket when stopped


def test_control_without_a_holder_clients_are_refused(rundir: str) -> None:
    """The same harness against a server that binds its socket at each start: refusals are seen."""
    path = os.path.join(rundir, "app.sock")
    payload = os.path.join(rundir, "payload")
    with open(payload, "wb") as f:
        f.write(PAYLOAD)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    log = os.path.join(rundir, "log")
    argv = [S6IPC, "ipcserver", "-1", path, "/bin/cat", payload]
    server = start_ready(argv, env, log)
    load = Load(path, PAYLOAD)
    load.start()
    try:
        for _ in range(3):
            time.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            server.wait(10)
            time.sleep(0.05)
            server = start_ready(argv, env, log)
        time.sleep(0.1)
    finally:
        counts = load.stop()
        stop(server)
    assert counts["refused"] + counts["error"] > 0, counts


def test_demo_script_runs(rundir: str) -> None:
    """units/fdholder-restart/demo: the recipe unsupervised, in shell, with two restarts."""
    p = subprocess.run([os.path.join(UNIT, "demo"), "2", "/bin/echo", "hi"], env=unit_env(rundir),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith("holder ") and lines[-1].startswith("restart 2: server ")
