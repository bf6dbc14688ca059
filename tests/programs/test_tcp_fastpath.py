"""tcpserverd's in-process tcpserver-access against the real tcpserver-access program.

Each scenario runs twice, one server each, with the same clients (distinct loopback source
addresses) and the same rules:

* ``fast``    — ``tcpserver … s6ipc tcpserver-access -H -R …``: the daemon decides in-process and
  spawns only the final program;
* ``program`` — the same chain with ``python -m s6ipc tcpserver-access …`` (not our prefix, so the
  program really runs per connection).

What each client reads, the handler's environment (order included) and the log lines (pids and
ports normalised) must be the same for both; the fast path's children use no interpreter.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Dict, Iterator, List, Tuple

import pytest

from tests.support.processes import (
    FAST_CHILDREN_CPU,
    FASTPATH_CONNECTIONS,
    S6IPC,
    SLOW_CHILDREN_CPU,
    children_cpu_seconds,
    proc_children,
    wait_until,
)
from tests.support.tcp import TcpServer, tcp_request

PREFIXES = {"fast": [S6IPC], "program": [sys.executable, "-m", "s6ipc"]}
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def rules(tmp_path: object) -> str:
    base = os.path.join(str(tmp_path), "rules")
    for key, verdict in (("ip4/127.0.0.1_32", "allow"), ("ip4/127.0.0.2_32", "deny"),
                         ("ip4/127.0.0.0_8", "allow"), ("ip4/127.0.0.4_32", "deny")):
        os.makedirs(os.path.join(base, key))
        open(os.path.join(base, key, verdict), "w").close()
    os.makedirs(os.path.join(base, "ip4/127.0.0.5_32/env"))
    open(os.path.join(base, "ip4/127.0.0.5_32/allow"), "w").close()
    with open(os.path.join(base, "ip4/127.0.0.5_32/env/GREETING"), "w") as f:
        f.write("hello\n")
    return base


@pytest.fixture
def servers() -> Iterator[Dict[str, TcpServer]]:
    started: Dict[str, TcpServer] = {}
    yield started
    for s in started.values():
        s.stop()


def start(who: str, access: List[str], prog: List[str], verbosity: str = "-v") -> TcpServer:
    argv = [S6IPC, "tcpserver", verbosity, "-1", "127.0.0.1", "0", *PREFIXES[who], "tcpserver-access",
            *access, "--", *prog]
    return TcpServer(argv, env=CLEAN_ENV)


def normalise(text: str) -> Tuple[List[str], List[str]]:
    """(the access lines in order, the daemon's other lines sorted): pids and ports out, and the
    status counts, which depend on how long each child lived."""
    text = re.sub(r"\bpid \d+", "pid P", text)
    lines = re.sub(r"(127\.0\.0\.\d+):\d+", r"\1:N", text).splitlines()
    access = [line for line in lines if line.startswith("tcpserver-access: ")]
    return access, sorted(line for line in lines if line not in access and ": status: " not in line)


@pytest.mark.parametrize("verbosity", ["-q", "-v"])
def test_same_replies_environment_and_logs(servers: Dict[str, TcpServer], rules: str, handler: str,
                                           verbosity: str) -> None:
    seen = {}
    for who in PREFIXES:
        access = ["-v2", "-H", "-R", "-l", "me", "-i", rules]
        srv = servers[who] = start(who, access, [handler, "env"], verbosity)
        replies = [tcp_request(srv.port, source=f"127.0.0.{n}") for n in (1, 2, 3, 4, 5)]
        wait_until(lambda srv=srv: not proc_children(srv.proc.pid))  # type: ignore[misc]
        envs = [re.sub(rb"TCP(REMOTE|LOCAL)PORT=\d+", rb"TCP\1PORT=N", r) for r in replies]
        seen[who] = (envs, normalise(srv.log()))
    assert seen["fast"] == seen["program"]
    envs, log = seen["fast"]
    assert envs[1] == envs[3] == b""  # denied
    assert b"GREETING=hello\n" in envs[4] and b"GREETING" not in envs[0]
    names = [line.split(b"=")[0] for line in envs[0].splitlines()]
    assert names == [b"PATH", b"PROTO", b"TCPREMOTEIP", b"TCPREMOTEPORT", b"TCPCONNNUM", b"TCPLOCALIP",
                     b"TCPLOCALPORT", b"TCPLOCALHOST"]
    assert "tcpserver-access: info: deny pid P ip 127.0.0.2: Permission denied" in log[0]


def test_fast_path_spawns_no_interpreter(servers: Dict[str, TcpServer], rules: str, handler: str) -> None:
    """The CPU time of the daemon's reaped children over the connections is the handler's alone."""
    used = {}
    for who in PREFIXES:
        srv = servers[who] = start(who, ["-H", "-R", "-i", rules], [handler, "ok"])
        for _ in range(FASTPATH_CONNECTIONS):
            assert tcp_request(srv.port) == b"ok\n"
        wait_until(lambda srv=srv: not proc_children(srv.proc.pid))  # type: ignore[misc]
        used[who] = children_cpu_seconds(srv.proc.pid)
    assert used["program"] > SLOW_CHILDREN_CPU, used  # the control: the interpreters are visible
    assert used["fast"] < FAST_CHILDREN_CPU, used


def test_options_needing_the_network_run_the_program(servers: Dict[str, TcpServer], rules: str) -> None:
    """-h (DNS) is not done in-process: the program runs (DNSCACHEIP on a dead loopback address)."""
    env = {**CLEAN_ENV, "DNSCACHEIP": "127.53.0.1"}
    argv = [S6IPC, "tcpserver", "-1", "127.0.0.1", "0", S6IPC, "tcpserver-access", "-h", "-i", rules, "--",
            "sh", "-c", 'echo "${TCPREMOTEHOST-unset} $TCPREMOTEIP"']
    srv = servers["h"] = TcpServer(argv, env=env)
    assert tcp_request(srv.port) == b"unset 127.0.0.1\n"
