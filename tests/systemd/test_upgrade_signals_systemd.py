"""``systemctl reload`` then ``systemctl stop`` under a real systemd manager: the stop's SIGTERM is
acted on whenever it lands in the upgrade (issue 18: it was lost, and the unit sat in
``deactivating`` until TimeoutStopSec's SIGKILL). Method: tests/support/systemd_manager.py; each
phase is tested one by one in tests/programs/test_upgrade_signals.py."""

from __future__ import annotations

import os
import time

import pytest

from tests.support import systemd_manager as sdmanager
from tests.support.fdholder import ALL_RIGHTS, make_rules
from tests.support.processes import S6IPC

UNIT = """[Unit]
StartLimitIntervalSec=0
[Service]
Type=notify
ExecStart={command}
ExecReload=/bin/kill -USR2 $MAINPID
KillMode=process
TimeoutStopSec=30s
"""


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.4])
@pytest.mark.parametrize("daemon", ["ipcserverd", "fdholderd"])
def test_reload_then_stop_stops_at_once(user_manager: sdmanager.UserManager, handler: str, daemon: str,
                                        delay: float) -> None:
    m = user_manager
    if daemon == "ipcserverd":
        command = f"{S6IPC} ipcserver {os.path.join(m.base, 'up.sock')} {handler} hold"
    else:
        rules = make_rules(m.base, {f"uid/{os.geteuid()}": ALL_RIGHTS})
        command = f"{S6IPC} fdholder-daemon -i {rules} {os.path.join(m.base, 'up.sock')}"
    m.write_unit("up.service", UNIT.format(command=command))
    m.systemctl("daemon-reload")
    m.systemctl("start", "up.service")
    assert m.state("up.service") == "active/running"
    m.systemctl("reload", "--no-block", "up.service")
    time.sleep(delay)
    started = time.monotonic()
    m.systemctl("stop", "--no-block", "up.service")
    deadline = started + 10
    while m.state("up.service").split("/")[0] in ("active", "reloading", "deactivating"):
        assert time.monotonic() < deadline, f"{daemon}: still {m.state('up.service')}\n{m.log()}"
        time.sleep(0.02)
    took = time.monotonic() - started
    journal = m.log()
    assert took < 5, f"{daemon}: stopped after {took:.1f} s\n{journal}"
    assert "timed out" not in journal and "status=9/KILL" not in journal, journal
    # the main process ended by itself; a stop that lands while kill(1) runs also kills kill(1)
    # (systemd's doing: the unit's result is then 'signal', for the control process)
    if m.prop("up.service", "Result") != "success":
        assert "Control process exited, code=killed, status=15/TERM" in journal, journal
