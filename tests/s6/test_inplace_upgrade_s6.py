"""ipcserverd upgraded in place 20 times under a real s6-supervise (``s6-svc -2``), under load:
s6-svstat sees the same PID, the same up-since time and readiness — no restart — and no client is
refused. Then the failure after the exec: s6-supervise restarts the service, as documented — binding
its socket again (clients in that second are refused), or retrieving it from an fd holder (none is)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import List

import pytest

from tests.support.processes import S6IPC, wait_until, zombie_children
from tests.support.s6 import Scan
from tests.support.upgrade import Exchange, break_take_over, copy_package, prove, unended, upgrade

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")

RUN = """#!/bin/sh -e
PATH={links}:/usr/bin:/bin
exec 2>>{log}
exec {env} s6-ipcserver {options} {path} {handler} {args}
"""


def _service(scan: Scan, sockdir: str, handler: str, env: str = "", options: str = "-v -1 -c 200",
             args: str = "hold") -> tuple:  # type: ignore[type-arg]
    links = os.path.join(sockdir, "links")
    subprocess.run([S6IPC, "links", links], check=True, timeout=20)
    source = os.path.join(sockdir, "source")
    os.makedirs(source)
    path, log = os.path.join(sockdir, "up.sock"), os.path.join(sockdir, "up.log")
    with open(os.path.join(source, "run"), "w") as f:
        f.write(RUN.format(links=links, log=log, path=path, handler=handler, env=f"env {env}" if env else "",
                           options=options, args=args))
    os.chmod(os.path.join(source, "run"), 0o755)
    with open(os.path.join(source, "notification-fd"), "w") as f:
        f.write("1\n")
    scan.add("up", source, {})
    scan.start()
    scan.wait_supervised("up")
    assert scan.svwait("-U", "up")[0] == 0
    return path, log


def _log(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def test_twenty_upgrades_under_s6_supervise(scan: Scan, sockdir: str, handler: str) -> None:
    path, log = _service(scan, sockdir, handler)
    before = scan.svstat("up", "up,ready,pid,updownsince,readysince")
    pid = int(before[2])
    proof = prove(path, pid, 20, send=lambda: scan.svc("-2", "up"),
                  between=lambda: None if scan.svstat("up", "up,ready,pid,updownsince,readysince") == before
                  else pytest.fail(f"s6-svstat changed: {before} -> {scan.svstat('up', 'up,ready,pid')}"))
    assert scan.svstat("up", "up,ready,pid,updownsince,readysince") == before
    assert before[:2] == ["true", "true"]
    assert zombie_children(pid) == []
    text = _log(log)
    assert unended(proof, text) == []
    assert text.count("s6-ipcserverd: info: upgraded in place") == 20  # the s6- name survives
    assert "warning" not in text and "fatal" not in text


def test_failure_after_exec_is_a_restart_for_s6_supervise(scan: Scan, sockdir: str, handler: str,
                                                          tmp_path: str) -> None:
    top = str(tmp_path)
    package = copy_package(top)
    path, log = _service(scan, sockdir, handler, env=f"PYTHONPATH={top}")
    pid = scan.pid("up")
    held = Exchange(path)
    repair = break_take_over(package)
    os.kill(pid, signal.SIGUSR2)
    wait_until(lambda: "unable to take over from the previous image: boom" in _log(log), 30)
    repair()
    new = wait_until(lambda: (lambda p: p if p not in (pid, -1) else 0)(scan.pid("up")), 30)
    assert new != pid
    assert scan.svwait("-U", "up")[0] == 0
    fresh = Exchange(path)
    assert fresh.echo(b"served by the restarted service") and fresh.finish()
    assert held.echo(b"the connection from before goes on") and held.finish()
    lines = [ln for ln in _log(log).splitlines() if "fatal" in ln]
    assert lines == ["s6-ipcserverd: fatal: unable to take over from the previous image: boom"]


def test_limits_edited_then_s6_svc_2_apply_to_the_buckets(scan: Scan, sockdir: str, handler: str) -> None:
    """docs/access-control.md's "changing limits without a restart" under a real s6-supervise:
    ``-A @FILE``, edit the file, ``s6-svc -2``: same PID, the new burst applies to the bucket the
    first image filled (one token used of three: two more connections, then refused)."""
    limits = os.path.join(sockdir, "limits")
    with open(limits, "w") as f:
        f.write("rate=1/m burst=1\n")
    path, log = _service(scan, sockdir, handler, options=f"-1 -A @{limits}", args="ok")
    pid = scan.pid("up")

    def answers(n: int) -> List[bytes]:
        got = []
        for _ in range(n):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                got.append(b"".join(iter(lambda: s.recv(64), b"")))
        return got

    assert answers(2) == [b"ok\n", b""]
    with open(limits, "w") as f:
        f.write("rate=1/m burst=3\n")
    document = upgrade(pid, 1, send=lambda: scan.svc("-2", "up"))
    assert document["admission"]["limits"]["burst"] == 3 and scan.pid("up") == pid
    assert answers(3) == [b"ok\n", b"ok\n", b""]
    wait_until(lambda: _log(log).count("s6-ipcserverd: info: deny uid 0 over rate") == 2)


def test_failure_after_exec_with_the_socket_in_an_fd_holder_refuses_nobody(
        scan: Scan, sockdir: str, handler: str, tmp_path: str) -> None:
    """The restart path that keeps the socket under s6: the service's run script takes its listening
    socket from our fdholderd (units/fdholder-restart: holder, park, server). The new image of
    ipcserverd fails its take-over and exits 111; s6-supervise starts ``run`` again a second later,
    which retrieves the same socket: clients meanwhile wait in its backlog, none is refused, and
    the connection from before goes on (its handler orphaned, as documented)."""
    from tests.support.restart_load import UNIT, unit_env
    from tests.support.s6 import write_service
    from tests.support.upgrade import Load

    top = str(tmp_path)
    os.chmod(top, 0o755)
    package = copy_package(top)
    rundir = os.path.join(sockdir, "run")
    os.makedirs(rundir)
    env = unit_env(rundir)
    log = os.path.join(sockdir, "up.log")
    prefix = f"exec env RUNDIR={rundir} S6IPC={S6IPC}"
    write_service(os.path.join(scan.dir, "holder"), f"{prefix} {UNIT}/holder 2>>{log}\n", notification_fd=1)
    scan.start()
    scan.wait_supervised("holder")
    assert scan.svwait("-U", "holder", 20000)[0] == 0, scan.log()
    subprocess.run([os.path.join(UNIT, "park")], env=env, check=True, timeout=20)
    write_service(os.path.join(scan.dir, "up"),
                  f"{prefix} PYTHONPATH={top} {UNIT}/server {handler} hold 2>>{log}\n", notification_fd=1)
    subprocess.run(["s6-svscanctl", "-a", scan.dir], check=True, timeout=10)
    scan.wait_supervised("up")
    assert scan.svwait("-U", "up", 20000)[0] == 0, _log(log)
    path = os.path.join(rundir, "app.sock")
    pid = scan.pid("up")
    held = Exchange(path)
    load = Load(path, threads=2)
    try:
        time.sleep(0.3)
        break_take_over(package)
        os.kill(pid, signal.SIGUSR2)
        new = wait_until(lambda: (lambda p: p if p not in (pid, -1) else 0)(scan.pid("up")), 30)
        assert scan.svwait("-U", "up", 20000)[0] == 0
        time.sleep(0.5)
    finally:
        load.stop()
    assert new != pid
    assert (load.refused, load.truncated, load.errors) == ([], [], []), "the holder kept the socket"
    assert load.done > 10
    assert held.echo(b"the connection from before goes on") and held.finish()
    fatal = [ln for ln in _log(log).splitlines() if "fatal" in ln]
    assert fatal == ["ipcserverd: fatal: unable to take over from the previous image: boom"], fatal
