"""Real daemons that accept by themselves, under Debian's s6-svscan, on a socket parked in our fd holder.

The shipped service directories units/s6/s6ipc-{gunicorn,uvicorn,nginx} run gunicorn (a WSGI app),
uvicorn (an ASGI app) and Debian's nginx (a static file), each started through
``s6-fdholder-retrieve … s6-listen-fds …`` with s6ipc's links first in PATH (so the holder is our
``fdholderd``). Under client load (HTTP over the Unix socket from 4 threads), 10 ``s6-svc -r`` each,
every generation serving before the next restart, the three daemons at once: 0 refused, 0 failed
requests, the socket file never re-bound. uvicorn runs as ``s6ipc-uvicorn`` (plain uvicorn resets a
request accepted in the instant of its stop, uvicorn#2757: tests/programs/test_uvicorn_drain.py).
The control — the same services binding their socket at every start — refuses clients.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Sequence, Set

import pytest

from tests.support.http import http_get, ok
from tests.support.peers import Load
from tests.support.processes import S6IPC
from tests.support.s6 import Scan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(ROOT, "units", "s6")
BIN = os.path.dirname(sys.executable)
RESTARTS = 10

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")


def need(program: str) -> str:
    for d in (BIN, "/usr/sbin", "/usr/bin"):
        path = os.path.join(d, program)
        if os.access(path, os.X_OK):
            return path
    pytest.skip(f"{program} is not installed (pip install '.[test]' / apt-get install nginx)")


def start(scan: Scan, sockdir: str, daemons: Sequence[str], held: bool = True) -> Dict[str, str]:
    """The fd holder and one service per daemon in one s6-svscan; returns each daemon's socket path."""
    links = os.path.join(sockdir, "links")
    subprocess.run([S6IPC, "links", links], check=True, timeout=20)
    replace = {"/run/s6ipc-demo": os.path.join(sockdir, "run"), "/usr/local/lib/s6ipc/bin": links}
    replace["/usr/bin/gunicorn"] = os.path.join(BIN, "gunicorn")  # the venv's, as the tests install it
    replace["/usr/local/bin/s6ipc-uvicorn"] = os.path.join(BIN, "s6ipc-uvicorn")
    scan.add("s6ipc-fdholder", os.path.join(UNITS, "s6ipc-fdholder"), replace)
    for daemon in daemons:
        service = scan.add(f"s6ipc-{daemon}", os.path.join(UNITS, f"s6ipc-{daemon}"), replace)
        if not held:  # the control: bind the socket at every start, as a plain run script does
            run = os.path.join(service, "run")
            with open(run) as f:
                text = f.read()
            text = text.replace('exec s6-fdholder-retrieve -- "$H" "unix:$P"',
                                'exec s6-ipcserver-socketbinder -- "$P"')
            text = text.replace('s6-ipcserver-socketbinder -- "$P" s6-fdholder-store -- "$H" "unix:$P"', ":")
            with open(run, "w") as f:
                f.write(text)
    os.makedirs(os.path.join(sockdir, "run"), exist_ok=True)
    scan.start()
    for daemon in daemons:
        scan.wait_supervised(f"s6ipc-{daemon}")
    return {d: os.path.join(sockdir, "run", f"{d}.sock") for d in daemons}


def serving(path: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = http_get(path)
            if ok(reply):
                return reply
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not serving after {timeout}s")
        time.sleep(0.05)


def restart_under_load(scan: Scan, name: str, path: str, restarts: int) -> Load:
    pids: Set[int] = {scan.pid(name)}
    with Load(path, ok, asker=http_get) as load:
        time.sleep(0.3)
        for _ in range(restarts):
            old = scan.pid(name)
            scan.svc("-r", name)
            deadline = time.monotonic() + 20
            while scan.pid(name) in (old, 0, -1):
                assert time.monotonic() < deadline, scan.log()
                time.sleep(0.02)
            pids.add(scan.pid(name))
            serving(path)  # this generation serves before the next restart
            time.sleep(0.2)
    assert len(pids) == restarts + 1, pids  # each restart really started a new daemon
    return load


def in_parallel(scan: Scan, paths: Dict[str, str], restarts: int) -> Dict[str, Load]:
    """:func:`restart_under_load` on every daemon at once (the suite's time is the slowest one's)."""
    loads: Dict[str, Load] = {}
    failures: List[BaseException] = []

    def one(daemon: str) -> None:
        try:
            loads[daemon] = restart_under_load(scan, f"s6ipc-{daemon}", paths[daemon], restarts)
        except BaseException as e:  # re-raised in the test's thread
            failures.append(e)

    threads = [threading.Thread(target=one, args=(d,)) for d in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if failures:
        raise failures[0]
    return loads


DAEMONS = ("gunicorn", "uvicorn", "nginx")


def test_restarts_under_load_refuse_and_fail_nothing(scan: Scan, sockdir: str) -> None:
    for daemon in DAEMONS:
        need(daemon)
    paths = start(scan, sockdir, DAEMONS)
    first = {d: serving(p) for d, p in paths.items()}
    nodes = {d: os.stat(p).st_ino for d, p in paths.items()}
    loads = in_parallel(scan, paths, RESTARTS)
    for daemon, load in loads.items():
        print(f"{daemon}: s6-svc -r x{RESTARTS} under load, socket held: {load.summary()}")
    for daemon, load in loads.items():
        assert load.counts["refused"] == 0, (daemon, load.summary())
        assert load.counts["truncated"] == 0, (daemon, load.summary())
        assert load.counts["ok"] > 100, (daemon, load.summary())
        assert os.stat(paths[daemon]).st_ino == nodes[daemon]  # the path was never unlinked nor re-bound
        assert first[daemon].split(b"\r\n\r\n", 1)[1].startswith(b"hello from " + daemon.encode())
        if daemon != "nginx":  # the app reports its pid: many generations served the load
            served_by = {r.split(b"\r\n\r\n", 1)[1] for r in load.replies}
            assert len(served_by) > RESTARTS, (daemon, served_by)


def test_control_binding_at_every_start_refuses_clients(scan: Scan, sockdir: str) -> None:
    daemons = ("gunicorn", "uvicorn")
    for daemon in daemons:
        need(daemon)
    paths = start(scan, sockdir, daemons, held=False)
    for path in paths.values():
        serving(path)
    loads = in_parallel(scan, paths, 2)
    for daemon, load in loads.items():
        print(f"{daemon}: s6-svc -r x2 under load, no holder: {load.summary()}")
        assert load.counts["refused"] > 0, (daemon, load.summary())


def test_nginx_without_its_variable_cannot_adopt_the_socket(sockdir: str) -> None:
    """Why ``-x nginx``: given only LISTEN_FDS, nginx binds the path itself and fails (in use)."""
    nginx = need("nginx")
    service = os.path.join(sockdir, "svc")
    shutil.copytree(os.path.join(UNITS, "s6ipc-nginx"), service)
    run_dir = os.path.join(sockdir, "run")
    os.makedirs(os.path.join(run_dir, "nginx"))
    conf = os.path.join(service, "nginx.conf")
    with open(conf) as f:
        text = f.read().replace("/run/s6ipc-demo", run_dir)
    with open(conf, "w") as f:
        f.write(text)
    path = os.path.join(run_dir, "nginx.sock")
    argv = [S6IPC, "ipcserver-socketbinder", path, S6IPC, "listen-fds", "-n", "web", nginx, "-e", "stderr",
            "-p", service, "-c", conf]
    out = subprocess.run(argv, capture_output=True, timeout=30)
    assert out.returncode != 0 and b"Address already in use" in out.stderr, out.stderr
