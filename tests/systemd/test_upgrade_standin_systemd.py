"""The stand-in under a real systemd manager (tests/support/systemd_manager.py), the unit's default
``KillMode=control-group``: ``systemctl reload`` (``ExecReload=s6ipc upgrade``) with the new image
held at its start (tests/support/phases.py) — a client is served by the stand-in, the unit stays
``reloading`` then ``active/running`` with the same MainPID, the client's handler ends up the main
process's child; and a ``systemctl stop`` that lands during the exec (systemd signals the stand-in
too) stops the unit at once, cleanly."""

from __future__ import annotations

import os
import tempfile
import time

from tests.support import systemd_manager as sdmanager
from tests.support.phases import Phases, hold_connection, parent_pid
from tests.support.processes import S6IPC, wait_until

UNIT = """[Unit]
StartLimitIntervalSec=0
[Service]
Type=notify
Environment=PYTHONPATH={top}
ExecStart={command}
ExecReload={s6ipc} upgrade -t 60000 $MAINPID
TimeoutStopSec=30s
"""


def test_reload_with_a_stand_in_then_stop_during_the_exec(user_manager: sdmanager.UserManager,
                                                           handler: str) -> None:
    m = user_manager
    phases = Phases(tempfile.mkdtemp(prefix="s6ph", dir=m.base))
    path = os.path.join(m.base, "up.sock")
    m.write_unit("up.service", UNIT.format(top=phases.top, command=f"{S6IPC} ipcserver {path} {handler} hold",
                                           s6ipc=S6IPC))
    m.systemctl("daemon-reload")
    m.systemctl("start", "up.service")
    assert m.state("up.service") == "active/running"
    main = int(m.prop("up.service", "MainPID"))

    phases.hold("new-image")
    m.systemctl("reload", "--no-block", "up.service")
    assert phases.reached("new-image") == main
    held, child = hold_connection(path)
    stand_in = parent_pid(child)
    assert stand_in != main and parent_pid(stand_in) == main
    assert m.state("up.service").startswith("reloading"), m.state("up.service")
    phases.release("new-image")
    assert wait_until(lambda: m.state("up.service") == "active/running", 30), m.log()
    assert int(m.prop("up.service", "MainPID")) == main and m.prop("up.service", "NRestarts") == "0"
    assert parent_pid(child) == main
    held.close()

    phases.hold("new-image")
    m.systemctl("reload", "--no-block", "up.service")
    assert phases.reached("new-image") == main
    during, child = hold_connection(path)
    stand_in = parent_pid(child)
    started = time.monotonic()
    m.systemctl("stop", "--no-block", "up.service")
    time.sleep(0.2)
    phases.release("new-image")
    while m.state("up.service").split("/")[0] in ("active", "reloading", "deactivating"):
        assert time.monotonic() - started < 10, f"still {m.state('up.service')}\n{m.log()}"
        time.sleep(0.02)
    journal = m.log()
    assert "timed out" not in journal and "status=9/KILL" not in journal, journal
    assert not os.path.exists(f"/proc/{main}/exe") and not os.path.exists(f"/proc/{stand_in}/exe")
    during.close()
