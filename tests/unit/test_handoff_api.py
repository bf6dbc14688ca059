"""The Python side of the hand-off: ``s6ipc.spawn_with_sockets`` meets ``s6ipc.listening_socket``.

The parent (this test) binds a socket and starts the asyncio example of docs/python-api.md with it,
exactly as written; the example adopts it through ``LISTEN_FDS`` (the PID check included, and a stale
``LISTEN_PIDFDID`` in the parent's environment must not reach it). The parent keeps the socket, so
replacing the child under client load refuses nobody: the parent is the holder.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from typing import Dict

import pytest
from conftest import VENV_PYTHON, wait_for_ready, wait_until
from test_python_api import example  # noqa: F401  (the fixture)

import s6ipc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "systemd"))
from peers import Load, ask  # noqa: E402


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


def test_spawned_child_adopts_the_socket_and_replacing_it_refuses_nobody(example: str, sockdir: str) -> None:  # noqa: F811
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
        assert load.counts["refused"] == 0 and load.counts["truncated"] == 0, load.summary()
        assert load.counts["ok"] > 20
        os.kill(pid, signal.SIGTERM)
        assert reap(pid) == 0
    finally:
        os.close(fd)


def test_bad_input_raises(sockdir: str) -> None:
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
