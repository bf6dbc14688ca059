"""Load without timing: 1000 concurrent connections, 100 000 sequential ones without leaks.

Nothing here measures speed (bench/ does); these tests check that every client is served and that
the daemon's descriptors, memory and children stay bounded. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import socket
import time
from typing import Callable, Dict, Iterator, List

import pytest

from tests.support.processes import (
    SOCKETBINDER,
    RunningServer,
    ours,
    proc_children,
    proc_fds,
    proc_status,
    run,
    wait_until,
    zombie_children,
)

CONCURRENT = 1000
#: 100 000 by default (about 40 s on 2 idle cores); S6IPC_TEST_SEQUENTIAL overrides it.
SEQUENTIAL = int(os.environ.get("S6IPC_TEST_SEQUENTIAL", "100000"))


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Raise RLIMIT_NOFILE (soft) so the test process can hold a thousand client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * CONCURRENT
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_thousand_concurrent_connections(many_fds: None, sockdir: str, handler: str,
                                         server_factory: Callable[..., RunningServer]) -> None:
    """-c 1000 -C 1000: a thousand clients connected at once are all served, by a thousand live children.

    Each child (``handler cmd``) writes its pid and then waits for a line from its client, so no
    child ends before all thousand are running, however slowly a loaded machine spawns them.
    """
    path = os.path.join(sockdir, "s")
    limits = ["-c", str(CONCURRENT), "-C", str(CONCURRENT)]
    server = server_factory([*ours("ipcserver"), "-v", "-1", *limits, path, handler, "cmd"])
    sel = selectors.DefaultSelector()
    replies: Dict[socket.socket, bytes] = {}

    def read_until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 120
        while not done():
            assert time.monotonic() < deadline, what
            for key, _ in sel.select(timeout=1):
                s = key.fileobj  # type: ignore[assignment]
                chunk = s.recv(64)
                replies[s] += chunk
                if not chunk:
                    sel.unregister(s)

    try:
        for _ in range(CONCURRENT):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)  # lands in the backlog at once (SOMAXCONN is 4096)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            replies[s] = b""
        # every child has said its pid: a thousand handlers alive at once, none released yet
        read_until(lambda: all(r.endswith(b"\n") for r in replies.values()), "not every child started")
        pids = {int(r) for r in replies.values()}
        assert len(pids) == CONCURRENT and len(proc_children(server.proc.pid)) == CONCURRENT
        for s in replies:
            s.setblocking(True)
            s.sendall(b"\n")  # anything but "exit N"/"segv": the child exits 0
            s.setblocking(False)
        read_until(lambda: not sel.get_map(), "not every child ended")
    finally:
        sel.close()
        for s in replies:
            s.close()
    wait_until(lambda: not proc_children(server.proc.pid) and server.log().endswith("status: 0/1000\n"))
    live = [int(n) for n in re.findall(r"status: (\d+)/1000$", server.log(), re.M)]
    assert live[-1] == 0
    print(f"\n{CONCURRENT} concurrent clients served; most live children at once: {max(live)}")
    assert max(live) == CONCURRENT  # all thousand handlers were running at the same time


def snapshot(pid: int) -> Dict[str, int]:
    return {"fds": len(proc_fds(pid)), "rss_kb": int(proc_status(pid, "VmRSS").split()[0]),
            "zombies": len(zombie_children(pid))}


def load(client: str, path: str, n: int) -> List[int]:
    r = run([client, path, str(n)], timeout=600)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


def test_hundred_thousand_sequential_connections(cbin: str, handler: str, sockdir: str,
                                                 server_factory: Callable[..., RunningServer]) -> None:
    """100 000 short connections one after the other: all served; no growth in fds, RSS or zombies."""
    path = os.path.join(sockdir, "s")
    server = server_factory([SOCKETBINDER, path, *ours("ipcserverd"), "-1", handler, "ok"])
    pid = server.proc.pid
    client = os.path.join(cbin, "client")

    def settled() -> bool:
        return not proc_children(pid)

    assert load(client, path, 2000) == [2000, 0]  # warm-up: caches, allocator arenas
    wait_until(settled)
    before = snapshot(pid)
    started = time.monotonic()
    assert load(client, path, SEQUENTIAL) == [SEQUENTIAL, 0]
    elapsed = time.monotonic() - started
    wait_until(settled)
    after = snapshot(pid)
    print(f"\n{SEQUENTIAL} sequential connections in {elapsed:.1f}s ({SEQUENTIAL / elapsed:.0f}/s); "
          f"before {before}, after {after}")
    assert after["fds"] == before["fds"]
    assert after["zombies"] == before["zombies"] == 0
    assert after["rss_kb"] - before["rss_kb"] <= 512  # allocator noise only, nothing per connection
    assert server.log() == ""
