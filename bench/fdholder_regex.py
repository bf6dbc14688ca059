"""Worst-case retrieve latency of the fd holder for rights regexes that make a backtracking
matcher explode, at 255-byte identifiers: ours (s6ipc fdholder-daemon) against Debian's
s6-fdholder-daemon (glibc's regexec), same rules, same client, same run.

For each pattern, a client sends retrieve requests whose id is the pattern's worst case (255
bytes that almost match) and times each reply (the daemon answers "permission denied" after
running the regex); meanwhile a second client's list requests are timed too, to show whether
the other clients of the holder are affected. Prints a markdown table.

Usage: bench/fdholder_regex.py [--requests N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

S6IPC = os.path.join(os.path.dirname(sys.executable), "s6ipc")
DAEMONS = {"s6ipc": [S6IPC, "fdholder-daemon"], "s6": ["/usr/bin/s6-fdholder-daemon"]}
# pattern -> the 255-byte identifier that makes a backtracking matcher try every split
CASES: List[Tuple[bytes, bytes]] = [
    (b"^([a-z0-9]+-?)+$", b"a" * 254 + b"!"),
    (b"^(a+)+$", b"a" * 254 + b"!"),
    (b"^(a|aa)+$", b"a" * 254 + b"!"),
    (b"(x+x+)+y", b"x" * 255),
    (b"^([a-z]+\\.?)+[A-Z]$", b"a" * 254 + b"."),
]


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + b"\0\0" + payload  # length, no descriptors


def retrieve(ident: bytes) -> bytes:
    return b"R\0" + bytes([len(ident)]) + ident + b"\0"


def ask(sock: socket.socket, payload: bytes) -> float:
    started = time.perf_counter()
    sock.sendall(frame(payload))
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            raise RuntimeError("daemon closed the connection")
        header += chunk
    size = int.from_bytes(header[:4], "big")
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return time.perf_counter() - started


def start(argv: List[str], rules: str, path: str) -> subprocess.Popen[bytes]:
    r, w = os.pipe()
    proc = subprocess.Popen([*argv, "-1", "-i", rules, path], stdout=w, stdin=subprocess.DEVNULL)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    return proc


def measure(path: str, ident: bytes, requests: int) -> Dict[str, float]:
    worst = socket.socket(socket.AF_UNIX)
    worst.connect(path)
    other = socket.socket(socket.AF_UNIX)
    other.connect(path)
    other_times: List[float] = []
    done = threading.Event()

    def lists() -> None:
        while not done.is_set():
            other_times.append(ask(other, b"L"))
            time.sleep(0.002)

    ask(worst, retrieve(ident))  # warm-up (ours builds the DFA states on first use)
    t = threading.Thread(target=lists)
    t.start()
    times = [ask(worst, retrieve(ident)) for _ in range(requests)]
    done.set()
    t.join()
    worst.close()
    other.close()
    return {"p50": statistics.median(times), "p99": quantile(times, 0.99),
            "other_p99": quantile(other_times, 0.99) if other_times else 0.0}


def quantile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="s6b", dir="/tmp")
    rows = []
    try:
        for pattern, ident in CASES:
            rules = os.path.join(base, "rules")
            shutil.rmtree(rules, ignore_errors=True)
            env = os.path.join(rules, "uid", str(os.getuid()), "env")
            os.makedirs(env)
            open(os.path.join(rules, "uid", str(os.getuid()), "allow"), "w").close()
            with open(os.path.join(env, "S6_FDHOLDER_RETRIEVE_REGEX"), "wb") as f:
                f.write(pattern + b"\n")
            with open(os.path.join(env, "S6_FDHOLDER_LIST"), "wb") as f:
                f.write(b"\n")
            result = {}
            for name, argv in DAEMONS.items():
                path = os.path.join(base, name + ".sock")
                proc = start(argv, rules, path)
                try:
                    result[name] = measure(path, ident, args.requests)
                finally:
                    proc.terminate()
                    proc.wait()
            ours, theirs = result["s6ipc"], result["s6"]
            shown = pattern.decode().replace("|", "\\|")
            rows.append(f"| `{shown}` | {ours['p50'] * 1e6:.0f} µs / {ours['p99'] * 1e6:.0f} µs "
                        f"| {theirs['p50'] * 1e6:.0f} µs / {theirs['p99'] * 1e6:.0f} µs "
                        f"| {ours['p50'] / theirs['p50']:.1f}× "
                        f"| {ours['other_p99'] * 1e6:.0f} µs / {theirs['other_p99'] * 1e6:.0f} µs |")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("| rights regex (id: its 255-byte worst case) | s6ipc p50 / p99 | s6 p50 / p99 | ratio p50 "
          "| other client's list p99, s6ipc / s6 |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
