"""The accept loop's open seams, exercised in a real process: an extra polled fd and an extra
signal (a daemon built on the loop), ``serve()`` ending with "exec this", a spawner of the
caller's, a peer identity of the caller's, and the private CPython socket API the hot path uses.
"""

from __future__ import annotations

import _socket
import json
import os
import signal
import socket
import subprocess
import textwrap
import time
from typing import Any, Callable

from s6ipc.serve import loop as server
from tests.support.processes import VENV_PYTHON, request, wait_for_ready

#: The checkout (tests/unit/serve/ is three levels below it): the child imports tests.support from there.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_the_private_socket_api_of_the_hot_path_exists() -> None:
    """If a CPython release drops ``socket._accept`` or ``_socket.socket``, this says so first."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        accept = server._accept_method(s)
        assert callable(accept)
    assert issubclass(socket.socket, _socket.socket)


SCRIPT = r"""
import json, os, signal, sys
from s6ipc.base.execution import Spawner
from s6ipc.base.messages import Reporter
from s6ipc.serve.peers import UnixPeers
from s6ipc.serve.loop import Server, ServerConfig

class Counting(Spawner):
    spawned = 0
    def spawn(self, fd, env):
        Counting.spawned += 1
        return super().spawn(fd, env)

class Tagged(UnixPeers):
    def identify(self, conn, address):
        peer = super().identify(conn, address)
        events.append("identified")
        return peer

events = []
r, w = os.pipe()
config = ServerConfig(["sh", "-c", 'echo "$PROTO $IPCCONNNUM"'], notify=True)
srv = Server(config, Reporter("t"), Reporter("t (child)"), identity=Tagged(),
             spawner=Counting(config.argv), on_ready=[lambda: events.append("ready")],
             on_exit=[lambda: events.append("exit")])
srv.watch(r, lambda mask: (events.append("watched"), os.read(r, 1)))
srv.on_signal(signal.SIGUSR1, lambda: srv.stop_for_exec(["next", "image"]))
try:
    srv.on_signal(signal.SIGTERM, lambda: None)
except ValueError:
    events.append("SIGTERM is the loop's own")
srv.start()
os.write(w, b"x")
ending = srv.serve()
os.write(2, (json.dumps([ending.code, ending.exec_argv, Counting.spawned, events]) + "\n").encode())
"""


def _serve_script(script: str, sockdir: str, exchange: Callable[[subprocess.Popen], None]) -> Any:  # type: ignore[type-arg]
    """Run *script* (a Python program serving fd 0 and ending on SIGUSR1s) on a listening socket
    ``sockdir/s``, once its ``-1`` newline came let *exchange(proc)* talk to it, and return the JSON
    report its last stderr line holds (it must exit 0)."""
    path = os.path.join(sockdir, "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    r, w = os.pipe()
    proc = subprocess.Popen([VENV_PYTHON, "-c", textwrap.dedent(script)], stdin=listener.fileno(),
                            stdout=w, stderr=subprocess.PIPE, cwd=REPO)
    listener.close()
    os.close(w)
    try:
        wait_for_ready(r)
        exchange(proc)
        _, err = proc.communicate(timeout=10)
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return json.loads(err.decode().splitlines()[-1])


def test_watch_on_signal_stop_for_exec_spawner_and_identity(sockdir: str) -> None:
    path = os.path.join(sockdir, "s")

    def exchange(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
        assert request(path) == b"IPC 0\n"  # s6 2.12+: the other connections from this uid
        proc.send_signal(signal.SIGUSR1)

    code, argv, spawned, events = _serve_script(SCRIPT, sockdir, exchange)
    assert (code, argv, spawned) == (0, ["next", "image"], 1)
    assert events[0] == "SIGTERM is the loop's own" and events[1] == "ready" and events[-1] == "exit"
    assert "watched" in events and "identified" in events


SERVE_ON_SCRIPT = r"""
import json, os, signal, sys
sys.path.insert(0, os.getcwd())
from s6ipc.base.messages import Reporter
from s6ipc.serve.loop import Server, ServerConfig
from tests.support.clock import FakeClock

def mine(signo, frame):
    pass

signal.signal(signal.SIGTERM, mine)
r, w = os.pipe2(os.O_NONBLOCK)
signal.set_wakeup_fd(w)
clock = FakeClock()
beats = []
config = ServerConfig(["sh", "-c", 'echo "$PROTO"'], notify=True)
srv = Server(config, Reporter("t"), Reporter("t (child)"), clock=clock,
             heartbeat=(5.0, lambda: beats.append(clock.monotonic())))
srv.on_signal(signal.SIGUSR1, lambda: srv.stop_for_exec(["next", "image"]))
srv.start()
first = srv.serve()
srv.serve_on()  # the exec failed: everything goes on as it was
second = srv.serve()
srv.close()
report = {"endings": [first.exec_argv, second.exec_argv], "accepted": srv.accepted, "beats": beats,
          "handler": signal.getsignal(signal.SIGTERM) is mine,
          "usr1": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
          "wakeup": signal.set_wakeup_fd(-1) == w}
os.write(2, (json.dumps(report) + "\n").encode())
"""


def test_serve_on_after_a_failed_exec_then_close_gives_everything_back(sockdir: str) -> None:
    """``serve_on()`` after ``stop_for_exec``: the next ``serve()`` accepts again with the counters
    as they were; ``close()`` gives back the previous handlers and wakeup fd (house-review §9). The
    heartbeat reads the server's clock (a FakeClock here: 1000.0)."""
    path = os.path.join(sockdir, "s")

    def exchange(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
        assert request(path) == b"IPC\n"
        proc.send_signal(signal.SIGUSR1)
        assert request(path) == b"IPC\n"  # waits in the backlog until the loop serves on
        proc.send_signal(signal.SIGUSR1)

    report = _serve_script(SERVE_ON_SCRIPT, sockdir, exchange)
    assert report["endings"] == [["next", "image"], ["next", "image"]] and report["accepted"] == 2
    assert report["beats"] == [1000.0, 1000.0]
    assert report["handler"] and report["usr1"] and report["wakeup"], report


COUNTERS_SCRIPT = r"""
import json, os, signal, sys
from s6ipc.base.execution import Spawner
from s6ipc.base.messages import Reporter
from s6ipc.serve.loop import Server, ServerConfig

class Broken(Spawner):
    def spawn(self, fd, env):
        raise OSError(11, "Resource temporarily unavailable")

seen = []
def policy(peer, env, conn):
    seen.append(1)
    if len(seen) == 2:
        return None
    if len(seen) == 3:
        return Broken(config.argv), env
    return spawner, env

ending = 'case $x in ok) exit 0;; fail) exit 3;; *) kill -9 $$;; esac'
config = ServerConfig(["sh", "-c", 'echo go; read x; ' + ending], localmaxconn=2, notify=True)
spawner = Spawner(config.argv)
srv = Server(config, Reporter("t"), Reporter("t (child)"), policy=policy)
srv.on_signal(signal.SIGUSR1, lambda: srv.stop_for_exec(["next"]))
srv.start()
srv.serve()
report = {"accepted": srv.accepted, "spawned": srv.spawned, "refusals": srv.refusals, "exits": srv.exits,
          "refused": srv.refused}
os.write(2, (json.dumps(report) + "\n").encode())
"""


def _wait_reaped(pid: int, timeout: float = 10.0) -> None:
    """Until process *pid* has no child left, zombies included (it has reaped them all)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = 0
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except (OSError, ValueError):
                continue
            children += entry.isdigit() and int(stat[stat.rindex(b")") + 2:].split()[1]) == pid
        if not children:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not reap its children in {timeout} s")


def test_counters_by_refusal_reason_and_exit_outcome(sockdir: str) -> None:
    """accepted = spawned + refused; each refusal under its reason, each end under its outcome."""
    path = os.path.join(sockdir, "s")

    def exchange(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
        def client() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            return s

        held = [client()]
        assert held[0].recv(3) == b"go\n"
        for _ in range(2):  # refused by the policy, then the spawn fails: closed at once
            with client() as s:
                assert s.recv(3) == b""
        held.append(client())
        assert held[1].recv(3) == b"go\n"
        with client() as s:  # a third from the same uid: -C 2
            assert s.recv(3) == b""
        for s, word in zip(held, (b"ok\n", b"fail\n")):
            s.sendall(word)
            assert s.recv(3) == b""
            s.close()
        _wait_reaped(proc.pid)  # else the third may still count against -C 2
        third = client()
        assert third.recv(3) == b"go\n"
        third.sendall(b"die\n")
        assert third.recv(3) == b""
        third.close()
        _wait_reaped(proc.pid)  # the last SIGCHLD before SIGUSR1
        proc.send_signal(signal.SIGUSR1)

    report = _serve_script(COUNTERS_SCRIPT, sockdir, exchange)
    assert report["refusals"] == {"maxconn": 0, "localmaxconn": 1, "access": 1, "spawn": 1, "rate": 0,
                                  "prefix": 0}
    assert report["exits"] == {"ok": 1, "failed": 1, "signaled": 1}
    assert (report["accepted"], report["spawned"], report["refused"]) == (6, 3, 3)
