"""sdnotify-bridge: daemons speaking sd_notify (through sdnotify and python-systemd) under s6-supervise.

The run script is ``exec s6ipc sdnotify-bridge DAEMON…`` with ``notification-fd`` 3; the daemons
(tests/support/notify_daemon.py) use the real client libraries. ``s6-svwait -U`` must return once the
daemon said READY=1 (after its start-up delay, when it accepts), the daemon must keep the PID
s6-supervise watches, its later sd_notify sends must keep working (python-systemd raises when the
socket has gone), and the bridge's helper must go away with the daemon.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from typing import List

import pytest

from tests.support.peers import ask
from tests.support.processes import S6IPC, SUPPORT, VENV_PYTHON, wait_listening
from tests.support.s6 import Scan, write_service

DAEMON = os.path.join(SUPPORT, "notify_daemon.py")

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")


def bridged_service(scan: Scan, client: str, sock: str, delay: float = 0.5) -> None:
    run = f"exec {S6IPC} sdnotify-bridge {VENV_PYTHON} {DAEMON} {client} {sock} {delay}\n"
    source = write_service(os.path.join(scan.base, "src-" + client), run, notification_fd=3)
    scan.add(client, source, {})


def bridge_processes(base: str) -> List[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if b"sdnotify-bridge" in cmdline and base.encode() in cmdline:
                out.append(int(entry))
    return out


@pytest.mark.parametrize("client", ["sdnotify", "python-systemd"])
def test_ready_from_a_real_sd_notify_daemon_reaches_s6(scan: Scan, client: str, sockdir: str) -> None:
    if client == "python-systemd":
        pytest.importorskip("systemd.daemon")
    sock = os.path.join(sockdir, "d.sock")
    bridged_service(scan, client, sock)
    scan.start()
    scan.wait_supervised(client)
    assert scan.svwait("-u", client)[0] == 0
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        ask(sock)  # started, still in its start-up delay
    rc, took = scan.svwait("-U", client)
    assert rc == 0 and took >= 0.25, (rc, took, scan.log())
    reply = ask(sock).decode().split()  # ready means accepting
    pid = scan.pid(client)
    assert reply == [client, str(pid)]  # the daemon kept the supervised PID
    helpers = bridge_processes(sockdir)
    assert len(helpers) == 1 and helpers[0] != pid  # the helper; the daemon exec'd (its own argv)
    time.sleep(0.4)  # STATUS= every 50 ms keeps going to the helper without an error
    assert scan.pid(client) == pid and scan.svstat(client, "up,ready") == ["true", "true"]
    assert ask(sock).decode().split() == [client, str(pid)]
    scan.svc("-d", client)
    assert scan.svwait("-D", client)[0] == 0
    deadline = time.monotonic() + 3
    while bridge_processes(sockdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bridge_processes(sockdir) == []  # the helper followed the daemon


def test_a_daemon_that_never_says_ready_is_never_ready(scan: Scan, sockdir: str) -> None:
    sock = os.path.join(sockdir, "n.sock")
    bridged_service(scan, "never", sock, delay=0)
    scan.start()
    scan.wait_supervised("never")
    assert scan.svwait("-u", "never")[0] == 0
    assert scan.svwait("-U", "never", 800)[0] == 99  # s6-svwait's timeout
    wait_listening(sock)  # a loaded machine may not have started the daemon in those 0.8 s
    assert ask(sock).split()[0] == b"never"  # serving all the same


# -- without a supervisor: the notification fd is a pipe of ours ----------------------------------
def readiness_of(client: str, options: List[str], sockdir: str, settle: float = 0.0) -> bytes:
    """Run the bridge with its notification fd on a pipe; what arrived on it.

    Waits for the newline (10 s at most) or, with *settle*, only until *settle* seconds after the
    daemon's socket appeared (its child sends READY=1 0.2 s after that): a negative answer then
    means the message was sent and ignored, not that it was not sent yet.
    """
    r, w = os.pipe()
    sock = os.path.join(sockdir, client + ".sock")
    proc = subprocess.Popen([S6IPC, "sdnotify-bridge", "-d", str(w), *options, VENV_PYTHON, DAEMON, client,
                             sock, "0"], pass_fds=[w], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    data = b""
    deadline = time.monotonic() + 10
    try:
        if settle:
            wait_listening(sock)
            deadline = time.monotonic() + settle
        while b"\n" not in data and time.monotonic() < deadline:
            if select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(r, 64)
                if not chunk:
                    break
                data += chunk
    finally:
        proc.kill()
        proc.wait(10)
        os.close(r)
    return data


def test_who_may_say_ready(sockdir: str) -> None:
    assert readiness_of("child", [], sockdir, settle=0.8) == b""  # a child is not the daemon
    assert readiness_of("child", ["-a"], sockdir) == b"\n"  # -a: anyone (NotifyAccess=all)
    assert readiness_of("mainpid", [], sockdir) == b"\n"  # MAINPID= names who speaks for it


def test_bridge_errors(sockdir: str) -> None:
    def fails(args: List[str]) -> str:
        result = subprocess.run([S6IPC, "sdnotify-bridge", *args], capture_output=True, timeout=20,
                                cwd=sockdir)
        assert result.returncode in (100, 111), result
        return result.stderr.decode()

    assert fails(["/bin/true"]) == ("sdnotify-bridge: fatal: unable to read notification-fd (use -d notif): "
                                    "No such file or directory\n")
    assert fails(["-d", "9", "/bin/true"]) == \
        "sdnotify-bridge: fatal: unable to use notification fd 9: Bad file descriptor\n"
    assert fails([]).startswith("sdnotify-bridge: usage: sdnotify-bridge [ -d notif ]")
    with open(os.path.join(sockdir, "notification-fd"), "w") as f:
        f.write("three\n")
    assert fails(["/bin/true"]) == "sdnotify-bridge: fatal: invalid notification-fd: three\n"
