"""``s6-svc -2`` then ``s6-svc -d`` under a real s6-supervise: the service goes down, whenever the
SIGTERM lands in the upgrade (issue 18: it used to be lost in the close-on-exec self-pipe, leaving
ipcserverd and fdholderd running). Each phase is tested one by one, with the signals themselves,
in tests/programs/test_upgrade_signals.py."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.fdholder import ALL_RIGHTS, make_rules
from tests.support.processes import S6IPC
from tests.support.s6 import Scan, write_service

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")


def _run_line(daemon: str, sockdir: str, handler: str) -> str:
    log = os.path.join(sockdir, "log")
    if daemon == "ipcserverd":
        return f"exec {S6IPC} ipcserver -1 {os.path.join(sockdir, 's')} {handler} hold 2>>{log}\n"
    rules = make_rules(sockdir, {f"uid/{os.geteuid()}": ALL_RIGHTS})
    return f"exec {S6IPC} fdholder-daemon -1 -i {rules} {os.path.join(sockdir, 'h')} 2>>{log}\n"


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.5])
@pytest.mark.parametrize("daemon", ["ipcserverd", "fdholderd"])
def test_svc_2_then_svc_d_takes_the_service_down(scan: Scan, sockdir: str, handler: str, daemon: str,
                                                 delay: float) -> None:
    write_service(os.path.join(scan.dir, "up"), _run_line(daemon, sockdir, handler), notification_fd=1)
    scan.start()
    scan.wait_supervised("up")
    assert scan.svwait("-U", "up")[0] == 0, scan.log()
    pid = scan.pid("up")
    scan.svc("-2", "up")
    time.sleep(delay)
    scan.svc("-d", "up")
    rc, took = scan.svwait("-D", "up", 4000)
    assert rc == 0, f"{daemon} still up 4 s after s6-svc -2, {delay} s, s6-svc -d: {scan.svstat('up')}"
    assert not os.path.exists(f"/proc/{pid}/exe") or scan.svstat("up", "up") == ["false"]
