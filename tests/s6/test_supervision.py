"""The shipped s6 service directories (units/s6/) under Debian's s6-svscan / s6-supervise.

Each run script puts s6ipc's links (``s6ipc links DIR``) first in PATH, so ``s6-NAME`` runs our NAME
where s6ipc has it and Debian's ``/usr/bin/s6-NAME`` otherwise. The tests run every scenario twice:
``ours`` (a links directory made by ``s6ipc links``) and ``s6`` (an empty one: Debian's C programs
throughout), and the observable results must be the same:

* ``s6-svwait -U`` returns only once the server accepts (with ``-u`` as the control, which returns
  while the run script is still starting and the socket does not exist yet);
* ``s6-svc -r`` under client load refuses no connection when the socket is held by the fd holder
  service (and the plain service, which re-binds its socket at each start, does refuse some).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Dict

import pytest

from tests.support.peers import Load, ask
from tests.support.processes import S6IPC
from tests.support.s6 import Scan

HERE = os.path.dirname(os.path.abspath(__file__))

UNITS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "units", "s6")
LINKS_IN_UNITS = "/usr/local/lib/s6ipc/bin"

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")


def complete(reply: bytes) -> bool:
    return reply.endswith(b"\n") and b"PROTO=IPC\n" in reply and b"IPCCONNNUM=" in reply


@pytest.fixture(params=["ours", "s6"])
def links(request: pytest.FixtureRequest, sockdir: str) -> str:
    directory = os.path.join(sockdir, "links")
    if request.param == "ours":
        subprocess.run([S6IPC, "links", directory], check=True, timeout=20)
    else:
        os.makedirs(directory)
    return directory


def replacements(sockdir: str, links: str) -> Dict[str, str]:
    return {"/run/s6ipc-demo": os.path.join(sockdir, "run"), LINKS_IN_UNITS: links}


def test_svwait_U_returns_only_once_the_server_accepts(scan: Scan, links: str, sockdir: str) -> None:
    path = os.path.join(sockdir, "run", "s6.sock")
    service = scan.add("s6ipc-demo", os.path.join(UNITS, "s6ipc-demo"), replacements(sockdir, links))
    run = os.path.join(service, "run")
    with open(run) as f:
        text = f.read()
    with open(run, "w") as f:  # a slow start-up, so that "up" and "ready" are far apart
        f.write(text.replace("\nexec s6-ipcserver", "\nsleep 0.6\nexec s6-ipcserver"))
    scan.start()
    scan.wait_supervised("s6ipc-demo")
    assert scan.svwait("-u", "s6ipc-demo")[0] == 0
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        ask(path)  # up, not ready: nothing accepts yet
    rc, took = scan.svwait("-U", "s6ipc-demo")
    assert rc == 0
    assert complete(ask(path))  # the first attempt right after -U succeeds
    assert took >= 0.3, took
    assert scan.svstat("s6ipc-demo", "up,ready") == ["true", "true"]
    exe = os.readlink(f"/proc/{scan.pid('s6ipc-demo')}/exe")
    assert exe == ("/usr/bin/s6-ipcserverd" if not os.listdir(links) else os.path.realpath(sys.executable))


def test_svc_r_under_load_refuses_nothing_when_the_socket_is_held(scan: Scan, links: str,
                                                                  sockdir: str) -> None:
    path = os.path.join(sockdir, "run", "held.sock")
    for name in ("s6ipc-fdholder", "s6ipc-held"):
        scan.add(name, os.path.join(UNITS, name), replacements(sockdir, links))
    scan.start()
    scan.wait_supervised("s6ipc-held")
    assert scan.svwait("-U", "s6ipc-held", 20000)[0] == 0, scan.log()
    node = os.stat(path).st_ino
    ours = bool(os.listdir(links))
    python = os.path.realpath(sys.executable)
    # which implementation really runs: the holder and the server, ours (Python) or s6's C programs
    for service, c_program in (("s6ipc-fdholder", "s6-fdholderd"), ("s6ipc-held", "s6-ipcserverd")):
        exe = os.readlink(f"/proc/{scan.pid(service)}/exe")
        assert exe == (python if ours else f"/usr/bin/{c_program}"), service
    pids = {scan.pid("s6ipc-held")}
    with Load(path, complete) as load:
        time.sleep(0.3)
        for _ in range(3):
            old = scan.pid("s6ipc-held")
            scan.svc("-r", "s6ipc-held")
            deadline = time.monotonic() + 20  # a loaded machine may take a while to restart it
            while scan.pid("s6ipc-held") in (old, 0, -1):
                assert time.monotonic() < deadline, scan.log()
                time.sleep(0.02)
            pids.add(scan.pid("s6ipc-held"))
            time.sleep(0.2)  # clients served by this generation
    print(f"s6-svc -r x3 under load, socket held: {load.summary()}")
    assert load.counts["refused"] == 0 and load.counts["truncated"] == 0, load.summary()
    assert load.counts["ok"] > 50, load.summary()
    assert len(pids) == 4  # the server really restarted, three times
    assert os.stat(path).st_ino == node  # and never re-bound its socket


def test_control_without_a_holder_restarts_refuse_clients(scan: Scan, sockdir: str) -> None:
    """Why the holder: the plain service re-binds its socket at each start, and clients in between fail."""
    links = os.path.join(sockdir, "links")
    subprocess.run([S6IPC, "links", links], check=True, timeout=20)
    path = os.path.join(sockdir, "run", "s6.sock")
    scan.add("s6ipc-demo", os.path.join(UNITS, "s6ipc-demo"), replacements(sockdir, links))
    scan.start()
    scan.wait_supervised("s6ipc-demo")
    assert scan.svwait("-U", "s6ipc-demo")[0] == 0
    with Load(path, complete) as load:
        time.sleep(0.2)
        for _ in range(3):
            scan.svc("-r", "s6ipc-demo")
            time.sleep(0.4)
    print(f"s6-svc -r x3 under load, no holder: {load.summary()}")
    assert load.counts["refused"] > 0, load.summary()
