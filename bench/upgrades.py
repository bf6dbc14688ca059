"""In-place upgrades under load: the accept pause a client sees, and a soak (issue 18, points 3 and 9).

Not part of the suite: figures for docs/benchmarks.md, with the command that gave them.

``pause``: ipcserverd (``s6ipc ipcserver -1 PATH handler``, bench/handler.c: one line, exit) is
probed at 1 kHz, open loop (a probe starts every millisecond whatever the others do: a pause shows as
the probes that wait, not as probes not sent): each probe is a non-blocking AF_UNIX connect, then
the time to the first byte of the handler's line, then the whole line checked. N upgrades
(SIGUSR2, then wait until the live view shows the next generation, then a quiet gap) run under it.
It reports the baseline (median probe latency outside the upgrades), for each upgrade the worst
probe latency between its SIGUSR2 and its next generation plus 100 ms, minus the baseline (p50, p99,
max), the probes refused (EAGAIN/ECONNREFUSED at connect: the backlog was full), and the highest
arrival rate with no refusal, backlog / worst pause.

``soak``: N consecutive upgrades under a steady RATE new connections per second, each a
byte-exact exchange with ``cat`` (64 random bytes sent, our EOF, the same 64 bytes back, then EOF),
plus LONG long-lived connections (``cat`` too) that each echo a line after every upgrade — on
AF_UNIX (``ipcserver``) or TCP on 127.0.0.1 (``tcpserver``). It counts refused, reset, truncated
(fewer or other bytes than sent, or a timeout) and reports the same pause figures from the soak's
own connections.

With ``--upgrades 0`` either runs the same load for ``--gap`` seconds without any upgrade: the
control that tells what the machine sustains from what the upgrades cost.

Usage: bench/upgrades.py pause [--upgrades 100] [--rate 1000] [--gap 0.3]
       bench/upgrades.py soak [--family unix|tcp] [--upgrades 1000] [--rate 1000] [--long 50] [--gap 0.05]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

from s6ipc.daemon import liveview

HERE = os.path.dirname(os.path.abspath(__file__))
S6IPC = os.path.join(os.path.dirname(sys.executable), "s6ipc")
HANDLER = os.path.join(HERE, "build", "handler")
LINE = b"hello from the handler\n"
CAT = "/bin/cat"


def raise_fd_limit() -> None:
    """At 1000 connections a second, a second of latency (a TCP SYN retransmitted) is a thousand
    sockets open at once: more than the usual soft limit of 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_handler() -> None:
    src = os.path.join(HERE, "handler.c")
    if not os.path.exists(HANDLER) or os.path.getmtime(HANDLER) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(HANDLER), exist_ok=True)
        subprocess.run(["gcc", "-O2", "-static", "-o", HANDLER, src], check=True)


class Server:
    """A server chain started with ``-1``: its pid (the same through every upgrade) and address."""

    def __init__(self, argv: List[str], kind: str) -> None:
        r, w = os.pipe()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (kept for the server's life)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=self.log)
        os.close(w)
        with os.fdopen(r, "rb") as ready:
            self.ready_line = ready.readline().strip()
        self.pid, self.kind = self.proc.pid, kind

        #: What each new image reported as its pause (last_upgrade.pause_ms: the time nobody
        #: accepted — from the stand-in's stop, or from just before the exec without one — to its
        #: handlers in place, on CLOCK_MONOTONIC) and as its start (exec_ms: from the exec).
        self.reported_pauses: List[float] = []
        self.reported_starts: List[float] = []

    def generation(self) -> int:
        return int(liveview.query(self.pid, self.kind, timeout=30)["generation"])

    def upgrade(self, timeout: float = 60) -> Tuple[float, float]:
        """SIGUSR2 and wait for the next generation: (when it was sent, when the new one answered)."""
        before = self.generation()
        sent = time.monotonic()
        os.kill(self.pid, signal.SIGUSR2)
        while True:
            time.sleep(0.01)
            try:
                document = liveview.query(self.pid, self.kind, timeout=30)
            except Exception:  # the status socket is served again once the new image runs
                continue
            if int(document["generation"]) > before:
                last = document.get("last_upgrade") or {}
                if last.get("pause_ms") is not None:
                    self.reported_pauses.append(float(last["pause_ms"]))
                if last.get("exec_ms") is not None:
                    self.reported_starts.append(float(last["exec_ms"]))
                return sent, time.monotonic()
            if time.monotonic() - sent > timeout:
                raise RuntimeError(f"no generation {before + 1} {timeout} s after SIGUSR2: {self.text()}")

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Outcome:
    """What the open-loop clients saw."""

    def __init__(self) -> None:
        self.done: List[Tuple[float, float]] = []  # (start, latency to the first byte)
        self.refused = self.reset = self.truncated = self.other = 0
        self.examples: List[str] = []

    def failed(self, kind: str, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {detail}")


class _Conn:
    __slots__ = ("sock", "start", "first", "sent", "got", "expect", "payload", "connected")

    def __init__(self, sock: socket.socket, start: float, payload: bytes, expect: bytes) -> None:
        self.sock, self.start, self.payload, self.expect = sock, start, payload, expect
        self.first: Optional[float] = None
        self.sent = 0
        self.got = b""
        self.connected = False


class OpenLoop(threading.Thread):
    """Start a connection every 1/*rate* s to *address* until :meth:`stop`; each sends *payload*
    (then EOF) and must read back exactly *expect*, then EOF, within *timeout*."""

    def __init__(self, family: int, address: object, rate: float, payload: bytes, expect: bytes,
                 timeout: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.family, self.address, self.rate = family, address, rate
        self.payload, self.expect, self.timeout = payload, expect, timeout
        self.outcome = Outcome()
        self._stop_at: Optional[float] = None
        self._selector = selectors.DefaultSelector()
        self._live: Dict[int, _Conn] = {}

    def stop(self) -> Outcome:
        self._stop_at = time.monotonic()
        self.join(self.timeout + 30)
        return self.outcome

    def _open(self, now: float) -> None:
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as e:  # EMFILE: this client is the bottleneck, not the server
            self.outcome.failed("other", f"socket: {e}")
            return
        sock.setblocking(False)
        conn = _Conn(sock, now, self.payload, self.expect)
        try:
            sock.connect(self.address)
            conn.connected = True
        except BlockingIOError as e:
            if self.family == socket.AF_UNIX or e.errno != errno.EINPROGRESS:  # AF_UNIX: backlog full
                sock.close()
                self.outcome.failed("refused", f"connect: {os.strerror(e.errno or 0)}")
                return
        except ConnectionRefusedError as e:
            sock.close()
            self.outcome.failed("refused", f"connect: {e}")
            return
        except OSError as e:
            sock.close()
            self.outcome.failed("other", f"connect: {e}")
            return
        self._live[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _close(self, conn: _Conn) -> None:
        self._selector.unregister(conn.sock)
        del self._live[conn.sock.fileno()]
        conn.sock.close()

    def _event(self, conn: _Conn, mask: int, now: float) -> None:
        sock = conn.sock
        if not conn.connected:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._close(conn)
                self.outcome.failed("refused" if err == errno.ECONNREFUSED else "other",
                                    f"connect: {os.strerror(err)}")
                return
            conn.connected = True
        try:
            if mask & selectors.EVENT_WRITE:
                if conn.sent < len(conn.payload):
                    conn.sent += sock.send(conn.payload[conn.sent:])
                if conn.sent == len(conn.payload):
                    sock.shutdown(socket.SHUT_WR)
                    self._selector.modify(sock, selectors.EVENT_READ, conn)
            if mask & selectors.EVENT_READ:
                chunk = sock.recv(65536)
                if chunk:
                    if conn.first is None:
                        conn.first = now
                    conn.got += chunk
                    if len(conn.got) > len(conn.expect):
                        self._close(conn)
                        self.outcome.failed("truncated", f"{len(conn.got)} bytes, more than sent")
                    return
                self._close(conn)
                if conn.got != conn.expect:
                    self.outcome.failed("truncated", f"{len(conn.got)} of {len(conn.expect)} bytes")
                else:
                    assert conn.first is not None
                    self.outcome.done.append((conn.start, conn.first - conn.start))
        except ConnectionResetError as e:
            self._close(conn)
            self.outcome.failed("reset", str(e))
        except BrokenPipeError as e:
            self._close(conn)
            self.outcome.failed("reset", str(e))
        except OSError as e:
            self._close(conn)
            self.outcome.failed("other", str(e))

    def run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic()
        while True:
            now = time.monotonic()
            if self._stop_at is None:
                while due <= now:
                    self._open(due)
                    due += interval
            elif not self._live:
                return
            for key, mask in self._selector.select(max(0.0, due - time.monotonic())):
                self._event(key.data, mask, time.monotonic())
            now = time.monotonic()
            for conn in [c for c in self._live.values() if now - c.start > self.timeout]:
                self._close(conn)
                self.outcome.failed("truncated", f"no end after {self.timeout} s ({len(conn.got)} bytes)")


def pauses(outcome: Outcome, windows: List[Tuple[float, float]]) -> Dict[str, object]:
    """Baseline (median latency outside the windows) and, per window, the worst latency minus it."""
    inside: List[List[float]] = [[] for _ in windows]
    outside: List[float] = []
    for start, latency in outcome.done:
        for n, (a, b) in enumerate(windows):
            if a <= start <= b + 0.1:
                inside[n].append(latency)
                break
        else:
            outside.append(latency)
    baseline = statistics.median(outside) if outside else 0.0
    worst = sorted(max(lat) - baseline for lat in inside if lat)
    ms = [w * 1000 for w in worst]
    return {"baseline_ms": round(baseline * 1000, 3), "upgrades": len(windows), "measured": len(ms),
            "latency_ms": distribution([lat * 1000 for _, lat in outcome.done]),
            "worst_minus_baseline_ms": distribution(ms),
            "connections": len(outcome.done), "refused": outcome.refused, "reset": outcome.reset,
            "truncated": outcome.truncated, "other": outcome.other, "examples": outcome.examples}


def distribution(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 2)

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(ordered[-1], 2)}


def _upgrade_under(server: Server, upgrades: int, gap: float, between: Optional[object] = None
                   ) -> List[Tuple[float, float]]:
    windows: List[Tuple[float, float]] = []
    if upgrades == 0:  # the control: the same load for *gap* seconds, no upgrade
        time.sleep(gap)
    for n in range(upgrades):
        windows.append(server.upgrade())
        if between is not None:
            between(n)  # type: ignore[operator]
        time.sleep(gap)
        if (n + 1) % 25 == 0:
            print(f"  {n + 1} upgrades, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return windows


def run_pause(upgrades: int, rate: float, gap: float, backlog: int) -> Dict[str, object]:
    build_handler()
    raise_fd_limit()
    workdir = tempfile.mkdtemp(prefix="s6up", dir="/tmp")
    path = os.path.join(workdir, "s")
    server = Server([S6IPC, "ipcserver", "-1", "-b", str(backlog), "-c", "1000", "-C", "1000", path, HANDLER],
                    "ipcserverd")
    probe = OpenLoop(socket.AF_UNIX, path, rate, b"", LINE)
    try:
        probe.start()
        time.sleep(1.0)  # a baseline before the first upgrade
        windows = _upgrade_under(server, upgrades, gap)
        time.sleep(0.5)
        outcome = probe.stop()
        log = server.text()
    finally:
        server.stop()
    result = pauses(outcome, windows)
    worst = result["worst_minus_baseline_ms"].get("max", 0) + result["baseline_ms"]  # type: ignore[attr-defined]
    result.update(reported_pause_ms=distribution(server.reported_pauses),
                  reported_exec_ms=distribution(server.reported_starts),
                  rate=rate, backlog=backlog, load_average=os.getloadavg()[0],
                  no_refusal_rate_per_s=round(backlog / (worst / 1000)) if worst else None,
                  warnings=[ln for ln in log.splitlines() if "warning" in ln or "fatal" in ln][:5])
    return result


def run_soak(family: str, upgrades: int, rate: float, long_lived: int, gap: float) -> Dict[str, object]:
    raise_fd_limit()
    workdir = tempfile.mkdtemp(prefix="s6soak", dir="/tmp")
    if family == "unix":
        path = os.path.join(workdir, "s")
        server = Server([S6IPC, "ipcserver", "-1", "-c", "1000", "-C", "1000", path, CAT], "ipcserverd")
        fam, address = socket.AF_UNIX, path
    else:
        server = Server([S6IPC, "tcpserver", "-1", "-c", "1000", "-C", "1000", "127.0.0.1", "0", CAT],
                        "tcpserver4d")
        fam, address = socket.AF_INET, ("127.0.0.1", int(server.ready_line))
    payload = os.urandom(64)
    load = OpenLoop(fam, address, rate, payload, payload)
    held: List[socket.socket] = []
    broken: List[str] = []

    def echo_all(n: int) -> None:
        for i, s in enumerate(held):
            line = f"{n}-{i}\n".encode()
            try:
                s.sendall(line)
                got = b""
                while not got.endswith(b"\n"):
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    got += chunk
            except OSError as e:
                got = str(e).encode()
            if got != line and len(broken) < 10:
                broken.append(f"long-lived {i} after upgrade {n}: {got[:40]!r}")

    try:
        for _ in range(long_lived):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(address)
            held.append(s)
        echo_all(-1)
        load.start()
        time.sleep(1.0)
        started = time.monotonic()
        windows = _upgrade_under(server, upgrades, gap, echo_all)
        took = time.monotonic() - started
        time.sleep(0.5)
        outcome = load.stop()
        for s in held:
            s.shutdown(socket.SHUT_WR)
            if s.recv(100) != b"":
                broken.append("a long-lived connection did not end cleanly")
            s.close()
        document = liveview.query(server.pid, server.kind, timeout=30)
        log = server.text()
    finally:
        server.stop()
    result = pauses(outcome, windows)
    result.update(reported_pause_ms=distribution(server.reported_pauses),
                  reported_exec_ms=distribution(server.reported_starts), family=family, rate=rate,
                  long_lived=long_lived, long_lived_broken=broken,
                  seconds=round(took, 1), generation=document["generation"],
                  # every connection the clients made, counted once by the daemon across 1000 images
                  # and their stand-ins: the load's and the long-lived ones
                  accepted=document["counters"]["accepted"], spawned=document["counters"]["spawned"],
                  made=len(outcome.done) + long_lived,
                  pid_kept=document["pid"] == server.pid,
                  load_average=os.getloadavg()[0],
                  warnings=[ln for ln in log.splitlines() if "warning" in ln or "fatal" in ln][:5])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pause")
    p.add_argument("--upgrades", type=int, default=100)
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--gap", type=float, default=0.3)
    p.add_argument("--backlog", type=int, default=4096)
    s = sub.add_parser("soak")
    s.add_argument("--family", choices=["unix", "tcp"], default="unix")
    s.add_argument("--upgrades", type=int, default=1000)
    s.add_argument("--rate", type=float, default=1000)
    s.add_argument("--long", type=int, default=50)
    s.add_argument("--gap", type=float, default=0.05)
    args = parser.parse_args()
    print(f"load average at start {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if args.what == "pause":
        result = run_pause(args.upgrades, args.rate, args.gap, args.backlog)
    else:
        result = run_soak(args.family, args.upgrades, args.rate, args.long, args.gap)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
