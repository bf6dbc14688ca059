"""ipcserverd's in-place upgrade (SIGUSR2): same PID, socket and children kept, nothing refused;
the preflight rejecting a broken installed version; a new image failing after the exec; the live
view of what the daemon does."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from typing import Callable, List

import pytest

from s6ipc import __version__
from tests.support.processes import (
    Client,
    RunningServer,
    needs_reachable_interpreter,
    nobody_ids,
    ours,
    requires_root,
    theirs,
    wait_until,
    zombie_children,
)
from tests.support.upgrade import Exchange, copy_package, edit, prove, unended, upgrade, view

UPGRADES = 20


def test_twenty_upgrades_under_load(sockdir: str, handler: str,
                                    server_factory: Callable[..., RunningServer]) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([*ours("ipcserver"), "-v", "-1", "-c", "200", path, handler, "hold"])
    pid = server.proc.pid
    proof = prove(path, pid, UPGRADES)
    print(f"{proof.load.done} short connections during {UPGRADES} upgrades")
    assert server.proc.poll() is None and server.proc.pid == pid
    assert proof.document["version"] == __version__ and proof.document["uptime"] > UPGRADES * 0.2
    assert zombie_children(pid) == []
    log = server.log()
    assert unended(proof, log) == []
    assert log.count("upgraded in place: s6ipc") == UPGRADES
    assert "warning" not in log and "fatal" not in log


def test_bare_ipcserverd_behind_s6s_socketbinder(sockdir: str, handler: str,
                                                 server_factory: Callable[..., RunningServer]) -> None:
    """Started without our wrapper — s6's C socket binder exec'ing a bare ipcserverd — it upgrades
    the same way, and keeps the name it was invoked by."""
    path = os.path.join(sockdir, "s")
    server = server_factory([theirs("ipcserver-socketbinder")[0], path, *ours("s6-ipcserverd"), "-v2", "-1",
                             handler, "hold"])
    before = Exchange(path)
    assert upgrade(server.proc.pid, 1)["connections"]["total"] == 1
    assert upgrade(server.proc.pid, 2)["generation"] == 2
    assert before.echo(b"still served") and before.finish()
    wait_until(lambda: f"s6-ipcserverd: info: end pid {before.pid} uid 0 exitcode 0" in server.log())


def test_limits_and_signals_cover_connections_from_before(
        sockdir: str, server_factory: Callable[..., RunningServer]) -> None:
    """-C, IPCCONNNUM, SIGHUP and the end lines count the children the previous image accepted."""
    path = os.path.join(sockdir, "s")
    prog = ["sh", "-c", 'echo "$IPCCONNNUM"; exec cat']
    server = server_factory([*ours("ipcserver"), "-v", "-1", "-C", "3", path, *prog])
    pid = server.proc.pid
    first = Client(path)
    assert first.line() == b"1"
    upgrade(pid, 1)
    second = Client(path)
    assert second.line() == b"2", "IPCCONNNUM counts the connection from before the upgrade"
    upgrade(pid, 2)
    third = Client(path)
    assert third.line() == b"3"
    denied = Client(path)
    assert denied.rest() == b"", "-C 3 counts the two connections from before the upgrades"
    wait_until(lambda: "deny 0:0 count 3/3" in server.log())
    server.signal(signal.SIGHUP)
    for c in (first, second, third):
        assert c.rest() == b"", "SIGHUP ended it"
    wait_until(lambda: len(re.findall(r"end pid \d+ uid 0 signal 15", server.log())) == 3)
    document = view(pid)
    assert document["connections"]["total"] == 0
    assert (document["accepted"], document["refused"]) == (4, 1), "the -C denial counts as refused"
    for c in (first, second, third, denied):
        c.close()


_HOLDER = ("import socket, sys, time\n"
           "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
           "sys.stdout.write(s.recv(64).decode()); sys.stdout.flush(); sys.stdin.read()\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="a client of another uid needs root to start it")
def test_per_uid_counts_across_an_upgrade(sockdir: str, handler: str,
                                          server_factory: Callable[..., RunningServer]) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([*ours("ipcserver"), "-v", "-1", path, handler, "hold"])
    pid = server.proc.pid
    uid, gid = nobody_ids()
    other = subprocess.Popen(["/usr/bin/python3", "-c", _HOLDER, path], user=uid, group=gid,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline().strip().isdigit()
        ours_too = Exchange(path)
        for generation in (0, 1):
            if generation:
                upgrade(pid, generation)
            document = view(pid)
            per_uid = {"0": 1, str(uid): 1}
            assert document["connections"] == {"total": 2, "uids": 2, "per_uid": per_uid,
                                               "unit": "uid", "peers": 2, "per_peer": per_uid}
            assert sorted((c["uid"], c["gid"]) for c in document["children"]) == [(0, 0), (uid, gid)]
        assert ours_too.finish()
    finally:
        other.communicate(b"", timeout=20)
    wait_until(lambda: f"uid {uid} exitcode 0" in server.log())
    assert view(pid)["connections"]["total"] == 0


def test_without_credentials_after_an_upgrade(sockdir: str, handler: str,
                                              server_factory: Callable[..., RunningServer]) -> None:
    """-P: uids unknown before and after; the end line says ``uid ?``."""
    path = os.path.join(sockdir, "s")
    server = server_factory([*ours("ipcserver"), "-v", "-1", "-P", path, handler, "hold"])
    held = Exchange(path)
    document = upgrade(server.proc.pid, 1)
    assert document["connections"] == {"total": 1, "uids": None, "per_uid": {},
                                       "unit": "uid", "peers": None, "per_peer": {}}
    assert document["children"][0]["uid"] is None
    assert held.finish()
    wait_until(lambda: f"end pid {held.pid} uid ? exitcode 0" in server.log())


def test_quit_after_upgrade_kills_connections_from_before(
        sockdir: str, handler: str, server_factory: Callable[..., RunningServer]) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([*ours("ipcserver"), "-v", "-1", path, handler, "hold"])
    before = Exchange(path)
    upgrade(server.proc.pid, 1)
    server.signal(signal.SIGQUIT)
    assert server.wait() == 0
    assert before.line() == b"TERM", "SIGQUIT reached the child the previous image accepted"


def test_readiness_around_the_upgrade(sockdir: str, handler: str,
                                      server_factory: Callable[..., RunningServer]) -> None:
    """To $NOTIFY_SOCKET: READY=1; at SIGUSR2 RELOADING=1 with MONOTONIC_USEC= (between two
    readings of CLOCK_MONOTONIC), then READY=1 from the new image; never MAINPID= nor STOPPING=1;
    WATCHDOG=1 from both images; STATUS= with the counts."""
    path, notify = os.path.join(sockdir, "s"), os.path.join(sockdir, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify)
    receiver.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=notify, WATCHDOG_USEC="400000")
    server = server_factory([*ours("ipcserver"), "-1", path, handler, "hold"], env=env)

    def until(field: str) -> List[str]:
        got: List[str] = []
        while not any(m.startswith(field) for m in got):
            got.extend(receiver.recv(4096).decode().split("\n"))
        return got

    first = until("READY=1")
    held = Exchange(path)
    assert "STATUS=1 connection from 1 uid, 1 accepted, 0 refused" in until("STATUS=1 connection")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    server.signal(signal.SIGUSR2)
    reload = until("RELOADING=1")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    stamp = [int(m.split("=", 1)[1]) for m in reload if m.startswith("MONOTONIC_USEC=")]
    assert len(stamp) == 1 and before <= stamp[0] <= after
    ready = until("READY=1")
    beats = until("WATCHDOG=1")
    assert view(server.proc.pid)["generation"] == 1
    everything = first + reload + ready + beats
    assert "WATCHDOG=1" in first + reload, "the first image fed the watchdog"
    assert not [m for m in everything if m.startswith(("MAINPID=", "STOPPING=1"))], everything
    assert held.echo(b"env") and held.finish()
    receiver.close()


@pytest.fixture
def package_copy(tmp_path: str) -> tuple:  # type: ignore[type-arg]
    top = str(tmp_path)
    return top, copy_package(top)


def _copy_server(server_factory: Callable[..., RunningServer], top: str, path: str, handler: str,
                 verbosity: str = "-v") -> RunningServer:
    env = dict(os.environ, PYTHONPATH=top)
    return server_factory([*ours("ipcserver"), verbosity, "-1", path, handler, "hold"], env=env)


@pytest.mark.parametrize("module,breakage,why", [
    ("access/cdb.py", "def broken(:\n", "SyntaxError"),
    ("access/ipc.py", "import s6ipc_missing_dependency\n", "No module named 's6ipc_missing_dependency'"),
])
def test_a_broken_installed_version_is_rejected(sockdir: str, handler: str, package_copy: tuple,  # type: ignore[type-arg]
                                                server_factory: Callable[..., RunningServer],
                                                module: str, breakage: str, why: str) -> None:
    top, package = package_copy
    path = os.path.join(sockdir, "s")
    server = _copy_server(server_factory, top, path, handler)
    pid = server.proc.pid
    before = Exchange(path)
    with open(os.path.join(package, module), "a") as f:
        f.write(breakage)
    server.signal(signal.SIGUSR2)
    line = wait_until(lambda: [ln for ln in server.log().splitlines() if "unable to upgrade in place" in ln])
    assert len(line) == 1 and why in line[0], line
    assert line[0].startswith("ipcserverd: warning: unable to upgrade in place: s6ipc preflight: fatal: ")
    assert line[0].endswith(f"still serving with s6ipc {__version__}")
    assert view(pid)["generation"] == 0
    assert before.echo(b"still here")
    fresh = Exchange(path)
    assert fresh.echo(b"new connection") and fresh.finish()

    # repaired and bumped: the next SIGUSR2 runs the version now on disk
    edit(os.path.join(package, module), breakage, "")
    edit(os.path.join(package, "__init__.py"), f'__version__ = "{__version__}"', '__version__ = "99.0"')
    document = upgrade(pid, 1)
    assert document["version"] == "99.0" and document["pid"] == pid
    assert before.echo(b"after") and before.finish()
    wait_until(lambda: f"end pid {before.pid} uid 0 exitcode 0" in server.log())


def test_new_image_failing_after_exec_exits_111(sockdir: str, handler: str, package_copy: tuple,  # type: ignore[type-arg]
                                                 server_factory: Callable[..., RunningServer]) -> None:
    """A bug the preflight cannot see (in the take-over itself): one line, exit 111, so that the
    supervisor restarts the service; the connections in progress go on (docs/zero-downtime-upgrades.md)."""
    top, package = package_copy
    path = os.path.join(sockdir, "s")
    server = _copy_server(server_factory, top, path, handler)
    before = Exchange(path)
    edit(os.path.join(package, "serve", "life.py"), '        parsed = parse_state(state, server.identity)\n',
         '        raise RuntimeError("boom")\n')
    server.signal(signal.SIGUSR2)
    assert server.wait(30) == 111
    lines = [ln for ln in server.log().splitlines() if "fatal" in ln]
    assert lines == ["ipcserverd: fatal: unable to take over from the previous image: boom"]
    assert "Traceback" not in server.log()
    assert before.echo(b"orphaned but served") and before.finish()
    with pytest.raises(OSError):  # the socket closed with the process: what a supervisor restarts
        Exchange(path, timeout=2)


@pytest.mark.parametrize("content,line", [
    (None, "invalid $S6IPC_HANDOFF: 'nonsense' (a descriptor number)"),
    (b"{", "the handoff state on fd N is not JSON: Expecting property name enclosed in double quotes: "
           "line 1 column 2 (char 1)"),
    (b'{"format": 2, "kind": "fdholderd"}',
     "unable to take over from the previous image: a state of format 2 for 'fdholderd': "
     "this is ipcserverd format 2"),
    (b'{"format": 1, "program": "ipcserverd", "generation": 1}',
     "unable to take over from the previous image: a state of format 1 for 'ipcserverd': "
     "this is ipcserverd format 2"),
    (b'{"format": 2, "kind": "ipcserverd", "version": "1", "lineage": {"generation": 1}}',
     "unable to take over from the previous image: no 'status_fd' in the handoff state"),
])
def test_a_bad_handoff_is_one_line_and_111(sockdir: str, handler: str, content: bytes, line: str) -> None:
    """What a new image does with a state it cannot use: never a traceback, never a silent start."""
    path = os.path.join(sockdir, "s")
    fd = os.memfd_create("test", 0)
    os.write(fd, content or b"")
    env = dict(os.environ, S6IPC_HANDOFF="nonsense" if content is None else str(fd))
    p = subprocess.run([*ours("ipcserver"), path, handler, "hold"], env=env, capture_output=True, timeout=20,
                       pass_fds=(fd,))
    os.close(fd)
    assert p.returncode == 111
    assert p.stderr.decode().replace(f"fd {fd}", "fd N") == f"ipcserverd: fatal: {line}\n"


def test_live_view_and_status_program(sockdir: str, handler: str,
                                      server_factory: Callable[..., RunningServer]) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([*ours("ipcserver"), "-1", "-c", "7", "-C", "5", path, handler, "hold"])
    pid = server.proc.pid
    held: List[Exchange] = [Exchange(path) for _ in range(2)]
    text = subprocess.run([*ours("status"), str(pid)], capture_output=True, timeout=20)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.decode().splitlines()
    headline = rf"ipcserverd pid {pid}, version {re.escape(__version__)}, generation 0, uptime [\d.]+s"
    assert re.fullmatch(headline, lines[0]), lines[0]
    assert "limits: maxconn 7, localmaxconn 5" in lines
    assert "connections: total 2, uids 1, per_uid 0 2, unit uid, peers 1, per_peer 0 2" in lines
    assert "accepted: 2" in lines and "refused: 0" in lines
    for ex in held:
        assert any(re.fullmatch(rf"  pid {ex.pid} uid 0 gid 0 age [\d.]+s", ln) for ln in lines), lines
    as_json = subprocess.run([*ours("status"), "-j", "ipcserverd"], capture_output=True, timeout=20)
    import json

    documents = [json.loads(ln) for ln in as_json.stdout.decode().splitlines()]
    assert pid in [d["pid"] for d in documents]
    for ex in held:
        ex.finish()
    missing = subprocess.run([*ours("status"), "1"], capture_output=True, timeout=20)
    assert missing.returncode == 1
    assert missing.stderr == b"status: fatal: unable to find a live view for pid 1: No such process\n"
    usage = subprocess.run([*ours("status")], capture_output=True, timeout=20)
    assert (usage.returncode, usage.stderr) == (100, b"status: usage: status [ -j ] pid|name\n")


@requires_root
@needs_reachable_interpreter
def test_live_view_is_refused_to_another_uid(sockdir: str, handler: str,
                                             server_factory: Callable[..., RunningServer]) -> None:
    """The daemon refuses its live view to another uid (SO_PEERCRED): ``s6ipc status`` run as nobody."""
    path = os.path.join(sockdir, "s")
    pid = server_factory([*ours("ipcserver"), "-1", path, handler, "hold"]).proc.pid
    uid, gid = nobody_ids()
    other = subprocess.run([*ours("status"), str(pid)], capture_output=True, timeout=20, user=uid, group=gid)
    assert other.returncode == 1
    why = f"uid {uid} may not read the live view of ipcserverd (only root and uid 0)"
    assert other.stderr.decode() == \
        f"status: fatal: unable to read the live view of pid {pid} ({why}): Permission denied\n"
