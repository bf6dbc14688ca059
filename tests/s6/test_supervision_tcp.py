"""units/s6/s6ipc-tcp-demo under Debian's s6-svscan / s6-supervise: the TCP chain as an s6 service.

``s6-tcpserver`` in the run script is ours (through ``s6ipc links``; Debian has no s6-networking).
Checked: ``s6-svwait -U`` returns once the port accepts (the ``-1`` port line is the readiness
notification), each connection gets the TCP variables, ``s6-svc -r`` starts a new daemon that
binds the port again at once (SO_REUSEADDR over the TIME_WAIT of served connections).
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.support.processes import S6IPC, env_of, wait_until
from tests.support.s6 import Scan
from tests.support.tcp import tcp_request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(ROOT, "units", "s6")
LINKS_IN_UNITS = "/usr/local/lib/s6ipc/bin"

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")


def test_tcp_service_is_ready_serves_and_restarts(scan: Scan, sockdir: str) -> None:
    links = os.path.join(sockdir, "links")
    subprocess.run([S6IPC, "links", links], check=True, timeout=20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scan.add("s6ipc-tcp-demo", os.path.join(UNITS, "s6ipc-tcp-demo"),
             {LINKS_IN_UNITS: links, "127.0.0.1 8080": f"127.0.0.1 {port}"})
    scan.start()
    scan.wait_supervised("s6ipc-tcp-demo")
    assert scan.svwait("-U", "s6ipc-tcp-demo")[0] == 0
    env = env_of(tcp_request(port))  # the first attempt right after -U succeeds
    assert (env["PROTO"], env["TCPREMOTEIP"], env["TCPCONNNUM"]) == ("TCP", "127.0.0.1", "0")  # 2.6+: others
    pids = [scan.pid("s6ipc-tcp-demo")]
    with open(f"/proc/{pids[0]}/cmdline", "rb") as f:
        assert b"s6-tcpserver" in f.read()

    def restarted() -> bool:
        return scan.pid("s6ipc-tcp-demo") != pids[-1] and scan.svstat("s6ipc-tcp-demo", "ready") == ["true"]
    for _ in range(3):
        scan.svc("-r", "s6ipc-tcp-demo")
        wait_until(restarted)
        pids.append(scan.pid("s6ipc-tcp-demo"))
        assert env_of(tcp_request(port))["PROTO"] == "TCP"
