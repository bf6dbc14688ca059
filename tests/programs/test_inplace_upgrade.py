"""ipcserverd's in-place upgrade (SIGUSR2): same PID, socket and children kept, nothing refused;
the preflight rejecting a broken installed version; a new image failing after the exec; the live
view of what the daemon does."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

import pytest

from s6ipc import __version__
from s6ipc.daemon import liveview
from tests.support.processes import (
    S6IPC,
    VENV_PYTHON,
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
from tests.support.tcp import TcpServer, connect
from tests.support.upgrade import (
    FORGE,
    Exchange,
    break_take_over,
    copy_package,
    edit,
    prove,
    unended,
    upgrade,
    view,
)

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
    assert first.line() == b"0"  # s6 2.12+: the other connections from this uid
    upgrade(pid, 1)
    second = Client(path)
    assert second.line() == b"1", "IPCCONNNUM counts the connection from before the upgrade"
    upgrade(pid, 2)
    third = Client(path)
    assert third.line() == b"2"
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
    break_take_over(package)
    server.signal(signal.SIGUSR2)
    assert server.wait(30) == 111
    lines = [ln for ln in server.log().splitlines() if "fatal" in ln]
    assert lines == ["ipcserverd: fatal: unable to take over from the previous image: boom"]
    assert "Traceback" not in server.log()
    assert before.echo(b"orphaned but served") and before.finish()
    with pytest.raises(OSError):  # the socket closed with the process: what a supervisor restarts
        Exchange(path, timeout=2)


@pytest.mark.parametrize("content,line", [
    (b"{", "the handoff state on fd N is not JSON: Expecting property name enclosed in double quotes: "
           "line 1 column 2 (char 1)"),
    (b'{"format": 2, "kind": "fdholderd"}',
     "unable to take over from the previous image: a state of format 2 for 'fdholderd': "
     "this is ipcserverd format 2"),
    (b'{"format": 3, "kind": "ipcserverd", "generation": 1}',
     "unable to take over from the previous image: a state of format 3 for 'ipcserverd': "
     "this is ipcserverd format 2"),
    # format 1 (s6ipc 0.1's) is read, so that 0.1 upgrades in place to this: a truncated one is refused
    (b'{"format": 1, "program": "ipcserverd", "generation": 1}',
     "unable to take over from the previous image: no 'status_fd' in the handoff state"),
    (b'{"format": 2, "kind": "ipcserverd", "version": "1", "lineage": {"generation": 1}}',
     "unable to take over from the previous image: no 'status_fd' in the handoff state"),
])
def test_a_bad_handoff_is_one_line_and_111(sockdir: str, handler: str, content: bytes, line: str) -> None:
    """What a new image does with a state of its own previous image (the memfd it made, sealed and
    signed: tests/support/forge_handoff.py makes one) that it cannot use: never a traceback, never a
    silent start. (Anything that is not such a memfd is ignored: tests/s6/test_handoff_authenticated.py.)"""
    path = os.path.join(sockdir, "s")
    state = os.path.join(sockdir, "state")
    with open(state, "wb") as f:
        f.write(content)
    kind = "raw" if content == b"{" else "signed"
    p = subprocess.run([VENV_PYTHON, FORGE, f"{kind}:{state}", *ours("ipcserver"), path, handler, "hold"],
                       capture_output=True, timeout=20)
    assert p.returncode == 111
    assert p.stderr.decode().replace("fd 7", "fd N") == f"ipcserverd: fatal: {line}\n"


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


def _fd_flags(pid: int) -> Dict[int, int]:
    """The open file flags of each descriptor of *pid* (``/proc/PID/fdinfo``)."""
    flags = {}
    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        with open(f"/proc/{pid}/fdinfo/{name}") as f:
            for line in f:
                if line.startswith("flags:"):
                    flags[int(name)] = int(line.split()[1], 8)
    return flags


def test_an_exec_failure_is_undone_and_serving_goes_on(
        sockdir: str, handler: str, tmp_path: str, server_factory: Callable[..., RunningServer]) -> None:
    """The one failure policy (daemon/lifecycle.py): the preflight passed, the exec fails — the
    daemon undoes (signals, close-on-exec, the memfd), says READY=1 again and serves on, with its
    children and counters; the next SIGUSR2 upgrades it."""
    top = str(tmp_path)
    package = copy_package(top)
    venv = os.path.join(top, "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    inner = os.path.join(venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    with open(os.path.join(inner, "outer.pth"), "w") as f:  # the test venv's packages (uvicorn…)
        f.write("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    script = os.path.join(venv, "bin", "s6ipc")

    def install_script() -> None:
        with open(script, "w") as f:
            f.write(f"#!{venv}/bin/python\nimport sys\nfrom s6ipc.cli import main\nsys.exit(main())\n")
        os.chmod(script, 0o755)

    install_script()
    # the new code passes its preflight, which takes the console script away: the exec then fails
    unlink = "    import os, sys; os.unlink(os.path.join(os.path.dirname(sys.executable), 's6ipc'))\n"
    ipcserverd = os.path.join(package, "programs", "ipcserverd.py")
    edit(ipcserverd, "    access_fast_path(config)\n", "    access_fast_path(config)\n" + unlink)
    path, notify = os.path.join(sockdir, "s"), os.path.join(sockdir, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify)
    receiver.settimeout(10)
    env = dict(os.environ, PYTHONPATH=top, NOTIFY_SOCKET=notify)
    server = server_factory([script, "ipcserver", "-v", "-1", path, handler, "hold"], env=env)
    pid = server.proc.pid
    before = Exchange(path)
    assert before.echo(b"first")
    messages: List[str] = []

    def got(field: str) -> bool:
        while not any(m.startswith(field) for m in messages):
            messages.extend(receiver.recv(4096).decode().split("\n"))
        return True

    got("READY=1")
    messages.clear()
    server.signal(signal.SIGUSR2)
    warning = wait_until(lambda: [ln for ln in server.log().splitlines() if "unable to upgrade" in ln])
    assert warning == [f"ipcserverd: warning: unable to upgrade in place: unable to exec {script}: "
                       f"No such file or directory; still serving with s6ipc {__version__}"]
    got("READY=1")
    assert [m for m in messages if m.endswith("=1")][:2] == ["RELOADING=1", "READY=1"]
    assert server.proc.poll() is None and "fatal" not in server.log()
    document = view(pid)
    assert document["generation"] == 0 and document["connections"]["total"] == 1
    assert before.echo(b"still served")
    fresh = Exchange(path)
    assert fresh.echo(b"a new connection") and fresh.finish()
    wait_until(lambda: f"end pid {fresh.pid} uid 0 exitcode 0" in server.log())  # SIGCHLD let in again
    cloexec = {fd: flags & os.O_CLOEXEC for fd, flags in _fd_flags(pid).items() if fd > 2}
    assert cloexec and all(cloexec.values()), cloexec  # nothing of the daemon's leaks to a child
    assert not [ln for ln in os.listdir(f"/proc/{pid}/fd")
                if os.readlink(f"/proc/{pid}/fd/{ln}").startswith("/memfd:s6ipc-handoff")]
    # repaired: the next SIGUSR2 upgrades, with the connection from before
    edit(ipcserverd, unlink, "")
    install_script()
    assert upgrade(pid, 1)["connections"]["total"] == 1
    assert before.echo(b"after") and before.finish()
    wait_until(lambda: f"end pid {before.pid} uid 0 exitcode 0" in server.log())
    receiver.close()


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def test_tcpserver_counts_per_ip_in_its_live_view_status_and_across_an_upgrade(handler: str,
                                                                               sockdir: str) -> None:
    """tcpserver4d's live view and STATUS= count per IP address (not per uid), and an upgrade keeps
    its children with their IP identities: ``-C`` still counts the connections from before."""
    notify = os.path.join(sockdir, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify)
    receiver.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=notify)
    argv = [S6IPC, "tcpserver", "-v", "-1", "-C", "2", "127.0.0.1", "0", handler, "hold"]
    server = TcpServer(argv, env=env)
    held: List[socket.socket] = []
    try:
        pid = server.proc.pid
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.3"):
            held.append(connect(server.port, source=source))
            assert _line(held[-1]).strip().isdigit()

        def document() -> Dict[str, Any]:
            return liveview.query(pid, "tcpserver4d", timeout=20)

        per_ip = {"127.0.0.2": 1, "127.0.0.3": 2}
        first = document()
        assert first["program"] == "tcpserver4d"
        assert first["connections"] == {"total": 3, "unit": "ip", "peers": 2, "per_peer": per_ip}
        assert sorted(c["ip"] for c in first["children"]) == ["127.0.0.2", "127.0.0.3", "127.0.0.3"]
        assert all("uid" not in c and isinstance(c["port"], int) for c in first["children"])
        status: List[str] = []
        wanted = "STATUS=3 connections from 2 addresses, 3 accepted, 0 refused"
        while wanted not in status:
            status.extend(receiver.recv(4096).decode().split("\n"))
        os.kill(pid, signal.SIGUSR2)
        after = wait_until(lambda: (lambda d: d if d["generation"] == 1 else None)(document()), timeout=30)
        assert after["connections"] == first["connections"] and after["accepted"] == 3
        # -C 2 counts the connections taken over: a third one from 127.0.0.3 is refused
        with connect(server.port, source="127.0.0.3") as third:
            assert third.recv(100) == b""
        wait_until(lambda: "deny 127.0.0.3:" in server.log() and "count 2/2" in server.log())
        assert document()["refused"] == 1
        held[0].sendall(b"hello\n")
        assert _line(held[0]) == b"hello\n"
        held[1].shutdown(socket.SHUT_WR)
        assert held[1].recv(100) == b""
        wait_until(lambda: "ip 127.0.0.3 exitcode 0" in server.log())  # the end line names the IP
        # the counters by reason and outcome went on from the first image's (issue 19)
        counters = wait_until(lambda: (lambda c: c if c["exits"]["ok"] == 1 else None)(
            document()["counters"]))
        assert (counters["accepted"], counters["spawned"], counters["refused"]["localmaxconn"]) == (4, 3, 1)
        assert first["counters"]["accepted"] == 3 and sum(counters["refused"].values()) == 1
    finally:
        for s in held:
            s.close()
        server.stop()
        receiver.close()
