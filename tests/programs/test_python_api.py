"""The asyncio example of docs/python-api.md, run exactly as written, from each source of its socket.

* fd 0, from ``ipcserver-socketbinder``, readiness on a notification pipe (s6 style);
* systemd, from ``systemd-socket-activate`` with a stand-in manager on ``$NOTIFY_SOCKET``;
* an fd holder holding the socket: ours (``s6ipc fdholder-daemon``) and Debian's ``s6-fdholder-daemon``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Tuple

import pytest

import s6ipc
from tests.support.peers import Load, Manager, ask
from tests.support.processes import S6IPC, VENV_PYTHON, wait_for_ready, wait_listening, wait_until

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                   "python-api.md")


def example_source() -> str:
    with open(DOC) as f:
        text = f.read()
    section = text[text.index("## Example"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "no python block in the Example section of docs/python-api.md"
    return match.group(1)


@pytest.fixture
def example(sockdir: str) -> str:
    path = os.path.join(sockdir, "hello.py")
    with open(path, "w") as f:
        f.write(example_source())
    return path


@pytest.fixture
def procs() -> Iterator[List[subprocess.Popen[bytes]]]:
    started: List[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_from_fd0_with_s6_readiness(example: str, sockdir: str, procs: List[subprocess.Popen[bytes]]) -> None:
    path = os.path.join(sockdir, "h.sock")
    r, w = os.pipe()
    p = subprocess.Popen([S6IPC, "ipcserver-socketbinder", path, VENV_PYTHON, example, str(w)], pass_fds=[w],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(p)
    os.close(w)
    assert wait_for_ready(r) == b"\n"
    os.close(r)
    assert ask(path) == b"hello, world\n"  # ready means accepting


def test_socket_activated_with_sd_notify(example: str, sockdir: str,
                                         procs: List[subprocess.Popen[bytes]]) -> None:
    manager = Manager(os.path.join(sockdir, "notify"))
    path = os.path.join(sockdir, "h.sock")
    try:
        p = subprocess.Popen(["systemd-socket-activate", "-l", path, "-E", f"NOTIFY_SOCKET={manager.address}",
                              "-E", "WATCHDOG_USEC=400000", VENV_PYTHON, example],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(p)
        wait_listening(path)
        with socket.socket(socket.AF_UNIX) as first:  # the connection that activates it
            first.connect(path)
            ready = manager.get(10)
            assert ready.text == "READY=1\nSTATUS=serving" and ready.pid == p.pid
            first.sendall(b"systemd")
            first.shutdown(1)
            assert first.recv(100) == b"hello, systemd\n"
        assert manager.get().text == "WATCHDOG=1"
        p.send_signal(signal.SIGTERM)
        assert manager.texts_until(lambda t: t == "STOPPING=1")[-1] == "STOPPING=1"
        assert p.wait(10) == 0
    finally:
        manager.close()


def held_socket(sockdir: str, procs: List[subprocess.Popen[bytes]], holder_impl: str) -> Tuple[str, str]:
    """An fd holder (ours or s6's) holding a listening socket bound to a path: (holder, path)."""
    if holder_impl == "s6" and shutil.which("s6-fdholder-daemon") is None:
        pytest.skip("Debian's s6 is not installed")
    prefix = [S6IPC] if holder_impl == "ours" else []
    prog = "%s" if holder_impl == "ours" else "s6-%s"
    rules = os.path.join(sockdir, "rules", "uid", str(os.getuid()))
    os.makedirs(os.path.join(rules, "env"))
    open(os.path.join(rules, "allow"), "w").close()
    for name in ("S6_FDHOLDER_STORE_REGEX", "S6_FDHOLDER_RETRIEVE_REGEX"):
        with open(os.path.join(rules, "env", name), "w") as f:
            f.write("^unix:\n")
    holder, path = os.path.join(sockdir, "holder"), os.path.join(sockdir, "h.sock")
    rulesdir = os.path.join(sockdir, "rules")
    h = subprocess.Popen([*prefix, prog % "fdholder-daemon", "-1", "-i", rulesdir, holder],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(h)
    assert h.stdout is not None and h.stdout.read(1) == b"\n"
    subprocess.run([*prefix, prog % "ipcserver-socketbinder", path, *prefix, prog % "fdholder-store", holder,
                    f"unix:{path}"], check=True, timeout=20)
    return holder, path


def start_held(example: str, holder: str, path: str, procs: List[subprocess.Popen[bytes]]
               ) -> subprocess.Popen[bytes]:
    """The example on the socket the holder keeps, once it is ready (its notification fd)."""
    r, w = os.pipe()
    p = subprocess.Popen([VENV_PYTHON, example, str(w)], pass_fds=[w], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=dict(os.environ, FDHOLDER=holder, FDHOLDER_ID=f"unix:{path}"))
    procs.append(p)
    os.close(w)
    assert wait_for_ready(r) == b"\n"
    os.close(r)
    return p


@pytest.mark.parametrize("holder_impl", ["ours", "s6"])
def test_from_an_fd_holder(example: str, sockdir: str, procs: List[subprocess.Popen[bytes]],
                           holder_impl: str) -> None:
    holder, path = held_socket(sockdir, procs, holder_impl)
    start_held(example, holder, path, procs)
    assert ask(path) == b"hello, world\n"


# -- the other side: s6ipc.spawn_with_sockets starts the example with a socket it keeps ----------------
# The parent (this test) binds a socket and starts the example with it; the example adopts it through
# LISTEN_FDS (the PID check included; a stale LISTEN_PIDFDID in the parent's environment must not reach
# it). The parent keeps the socket, so replacing the child under client load refuses nobody.
def reap(pid: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not exit")
        time.sleep(0.01)


def test_spawned_child_adopts_the_socket_and_replacing_it_refuses_nobody(example: str, sockdir: str) -> None:
    path = os.path.join(sockdir, "hello.sock")
    fd = s6ipc.bind_unix_socket(path)
    env: Dict[str, str] = dict(os.environ, LISTEN_PIDFDID="1", LISTEN_PID="1", LISTEN_FDS="7")
    try:
        pid = s6ipc.spawn_with_sockets([VENV_PYTHON, example], [fd], names=["web"], env=env)
        assert wait_until(lambda: ask(path)) == b"hello, world\n"
        with open(f"/proc/{pid}/environ", "rb") as f:
            child_env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        assert child_env[b"LISTEN_PID"] == str(pid).encode() and child_env[b"LISTEN_FDNAMES"] == b"web"
        assert b"LISTEN_PIDFDID" not in child_env
        with Load(path, lambda r: r == b"hello, world\n") as load:
            for _ in range(3):
                time.sleep(0.2)
                os.kill(pid, signal.SIGTERM)
                assert reap(pid) == 0
                r, w0 = os.pipe()  # the example's s6 readiness: a newline on the fd named as argument
                w = fcntl.fcntl(w0, fcntl.F_DUPFD_CLOEXEC, 10)  # above the sockets' range
                os.close(w0)
                pid = s6ipc.spawn_with_sockets([VENV_PYTHON, example, str(w)], [fd], names=["web"],
                                               pass_fds=[w])
                os.close(w)
                assert wait_for_ready(r) == b"\n"
                os.close(r)
            time.sleep(0.3)
        assert load.counts["refused"] == 0, load.summary()
        # The example's own stop: asyncio.run() cancels the handlers still running when SIGTERM comes,
        # so a client in the middle of one gets an empty reply; at most one per client thread per stop.
        assert load.counts["truncated"] <= 4 * 3, load.summary()
        assert load.counts["ok"] > 20
        os.kill(pid, signal.SIGTERM)
        assert reap(pid) == 0
    finally:
        os.close(fd)


def test_spawn_with_sockets_bad_input_raises(sockdir: str) -> None:
    with pytest.raises(s6ipc.BadInput, match="contains ':'"):
        s6ipc.spawn_with_sockets(["true"], [0], names=["a:b"])
    r, w = os.pipe()
    try:
        with pytest.raises(s6ipc.BadInput, match=f"fd {r} is not a socket"):
            s6ipc.spawn_with_sockets(["true"], [r])
    finally:
        os.close(r)
        os.close(w)
    fd = s6ipc.bind_unix_socket(os.path.join(sockdir, "x.sock"))
    try:
        with pytest.raises(s6ipc.ExecFailure):
            s6ipc.spawn_with_sockets(["no-such-program-s6ipc"], [fd])
    finally:
        os.close(fd)


def test_restarts_under_load_keep_the_path(example: str, sockdir: str,
                                           procs: List[subprocess.Popen[bytes]]) -> None:
    """Five stops and starts of the example on a held socket while clients keep connecting: every
    client is served, none meets ENOENT, the path is still there after each stop.

    On Python >= 3.13 this is what ``asyncio.start_unix_server(sock=…)`` breaks (it unlinks the
    path at close) and ``s6ipc.start_unix_server`` keeps; ``make test-pythons`` runs it there.
    """
    holder, path = held_socket(sockdir, procs, "ours")
    with Load(path, lambda reply: reply == b"hello, world\n", threads=3) as load:
        for _ in range(5):
            p = start_held(example, holder, path, procs)
            time.sleep(0.2)
            p.send_signal(signal.SIGTERM)
            assert p.wait(10) == 0
            assert os.path.exists(path), "the example unlinked the held socket's path"
        start_held(example, holder, path, procs)
        time.sleep(0.2)
    logs = [p.stderr.read() for p in procs[1:] if p.stderr is not None and p.poll() is not None]
    assert set(load.counts) == {"ok"} and load.counts["ok"] > 10, (load.summary(), logs)
