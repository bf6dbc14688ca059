"""`make bench`: s6ipc against Debian's s6 C programs, same handler, same load, same run.

For each case (plain chain; access control once ipcserver-access exists) both servers run side by
side; a C closed-loop client (loadgen.c) drives one then the other, alternating the order every
round, and we report conn/s, p50/p99 latency, idle single-connection latency, the CPU each side
spends per connection (daemon, its children, the client), exec→ready time of the whole chain
(until the ``-1`` newline) and the daemon's idle RSS before and after 100 000 connections.

The TCP cases (loopback, 127.0.0.1) put our tcpserver chain against djb's C ``tcpserver``
(Debian's ucspi-tcp, ``-H -R -l 0``: no DNS or ident, as ours) and, in ``tcp``, against
``systemd-socket-activate --accept --inetd`` (systemd's Accept=yes fork-per-connection); in
``tcp-access`` both check a rules CDB (ours: ``tcpserver-access -H -R -x`` in-process; djb:
``tcpserver -x`` from tcprules), with the same allow rule for 127.0.0.1 setting one variable.

With ``--old-rev REV`` (476f459 by default: main before issue 17's restructuring; ``''`` for none)
the load cases also run our chain from that revision's code, beside this tree's and the C server, in
the same alternating rounds (column ``s6ipc@REV``): the tables give now / C, old / C and now / old,
and the conn/s ratios round by round, whose spread is the run's noise.

The start-up case (``--case startup``, part of ``all``) times, in alternating rounds,
a bare ``python3 -I -c pass`` of the venv's interpreter (exec to exit), our in-process chain
``s6ipc ipcserver -1 S handler`` (exec to the ``-1`` newline) and its idle RSS, and the same chain
on an older revision of the code (``--old-rev``, 476f459 by default: the tree the start-up
regression of issue 17 was measured on), run by the same console script with ``PYTHONPATH``
pointing at ``git archive REV src`` unpacked under bench/build/ — so before and after are
measured in the same run, under the same load. Each chain runs with ``PYTHONPATH`` set, to a
``src`` directory, so both pay the same path search. Beside the wall-clock times it reports the
CPU time each start used (the bare interpreter's from ``wait4``, the daemon's from
``/proc/PID/schedstat`` at its readiness line: both the kernel's ``sum_exec_runtime``), which
other work on the machine disturbs much less than the wall clock.

``--case scrape`` (not part of ``all``: s6 exports no metrics) measures what ``s6ipc metrics``
costs: per daemon (client and daemon CPU), one whole HTTP scrape, and conn/s with a 1 Hz scraper
against without (:func:`scrape_cost`).

``--case upgrade-pause`` (not part of ``all``: s6 has no in-place upgrade to compare with) probes
ipcserverd at 1 kHz through ``--upgrades`` in-place upgrades: bench/upgrades.py ``pause``, whose
docstring says what is measured; bench/upgrades.py ``soak`` is the long run.

Usage: bench/run.py [--rounds N] [--seconds S] [--concurrency C]
                    [--case plain|access|tcp|tcp-access|ipc|startup|all|upgrade-pause|scrape] [--old-rev REV]
                    [--startup-repeats N] [--upgrades N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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
    """A server chain started with -1; its pid is the accept daemon (same PID through the chain).

    *address* is where loadgen connects: a socket path, or None for a TCP server on 127.0.0.1
    whose ``-1`` line is its port (``tcp:127.0.0.1:PORT``). With *port*, the server has no
    readiness line (systemd-socket-activate): it is ready once 127.0.0.1:PORT accepts.
    """

    def __init__(self, argv: Sequence[str], address: Optional[str] = None, port: int = 0,
                 env: Optional[Dict[str, str]] = None, log: Optional[str] = None) -> None:
        r, w = os.pipe()
        self.started = time.perf_counter()
        with open(log or os.devnull, "wb") as stderr:  # *log*: a file for its stderr
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=w, stderr=stderr,
                                         env=env)
        os.close(w)
        if port:
            os.close(r)
            _wait_connectable(port, argv[0])
            self.address = f"tcp:127.0.0.1:{port}"
            self.ready_after = time.perf_counter() - self.started
            return
        data = b""
        while b"\n" not in data:
            chunk = os.read(r, 16)
            if not chunk:
                raise SystemExit(f"bench: fatal: {argv[0]} exited before readiness")
            data += chunk
        self.ready_after = time.perf_counter() - self.started
        os.close(r)
        self.address = address if address is not None else f"tcp:127.0.0.1:{int(data)}"

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


def _wait_connectable(port: int, name: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(64)  # served: a reply, then EOF
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: fatal: {name} does not accept on 127.0.0.1:{port}") from None
            time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def tcp_rules(directory: str) -> Tuple[str, str]:
    """(our rules CDB, djb's tcprules CDB): 127.0.0.1 allowed with GREETING=hello, 200 other
    networks denied, everyone else denied — the same decisions in both formats."""
    base = os.path.join(directory, "tcp-rules")
    allow = os.path.join(base, "ip4", "127.0.0.1_32")
    os.makedirs(os.path.join(allow, "env"))
    open(os.path.join(allow, "allow"), "w").close()
    with open(os.path.join(allow, "env", "GREETING"), "w") as f:
        f.write("hello\n")
    text = ['127.0.0.1:allow,GREETING="hello"']
    for i in range(200):
        os.makedirs(os.path.join(base, "ip4", f"10.{i}.0.0_16"))
        open(os.path.join(base, "ip4", f"10.{i}.0.0_16", "deny"), "w").close()
        text.append(f"10.{i}.:deny")
    os.makedirs(os.path.join(base, "ip4", "0.0.0.0_0"))
    open(os.path.join(base, "ip4", "0.0.0.0_0", "deny"), "w").close()
    text.append(":deny")
    ours = os.path.join(directory, "tcp-rules.cdb")
    subprocess.run([S6IPC, "accessrules-cdb-from-fs", ours, base], check=True)
    djb = os.path.join(directory, "tcp-rules-djb.cdb")
    subprocess.run(["tcprules", djb, djb + ".tmp"], input="\n".join(text) + "\n", text=True, check=True,
                   stdout=subprocess.DEVNULL)
    return ours, djb


UCSPI_TCPSERVER = "/usr/bin/tcpserver"
SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"


#: The directory of ``s6ipc links`` (made by main) and the environment of the servers using it.
LINKS = os.path.join(BUILD, "links")
LINKS_ENV = {"PATH": f"{LINKS}:/usr/bin:/bin"}


#: The C server each case is measured against (the "C" of the ratios).
REFERENCE = {"plain": "s6", "access": "s6", "tcp": "ucspi-tcp", "tcp-access": "ucspi-tcp"}


def old_name(rev: str) -> str:
    """The column of our chain run from revision *rev*'s code."""
    return f"s6ipc@{rev}"


def servers(case: str, workdir: str, old: Optional[Tuple[str, str]] = None) -> Dict[str, Daemon]:
    """The servers of *case*, started; the first one is ours. The access case also runs s6's
    unchanged command line (``s6-ipcserver … s6-ipcserver-access …``) on ``s6ipc links``.

    With *old* = (revision, its ``src``), our chain also runs a second time, with the same command
    line and console script but ``PYTHONPATH`` at that revision's code (column ``s6ipc@REV``); ours
    then runs with ``PYTHONPATH`` at this tree's ``src``, so both pay the same path search."""
    ours = [dict(os.environ, PYTHONPATH=NEW_SRC)] if old else [None]
    names = ["s6ipc"]
    if old:
        ours.append(dict(os.environ, PYTHONPATH=old[1]))
        names.append(old_name(old[0]))
    started: Dict[str, Daemon] = {}
    if case in ("plain", "access"):
        rules = make_rules(os.path.join(workdir, case, "rules")) if case == "access" else None
        for i, (name, env) in enumerate(zip(names, ours)):
            sock = os.path.join(workdir, f"{case}-ours{i}")
            started[name] = Daemon(chains(case, sock, sock, rules)["s6ipc"], sock, env=env)
        sock = os.path.join(workdir, f"{case}-s6")
        started["s6"] = Daemon(chains(case, sock, sock, rules)["s6"], sock)
        if rules is not None:
            sock = os.path.join(workdir, f"{case}-links")
            unchanged = ["s6-ipcserver", "-1", "-c", "1000", sock, "s6-ipcserver-access", "-v0",
                         "-i", rules, HANDLER]
            started["links"] = Daemon(unchanged, sock, env=LINKS_ENV)
        return started
    if case == "tcp":
        for name, env in zip(names, ours):
            started[name] = Daemon([S6IPC, "tcpserver", "-1", "-c", "1000", "127.0.0.1", "0", HANDLER],
                                   env=env)
        started["ucspi-tcp"] = Daemon([UCSPI_TCPSERVER, "-1", "-c", "1000", "-HRl0", "127.0.0.1", "0",
                                       HANDLER])
        if os.access(SOCKET_ACTIVATE, os.X_OK):
            port = free_port()
            started["systemd-accept"] = Daemon([SOCKET_ACTIVATE, "--accept", "--inetd", f"-l127.0.0.1:{port}",
                                                HANDLER], port=port)
        return started
    cdb, djb = tcp_rules(os.path.join(workdir, case))
    for name, env in zip(names, ours):
        started[name] = Daemon([S6IPC, "tcpserver", "-1", "-c", "1000", "127.0.0.1", "0", S6IPC,
                                "tcpserver-access", "-v0", "-H", "-R", "-x", cdb, HANDLER], env=env)
    started["ucspi-tcp"] = Daemon([UCSPI_TCPSERVER, "-1", "-c", "1000", "-HRl0", "-x", djb, "127.0.0.1", "0",
                                   HANDLER])
    return started


def chains(case: str, sock_ours: str, sock_s6: str, rules: Optional[str]) -> Dict[str, List[str]]:
    if case == "plain":
        return {
            "s6ipc": [S6IPC, "ipcserver", "-1", "-c", "1000", sock_ours, HANDLER],
            "s6": ["/usr/bin/s6-ipcserver", "-1", "-c", "1000", sock_s6, HANDLER],
        }
    assert rules is not None
    return {
        "s6ipc": [
            S6IPC,
            "ipcserver",
            "-1",
            "-c",
            "1000",
            sock_ours,
            S6IPC,
            "ipcserver-access",
            "-v0",
            "-i",
            rules,
            HANDLER,
        ],
        "s6": [
            "/usr/bin/s6-ipcserver",
            "-1",
            "-c",
            "1000",
            sock_s6,
            "/usr/bin/s6-ipcserver-access",
            "-v0",
            "-i",
            rules,
            HANDLER,
        ],
    }


def run_case(
    case: str, rounds: int, seconds: float, concurrency: int, workdir: str,
    old: Optional[Tuple[str, str]] = None,
) -> Tuple[Dict[str, Dict[str, float]], Dict[str, List[Dict[str, float]]]]:
    """(medians per server, every round's sample per server) of *case*; see servers() for *old*."""
    daemons = servers(case, workdir, old)
    try:
        for d in daemons.values():
            load(d.address, concurrency, 0.5)
        samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in daemons}
        order = list(daemons)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                own0, kids0 = daemons[name].cpu()
                result = load(daemons[name].address, concurrency, seconds)
                own1, kids1 = daemons[name].cpu()
                conns = max(result["conns"], 1)
                result["conn_s"] = result["conns"] / seconds
                result["daemon_us"] = (own1 - own0) / conns * 1e6
                result["children_us"] = (kids1 - kids0) / conns * 1e6
                result["client_us"] = result["client_cpu"] / conns * 1e6
                samples[name].append(result)
        summary: Dict[str, Dict[str, float]] = {}
        for name, runs in samples.items():
            idle = load(daemons[name].address, 1, seconds)
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
        return summary, samples
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
                argv = chains("plain", sock, sock, None)[name]
            d = Daemon(argv, sock, env=LINKS_ENV if name == "links" else None)
            times.append(d.ready_after * 1000)
            d.stop()
        result[name] = statistics.median(times)
    return result


REPO = os.path.dirname(HERE)
NEW_SRC = os.path.join(REPO, "src")


def old_tree(rev: str) -> Optional[str]:
    """``src`` of *rev* (``git archive`` of this checkout, unpacked once under bench/build/), or None
    with a warning when git cannot give it."""
    target = os.path.join(BUILD, f"old-{rev}")
    src = os.path.join(target, "src")
    if os.path.isdir(os.path.join(src, "s6ipc")):
        return src
    os.makedirs(target, exist_ok=True)
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "src"], capture_output=True)
    if archive.returncode != 0:
        print(f"bench: warning: cannot get revision {rev} from git: {archive.stderr.decode().strip()}",
              file=sys.stderr)
        return None
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return src


def startup(workdir: str, repeats: int, old_src: Optional[str]) -> Dict[str, Dict[str, float]]:
    """Median exec → exit of a bare interpreter, and exec → ``-1`` newline plus idle RSS (kB, after
    0.2 s) of the in-process chain ``s6ipc ipcserver -1 S handler`` for this tree ("new") and
    *old_src* ("old"), measured in alternating rounds. "new -m" is this tree started as
    ``python -m s6ipc``: without the console script pip writes, whose template imports ``re``
    before our code runs (pip's choice, not the package's: pypa/distlib#239)."""
    trees = {"new": NEW_SRC, "new -m": NEW_SRC}
    if old_src is not None:
        trees["old"] = old_src
    for src in set(trees.values()):  # as pip does at install (PYTHONDONTWRITEBYTECODE would leave none)
        subprocess.run([sys.executable, "-m", "compileall", "-q", src], check=True)
    bare: List[float] = []
    bare_cpu: List[float] = []
    ready: Dict[str, List[float]] = {name: [] for name in trees}
    cpu: Dict[str, List[float]] = {name: [] for name in trees}
    rss: Dict[str, List[float]] = {name: [] for name in trees}
    for i in range(repeats):
        started = time.perf_counter()
        pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-c", "pass"], os.environ)
        _, status, usage = os.wait4(pid, 0)
        bare.append((time.perf_counter() - started) * 1000)
        if status != 0:
            raise SystemExit(f"bench: fatal: {sys.executable} -I -c pass failed")
        bare_cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
        for name in trees if i % 2 == 0 else list(trees)[::-1]:
            sock = os.path.join(workdir, f"startup-{name.replace(' ', '')}-{i}")
            env = dict(os.environ, PYTHONPATH=trees[name])
            entry = [sys.executable, "-m", "s6ipc"] if name.endswith("-m") else [S6IPC]
            d = Daemon([*entry, "ipcserver", "-1", "-c", "1000", sock, HANDLER], sock, env=env)
            try:
                ready[name].append(d.ready_after * 1000)
                with open(f"/proc/{d.proc.pid}/schedstat") as f:
                    cpu[name].append(int(f.read().split()[0]) / 1e6)
                time.sleep(0.2)
                rss[name].append(d.rss_kb())
            finally:
                d.stop()
    result = {"bare python": {"ready_ms": statistics.median(bare), "cpu_ms": statistics.median(bare_cpu)}}
    for name in trees:
        result[name] = {"ready_ms": statistics.median(ready[name]), "rss_kb": statistics.median(rss[name]),
                        "cpu_ms": statistics.median(cpu[name])}
        result[name]["ratio"] = result[name]["ready_ms"] / result["bare python"]["ready_ms"]
        result[name]["cpu_ratio"] = result[name]["cpu_ms"] / result["bare python"]["cpu_ms"]
    return result


def print_startup(result: Dict[str, Dict[str, float]], repeats: int, old_rev: str) -> None:
    bare = result["bare python"]
    print(f"\n## start-up: median of {repeats} alternating rounds; load average now {os.getloadavg()[0]:.2f}")
    print(f"bare {sys.executable} -I -c pass: {bare['ready_ms']:.1f} ms exec to exit, "
          f"{bare['cpu_ms']:.1f} ms CPU")
    for name, label in (("new", "this tree"), ("new -m", "this tree, python -m s6ipc"),
                        ("old", f"revision {old_rev}")):
        if name in result:
            r = result[name]
            print(f"s6ipc ipcserver -1 chain, {label}: exec -> -1 newline {r['ready_ms']:.1f} ms = "
                  f"{r['ratio']:.2f} x bare python (target <= 1.5); {r['cpu_ms']:.1f} ms CPU = "
                  f"{r['cpu_ratio']:.2f} x; idle RSS {r['rss_kb']:.0f} kB (target <= 12288)")


ROWS = (
    ("conn_s", "conn/s"),
    ("p50_us", "p50 latency us"),
    ("p99_us", "p99 latency us"),
    ("idle_p50_us", "idle 1-conn p50 us"),
    ("daemon_us", "daemon CPU us/conn"),
    ("children_us", "children CPU us/conn"),
    ("client_us", "client CPU us/conn"),
    ("failures", "failed connections"),
)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def print_case(summary: Dict[str, Dict[str, float]], samples: Dict[str, List[Dict[str, float]]],
               reference: str, old: Optional[str]) -> Dict[str, List[float]]:
    """The table of one case: every server's medians, then the ratios now/C (C: *reference*), and
    with *old* (the column of the older revision) old/C and now/old, then now/X for any other server.
    Below it, the conn/s ratios round by round (each round runs every server once, the order
    alternating): their spread is the noise of this run. Returns those per-round ratios."""
    names = list(summary)
    others = [n for n in names if n not in ("s6ipc", reference, old)]
    pairs = [("now/C", "s6ipc", reference)]
    if old:
        pairs += [("old/C", old, reference), ("now/old", "s6ipc", old)]
    pairs += [(f"now/{n}", "s6ipc", n) for n in others]
    width = max(16, *(len(n) + 2 for n in names))
    print(f"{'':22}" + "".join(f"{n:>{width}}" for n in names) + "".join(f"{p[0]:>{max(9, len(p[0]) + 2)}}"
                                                                       for p in pairs))
    for key, label in ROWS:
        cells = "".join(f"{summary[n][key]:{width}.1f}" for n in names)
        ratios = "".join(f"{'':{max(9, len(p) + 2)}}" if key == "failures" else
                         f"{_ratio(summary[a][key], summary[b][key]):{max(9, len(p) + 2)}.2f}"
                         for p, a, b in pairs)
        print(f"{label:22}{cells}{ratios}")
    per_round: Dict[str, List[float]] = {}
    for p, a, b in pairs:
        per_round[p] = [_ratio(x["conn_s"], y["conn_s"]) for x, y in zip(samples[a], samples[b])]
        spread = per_round[p]
        print(f"conn/s {p} round by round: " + " ".join(f"{r:.2f}" for r in spread)
              + f"  (median {statistics.median(spread):.2f}, range {min(spread):.2f}-{max(spread):.2f})")
    return per_round


def rss_growth(workdir: str, total: int, concurrency: int) -> Dict[str, Tuple[int, int, int]]:
    """(idle RSS kB at start, after `total` connections, connections made) for each daemon."""
    result = {}
    for name in ("s6ipc", "s6"):
        sock = os.path.join(workdir, f"rss-{name}")
        d = Daemon(chains("plain", sock, sock, None)[name], sock)
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


def _http_scrape(port: int) -> float:
    """One GET /metrics through the exporter on 127.0.0.1:*port*: seconds to the whole answer."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        while s.recv(65536):
            pass
    return time.perf_counter() - started


def _scraper(port: int, stop: threading.Event) -> None:
    """Scrape the exporter on *port* once a second until *stop*."""
    while not stop.is_set():
        _http_scrape(port)
        stop.wait(1.0)


def scrape_cost(workdir: str, rounds: int, seconds: float, concurrency: int, daemons: int = 10,
                queries: int = 300) -> Dict[str, object]:
    """What a scrape costs: (1) per daemon, in the scraping process (live view read and verified,
    exposition built: the library under ``s6ipc metrics``) and in the daemon (its CPU per answer,
    from /proc), with *daemons* ipcservers running; (2) one whole HTTP scrape through ``s6ipc
    tcpserver … s6ipc metrics-http`` (a process per scrape: its interpreter start is most of it);
    (3) conn/s of a plain ipcserver under loadgen with a 1 Hz scraper of the exporter and
    without, in alternating rounds (the ratio per round is the noise)."""
    sys.path.insert(0, NEW_SRC)
    from s6ipc.daemon import liveview, metrics

    started = [Daemon([S6IPC, "ipcserver", "-1", os.path.join(workdir, f"scrape{i}"), HANDLER],
                      os.path.join(workdir, f"scrape{i}")) for i in range(daemons)]
    exporter_port = free_port()
    exporter = Daemon([S6IPC, "tcpserver", "-1", "127.0.0.1", str(exporter_port), S6IPC, "metrics-http",
                       *[str(d.proc.pid) for d in started]])
    try:
        for d in started:
            load(d.address, concurrency, 0.2)
        one = started[0]
        per_query = []
        cpu0 = one.cpu()[0]
        for _ in range(queries):
            t0 = time.perf_counter()
            text = metrics.exposition(metrics.families([liveview.query(one.proc.pid)]))
            per_query.append(time.perf_counter() - t0)
        daemon_ms = (one.cpu()[0] - cpu0) / queries * 1000
        assert "s6ipc_connections_accepted_total" in text
        t0 = time.perf_counter()
        for _ in range(20):
            metrics.scrape([str(d.proc.pid) for d in started])
        all_ms = (time.perf_counter() - t0) / 20 * 1000
        http_ms = statistics.median(_http_scrape(exporter_port) for _ in range(20)) * 1000
        target = started[1]
        samples: Dict[str, List[float]] = {"without": [], "1 Hz scraper": []}
        for r in range(rounds):
            for name in (["without", "1 Hz scraper"] if r % 2 == 0 else ["1 Hz scraper", "without"]):
                stop = threading.Event()
                thread = threading.Thread(target=_scraper, args=(exporter_port, stop), daemon=True)
                if name != "without":
                    thread.start()
                result = load(target.address, concurrency, seconds)
                stop.set()
                if name != "without":
                    thread.join()
                samples[name].append(result["conns"] / seconds)
        ratios = [w / wo for w, wo in zip(samples["1 Hz scraper"], samples["without"])]
        return {
            "per_daemon_client_ms_p50": statistics.median(per_query) * 1000,
            "per_daemon_client_ms_p99": sorted(per_query)[int(0.99 * len(per_query)) - 1] * 1000,
            "per_daemon_daemon_cpu_ms": daemon_ms,
            f"library_scrape_of_{daemons}_daemons_ms": all_ms,
            f"http_scrape_of_{daemons}_daemons_ms_p50": http_ms,
            "conn_s_without": statistics.median(samples["without"]),
            "conn_s_with_1hz_scraper": statistics.median(samples["1 Hz scraper"]),
            "ratio_per_round": [round(x, 3) for x in ratios],
            "load_average": os.getloadavg()[0],
        }
    finally:
        exporter.stop()
        for d in started:
            d.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--case", choices=["plain", "access", "tcp", "tcp-access", "ipc", "startup", "all",
                                           "upgrade-pause", "scrape"],
                        default="all")
    parser.add_argument("--old-rev", default="476f459",
                        help="the revision our chain is also run from, in the same rounds ('' for none)")
    parser.add_argument("--startup-repeats", type=int, default=20)
    parser.add_argument("--rss-connections", type=int, default=100_000)
    parser.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    parser.add_argument("--upgrades", type=int, default=100, help="upgrade-pause: how many upgrades")
    args = parser.parse_args()
    if args.case == "upgrade-pause":  # not in "all": ours alone (s6 has no in-place upgrade)
        import upgrades  # bench/upgrades.py

        print(json.dumps(upgrades.run_pause(args.upgrades, 1000, 0.3, 4096), indent=1))
        return 0
    if args.case == "scrape":  # not in "all": ours alone (s6 has no metrics to compare with)
        build()
        workdir = tempfile.mkdtemp(prefix="s6bench", dir="/tmp")
        try:
            print(f"machine: {machine_line()}")
            print(json.dumps(scrape_cost(workdir, args.rounds, args.seconds, args.concurrency), indent=1))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    if not os.access("/usr/bin/s6-ipcserver", os.X_OK):
        print("bench: fatal: Debian's s6 is not installed (apt-get install s6 execline)", file=sys.stderr)
        return 111
    build()
    subprocess.run([S6IPC, "links", LINKS], check=True)
    groups = {"all": ["plain", "access", "tcp", "tcp-access", "startup"], "ipc": ["plain", "access"]}
    cases = groups.get(args.case, [args.case])
    if not os.access(UCSPI_TCPSERVER, os.X_OK) and {"tcp", "tcp-access"} & set(cases):
        print("bench: warning: ucspi-tcp is not installed (apt-get install ucspi-tcp): "
              "skipping the TCP cases", file=sys.stderr)
        cases = [c for c in cases if not c.startswith("tcp")]
    if (
        "access" in cases
        and subprocess.run([S6IPC, "list"], capture_output=True, text=True).stdout.find("ipcserver-access")
        < 0
    ):
        print("bench: warning: s6ipc has no ipcserver-access yet: skipping the access case", file=sys.stderr)
        cases.remove("access")
    report: Dict[str, object] = {
        "machine": machine_line(),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
    }
    print(f"machine: {report['machine']}")
    workdir = tempfile.mkdtemp(prefix="s6bench", dir="/tmp")
    try:
        if "startup" in cases:
            cases.remove("startup")
            old_src = old_tree(args.old_rev) if args.old_rev else None
            report["startup"] = startup(workdir, args.startup_repeats, old_src)
            print_startup(report["startup"], args.startup_repeats, args.old_rev)
            if not cases:
                args.rss_connections = 0
        old = None
        if args.old_rev and cases:
            old_src = old_tree(args.old_rev)
            old = (args.old_rev, old_src) if old_src is not None else None
        for case in cases:
            summary, samples = run_case(case, args.rounds, args.seconds, args.concurrency, workdir, old)
            report[case] = summary
            print(
                f"\n## {case}: {args.rounds} alternating rounds of {args.seconds}s, "
                f"{args.concurrency} closed-loop clients; load average now {os.getloadavg()[0]:.2f}"
            )
            report[f"{case} per round"] = print_case(summary, samples, REFERENCE[case],
                                                     old_name(old[0]) if old else None)
        if cases:
            ready = ready_times(workdir)
            report["ready_ms"] = ready
            print(
                f"\nexec -> ready (-1 newline), median of 10: "
                f"s6ipc {ready['s6ipc']:.1f} ms, links {ready['links']:.1f} ms, s6 {ready['s6']:.1f} ms"
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
