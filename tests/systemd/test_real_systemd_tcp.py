"""units/systemd/s6ipc-tcp-demo.{socket,service} under a real systemd manager: our tcpserverd,
Type=notify, on ``ListenStream=127.0.0.1:PORT`` and ``ListenStream=[::1]:PORT``.

Checked for each address: the first connection activates the service (served by tcpserverd on
the very socket the manager holds), ``active (running)`` after READY=1 with the address in
``StatusText``, and ``systemctl restart`` twice under client load with 0 refused and 0 truncated
connections, the socket unit never leaving ``active``. When a real manager cannot run here the
module is skipped with the exact failure.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Iterator

import pytest

from tests.support import systemd_manager as sdmanager
from tests.support.peers import Load
from tests.support.processes import S6IPC, env_of
from tests.support.tcp import ask_address, tcp_request

UNITS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "units",
                     "systemd")
SERVICE, SOCKET = "s6ipc-tcp-demo.service", "s6ipc-tcp-demo.socket"


def complete(reply: bytes) -> bool:
    return reply.endswith(b"\n") and b"PROTO=TCP\n" in reply and b"TCPCONNNUM=" in reply


@pytest.fixture(scope="module")
def mgr() -> Iterator[sdmanager.UserManager]:
    m = sdmanager.start_or_skip()
    for name in (SERVICE, SOCKET):
        with open(os.path.join(UNITS, name)) as f:
            m.write_unit(name, f.read().replace("/usr/local/bin/s6ipc", S6IPC))
    log = os.path.join(m.base, "tcp-demo.log")
    m.write_unit(f"{SERVICE}.d/test.conf", f"[Unit]\nStartLimitIntervalSec=0\n[Service]\n"
                 f"StandardOutput=append:{log}\nStandardError=append:{log}\n")
    try:
        yield m
    finally:
        m.stop()


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_activation_ready_and_restart_under_load(mgr: sdmanager.UserManager, host: str) -> None:
    m = mgr
    port = free_port(host)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    m.systemctl("stop", SOCKET, SERVICE, check=False)
    m.write_unit(f"{SOCKET}.d/address.conf", f"[Socket]\nListenStream=\nListenStream={listen}\n")
    m.systemctl("daemon-reload")
    m.systemctl("start", SOCKET)
    assert m.state(SOCKET) == "active/listening"
    assert m.state(SERVICE) == "inactive/dead"
    env = env_of(tcp_request(port, host=host))  # starts the service, then is served by it
    assert (env["PROTO"], env["TCPREMOTEIP"], env["TCPCONNNUM"]) == ("TCP", host, "0"), env
    assert not [k for k in env if k.startswith(("LISTEN_", "NOTIFY_"))], env
    assert m.wait_state(SERVICE, "active/running") == "active/running"
    assert m.prop(SERVICE, "StatusText") == f"accepting connections on {listen} (at most 100 at once)"
    before = int(m.prop(SERVICE, "MainPID"))
    with open(f"/proc/{before}/cmdline", "rb") as f:
        assert b"tcpserverd" in f.read()
    since = m.prop(SOCKET, "ActiveEnterTimestampMonotonic")
    with Load(f"{host} {port}", complete, asker=ask_address) as load:
        time.sleep(0.4)
        for _ in range(2):
            m.systemctl("restart", SERVICE)
            time.sleep(0.5)
    print(f"{listen}: restart x2 under load: {load.summary()}")
    assert load.counts["refused"] == 0, load.summary()
    assert load.counts["truncated"] == 0, load.summary()
    assert load.counts["ok"] > 50, load.summary()
    assert int(m.prop(SERVICE, "MainPID")) != before
    assert m.state(SERVICE) == "active/running"
    assert m.prop(SOCKET, "ActiveEnterTimestampMonotonic") == since
