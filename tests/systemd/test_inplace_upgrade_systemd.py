"""ipcserverd upgraded in place 20 times under a real systemd manager (``systemctl reload`` with
``ExecReload=/bin/kill -USR2 $MAINPID``), under load: the unit never leaves active (``reloading``
between RELOADING=1 and READY=1 is part of it), MainPID unchanged, NRestarts 0, the watchdog fed
by every image, ``STATUS=`` following the counts. Method: tests/support/systemd_manager.py."""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Iterator, List

import pytest

from s6ipc.daemon import liveview
from tests.support import systemd_manager as sdmanager
from tests.support.processes import S6IPC, wait_until, zombie_children
from tests.support.upgrade import Exchange, Load, break_take_over, copy_package, edit, prove, unended

UNIT = """[Unit]
StartLimitIntervalSec=0
[Service]
Type=notify
ExecStart={s6ipc} ipcserver -v -c 200 {path} {handler} hold
ExecReload=/bin/kill -USR2 $MAINPID
KillMode=process
WatchdogSec=10s
StandardError=append:{log}
"""

#: What the manager may show while the upgrade runs: systemd 257 (Debian 13) adds the sub-state
#: ``reload-notify`` (a reload waiting for the service's READY=1 after RELOADING=1) where 252 shows
#: ``reload`` throughout: both are the manager's names for the same moment.
ACTIVE = {"ActiveState": ("active", "reloading"), "SubState": ("running", "reload", "reload-notify")}


@pytest.fixture
def mgr() -> Iterator[sdmanager.UserManager]:
    try:
        m = sdmanager.start()
    except sdmanager.Unavailable as e:
        pytest.skip(f"no real systemd manager here: {e}")
    try:
        yield m
    finally:
        m.stop()


class StateWatch:
    """Polls the unit's ActiveState and SubState (one ``systemctl show``) in a thread until stopped;
    keeps every distinct value seen."""

    def __init__(self, m: sdmanager.UserManager, unit: str) -> None:
        self.m, self.unit, self.seen = m, unit, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.m.systemctl("show", "-p", "ActiveState", "-p", "SubState", self.unit).stdout
            self.seen.update(line.strip() for line in out.splitlines() if line.strip())
            time.sleep(0.02)

    def stop(self) -> List[str]:
        self._stop.set()
        self._thread.join(30)
        return sorted(self.seen)


def test_twenty_reloads_under_a_real_systemd(mgr: sdmanager.UserManager, handler: str) -> None:
    m = mgr
    path, log = os.path.join(m.base, "up.sock"), os.path.join(m.base, "up.log")
    m.write_unit("up.service", UNIT.format(s6ipc=S6IPC, path=path, handler=handler, log=log))
    m.systemctl("daemon-reload")
    m.systemctl("start", "up.service")
    assert m.state("up.service") == "active/running"
    pid = int(m.prop("up.service", "MainPID"))
    watch = StateWatch(m, "up.service")
    try:
        proof = prove(path, pid, 20, send=lambda: m.systemctl("reload", "up.service"))
    finally:
        seen = watch.stop()
    allowed = [f"{key}={value}" for key, values in ACTIVE.items() for value in values]
    assert [s for s in seen if s not in allowed] == [], seen
    assert "ActiveState=reloading" in seen, "RELOADING=1 reached the manager"
    assert int(m.prop("up.service", "MainPID")) == pid
    assert m.prop("up.service", "NRestarts") == "0"
    assert wait_until(lambda: m.state("up.service") == "active/running")
    # the watchdog crosses the exec: the manager keeps recording pings from the last image
    first = int(m.prop("up.service", "WatchdogTimestampMonotonic"))
    wait_until(lambda: int(m.prop("up.service", "WatchdogTimestampMonotonic")) > first, 15, 0.1)
    # STATUS= follows the counts (at most once a second)
    accepted = proof.load.done + len(proof.long_lived)
    wanted = f"0 connections, {accepted} accepted, 0 refused"
    assert wait_until(lambda: m.prop("up.service", "StatusText") == wanted, 5, 0.1)
    assert zombie_children(pid) == []
    with open(log) as f:
        text = f.read()
    assert unended(proof, text) == []
    assert text.count("upgraded in place") == 20
    assert "warning" not in text and "fatal" not in text
    journal = m.log()
    trouble = r"up\.service.*(Main process exited|Failed with result|[Ww]atchdog timeout|Scheduled restart)"
    assert not re.search(trouble, journal), journal


SOCKET_UNIT = "[Socket]\nListenStream={path}\n"
BROKEN_UNIT = """[Unit]
StartLimitIntervalSec=0
Requires=held.socket
After=held.socket
[Service]
Type=notify
Environment=PYTHONPATH={top}
ExecStart={s6ipc} ipcserverd -v2 -c 200 -- {handler} hold
ExecReload=/bin/kill -USR2 $MAINPID
KillMode=process
Restart=on-failure
RestartSec=100ms
StandardError=append:{log}
"""


def test_failure_after_exec_with_a_socket_unit_refuses_nobody(mgr: sdmanager.UserManager, handler: str,
                                                              tmp_path: str) -> None:
    """The new image fails to take over (a bug the preflight cannot see): it exits 111, systemd
    restarts the service on the socket it holds, and clients only wait meanwhile."""
    m = mgr
    top = str(tmp_path)
    os.chmod(top, 0o755)
    package = copy_package(top)
    path, log = os.path.join(m.base, "held.sock"), os.path.join(m.base, "held.log")
    m.write_unit("held.socket", SOCKET_UNIT.format(path=path))
    m.write_unit("held.service", BROKEN_UNIT.format(top=top, s6ipc=S6IPC, handler=handler, log=log))
    m.systemctl("daemon-reload")
    m.systemctl("start", "held.socket", "held.service")
    assert m.state("held.service") == "active/running"
    pid = int(m.prop("held.service", "MainPID"))
    held = Exchange(path)
    break_take_over(package)
    load = Load(path, threads=2)
    try:
        time.sleep(0.3)
        # the daemon says RELOADING=1 as SIGUSR2 arrives: when systemd reads it before kill(1) has
        # exited, the reload job waits for READY=1 and fails with the new image (exit 111)
        m.systemctl("reload", "held.service", check=False)
        wait_until(lambda: m.prop("held.service", "NRestarts") == "1", 30, 0.1)
        assert wait_until(lambda: m.state("held.service") == "active/running", 30)
        new = int(m.prop("held.service", "MainPID"))
        time.sleep(0.5)
    finally:
        load.stop()
    assert new != pid
    assert (load.refused, load.truncated, load.errors) == ([], [], []), "the socket unit held the socket"
    assert load.done > 10
    assert held.echo(b"the connection from before goes on") and held.finish()
    with open(log) as f:
        fatal = [ln for ln in f.read().splitlines() if "fatal" in ln]
    assert fatal == ["ipcserverd: fatal: unable to take over from the previous image: boom"]
    assert re.search(r"held\.service: Main process exited, code=exited, status=111", m.log())


VERDICT_UNIT = """[Unit]
StartLimitIntervalSec=0
[Service]
Type=notify
Environment=PYTHONPATH={top}
ExecStart={s6ipc} ipcserver -c 200 {path} {handler} hold
ExecReload={s6ipc} upgrade -t 60000 $MAINPID
KillMode=process
StandardError=append:{log}
"""


def test_exec_reload_with_a_verdict(mgr: sdmanager.UserManager, handler: str, tmp_path: str) -> None:
    """``ExecReload=s6ipc upgrade -t 60000 $MAINPID`` (what units/systemd ship): ``systemctl reload``
    succeeds when the new generation serves, and *fails* when the installed code refuses its
    preflight — the old generation serving on, same MainPID, the unit active."""
    m = mgr
    top = str(tmp_path)
    os.chmod(top, 0o755)
    package = copy_package(top)
    path, log = os.path.join(m.base, "v.sock"), os.path.join(m.base, "v.log")
    m.write_unit("v.service", VERDICT_UNIT.format(top=top, s6ipc=S6IPC, path=path, handler=handler, log=log))
    m.systemctl("daemon-reload")
    m.systemctl("start", "v.service")
    pid = int(m.prop("v.service", "MainPID"))
    held = Exchange(path)
    assert m.systemctl("reload", "v.service", check=False).returncode == 0
    assert liveview.query(pid, timeout=20)["generation"] == 1
    edit(os.path.join(package, "programs", "ipcserverd.py"), "from __future__ import annotations\n",
         "from __future__ import annotations\nraise ImportError('a broken install')\n")
    refused = m.systemctl("reload", "v.service", check=False)
    assert refused.returncode != 0, refused
    assert re.search(r"v\.service: Control process exited, code=exited, status=1", m.log()), m.log()
    assert (m.state("v.service"), int(m.prop("v.service", "MainPID"))) == ("active/running", pid)
    view = liveview.query(pid, timeout=20)
    assert (view["generation"], view["upgrade_failures"], view["last_upgrade"]["result"]) == (1, 1, "refused")
    assert held.echo(b"served across both") and held.finish()
    assert Exchange(path).echo(b"the old generation serves on")
