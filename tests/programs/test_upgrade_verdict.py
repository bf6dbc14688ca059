"""``s6ipc upgrade PID|NAME [-t ms] [-j]``: the verdict of an in-place upgrade (issue 18, point 7).

0 and one line (or JSON) when the new generation serves, for ipcserverd, tcpserver4d and
fdholderd; 1 and the preflight's reason when the installed code refuses (the old generation
serves on, the live view counts the failure); 111 when the time runs out (a preflight that hangs);
100 for bad usage; 111 and one line, and no signal, for a PID that is not an s6ipc daemon.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from typing import Callable, List

import pytest

from s6ipc import __version__
from tests.support.fdholder import make_rules
from tests.support.processes import (
    S6IPC,
    RunningServer,
    needs_reachable_interpreter,
    nobody_ids,
    request,
    requires_root,
)
from tests.support.tcp import tcp_request
from tests.support.upgrade import copy_package, edit

LINE = re.compile(rf"pid (\d+) \((\w+)\): generation (\d+), s6ipc {re.escape(__version__)}, "
                  r"exec ([\d.]+) ms, pause ([\d.]+) ms\n")


def _upgrade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([S6IPC, "upgrade", *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_new_generation_is_exit_0_with_one_line(sockdir: str,
                                                  server_factory: Callable[..., RunningServer]) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([S6IPC, "ipcserver", "-1", path, "echo", "hi"])
    pid = server.proc.pid
    for generation in (1, 2):
        done = _upgrade(str(pid))
        assert (done.returncode, done.stderr) == (0, ""), done
        match = LINE.fullmatch(done.stdout)
        assert match, done.stdout
        assert (int(match[1]), match[2], int(match[3])) == (pid, "ipcserverd", generation)
        assert 0 < float(match[5]) < float(match[4]) < 30000  # the stand-in served during the exec
        assert request(path) == b"hi\n"
    status = subprocess.run([S6IPC, "status", "-j", str(pid)], capture_output=True, timeout=20)
    view = json.loads(status.stdout)
    assert (view["generation"], view["upgrades"], view["upgrade_failures"]) == (2, 2, 0)
    assert view["last_upgrade"]["result"] == "ok" and view["last_upgrade"]["pause_ms"] > 0


def test_json_for_tcpserver4d_and_fdholderd(sockdir: str,
                                            server_factory: Callable[..., RunningServer]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tcp = server_factory([S6IPC, "tcpserver4", "-1", "127.0.0.1", str(port), "echo", "hi"])
    holder_path = os.path.join(sockdir, "h")
    rules = make_rules(sockdir, {"uid/0": {"S6_FDHOLDER_LIST": ""}})
    holder = server_factory([S6IPC, "fdholder-daemon", "-1", "-i", rules, holder_path])
    for server, program in ((tcp, "tcpserver4d"), (holder, "fdholderd")):
        done = _upgrade("-j", "-t", "60000", str(server.proc.pid))
        assert (done.returncode, done.stderr) == (0, ""), done
        verdict = json.loads(done.stdout)
        assert verdict["pid"] == server.proc.pid and verdict["program"] == program
        assert (verdict["generation"], verdict["version"], verdict["result"]) == (1, __version__, "ok")
        assert verdict["pause_ms"] > 0 and verdict["exec_ms"] > 0 and verdict["reason"] is None
        if program == "fdholderd":  # no stand-in: nobody accepts from the exec on
            assert verdict["pause_ms"] == verdict["exec_ms"]
        else:
            assert verdict["pause_ms"] < verdict["exec_ms"]
    listed = subprocess.run([S6IPC, "fdholder-list", holder_path], capture_output=True, timeout=10)
    assert listed.returncode == 0, listed.stderr
    assert tcp_request(port) == b"hi\n"


def _broken_install(top: str, module: str, line: str) -> Callable[[], None]:
    """The package copied under *top* (the daemon runs it through PYTHONPATH); returns what breaks
    its programs/*module* by putting *line* first (the installed code the preflight then runs)."""
    package = copy_package(top)
    path = os.path.join(package, "programs", module)

    def breaks() -> None:
        edit(path, "from __future__ import annotations\n", f"from __future__ import annotations\n{line}\n")
    return breaks


def test_a_refused_preflight_is_exit_1_with_its_reason(sockdir: str, tmp_path: str,
                                                       server_factory: Callable[..., RunningServer]) -> None:
    top = str(tmp_path)
    breaks = _broken_install(top, "ipcserverd.py", 'raise ImportError("this install is broken")')
    env = {**os.environ, "PYTHONPATH": top}
    path = os.path.join(sockdir, "s")
    server = server_factory([S6IPC, "ipcserver", "-1", path, "echo", "hi"], env=env)
    breaks()
    done = _upgrade("-j", str(server.proc.pid))
    assert done.returncode == 1, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"upgrade: fatal: unable to upgrade pid {server.proc.pid} "
                                                   "in place: "), lines
    assert "this install is broken" in lines[0]
    verdict = json.loads(done.stdout)
    assert (verdict["result"], verdict["generation"], verdict["upgrade_failures"]) == ("refused", 0, 1)
    assert request(path) == b"hi\n"  # the old generation serves on


def test_a_hung_preflight_is_exit_111_when_the_time_runs_out(
        sockdir: str, tmp_path: str, server_factory: Callable[..., RunningServer]) -> None:
    top = str(tmp_path)
    breaks = _broken_install(top, "ipcserverd.py", "import time; time.sleep(3600)")
    path = os.path.join(sockdir, "s")
    env = {**os.environ, "PYTHONPATH": top}
    server = server_factory([S6IPC, "ipcserver", "-1", path, "echo", "hi"], env=env)
    breaks()
    done = _upgrade("-t", "1500", str(server.proc.pid))
    assert done.returncode == 111, done
    pid = server.proc.pid
    assert done.stderr == (f"upgrade: fatal: unable to see pid {pid} upgrade in place within 1.5 s: "
                           "Connection timed out\n")
    assert done.stdout == ""


@pytest.mark.parametrize("args", [[], ["-t"], ["-t", "soon", "1"], ["-x", "1"], ["1", "2"], [""]])
def test_bad_usage_is_100(args: List[str]) -> None:
    done = _upgrade(*args)
    assert done.returncode == 100, done
    assert done.stderr.splitlines()[-1] == "upgrade: usage: upgrade [ -j ] [ -t timeout ] pid|name"


def test_a_pid_that_is_no_s6ipc_daemon_is_111_and_never_signalled() -> None:
    """SIGUSR2 would kill a process that does not catch it: nothing is sent to it."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        done = _upgrade(str(sleeper.pid))
        assert done.returncode == 111, done
        assert done.stderr == (f"upgrade: fatal: no s6ipc daemon to upgrade as pid {sleeper.pid}: "
                               "unable to find "
                               f"a live view for pid {sleeper.pid}: No such process\n")
        assert sleeper.poll() is None
        gone = _upgrade("4194305")
        assert (gone.returncode, gone.stderr) == (111, "upgrade: fatal: unable to find an s6ipc daemon "
                                                       "as pid "
                                                       "4194305: No such process\n")
        assert _upgrade("no-such-daemon").returncode == 111
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()


@requires_root
@needs_reachable_interpreter
def test_another_users_daemon_is_111_and_never_signalled(sockdir: str,
                                                        server_factory: Callable[..., RunningServer]) -> None:
    """The live view refuses a user who is neither root nor the daemon's: no signal is sent, and the
    daemon shows no upgrade and no failure."""
    server = server_factory([S6IPC, "ipcserver", "-1", os.path.join(sockdir, "s"), "echo", "hi"])
    uid, gid = nobody_ids()
    pid = server.proc.pid
    done = subprocess.run([S6IPC, "upgrade", str(pid)], capture_output=True, text=True, timeout=60,
                          user=uid, group=gid, extra_groups=[])
    assert done.returncode == 111, done
    assert done.stderr.startswith(f"upgrade: fatal: no s6ipc daemon to upgrade as pid {pid}: "), done
    assert len(done.stderr.splitlines()) == 1
    view = json.loads(subprocess.run([S6IPC, "status", "-j", str(server.proc.pid)], capture_output=True,
                                     timeout=20).stdout)
    assert (view["generation"], view["upgrade_failures"]) == (0, 0)
