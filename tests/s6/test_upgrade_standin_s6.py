"""The stand-in under a real s6-supervise: while the new image of ipcserverd starts (held there for
real: tests/support/phases.py), a client is served by the stand-in; s6-supervise sees the same
pid, up and ready, throughout; afterwards the client's handler is the daemon's child; and an
``s6-svc -d`` that lands during the exec takes the service down with no stand-in left behind,
the stand-in's connection going on (SIGTERM leaves handlers alone, as s6-ipcserverd's does)."""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from s6ipc.daemon import liveview
from tests.support.phases import Phases, after_held, exited, hold_connection, parent_pid
from tests.support.processes import S6IPC, wait_until
from tests.support.s6 import Scan, write_service

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")


def test_the_stand_in_serves_under_s6_supervise_and_svc_d_during_the_exec_loses_nothing(
        scan: Scan, sockdir: str, handler: str) -> None:
    phases = Phases(tempfile.mkdtemp(prefix="s6ph", dir=sockdir))
    path, log = os.path.join(sockdir, "s"), os.path.join(sockdir, "log")
    run = f"PYTHONPATH={phases.top} exec {S6IPC} ipcserver -1 {path} {handler} hold 2>>{log}\n"
    write_service(os.path.join(scan.dir, "up"), run, notification_fd=1)
    scan.start()
    scan.wait_supervised("up")
    assert scan.svwait("-U", "up")[0] == 0, scan.log()
    pid = scan.pid("up")

    # 1. s6-svc -2, the new image held at its start: the stand-in serves; s6-supervise sees nothing
    phases.hold("new-image")
    scan.svc("-2", "up")
    assert phases.reached("new-image") == pid
    first, child = hold_connection(path)
    stand_in = parent_pid(child)
    assert stand_in != pid and parent_pid(stand_in) == pid
    assert scan.svstat("up") == ["true", "true", str(pid)]
    phases.release("new-image")
    assert wait_until(lambda: liveview.query(pid, "ipcserverd", timeout=5)["generation"] == 1, 30)
    assert parent_pid(child) == pid and wait_until(lambda: not os.path.exists(f"/proc/{stand_in}"), 10)
    assert scan.svstat("up") == ["true", "true", str(pid)]

    # 2. s6-svc -2 then s6-svc -d while the new image starts: down, no stand-in left, handlers alive
    phases.hold("new-image")
    scan.svc("-2", "up")
    assert phases.reached("new-image") == pid
    second, child2 = hold_connection(path)
    stand_in = parent_pid(child2)
    scan.svc("-d", "up")
    time.sleep(0.1)
    phases.release("new-image")
    rc, _ = scan.svwait("-D", "up", 10000)
    assert rc == 0, f"still up after s6-svc -d during the exec: {scan.svstat('up')}"
    assert wait_until(lambda: exited(pid) and exited(stand_in), 10), "the daemon or its stand-in lives on"
    for s in (first, second):
        assert after_held(s) == b"alive\n"
        s.close()
    with open(log) as f:
        assert "warning" not in f.read()
