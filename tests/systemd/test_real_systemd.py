"""The shipped units under a real systemd manager started by the test (tests/support/systemd_manager.py).

What runs: the real ``/lib/systemd/systemd`` as a user manager,
loaded with units/systemd/* (paths rewritten to this checkout and a temporary directory) plus test
drop-ins (logs to files, no start rate limit). Checked: activation on the first connection,
``active (running)`` only once READY=1 arrived (and never without it), the watchdog fed by the
loop, ``systemctl restart`` under client load with 0 refused connections, the fd-store variant
getting its own socket back after a restart (and losing it after a full stop), s6's C daemon on a
socket unit through the template, and ``ipcserver -S`` as a one-line ExecStart=.

When a real manager cannot run here the whole module is skipped with the exact failure.
"""

from __future__ import annotations

import os
import re
import time
from typing import Iterator, List

import pytest

from tests.support import systemd_manager as sdmanager
from tests.support.peers import Load, ask
from tests.support.processes import S6IPC, env_of, wait_listening, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))

UNITS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "units", "systemd")
PRIVATE = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def complete(reply: bytes) -> bool:
    """An env(1) reply from a connection child, whole."""
    return reply.endswith(b"\n") and b"PROTO=IPC\n" in reply and b"IPCCONNNUM=" in reply


def render(text: str, run: str) -> str:
    return text.replace("/usr/local/bin/s6ipc", S6IPC).replace("/run/s6ipc-demo", run)


@pytest.fixture(scope="module")
def mgr() -> Iterator[sdmanager.UserManager]:
    m = sdmanager.start_or_skip()
    run = os.path.join(m.base, "run")
    os.makedirs(run)
    m.run = run  # type: ignore[attr-defined]
    for name in os.listdir(UNITS):
        with open(os.path.join(UNITS, name)) as f:
            m.write_unit(name, render(f.read(), run))
    services = ("s6ipc-demo", "s6ipc-fdstore", "s6-ipcserverd@", "s6ipc-slow", "s6ipc-mute", "s6ipc-wrap")
    for service in services:
        log = os.path.join(m.base, f"{service}.log")
        m.write_unit(f"{service}.service.d/test.conf",
                     f"[Unit]\nStartLimitIntervalSec=0\n[Service]\nStandardOutput=append:{log}\n"
                     f"StandardError=append:{log}\n")
    try:
        yield m
    finally:
        m.stop()


def service_log(m: sdmanager.UserManager, service: str) -> str:
    try:
        with open(os.path.join(m.base, f"{service}.log")) as f:
            return f.read()
    except OSError:
        return ""


def fd0_socket(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/0")


def manager_sockets(m: sdmanager.UserManager) -> List[str]:
    assert m.proc is not None
    out = []
    for fd in os.listdir(f"/proc/{m.proc.pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{m.proc.pid}/fd/{fd}"))
        except OSError:
            pass
    return [x for x in out if x.startswith("socket:")]


def restart_under_load(m: sdmanager.UserManager, unit: str, path: str, restarts: int = 2) -> Load:
    with Load(path, complete) as load:
        time.sleep(0.4)
        for _ in range(restarts):
            m.systemctl("restart", unit)
            time.sleep(0.5)
    return load


# -- s6ipc-demo.socket + s6ipc-demo.service: our ipcserverd, Type=notify -----------------------------
def test_first_connection_activates_and_ready_makes_it_active(mgr: sdmanager.UserManager) -> None:
    m = mgr
    path = f"{m.run}/demo.sock"  # type: ignore[attr-defined]
    m.write_unit("s6ipc-demo.service.d/watchdog.conf", "[Service]\nWatchdogSec=1s\n")
    m.systemctl("daemon-reload")
    m.systemctl("start", "s6ipc-demo.socket")
    assert m.state("s6ipc-demo.socket") == "active/listening"
    assert m.state("s6ipc-demo.service") == "inactive/dead"
    reply = env_of(ask(path))  # this connection starts the service, then is served by it
    assert reply["PROTO"] == "IPC" and reply["IPCREMOTEEUID"] == "0"
    assert not [k for k in reply if k in PRIVATE], reply
    # READY=1 was sent before the first accept; the manager may read it an instant after our reply
    assert m.wait_state("s6ipc-demo.service", "active/running") == "active/running"
    assert m.prop("s6ipc-demo.service", "TriggeredBy") == "s6ipc-demo.socket"
    assert m.prop("s6ipc-demo.service", "NotifyAccess") == "main"
    # READY=1 said "accepting connections on PATH (at most 100 at once)"; STATUS= then follows the
    # counts, and our connection has moved them (docs/ipcserverd.md#live-view)
    assert wait_until(lambda: re.fullmatch(r"(0 connections|1 connection from 1 uid), 1 accepted, 0 refused",
                                           m.prop("s6ipc-demo.service", "StatusText")))
    pid = int(m.prop("s6ipc-demo.service", "MainPID"))
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"ipcserverd" in f.read()
    assert fd0_socket(pid) in manager_sockets(m)  # the very socket systemd holds
    # the watchdog is fed by ipcserverd's loop (every 0.5 s): the manager records each ping
    first = int(m.prop("s6ipc-demo.service", "WatchdogTimestampMonotonic"))
    time.sleep(1.2)
    assert int(m.prop("s6ipc-demo.service", "WatchdogTimestampMonotonic")) > first
    assert int(m.prop("s6ipc-demo.service", "MainPID")) == pid  # not killed by the watchdog


def test_restart_under_load_refuses_no_connection(mgr: sdmanager.UserManager) -> None:
    m = mgr
    path = f"{m.run}/demo.sock"  # type: ignore[attr-defined]
    m.systemctl("start", "s6ipc-demo.socket", "s6ipc-demo.service")
    before = int(m.prop("s6ipc-demo.service", "MainPID"))
    socket_since = m.prop("s6ipc-demo.socket", "ActiveEnterTimestampMonotonic")
    load = restart_under_load(m, "s6ipc-demo.service", path)
    after = int(m.prop("s6ipc-demo.service", "MainPID"))
    print(f"restart x2 under load: {load.summary()}")
    assert load.counts["refused"] == 0, load.summary()
    assert load.counts["truncated"] == 0, load.summary()  # KillMode=process: children finish
    assert load.counts["ok"] > 50, load.summary()
    assert after != before and m.state("s6ipc-demo.service") == "active/running"
    assert m.prop("s6ipc-demo.socket", "ActiveEnterTimestampMonotonic") == socket_since


def test_active_only_after_ready(mgr: sdmanager.UserManager) -> None:
    """Type=notify waits for READY=1: slow start-up stays 'activating'; without NOTIFY_SOCKET it times out."""
    m = mgr
    run = m.run  # type: ignore[attr-defined]
    base = ("[Unit]\nDescription=%s\n[Service]\nType=notify\nKillMode=process\nTimeoutStartSec=%s\n"
            "ExecStart=%s\n")
    serve = f"{S6IPC} ipcserver -S {run}/%s.sock /usr/bin/env"
    m.write_unit("s6ipc-slow.service", base % (
        "slow start", "10", "/bin/sh -c 'sleep 0.8; exec \"$$@\"' sh " + serve % "slow"))
    m.write_unit("s6ipc-mute.service", base % (
        "READY never reaches systemd", "3", "/usr/bin/env -u NOTIFY_SOCKET " + serve % "mute"))
    m.systemctl("daemon-reload")
    m.systemctl("start", "--no-block", "s6ipc-slow.service", "s6ipc-mute.service")
    time.sleep(0.3)
    assert m.state("s6ipc-slow.service") == "activating/start"
    # the control: the same daemon, serving, but its READY=1 cannot reach the manager
    wait_listening(f"{run}/mute.sock")
    assert env_of(ask(f"{run}/mute.sock"))["PROTO"] == "IPC"
    assert m.state("s6ipc-mute.service") == "activating/start"
    assert m.wait_state("s6ipc-slow.service", "active/running") == "active/running"
    assert m.prop("s6ipc-slow.service", "StatusText").startswith(f"accepting connections on {run}/slow.sock")
    assert env_of(ask(f"{run}/slow.sock"))["PROTO"] == "IPC"  # ipcserver -S bound it (no socket passed)
    assert m.wait_state("s6ipc-mute.service", "failed/failed", timeout=5) == "failed/failed"
    assert m.prop("s6ipc-mute.service", "Result") == "timeout"
    m.systemctl("stop", "s6ipc-slow.service")
    m.systemctl("reset-failed", "s6ipc-mute.service", check=False)


# -- the fd-store variant --------------------------------------------------------------------------
def test_fd_store_variant_keeps_its_socket_across_restarts(mgr: sdmanager.UserManager) -> None:
    m = mgr
    path = f"{m.run}/fdstore.sock"  # type: ignore[attr-defined]
    unit = "s6ipc-fdstore.service"
    m.systemctl("start", unit)
    assert m.state(unit) == "active/running"
    assert m.prop(unit, "NFileDescriptorStore") == "1"
    first_pid = int(m.prop(unit, "MainPID"))
    sock = fd0_socket(first_pid)
    node = os.stat(path).st_ino
    assert sock in manager_sockets(m)  # the manager holds the socket the daemon bound
    load = restart_under_load(m, unit, path)
    print(f"fd-store restart x2 under load: {load.summary()}")
    assert load.counts["refused"] == 0 and load.counts["truncated"] == 0, load.summary()
    assert load.counts["ok"] > 50, load.summary()
    pid = int(m.prop(unit, "MainPID"))
    assert pid != first_pid
    assert fd0_socket(pid) == sock and os.stat(path).st_ino == node  # adopted back, never re-bound
    assert m.prop(unit, "NFileDescriptorStore") == "1"
    assert "binding" not in service_log(m, "s6ipc-fdstore")
    # a full stop empties the store (systemd semantics): the next start binds a new socket
    m.systemctl("stop", unit)
    assert m.prop(unit, "NFileDescriptorStore") == "0"
    m.systemctl("start", unit)
    assert fd0_socket(int(m.prop(unit, "MainPID"))) != sock
    assert complete(ask(path))
    m.systemctl("stop", unit)


# -- s6's C daemon through the template --------------------------------------------------------------
def test_c_daemon_template_on_a_socket_unit(mgr: sdmanager.UserManager) -> None:
    m = mgr
    run = m.run  # type: ignore[attr-defined]
    with open(os.path.join(UNITS, "s6ipc-demo.socket")) as f:
        m.write_unit("s6ipc-c.socket", render(f.read(), run).replace("demo.sock", "c.sock"))
    m.write_unit("s6ipc-c.socket.d/service.conf", "[Socket]\nService=s6-ipcserverd@s6ipc-c.service\n")
    m.systemctl("daemon-reload")
    m.systemctl("start", "s6ipc-c.socket")
    unit = "s6-ipcserverd@s6ipc-c.service"
    assert m.state(unit) == "inactive/dead"
    reply = env_of(ask(f"{run}/c.sock"))
    assert reply["PROTO"] == "IPC" and not [k for k in reply if k in PRIVATE], reply
    assert m.wait_state(unit, "active/running") == "active/running"
    pid = int(m.prop(unit, "MainPID"))
    # the same file, compared by identity: the manager runs in its own mount namespace, and from a
    # chroot readlink() names its files by their path outside the chroot
    exe, c_daemon = os.stat(f"/proc/{pid}/exe"), os.stat("/usr/bin/s6-ipcserverd")
    assert (exe.st_dev, exe.st_ino) == (c_daemon.st_dev, c_daemon.st_ino), os.readlink(f"/proc/{pid}/exe")
    assert fd0_socket(pid) in manager_sockets(m)
    load = restart_under_load(m, unit, f"{run}/c.sock", restarts=1)
    print(f"C daemon restart under load: {load.summary()}")
    assert load.counts["refused"] == 0 and load.counts["truncated"] == 0, load.summary()
    assert int(m.prop(unit, "MainPID")) != pid
    m.systemctl("stop", unit, "s6ipc-c.socket")


def test_ipcserver_S_is_one_execstart_line_for_a_socket_unit(mgr: sdmanager.UserManager) -> None:
    m = mgr
    run = m.run  # type: ignore[attr-defined]
    m.write_unit("s6ipc-wrap.socket", f"[Socket]\nListenStream={run}/wrap.sock\n")
    with open(os.path.join(UNITS, "s6ipc-demo.service")) as f:
        text = render(f.read(), run)
    comment = re.search(r"^#   ExecStart=(.*)$", text, re.M)
    assert comment is not None  # the line the unit's own comment proposes
    text = re.sub(r"^ExecStart=.*$", "ExecStart=" + comment.group(1).replace("demo.sock", "wrap.sock"), text,
                  flags=re.M).replace("s6ipc-demo.socket", "s6ipc-wrap.socket")
    m.write_unit("s6ipc-wrap.service", text)
    m.systemctl("daemon-reload")
    m.systemctl("start", "s6ipc-wrap.socket")
    node = os.stat(f"{run}/wrap.sock").st_ino
    assert complete(ask(f"{run}/wrap.sock"))
    assert m.wait_state("s6ipc-wrap.service", "active/running") == "active/running"
    assert fd0_socket(int(m.prop("s6ipc-wrap.service", "MainPID"))) in manager_sockets(m)
    assert os.stat(f"{run}/wrap.sock").st_ino == node
    m.systemctl("stop", "s6ipc-wrap.service", "s6ipc-wrap.socket")
