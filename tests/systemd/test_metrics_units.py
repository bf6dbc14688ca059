"""The shipped units/systemd/s6ipc-metrics.socket and s6ipc-metrics@.service under a real systemd
manager: each scrape is one service instance (Accept=yes) answering with the counters of a daemon
running beside it; a bad request is one line on the instance's stderr."""

from __future__ import annotations

import os
import socket
import urllib.request

from tests.support import systemd_manager as sdmanager
from tests.support.metrics import named_service
from tests.support.processes import S6IPC, wait_until
from tests.support.restart_load import free_port, stop

UNITS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "units", "systemd"
)


def test_the_shipped_units_export(user_manager: sdmanager.UserManager, sockdir: str) -> None:
    m = user_manager
    port = free_port()
    log = os.path.join(m.base, "scrape.log")
    for name in ("s6ipc-metrics.socket", "s6ipc-metrics@.service"):
        with open(os.path.join(UNITS, name)) as f:
            m.write_unit(
                name,
                f.read()
                .replace("127.0.0.1:9101", f"127.0.0.1:{port}")
                .replace("/usr/local/bin/s6ipc", S6IPC),
            )
    m.write_unit("s6ipc-metrics@.service.d/test.conf", f"[Service]\nStandardError=append:{log}\n")
    m.systemctl("daemon-reload")
    app = named_service(sockdir, "app-under-systemd", 2)
    try:
        m.systemctl("start", "s6ipc-metrics.socket")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200
            body = answer.read().decode()
        labels = f'program="ipcserverd",pid="{app.pid}",name="app-under-systemd"'
        assert f"s6ipc_connections_accepted_total{{{labels}}} 2" in body.splitlines(), m.log(20)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"BREW /coffee HTCPCP/1.0\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400 Bad Request\r\n")

        def said() -> str:
            with open(log) as f:
                return f.read()

        def fatal() -> list:  # type: ignore[type-arg]
            return [line for line in said().splitlines() if ": fatal: " in line]

        # the other lines: warnings about hostile live views other tests on this host run, left out
        wait_until(fatal, timeout=10)
        assert fatal() == ["metrics-http: fatal: unable to read the request line: not HTTP/1.0 or HTTP/1.1: "
                           "Protocol error"]
        assert all(line.endswith(": left out") for line in said().splitlines() if ": fatal: " not in line)
        assert int(m.prop("s6ipc-metrics.socket", "NAccepted")) == 2
    finally:
        stop(app)
