"""s6ipc.chain.daemon: the spawning daemons' command line, and the readiness sinks the environment
asks for (sent to a real datagram socket standing for the supervisor)."""

from __future__ import annotations

import os
import socket
from typing import Iterator

import pytest

from s6ipc.base.messages import Reporter
from s6ipc.base.options import UsageError
from s6ipc.chain.daemon import parse, readiness_sinks, system
from s6ipc.serve.loop import ServerConfig


def test_parse_takes_s6_ipcserverds_options() -> None:
    c = parse(["-v2", "-1", "-P", "-c", "10", "-C", "3", "prog", "-v"])
    assert (c.argv, c.verbosity, c.notify, c.lookup, c.maxconn, c.localmaxconn) == (
        ["prog", "-v"], 2, True, False, 10, 3)


def test_parse_defaults_and_the_last_of_p_and_P() -> None:
    c = parse(["prog"])
    assert (c.argv, c.verbosity, c.notify, c.lookup, c.maxconn, c.localmaxconn) == (
        ["prog"], 1, False, True, 40, 40)
    assert parse(["-P", "-p", "x"]).lookup is True
    assert parse(["-p", "-P", "x"]).lookup is False


@pytest.mark.parametrize("args", [[], [""], ["-c"], ["-c", "x", "p"], ["-z", "p"], ["-v"]])
def test_parse_usage_errors(args: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(UsageError):
        parse(args)


def test_the_tcp_daemons_have_no_credential_options() -> None:
    assert parse(["-v0", "-c", "5", "prog"], credentials=False).maxconn == 5
    for letter in ("-p", "-P"):
        with pytest.raises(UsageError):
            parse([letter, "prog"], credentials=False)


@pytest.fixture
def supervisor(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = os.path.join(sockdir, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("S6IPC_SYSTEMD_BACKEND", "stdlib")
    yield receiver
    receiver.close()


def test_no_supervisor_no_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    sinks = readiness_sinks(ServerConfig(["p"]), Reporter("x"))
    assert (sinks.on_ready, sinks.on_exit, sinks.heartbeat) == ([], [], None)
    assert not sinks.readiness.notifier.enabled


def test_notify_socket_gives_ready_and_stopping_and_leaves_the_environment(
        supervisor: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    sinks = readiness_sinks(ServerConfig(["p"], maxconn=20000), Reporter("x"))
    assert "NOTIFY_SOCKET" not in os.environ          # no child inherits it
    assert len(sinks.on_ready) == 1 and len(sinks.on_exit) == 1 and sinks.heartbeat is None
    sinks.on_ready[0]()
    ready = supervisor.recv(4096).decode()
    # the count is s6's normalised one (capped at 16384 by s6 2.12+); fd 0 here is no socket of ours
    assert ready.startswith("READY=1\nSTATUS=accepting connections on ")
    assert ready.endswith(" (at most 16384 at once)")
    sinks.on_exit[0]()
    assert supervisor.recv(4096) == b"STOPPING=1"


def test_the_watchdog_pings_every_half_interval(supervisor: socket.socket,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    sinks = readiness_sinks(ServerConfig(["p"]), Reporter("x"))
    assert sinks.heartbeat is not None
    interval, ping = sinks.heartbeat
    assert interval == 1.5
    ping()
    assert supervisor.recv(100) == b"WATCHDOG=1"
    assert "WATCHDOG_USEC" not in os.environ and "WATCHDOG_PID" not in os.environ


def test_a_bad_watchdog_is_a_warning_and_notification_goes_on(
        supervisor: socket.socket, monkeypatch: pytest.MonkeyPatch, capfd) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    sinks = readiness_sinks(ServerConfig(["p"]), Reporter("s6-ipcserverd"))
    assert capfd.readouterr().err == "s6-ipcserverd: warning: invalid WATCHDOG_USEC: 'soon'\n"
    assert sinks.heartbeat is None and sinks.readiness.notifier.enabled
    sinks.on_exit[0]()
    assert supervisor.recv(100) == b"STOPPING=1"


def test_a_supervisor_gone_is_a_warning_not_the_end(
        supervisor: socket.socket, monkeypatch: pytest.MonkeyPatch, capfd) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    path = supervisor.getsockname()
    sinks = readiness_sinks(ServerConfig(["p"]), Reporter("s6-ipcserverd"))
    supervisor.close()
    os.unlink(path)
    sinks.on_exit[0]()   # does not raise
    assert capfd.readouterr().err == \
        f"s6-ipcserverd: warning: unable to notify {path}: No such file or directory\n"


def test_the_system_execs_with_s6s_exec_and_its_errors() -> None:
    from s6ipc.base.errors import ExecFailure

    with pytest.raises(ExecFailure) as e:
        system().exec(["/nonexistent/s6ipc-upgrade"])
    assert (str(e.value), e.value.exit_code) == (
        "unable to exec /nonexistent/s6ipc-upgrade: No such file or directory", 127)
