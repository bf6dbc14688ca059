"""The hand-over is authenticated (issue 18, point 5), under a real s6-supervise.

A daemon started fresh with ``$S6IPC_HANDOFF`` naming anything its own previous image did not
make — a regular file, a pipe, a memfd that is not sealed, a sealed memfd made for another PID —
says one warning line, starts fresh, and writes its ``-1`` readiness newline: ``s6-svwait -U``
sees it ready, and it serves. ipcserverd, tcpserverd and fdholderd alike.

And a state that *is* this process's (signed by the same PID and start time: what a wrapper that
execs the daemon can forge) still never makes a daemon adopt a process that is not its child: a
``sleep`` listed as a child survives the daemon's SIGHUP (SIGTERM to every child) and SIGABRT
(SIGKILL to every child).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.fdholder import make_rules
from tests.support.processes import S6IPC, VENV_PYTHON, RunningServer, request, wait_until
from tests.support.s6 import Scan, read_log, write_service
from tests.support.tcp import tcp_request
from tests.support.upgrade import FORGE

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")

KINDS = ["file", "pipe", "unsealed", "otherpid"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("daemon", ["ipcserverd", "tcpserverd", "fdholderd"])
def test_a_forged_handoff_is_ignored_and_the_daemon_is_ready(scan: Scan, sockdir: str, daemon: str,
                                                             kind: str) -> None:
    links = os.path.join(sockdir, "links")
    subprocess.run([S6IPC, "links", links], check=True, timeout=20)
    log, path, port = os.path.join(sockdir, "d.log"), os.path.join(sockdir, "d.sock"), _free_port()
    rules = make_rules(sockdir, {"uid/0": {"S6_FDHOLDER_LIST": ""}})
    command = {"ipcserverd": f"s6-ipcserver -1 {path} echo hi",
               "tcpserverd": f"s6-tcpserver -1 127.0.0.1 {port} echo hi",
               "fdholderd": f"s6-fdholder-daemon -1 -i {rules} {path}"}[daemon]
    write_service(os.path.join(sockdir, "source"),
                  f"PATH={links}:/usr/bin:/bin\nexec 2>>{log}\nexec {VENV_PYTHON} {FORGE} {kind} {command}\n",
                  notification_fd=1)
    scan.add("d", os.path.join(sockdir, "source"), {})
    scan.start()
    scan.wait_supervised("d")
    assert scan.svwait("-U", "d")[0] == 0, read_log(log)  # the -1 newline was written
    if daemon == "ipcserverd":
        assert request(path) == b"hi\n"
    elif daemon == "tcpserverd":
        assert tcp_request(port) == b"hi\n"
    else:
        listed = subprocess.run([S6IPC, "fdholder-list", path], capture_output=True, timeout=10)
        assert listed.returncode == 0, listed.stderr
    lines = read_log(log).splitlines()
    assert len(lines) == 1, lines
    name = {"tcpserverd": "s6-tcpserver4d"}.get(daemon, f"s6-{daemon}")
    assert lines[0].startswith(f"{name}: warning: ignoring $S6IPC_HANDOFF='7': fd 7 is "), lines
    assert lines[0].endswith("; starting fresh"), lines
    assert scan.svstat("d", "up,ready") == ["true", "true"]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGABRT])
def test_a_signed_state_never_makes_a_stranger_a_child(sockdir: str, sig: int) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    path = os.path.join(sockdir, "s")
    state = {"format": 2, "kind": "ipcserverd", "version": "0.0", "descriptors": {"listen": 0},
             "lineage": {"generation": 1, "started_wall": time.time(), "started_monotonic": time.monotonic(),
                         "sigmask": [], "status_fd": None, "readiness": {}},
             "daemon": {"accepted": 1, "refused": 0, "children": {str(stranger.pid): [0, 0]}}}
    state_path = os.path.join(sockdir, "state.json")
    with open(state_path, "w") as f:
        json.dump(state, f)
    srv = RunningServer([sys.executable, FORGE, f"signed:{state_path}", S6IPC, "ipcserver", path, "echo",
                         "hi"], ready=False)  # a state taken over: the first image wrote the -1 newline
    try:
        wait_until(lambda: os.path.exists(path), 10)
        assert request(path) == b"hi\n"
        wait_until(lambda: "not adopting" in srv.log(), 10)
        said = f"not adopting pid {stranger.pid} from the handoff state: not a child of this process"
        assert said in srv.log()
        srv.signal(sig)
        if sig == signal.SIGABRT:
            wait_until(lambda: srv.proc.poll() is not None, 10)
        else:
            time.sleep(0.5)
            assert request(path) == b"hi\n"
        assert stranger.poll() is None, "the daemon signalled a process that is not its child"
    finally:
        srv.stop()
        stranger.kill()
        stranger.wait()
