"""`make bench`: s6ipc against Debian's s6 C programs, same handler, same load, same run.

For each case (plain chain; access control) the servers run side by side — ours spelled
``s6ipc NAME``, s6's C chain, and in the access case also s6's unchanged command line
(``s6-ipcserver … s6-ipcserver-access …``) run through ``s6ipc links`` with the link directory first
in PATH; a C closed-loop client (loadgen.c) drives one then the other, alternating the order every
round, and we report conn/s, p50/p99 latency, idle single-connection latency, the CPU each side
spends per connection (daemon, its children, the client), exec→ready time of the whole chain
(until the ``-1`` newline) and the daemon's idle RSS before and after 100 000 connections.

Usage: bench/run.py [--rounds N] [--seconds S] [--concurrency C] [--case plain|access|all] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "access_rules"))
from make_rules import make_rules  # noqa: E402  (bench/access_rules/make_rules.py)

BUILD = os.path.join(HERE, "build")
S6IPC = os.path.join(os.path.dirname(sys.executable), "s6ipc")
HANDLER = os.path.join(BUILD, "handler")
LOADGEN = os.path.join(BUILD, "loadgen")
REPLY_BYTES = len(b"hello from the handler\n")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build() -> None:
    os.makedirs(BUILD, exist_ok=True)
    for out, src, flags in ((HANDLER, "handler.c", ["-static"]), (LOADGEN, "loadgen.c", ["-pthread"])):
        src_path = os.path.join(HERE, src)
        if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src_path):
            subprocess.run(["gcc", "-O2", *flags, "-o", out, src_path], check=True)


def machine_line() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    s6 = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "s6"], capture_output=True, text=True).stdout
    return (
        f"{os.cpu_count()} x {cpu}; Linux {platform.release()}; Python {platform.python_version()}; "
        f"s6 {s6 or '?'}; load average at start {os.getloadavg()[0]:.2f}"
    )


class Daemon:
    """A server chain started with -1; its pid is the accept daemon (same PID through the chain)."""

    def __init__(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        r, w = os.pipe()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.DEVNULL, env=env
        )
        os.close(w)
        data = b""
        while b"\n" not in data:
            chunk = os.read(r, 16)
            if not chunk:
                raise SystemExit(f"bench: fatal: {argv[0]} exited before readiness")
            data += chunk
        self.ready_after = time.perf_counter() - self.started
        os.close(r)

    def cpu(self) -> Tuple[float, float]:
        """(own CPU seconds, reaped children's CPU seconds)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / CLK_TCK
        children = (int(fields[13]) + int(fields[14])) / CLK_TCK
        return own, children

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(path: str, concurrency: int, seconds: float) -> Dict[str, float]:
    before = os.times()
    out = subprocess.run(
        [LOADGEN, path, str(concurrency), str(seconds), str(REPLY_BYTES)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    after = os.times()
    result = {out[i]: float(out[i + 1]) for i in range(0, len(out), 2)}
    result["client_cpu"] = (
        after.children_user + after.children_system - before.children_user - before.children_system
    )
    return result


#: The directory of ``s6ipc links`` (set by main) and the environment of the servers using it.
LINKS = os.path.join(BUILD, "links")
LINKS_ENV = {"PATH": f"{LINKS}:/usr/bin:/bin"}


def chains(case: str, sock: Dict[str, str], rules: Optional[str]) -> Dict[str, List[str]]:
    """The command line of each server of *case*, by column name (sockets from *sock*, same keys)."""
    if case == "plain":
        return {
            "s6ipc": [S6IPC, "ipcserver", "-1", "-c", "1000", sock["s6ipc"], HANDLER],
            "s6": ["/usr/bin/s6-ipcserver", "-1", "-c", "1000", sock["s6"], HANDLER],
        }
    assert rules is not None
    access = ["-v0", "-i", rules, HANDLER]
    return {
        "s6ipc": [S6IPC, "ipcserver", "-1", "-c", "1000", sock["s6ipc"], S6IPC, "ipcserver-access", *access],
        "links": ["s6-ipcserver", "-1", "-c", "1000", sock["links"], "s6-ipcserver-access", *access],
        "s6": ["/usr/bin/s6-ipcserver", "-1", "-c", "1000", sock["s6"], "/usr/bin/s6-ipcserver-access",
               *access],
    }


def start_server(name: str, argv: Sequence[str]) -> Daemon:
    """A server; the ``links`` one runs with the link directory first in PATH."""
    return Daemon(argv, LINKS_ENV if name == "links" else None)


def run_case(
    case: str, rounds: int, seconds: float, concurrency: int, workdir: str
) -> Dict[str, Dict[str, float]]:
    socks = {name: os.path.join(workdir, f"{case}-{name}") for name in ("s6ipc", "links", "s6")}
    rules = make_rules(os.path.join(workdir, case, "rules")) if case == "access" else None
    argvs = chains(case, socks, rules)
    daemons = {name: start_server(name, argv) for name, argv in argvs.items()}
    try:
        for name in daemons:
            load(socks[name], concurrency, 0.5)
        samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in daemons}
        order = list(daemons)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                own0, kids0 = daemons[name].cpu()
                result = load(socks[name], concurrency, seconds)
                own1, kids1 = daemons[name].cpu()
                conns = max(result["conns"], 1)
                result["conn_s"] = result["conns"] / seconds
                result["daemon_us"] = (own1 - own0) / conns * 1e6
                result["children_us"] = (kids1 - kids0) / conns * 1e6
                result["client_us"] = result["client_cpu"] / conns * 1e6
                samples[name].append(result)
        summary: Dict[str, Dict[str, float]] = {}
        for name, runs in samples.items():
            idle = load(socks[name], 1, seconds)
            summary[name] = {
                "conn_s": statistics.median(x["conn_s"] for x in runs),
                "p50_us": statistics.median(x["p50_us"] for x in runs),
                "p99_us": statistics.median(x["p99_us"] for x in runs),
                "failures": sum(x["errors"] + x["refused"] + x["short"] for x in runs),
                "idle_p50_us": idle["p50_us"],
                "daemon_us": statistics.median(x["daemon_us"] for x in runs),
                "children_us": statistics.median(x["children_us"] for x in runs),
                "client_us": statistics.median(x["client_us"] for x in runs),
            }
        return summary
    finally:
        for d in daemons.values():
            d.stop()


def ready_times(workdir: str, repeats: int = 10) -> Dict[str, float]:
    result = {}
    for name in ("s6ipc", "links", "s6"):
        times = []
        for i in range(repeats):
            sock = os.path.join(workdir, f"ready-{name}-{i}")
            if name == "links":  # s6's plain chain, stage by stage, on the links
                argv = ["s6-ipcserver-socketbinder", sock, "s6-ipcserverd", "-1", "-c", "1000", HANDLER]
            else:
                argv = chains("plain", {"s6ipc": sock, "s6": sock}, None)[name]
            d = start_server(name, argv)
            times.append(d.ready_after * 1000)
            d.stop()
        result[name] = statistics.median(times)
    return result


def rss_growth(workdir: str, total: int, concurrency: int) -> Dict[str, Tuple[int, int, int]]:
    """(idle RSS kB at start, after `total` connections, connections made) for each daemon."""
    result = {}
    for name in ("s6ipc", "s6"):
        sock = os.path.join(workdir, f"rss-{name}")
        d = Daemon(chains("plain", {"s6ipc": sock, "s6": sock}, None)[name])
        try:
            time.sleep(0.2)
            start = d.rss_kb()
            made = 0
            while made < total:
                made += int(load(sock, concurrency, 2.0)["conns"])
            time.sleep(0.2)
            result[name] = (start, d.rss_kb(), made)
        finally:
            d.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--case", choices=["plain", "access", "all"], default="all")
    parser.add_argument("--rss-connections", type=int, default=100_000)
    parser.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    args = parser.parse_args()
    if not os.access("/usr/bin/s6-ipcserver", os.X_OK):
        print("bench: fatal: Debian's s6 is not installed (apt-get install s6 execline)", file=sys.stderr)
        return 111
    build()
    subprocess.run([S6IPC, "links", LINKS], check=True)
    cases = ["plain", "access"] if args.case == "all" else [args.case]
    report: Dict[str, object] = {
        "machine": machine_line(),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
    }
    print(f"machine: {report['machine']}")
    workdir = tempfile.mkdtemp(prefix="s6bench", dir="/tmp")
    try:
        for case in cases:
            summary = run_case(case, args.rounds, args.seconds, args.concurrency, workdir)
            report[case] = summary
            names = list(summary)
            ours = [n for n in names if n != "s6"]
            print(
                f"\n## {case}: {args.rounds} alternating rounds of {args.seconds}s, "
                f"{args.concurrency} closed-loop clients"
            )
            print(f"{'':22}" + "".join(f"{n:>12}" for n in names) + "".join(f"{n + '/s6':>12}" for n in ours))
            for key, label in (
                ("conn_s", "conn/s"),
                ("p50_us", "p50 latency us"),
                ("p99_us", "p99 latency us"),
                ("idle_p50_us", "idle 1-conn p50 us"),
                ("daemon_us", "daemon CPU us/conn"),
                ("children_us", "children CPU us/conn"),
                ("client_us", "client CPU us/conn"),
                ("failures", "failed connections"),
            ):
                theirs = summary["s6"][key]
                ratios = [summary[n][key] / theirs if theirs else float("nan") for n in ours]
                print(f"{label:22}" + "".join(f"{summary[n][key]:12.1f}" for n in names)
                      + "".join(f"{r:12.2f}" for r in ratios))
        ready = ready_times(workdir)
        report["ready_ms"] = ready
        print(
            f"\nexec -> ready (-1 newline), median of 10: s6ipc {ready['s6ipc']:.1f} ms, "
            f"socketbinder -> ipcserverd on links {ready['links']:.1f} ms, s6 {ready['s6']:.1f} ms"
        )
        if args.rss_connections:
            rss = rss_growth(workdir, args.rss_connections, args.concurrency)
            report["rss_kb"] = rss
            for name, (start, end, made) in rss.items():
                print(f"idle RSS {name}: {start} kB at start, {end} kB after {made} connections")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
