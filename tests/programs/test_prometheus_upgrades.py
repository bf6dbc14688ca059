"""Issue 19's proof with a real Prometheus (Debian's ``prometheus``, started here on loopback,
scraping every second, its data in a temporary directory): while ipcserverd is upgraded in place
20 times under load, ``s6ipc metrics-http`` behind ``s6ipc tcpserver`` is scraped, and Prometheus
says no counter of the daemon ever reset (``resets()`` is 0) and that ``increase()`` of the
accepted connections is exactly the number of clients served."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Iterator, List

import pytest

from tests.support.processes import S6IPC, RunningServer, ours, wait_until
from tests.support.restart_load import free_port, stop
from tests.support.upgrade import prove

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)"
)
UPGRADES = 20


class Prometheus:
    """A Prometheus server scraping *target* every second; :meth:`query` asks its HTTP API."""

    def __init__(self, base: str, target: str) -> None:
        self.port = free_port()
        config = os.path.join(base, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
                f"  - job_name: s6ipc\n    static_configs:\n      - targets: ['{target}']\n"
            )
        self.log = os.path.join(base, "prometheus.log")
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={os.path.join(base, 'data')}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )

    def query(self, expr: str, at: float = 0.0) -> List[Dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
        url = f"http://127.0.0.1:{self.port}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                reply = json.loads(answer.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{expr}: {e.read().decode()}") from None
        assert reply["status"] == "success", reply
        return reply["data"]["result"]  # type: ignore[no-any-return]

    def value(self, expr: str, at: float = 0.0) -> float:
        result = self.query(expr, at)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def prometheus_and_exporter(sockdir: str) -> Iterator[Callable[[int], Prometheus]]:
    started: List[Any] = []

    def start(pid: int) -> Prometheus:
        port = free_port()
        exporter = subprocess.Popen(
            [S6IPC, "tcpserver", "127.0.0.1", str(port), S6IPC, "metrics-http", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(exporter)
        wait_until(lambda: _accepts(port), timeout=20, interval=0.05)  # a silent probe: metrics-http exits 0
        base = os.path.join(sockdir, "prom")
        os.makedirs(base)
        server = Prometheus(base, f"127.0.0.1:{port}")
        started.append(server.proc)
        wait_until(server.ready, timeout=60, interval=0.2)
        return server

    yield start
    for proc in reversed(started):
        stop(proc)


def test_twenty_upgrades_seen_by_prometheus(
    sockdir: str,
    handler: str,
    server_factory: Callable[..., RunningServer],
    prometheus_and_exporter: Callable[[int], Prometheus],
) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([*ours("ipcserver"), "-1", "-c", "200", path, handler, "hold"])
    pid = server.proc.pid
    prom = prometheus_and_exporter(pid)
    accepted = f's6ipc_connections_accepted_total{{pid="{pid}"}}'
    wait_until(lambda: prom.query(accepted), timeout=30, interval=0.2)  # the first scrape, before any client
    assert prom.value(accepted) == 0
    started = time.time()
    proof = prove(path, pid, UPGRADES)
    clients = proof.load.done + len(proof.long_lived)
    assert proof.document["counters"]["accepted"] == clients

    def scraped_the_end() -> bool:
        return prom.value(accepted) == clients and prom.value(f's6ipc_generation{{pid="{pid}"}}') == UPGRADES

    wait_until(scraped_the_end, timeout=30, interval=0.5)
    window = f"{int(time.time() - started) + 60}s"
    last = prom.value(f"timestamp({accepted})")  # evaluated there, increase() extrapolates nothing
    samples = prom.value(f"count_over_time({accepted}[{window}])", last)
    counters = sorted(
        r["metric"]["__name__"]
        for r in prom.query(f'group by (__name__) ({{__name__=~"s6ipc_.+_total",pid="{pid}"}})', last)
    )
    assert {
        "s6ipc_connections_accepted_total",
        "s6ipc_connections_refused_total",
        "s6ipc_handlers_spawned_total",
        "s6ipc_handler_exits_total",
        "s6ipc_upgrades_total",
    } <= set(counters), counters
    resets = [r for name in counters for r in prom.query(f'resets({name}{{pid="{pid}"}}[{window}])', last)]
    increase = prom.value(f"increase({accepted}[{window}])", last)
    generations = prom.value(f'count(count_over_time(s6ipc_generation{{pid="{pid}"}}[{window}]))', last)
    seen = sorted(
        {
            float(v[1])
            for r in prom.query(f's6ipc_generation{{pid="{pid}"}}[{window}]', last)
            for v in r["values"]
        }
    )
    print(
        f"\nPrometheus scraped {samples:.0f} times across {UPGRADES} in-place upgrades ({clients} clients): "
        f"generations seen {len(seen)} of {UPGRADES + 1}, resets() {[r['value'][1] for r in resets]}, "
        f"increase(accepted) {increase}"
    )
    assert len(resets) >= 8 and all(float(r["value"][1]) == 0 for r in resets), resets
    assert increase == clients, (increase, clients)
    assert samples >= UPGRADES / 4 and generations == 1
    assert seen[0] == 0 and seen[-1] == UPGRADES and len(seen) >= 5, seen
