"""TCP sockets from systemd (``systemd-socket-activate -l ADDRESS``, the same fd passing as PID 1):
``tcpserverd`` and ``systemd-socket`` adopt ``ListenStream=`` IPv4, IPv6 and dual-stack sockets.

``ListenStream=PORT`` is an AF_INET6 socket on ``[::]`` with IPV6_V6ONLY 0 (bindv6only is 0
here): IPv4 clients arrive IPv4-mapped, reported as ``::ffff:7f00:1`` as s6-tcpserver6d does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest

from tests.support.processes import S6IPC, env_of, stop_process, wait_until
from tests.support.tcp import tcp_request

SSA = "/usr/bin/systemd-socket-activate"
PRIVATE = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET")

pytestmark = pytest.mark.skipif(not os.access(SSA, os.X_OK), reason="systemd-socket-activate not installed")


def free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def activate() -> Iterator:  # type: ignore[type-arg]
    started: List[subprocess.Popen[bytes]] = []

    def start(listen: Sequence[str], argv: Sequence[str], host: str, port: int
              ) -> Tuple[subprocess.Popen[bytes], Dict[str, str]]:
        """Run, and return the process and the reply to the first connection (which activates it)."""
        args = [SSA] + [f"-l{x}" for x in listen] + list(argv)
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        started.append(proc)
        first: Dict[str, str] = {}

        def served() -> bool:
            try:
                first.update(child_env(host, port))
                return True
            except OSError:
                return proc.poll() is not None
        wait_until(served)
        return proc, first

    yield start
    for proc in started:
        stop_process(proc)


def child_env(host: str, port: int) -> Dict[str, str]:
    return env_of(tcp_request(port, host=host))


@pytest.mark.parametrize("listen,host,seen", [
    ("127.0.0.1:{port}", "127.0.0.1", "127.0.0.1"),
    ("[::1]:{port}", "::1", "::1"),
    ("{port}", "127.0.0.1", "::ffff:7f00:1"),  # dual-stack [::]
    ("{port}", "::1", "::1"),
])
@pytest.mark.parametrize("daemon", [["tcpserverd"], ["systemd-socket", S6IPC, "tcpserverd"]])
def test_daemon_adopts_listenstream(activate, listen: str, host: str, seen: str,  # type: ignore[no-untyped-def]
                                    daemon: List[str]) -> None:
    port = free_port()
    argv = [S6IPC, *daemon, "-v2", "--", "/usr/bin/env"]
    proc, env = activate([listen.format(port=port)], argv, host, port)
    assert (env["PROTO"], env["TCPREMOTEIP"], env["TCPCONNNUM"]) == ("TCP", seen, "0"), env
    assert not [k for k in env if k in PRIVATE], env
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert "tcpserverd: info: allow " in log and "received SIGTERM, quitting" in log, log


def test_systemd_socket_picks_one_of_several_by_address(activate) -> None:  # type: ignore[no-untyped-def]
    """Two ListenStream= (IPv4 and IPv6): ``-l [::1]:PORT`` names the one this daemon serves."""
    port, other = free_port(), free_port()
    argv = [S6IPC, "systemd-socket", "-l", f"[::1]:{port}", S6IPC, "tcpserver6d", "--", "/usr/bin/env"]
    _, env = activate([f"127.0.0.1:{other}", f"[::1]:{port}"], argv, "::1", port)
    assert env["TCPREMOTEIP"] == "::1"


@pytest.mark.parametrize("listen,argv,message", [
    ("127.0.0.1:{port}", ["ipcserverd"],
     "ipcserverd: fatal: the socket passed by systemd as fd 3 (unknown) is not a Unix domain socket"),
    ("[::1]:{port}", ["tcpserver4d"],
     "tcpserver4d: fatal: the socket passed by systemd as fd 3 (unknown) is not an IPv4 socket"),
    ("127.0.0.1:{port},127.0.0.2:{port}", ["tcpserverd"],
     "tcpserverd: fatal: 2 listening TCP sockets were passed by systemd (fd 3 unknown 127.0.0.1:{port}, "
     "fd 4 unknown 127.0.0.2:{port}): choose one by name or path"),
])
def test_wrong_or_ambiguous_sockets_are_one_line(listen: str, argv: List[str], message: str) -> None:
    port = free_port()
    args = [SSA] + [f"-l{x.format(port=port)}" for x in listen.split(",")] + [S6IPC, *argv, "--", "true"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1" if "127" in listen else "::1", port), timeout=5):
            pass
        assert proc.wait(10) == 100
        assert proc.stderr is not None
        lines = [x for x in proc.stderr.read().decode().splitlines() if ": fatal: " in x]
        assert lines == [message.format(port=port)]
    finally:
        stop_process(proc)
