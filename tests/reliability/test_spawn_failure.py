"""Connections whose program cannot start, or ends badly: the daemon logs and keeps serving.

Each scenario runs against ours and s6-ipcserverd. (A program that does not exist is covered in
tests/programs/test_ipcserverd.py: the client reads EOF, the exec failure is logged, the next
connection is handled.)
"""

from __future__ import annotations

import os
import resource
import socket
import struct
from typing import Callable, List

import pytest

from tests.support.processes import (
    IMPLEMENTATIONS,
    SOCKETBINDER,
    Client,
    RunningServer,
    installed_s6,
    normalise_log,
    proc_children,
    proc_status,
    requires_root,
    wait_until,
)

WHO = ["ours", "s6"]
Factory = Callable[..., RunningServer]
#: A uid nothing else on the machine runs as: RLIMIT_NPROC counts every task of the real uid.
SPARE_UID = 64999


def tasks(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def processes_of(uid: int) -> List[int]:
    """Pids whose real uid is *uid*, zombies included (they count against RLIMIT_NPROC)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if proc_status(int(name), "Uid").split()[0] == str(uid):
                    found.append(int(name))
            except (OSError, KeyError):
                pass
    return found


@requires_root
@pytest.mark.parametrize("who", WHO)
def test_process_limit(who: str, sockdir: str, handler: str, server_factory: Factory,
                       clients: Callable[..., Client]) -> None:
    """RLIMIT_NPROC reached: the spawn fails, is logged, that client reads EOF; service resumes."""
    path = os.path.join(sockdir, "s")
    ids = ["-u", str(SPARE_UID), "-g", str(SPARE_UID)]
    wait_until(lambda: not processes_of(SPARE_UID))  # e.g. orphans of an earlier run, not yet reaped
    # The limit is set before the chain starts (lowering needs no privilege; changing another
    # uid's process with prlimit(2) would need CAP_SYS_RESOURCE): the daemon's one task, then
    # room for two children.
    server = server_factory([*IMPLEMENTATIONS[who]("ipcserver"), "-1", *ids, path, handler, "hold"],
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC, (3, 3)))
    pid = server.proc.pid
    assert tasks(pid) == 1  # the limit of 3 counts the daemon as one task
    first, second = clients(path), clients(path)
    first.pid()
    second.pid()
    refused = clients(path)
    assert refused.rest() == b""  # accepted, no program could be started: closed
    # s6 2.12+ spawns as we do and says so; 2.11 forked
    expected = (f"D: warning: unable to spawn {handler}: Resource temporarily unavailable"
                if who == "ours" or installed_s6().spawn_failure_in_daemon
                else "D: warning: unable to fork: Resource temporarily unavailable")
    assert wait_until(lambda: normalise_log(server.log())) == [expected]
    first.close()
    wait_until(lambda: len(proc_children(pid)) == 1)
    third = clients(path)
    assert third.pid() > 0  # a process slot freed up: served again
    second.send(b"still\n")
    assert second.line() == b"still"
    assert server.proc.poll() is None
    second.close()
    third.close()
    wait_until(lambda: not proc_children(pid))  # reaped here, not left to outlive the daemon


@pytest.mark.parametrize("who", WHO)
def test_clients_that_reset_at_once(who: str, sockdir: str, handler: str, server_factory: Factory) -> None:
    """Clients that connect and close with SO_LINGER 0 at once do not disturb the daemon."""
    path = os.path.join(sockdir, "s")
    server = server_factory([SOCKETBINDER, path, *IMPLEMENTATIONS[who]("ipcserverd"), "-1", handler, "ok"])
    for _ in range(200):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.connect(path)
        s.close()
    c = Client(path)
    try:
        assert c.rest() == b"ok\n"
    finally:
        c.close()
    wait_until(lambda: not proc_children(server.proc.pid))
    assert server.proc.poll() is None
    assert server.log() == ""  # nothing worth a warning happened


@pytest.mark.parametrize("who", WHO)
def test_crashing_handler(who: str, sockdir: str, handler: str, server_factory: Factory,
                          clients: Callable[..., Client]) -> None:
    """A handler killed by SIGSEGV is reaped and logged; the other connections go on."""
    path = os.path.join(sockdir, "s")
    daemon = IMPLEMENTATIONS[who]("ipcserverd")
    server = server_factory([SOCKETBINDER, path, *daemon, "-v2", "-1", handler, "cmd"])
    bystander = clients(path)
    bystander.pid()
    for _ in range(3):
        victim = clients(path)
        victim_pid = victim.pid()
        victim.send(b"segv\n")
        assert victim.rest() == b""
        wait_until(lambda victim_pid=victim_pid: victim_pid not in proc_children(server.proc.pid))
    bystander.send(b"exit 4\n")
    assert bystander.rest() == b""
    uid = os.geteuid()
    exited = f"D: info: end pid P uid {uid} exitcode 4"
    lines = wait_until(lambda: (lambda x: x if exited in x and x[-1] == "D: info: status: 0/40" else None)(
        normalise_log(server.log())))
    assert lines.count(f"D: info: end pid P uid {uid} signal 11") == 3
    assert lines.count(exited) == 1
    assert Client(path).pid() > 0
