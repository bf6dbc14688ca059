"""The shipped units/s6/s6ipc-metrics service directory under a real s6-svscan: ready when it
accepts, and a scrape answers with the counters of a daemon running beside it."""

from __future__ import annotations

import os
import urllib.request

import pytest

from tests.support.metrics import named_service
from tests.support.processes import S6IPC
from tests.support.restart_load import free_port, stop
from tests.support.s6 import Scan

pytestmark = pytest.mark.skipif(
    not os.access("/usr/bin/s6-svscan", os.X_OK), reason="s6 is not installed (/usr/bin/s6-svscan)"
)

UNITS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "units")


def test_the_shipped_service_directory_exports(scan: Scan, sockdir: str) -> None:
    port = free_port()
    app = named_service(sockdir, "app-under-s6", 3)
    try:
        scan.add(
            "s6ipc-metrics",
            os.path.join(UNITS, "s6", "s6ipc-metrics"),
            {"PATH=/usr/local/bin:": f"PATH={os.path.dirname(S6IPC)}:", " 9101 ": f" {port} "},
        )
        scan.start()
        scan.wait_supervised("s6ipc-metrics")
        assert scan.svwait("-U", "s6ipc-metrics")[0] == 0, scan.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            body = answer.read().decode()
        labels = f'program="ipcserverd",pid="{app.pid}",name="app-under-s6"'
        assert f"s6ipc_connections_accepted_total{{{labels}}} 3" in body.splitlines()
    finally:
        stop(app)
