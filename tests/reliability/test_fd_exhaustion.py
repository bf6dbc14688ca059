"""Running out of descriptors in accept: s6 spins and floods its log; we back off and recover.

The daemon's own descriptors do not grow with connections (each accepted socket is handed to a
child and closed), so the test makes ``accept`` fail by lowering the daemon's RLIMIT_NOFILE
(``prlimit(2)`` on the running process) to its lowest free fd number, and "frees" descriptors by
raising the limit again, with clients waiting in the backlog meanwhile.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Callable

from tests.support.processes import (
    SOCKETBINDER,
    Client,
    RunningServer,
    ours,
    proc_cpu_ticks,
    proc_fds,
    theirs,
    wait_until,
)

WARNING = "warning: unable to accept: Too many open files"
TICKS = os.sysconf("SC_CLK_TCK")


def starve(pid: int) -> None:
    """Make every new fd of *pid* fail with EMFILE: soft RLIMIT_NOFILE = its lowest free fd."""
    used = set(proc_fds(pid))
    lowest_free = next(n for n in range(len(used) + 1) if n not in used)
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))


def feed(pid: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, hard))


def _signalfd_on_fd1(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/1") == "anon_inode:[signalfd]"
    except OSError:
        return False


def warnings(server: RunningServer) -> int:
    return server.log().count(WARNING)


Factory = Callable[..., RunningServer]


def test_emfile_backs_off_and_recovers(sockdir: str, handler: str, server_factory: Factory,
                                       clients: Callable[..., Client]) -> None:
    path = os.path.join(sockdir, "s")
    server = server_factory([SOCKETBINDER, path, *ours("ipcserverd"), "-1", handler, "ok"])
    pid = server.proc.pid
    for episode in (1, 2):
        starve(pid)
        waiting = [clients(path) for _ in range(5)]
        wait_until(lambda episode=episode: warnings(server) == episode)
        cpu = proc_cpu_ticks(pid)
        time.sleep(2)
        spent = (proc_cpu_ticks(pid) - cpu) / TICKS
        assert spent < 0.1, f"daemon used {spent:.2f}s of CPU in 2s while out of fds"
        assert warnings(server) == episode  # once per episode, not once per try
        assert all(c.silent_for(0) for c in waiting)  # queued, not refused
        feed(pid)
        started = time.monotonic()
        assert [c.rest() for c in waiting] == [b"ok\n"] * 5
        recovery = time.monotonic() - started
        assert recovery < 3  # the back-off is capped at 1 s
        print(f"\nepisode {episode}: {spent:.3f}s CPU in 2s out of fds; queued clients served "
              f"{recovery:.2f}s after fds freed up")
    assert server.proc.poll() is None
    assert server.log().splitlines() == [f"ipcserverd: {WARNING}"] * 2


def test_s6_spins_when_out_of_fds(sockdir: str, handler: str, server_factory: Factory,
                                  clients: Callable[..., Client]) -> None:
    """The contrast: s6-ipcserverd retries accept at once, forever, logging each failure.

    Without ``-1`` its signalfd takes fd 1, so fds 0-2 are in use and the limit (3) stays above
    the number of fds it polls (2): poll(2) fails with EINVAL when nfds exceeds RLIMIT_NOFILE.
    """
    path = os.path.join(sockdir, "s")
    server = server_factory([SOCKETBINDER, path, *theirs("ipcserverd"), handler, "ok"], ready=False)
    pid = server.proc.pid
    wait_until(lambda: _signalfd_on_fd1(pid))
    starve(pid)
    waiting = clients(path)
    wait_until(lambda: warnings(server) > 0)
    cpu = proc_cpu_ticks(pid)
    time.sleep(0.5)
    spent = (proc_cpu_ticks(pid) - cpu) / TICKS
    server.proc.kill()
    server.wait()
    lines = warnings(server)
    print(f"\ns6-ipcserverd out of fds: {lines} warning lines, {spent:.2f}s CPU in 0.5s")
    assert lines > 1000
    assert spent > 0.05  # (a busy loop; how much CPU it gets depends on the machine's load)
    assert waiting.rest() == b""  # never served
