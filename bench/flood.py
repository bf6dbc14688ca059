"""`bench/flood.py`: issue 21's proof — a connection flood against the admission limits (``-A``),
beside the same servers without a limit and s6's C server, in the same run.

Each case starts one server chain, then:

1. **baseline**: a polite client alone, 20 connections a second for S seconds (10 by default);
2. **flood**: the same polite client while a flooder makes 5 000 connection attempts a second for
   the same S seconds — TCP: the flooder from 127.0.0.2, the polite client from 127.0.0.1; Unix
   socket: the flooder runs as nobody (uid 65534), the polite client as root.

Both clients are bench/flood.c (compiled here; open loop: attempts are paced and never skipped, a
late thread goes at once). Reported per case: the polite client's served share and p50/p99
latency (connect to EOF) without and with the flood, and their ratio; what the flood got (served =
a handler ran, closed = closed at once without one; allowed = burst + rate x duration); the
daemon's own CPU over the flood window (utime+stime from /proc/PID/stat, in cores); and the refusal
lines the log got about the flooder (per second of flood).

Cases: ``tcp-limit`` (``tcpserver -A rate=50/s,burst=50``), ``tcp-open`` (the same without ``-A``),
``unix-limit`` (``ipcserver -A rate=50/s,burst=50``), ``unix-open``, ``unix-s6`` (Debian's
``s6-ipcserver``, which has no rate limit: its closest knob, ``-C``, limits concurrency, not rate).
s6-networking (``s6-tcpserver``) is not packaged for this Debian, so there is no C TCP case.

Usage: bench/flood.py [--seconds S] [--flood-rate R] [--polite-rate R] [--rounds N] [--case NAME…]
Needs root (the Unix cases run the flooder as nobody).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import BUILD, HANDLER, REPLY_BYTES, S6IPC, Daemon, build, machine_line  # noqa: E402

FLOOD = os.path.join(BUILD, "flood")
LIMIT = "rate=50/s,burst=50"
RATE, BURST = 50.0, 50
NOBODY = 65534


def build_flood() -> None:
    build()
    src = os.path.join(HERE, "flood.c")
    if not os.path.exists(FLOOD) or os.path.getmtime(FLOOD) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-pthread", "-o", FLOOD, src], check=True)


def log_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def client(argv: List[str], as_nobody: bool) -> subprocess.Popen[bytes]:
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_nobody else []
    return subprocess.Popen(prefix + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def outcome(proc: subprocess.Popen[bytes]) -> Dict[str, float]:
    out, err = proc.communicate(timeout=120)
    words = out.decode().split()
    if proc.returncode != 0 or len(words) % 2:
        raise SystemExit(f"flood: fatal: client failed: {err.decode().strip() or out.decode()}")
    return {words[i]: float(words[i + 1]) for i in range(0, len(words), 2)}


class Case:
    """How to start one server and reach it: *tcp* or a Unix socket in *workdir*."""

    def __init__(self, name: str, tcp: bool, argv: List[str], flooder_line: Optional[str]) -> None:
        self.name, self.tcp, self.argv, self.flooder_line = name, tcp, argv, flooder_line


def cases(workdir: str) -> Dict[str, Case]:
    sock = os.path.join(workdir, "s")
    tcp = [S6IPC, "tcpserver", "-1"]
    return {
        "tcp-limit": Case("tcp-limit", True, tcp + ["-A", LIMIT, "127.0.0.1", "0", HANDLER],
                          "deny ip 127.0.0.2 "),
        "tcp-open": Case("tcp-open", True, tcp + ["127.0.0.1", "0", HANDLER], None),
        "unix-limit": Case("unix-limit", False, [S6IPC, "ipcserver", "-1", "-A", LIMIT, sock, HANDLER],
                           f"deny uid {NOBODY} "),
        "unix-open": Case("unix-open", False, [S6IPC, "ipcserver", "-1", sock, HANDLER], None),
        "unix-s6": Case("unix-s6", False, ["/usr/bin/s6-ipcserver", "-1", sock, HANDLER], None),
    }


def run_case(case: Case, workdir: str, flood_bin: str, seconds: float, flood_rate: float,
             polite_rate: float) -> Dict[str, object]:
    sock = os.path.join(workdir, "s")
    if os.path.exists(sock):
        os.unlink(sock)
    log = os.path.join(workdir, f"{case.name}.log")
    server = Daemon(case.argv, None if case.tcp else sock, log=log)
    try:
        if case.tcp:
            port = server.address.rsplit(":", 1)[1]
            polite = [flood_bin, "tcp", port, "127.0.0.1"]
            flooder = [flood_bin, "tcp", port, "127.0.0.2"]
        else:
            polite = flooder = [flood_bin, "unix", sock, "-"]
        tail = [str(seconds), "2", str(REPLY_BYTES)]
        outcome(client(polite + [str(polite_rate), "1", "1", str(REPLY_BYTES)], False))  # warm-up
        baseline = outcome(client(polite + [str(polite_rate)] + tail, False))
        time.sleep(1.5)  # the baseline's handlers gone, the warm-up's lines out
        cpu0, lines0, t0 = server.cpu()[0], log_text(log).count("\n"), time.monotonic()
        flood = client(flooder + [str(flood_rate), str(seconds), "8", str(REPLY_BYTES)], not case.tcp)
        during = outcome(client(polite + [str(polite_rate)] + tail, False))
        flooded = outcome(flood)
        elapsed = time.monotonic() - t0
        cpu = (server.cpu()[0] - cpu0) / elapsed
        time.sleep(1.5)  # the last aggregated line
        new_lines = log_text(log).splitlines()[lines0:]
        flooder_lines = sum(1 for line in new_lines if case.flooder_line and case.flooder_line in line)
        return {
            "baseline": baseline, "during": during, "flood": flooded, "elapsed": elapsed, "cpu": cpu,
            "flooder_lines": flooder_lines, "log_lines": len(new_lines),
            "allowed": BURST + RATE * elapsed if case.flooder_line else None,
        }
    finally:
        server.stop()


def report(name: str, r: Dict[str, object], polite_rate: float, seconds: float) -> List[str]:
    b, d, f = r["baseline"], r["during"], r["flood"]
    assert isinstance(b, dict) and isinstance(d, dict) and isinstance(f, dict)
    want = polite_rate * seconds
    ratio = d["p99_us"] / b["p99_us"] if b["p99_us"] else float("nan")
    allowed = r["allowed"]
    pad = " " * len(name)
    lines = [
        f"{name}: polite served {d['served'] / want:.1%} (baseline {b['served'] / want:.1%}), "
        f"p50 {b['p50_us'] / 1000:.2f} -> {d['p50_us'] / 1000:.2f} ms, "
        f"p99 {b['p99_us'] / 1000:.2f} -> {d['p99_us'] / 1000:.2f} ms (x{ratio:.2f})",
        f"{pad}  flood: {f['attempts']:.0f} attempts in {r['elapsed']:.1f} s, served {f['served']:.0f}"
        + (f" (allowed {allowed:.0f})" if allowed is not None else "")
        + f", closed at once {f['closed']:.0f}, short {f['short']:.0f}, errors {f['errors']:.0f}, "
        f"lag {f['lag_ms']:.0f} ms",
        f"{pad}  daemon CPU {r['cpu']:.2f} cores; log: {r['flooder_lines']} lines about the flooder "
        f"over {r['elapsed']:.1f} s of flood, {r['log_lines']} lines in all",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flood-rate", type=float, default=5000.0)
    parser.add_argument("--polite-rate", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--case", nargs="*", default=list(cases("")))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("flood: fatal: run as root (the Unix cases run the flooder as nobody)")
    build_flood()
    print(machine_line())
    workdir = tempfile.mkdtemp(prefix="s6flood", dir="/tmp")
    os.chmod(workdir, 0o755)
    try:
        flood_bin = os.path.join(workdir, "flood")  # where nobody can run it
        shutil.copy(FLOOD, flood_bin)
        known = cases(workdir)
        for n in range(args.rounds):
            print(f"-- round {n + 1} (load average {os.getloadavg()[0]:.2f})")
            for name in args.case:
                result = run_case(known[name], workdir, flood_bin, args.seconds, args.flood_rate,
                                  args.polite_rate)
                print("\n".join(report(name, result, args.polite_rate, args.seconds)), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
