"""fdholderd's deadlines, expiry and lameduck driven by a clock the test moves: no sleeping.

The daemon runs in this process on a real listening socket, one :meth:`FdHolderDaemon.step` at a
time (``wait=False``: poll does not block), with a :class:`tests.support.clock.FakeClock`. The
differential tests against s6-fdholderd (tests/programs) cover the same rules with real time.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Iterator, Tuple

import pytest

from s6ipc.fdholder import protocol, tai
from s6ipc.fdholder.server import DaemonConfig, FdHolderDaemon
from tests.support.clock import FakeClock
from tests.support.fdholder import ALL_RIGHTS, Quiet, Raw, make_rules

Running = Tuple[FdHolderDaemon, FakeClock, str]


def _start(sockdir: str, **options: int) -> Running:
    path = os.path.join(sockdir, "holder")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    clock = FakeClock()
    rules = make_rules(sockdir, {f"uid/{os.geteuid()}": ALL_RIGHTS})
    # -1: the readiness newline goes to fd 1 (the test's captured stdout), which stays open while
    # the daemon makes its descriptors; it is closed after the newline and given back here.
    daemon = FdHolderDaemon(DaemonConfig(rules_dir=rules, notify=True, **options), log=Quiet(),
                            clock=clock, listen_fd=listener.detach())
    saved = os.dup(1)
    try:
        daemon.start()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return daemon, clock, path


@pytest.fixture
def holder(sockdir: str, request: pytest.FixtureRequest) -> Iterator[Running]:
    daemon, clock, path = _start(sockdir, **getattr(request, "param", {}))
    yield daemon, clock, path
    daemon.close()
    os.close(daemon.listen_fd)


def _turns(daemon: FdHolderDaemon, n: int = 3) -> bool:
    alive = True
    for _ in range(n):
        alive = daemon.step(wait=False)
    return alive


def _store(daemon: FdHolderDaemon, clock: FakeClock, path: str, ident: bytes, ms: int) -> None:
    raw = Raw(path)
    r, w = os.pipe()
    limit = tai.from_unix_ns(clock.wall_ns()).add_ms(ms)
    raw.send(protocol.encode_store(limit, ident), [r])
    os.close(r)
    os.close(w)
    _turns(daemon)
    assert raw.reply() == (b"\0", [])
    raw.close()


def _list(daemon: FdHolderDaemon, path: str) -> bytes:
    raw = Raw(path)
    raw.send(protocol.LIST_REQUEST)
    _turns(daemon)
    reply = raw.reply()
    raw.close()
    assert reply is not None
    return reply[0]


def test_expiry_follows_the_clock(holder: Running) -> None:
    daemon, clock, path = holder
    _store(daemon, clock, path, b"short", 300)
    _store(daemon, clock, path, b"long", 100_000)
    clock.advance(0.299)
    _turns(daemon)
    assert sorted(e.id for e in daemon.store.entries()) == [b"long", b"short"]
    clock.advance(0.002)
    _turns(daemon)
    assert [e.id for e in daemon.store.entries()] == [b"long"]
    assert _list(daemon, path) == protocol.encode_list_reply([b"long"])


@pytest.mark.parametrize("holder", [{"timeout_ms": 500}], indirect=True)
def test_a_silent_client_is_dropped_at_its_deadline(holder: Running) -> None:
    daemon, clock, path = holder
    raw = Raw(path)
    _turns(daemon)
    assert len(daemon.clients) == 1
    clock.advance(0.499)
    _turns(daemon)
    assert len(daemon.clients) == 1
    clock.advance(0.002)
    _turns(daemon)
    assert not daemon.clients
    assert raw.closed(timeout=1)
    raw.close()


@pytest.mark.parametrize("holder", [{"lameduck_ms": 500}], indirect=True)
def test_lameduck_waits_for_a_busy_client_until_its_deadline(holder: Running) -> None:
    daemon, clock, path = holder
    raw = Raw(path)
    raw.send_raw(b"\0\0")  # half a header: the client is busy (for PARTIAL_GRACE, 1 s)
    _turns(daemon)
    os.kill(os.getpid(), signal.SIGTERM)  # caught by the daemon's self-pipe
    assert _turns(daemon)
    assert not daemon.running
    clock.advance(0.4)
    assert _turns(daemon)
    clock.advance(0.2)
    assert not daemon.step(wait=False)
    raw.close()

