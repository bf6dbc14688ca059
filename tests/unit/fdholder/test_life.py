"""fdholderd's in-place upgrade, in-process: the drain, the state handed over and its restoration.

The daemon runs in this process, one :meth:`FdHolderDaemon.step` at a time, with a fake clock and its
real lifecycle over a fake system (tests/support/lifecycle.py) whose exec raises :class:`Exec` with
the state instead of calling ``execve``.
What an exec does to the old image is :func:`abandon`: the descriptors named by the state stay
open at their numbers, every object of the old image is forgotten. A second daemon then starts from
the state on the same listening socket, as the new image does. The real exec, under load and under
real supervisors, is in tests/programs/test_fdholder_upgrade.py.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from s6ipc import __version__
from s6ipc.base import unixmessage
from s6ipc.base.errors import ExecFailure
from s6ipc.daemon.lifecycle import Lifecycle
from s6ipc.daemon.readiness import Readiness
from s6ipc.fdholder import protocol, tai
from s6ipc.fdholder.life import KIND, HolderLife
from s6ipc.fdholder.server import UPGRADE_DRAIN, DaemonConfig, FdHolderDaemon
from s6ipc.fdholder.store import FdStore
from tests.support.clock import FakeClock
from tests.support.fdholder import ALL_RIGHTS, Quiet, Raw, inode, listening, make_rules
from tests.support.lifecycle import Exec, FakeSystem

T = tai.Tain(0x4000000000000000 + 2_000_000_000, 0)
LIST_FRAME = unixmessage.frame(protocol.LIST_REQUEST)


class Setup:
    def __init__(self, sockdir: str, system: FakeSystem, **options: Any) -> None:
        self.path = os.path.join(sockdir, "holder")
        self.listen_fd = listening(self.path)
        self.rules = make_rules(sockdir, {f"uid/{os.geteuid()}": ALL_RIGHTS})
        self.clock = FakeClock()
        self.system = system
        self.options = options
        self.log = Quiet()
        self.daemon = self.new_daemon()
        # -1 keeps fd 1 (the test's stdout) open while the daemon makes its descriptors
        saved = os.dup(1)
        try:
            self.daemon.start()
        finally:
            os.dup2(saved, 1)
            os.close(saved)

    def new_daemon(self) -> FdHolderDaemon:
        config = DaemonConfig(rules_dir=self.rules, notify=True, **self.options)
        daemon = FdHolderDaemon(config, self.log, self.listen_fd, clock=self.clock,
                                on_upgrade=lambda: self.life.requested())
        self.life = Lifecycle(KIND, "fdholderd", ["-i", "rules"], HolderLife(daemon, self.log), self.log,
                              Readiness(), held_signals=lambda: daemon.signals, system=self.system,
                              loop=daemon, clock=self.clock)
        return daemon

    def turns(self, n: int = 3) -> bool:
        """*n* turns of the loop, as chain/daemon.serve_on runs it: a drained upgrade execs (the fake
        exec raises :class:`Exec`, or fails and the loop goes on)."""
        alive = True
        for _ in range(n):
            alive = self.daemon.step(wait=False)
            self.preflights_exit()
            argv = self.daemon.ending.exec_argv
            if not alive and argv is not None:
                self.life.replace(argv)
                self.daemon.serve_on()
                alive = True
        return alive

    def preflights_exit(self) -> None:
        """The fake preflights the daemon started have exited (what its SIGCHLD would reap)."""
        for child in self.system.children:
            on_exit = self.daemon._expected.pop(child.pid, None)
            if on_exit is not None:
                on_exit(0)

    def upgrade(self, turns: int = 5) -> Dict[str, Any]:
        """Turn the loop until the fake exec; then become the new image: the daemon's part of the state."""
        with pytest.raises(Exec) as info:
            self.turns(turns)
        state: Dict[str, Any] = info.value.state["daemon"]
        assert set(info.value.state["descriptors"].values()) == info.value.kept
        abandon(self.daemon)
        self.daemon = self.new_daemon()
        self.daemon.start(state)
        return state

    def store(self, ident: bytes, ms: int) -> int:
        """Store a new pipe's read end under *ident*; its inode."""
        raw = Raw(self.path)
        r, w = os.pipe()
        raw.send(protocol.encode_store(tai.from_unix_ns(self.clock.wall_ns()).add_ms(ms), ident), [r])
        ino = inode(r)
        os.close(r)
        os.close(w)
        self.turns()
        assert raw.reply() == (b"\0", [])
        raw.close()
        return ino

    def ask(self, raw: Raw, request: bytes) -> Optional[Tuple[bytes, List[int]]]:
        raw.send(request)
        self.turns()
        return raw.reply()


def abandon(daemon: FdHolderDaemon) -> None:
    """What execve does to the old image: the state's descriptors stay open, its objects go."""
    for c in daemon.clients.values():
        c.sock.detach()
    daemon.clients.clear()
    daemon.store = FdStore()
    daemon.close()


@pytest.fixture
def setup(sockdir: str, request: pytest.FixtureRequest) -> Iterator[Setup]:
    params = dict(getattr(request, "param", {}))
    system = FakeSystem(problem=params.pop("problem", None), exec_error=params.pop("exec_error", None))
    s = Setup(sockdir, system, **params)
    yield s
    s.daemon.close()
    os.close(s.listen_fd)


def _listed(s: Setup, raw: Optional[Raw] = None) -> Optional[Tuple[bytes, List[int]]]:
    own = raw is None
    raw = raw or Raw(s.path)
    reply = s.ask(raw, protocol.LIST_REQUEST)
    if own:
        raw.close()
    return reply


def new_fd() -> int:
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def test_store_state_keeps_ids_limits_slots_and_free_order() -> None:
    store = FdStore()
    entries = [store.add(b"id%d" % i, T, new_fd(), True) for i in range(5)]
    store.remove(entries[1])
    store.remove(entries[3])
    state = store.to_state()
    again = FdStore.from_state(state)
    assert [(e.slot, e.id, e.limit, e.held.fd) for e in again.entries()] == \
        [(e.slot, e.id, e.limit, e.held.fd) for e in store.entries()]
    assert again.next_limit() == T
    # the next stores take the most recently freed slot first (3, then 1), as in the old image
    assert [again.add(b"n%d" % i, T, new_fd(), True).slot for i in range(3)] == [3, 1, 5]
    # a limit equal to a restored one is still made unique
    assert len({e.limit for e in again.entries()}) == 6
    store._slots = []  # the descriptors now belong to *again*
    again.close_all()


@pytest.mark.parametrize("bad", [
    {"slots": [None], "free": []},
    {"slots": [{"id": "61", "limit": [1, 2], "fd": 0}, {"id": "61", "limit": [1, 2], "fd": 0}], "free": []},
    {"slots": [{"id": "zz", "limit": [1, 2], "fd": 0}], "free": []},
])
def test_malformed_store_state_is_refused(bad: Dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FdStore.from_state(bad)


def test_upgrade_hands_over_descriptors_and_clients(setup: Setup) -> None:
    s = setup
    inodes = {b"unix:/a": s.store(b"unix:/a", 100_000), b"pipe:b": s.store(b"pipe:b", 5_000)}
    s.store(b"gone", 1_000)
    gone = s.daemon.store.get(b"gone")
    assert gone is not None
    s.daemon.store.remove(gone)
    limits_before = {e.id: e.limit for e in s.daemon.store.entries()}
    fds_before = {e.id: e.held.fd for e in s.daemon.store.entries()}
    idle = Raw(s.path)
    half = Raw(s.path)
    half.send_raw(LIST_FRAME[:3])
    s.turns()
    assert len(s.daemon.clients) == 2
    os.kill(os.getpid(), signal.SIGUSR2)
    assert s.turns()  # preflight passed; the half-sent request holds the exec back
    assert len(s.system.preflights) == 1 and s.daemon.upgrade_deadline is not None
    late = Raw(s.path)  # waits in the backlog: nobody accepts during the drain
    s.turns()
    assert len(s.daemon.clients) == 2
    half.send_raw(LIST_FRAME[3:])
    requests_before = dict(s.daemon.requests)
    assert requests_before["store"] == 3 and requests_before["list"] == 0
    state = s.upgrade()
    assert half.reply() == (protocol.encode_list_reply([b"unix:/a", b"pipe:b"]), [])  # the old image
    assert len(state["clients"]) == 2
    d = s.daemon
    assert d.requests == dict(requests_before, list=1), "counted in the old image, carried to the new"
    assert [e.id for e in d.store.entries()] == [b"unix:/a", b"pipe:b"]
    assert {e.id: e.limit for e in d.store.entries()} == limits_before
    assert {e.id: e.held.fd for e in d.store.entries()} == fds_before
    assert {e.id: inode(e.held.fd) for e in d.store.entries()} == inodes
    assert len(d.clients) == 2 and not s.log.lines
    # the carried clients and the one from the backlog are served by the new image
    for raw in (idle, half, late):
        assert _listed(s, raw) == (protocol.encode_list_reply([b"unix:/a", b"pipe:b"]), [])
    got = s.ask(idle, protocol.encode_retrieve(b"unix:/a", False))
    assert got is not None and got[0] == b"\0" and inode(got[1][0]) == inodes[b"unix:/a"]
    os.close(got[1][0])
    assert (d.requests["list"], d.requests["retrieve"]) == (4, 1)
    assert HolderLife(d, Quiet()).describe()["counters"] == {"held": 2, "requests": d.requests}
    # expiry goes on from the handed-over limits
    s.clock.advance(5.001)
    s.turns()
    assert [e.id for e in d.store.entries()] == [b"unix:/a"]
    for raw in (idle, half, late):
        raw.close()


def test_a_client_that_does_not_read_is_dropped_at_the_drain_deadline(setup: Setup) -> None:
    """A started message is bounded by PARTIAL_GRACE; replies a client does not read, by the drain."""
    s = setup
    ids = [b"%03d" % i + b"x" * 200 for i in range(40)]
    for ident in ids:
        s.store(ident, 100_000)
    deaf = Raw(s.path)
    deaf.send_raw(LIST_FRAME * 400)  # 400 replies of 8 KiB: more than the socket takes
    s.turns(20)
    assert s.daemon.clients and all(c.outbox for c in s.daemon.clients.values())
    os.kill(os.getpid(), signal.SIGUSR2)
    s.turns()
    s.clock.advance(UPGRADE_DRAIN - 0.01)
    assert s.turns()
    s.clock.advance(0.02)
    state = s.upgrade()
    assert state["clients"] == []
    assert [e.id for e in s.daemon.store.entries()] == ids
    deaf.close()


@pytest.mark.parametrize("setup", [{"problem": "the new version does not start: SyntaxError"}], indirect=True)
def test_a_failed_preflight_logs_one_line_and_changes_nothing(setup: Setup) -> None:
    s = setup
    s.store(b"x", 100_000)
    os.kill(os.getpid(), signal.SIGUSR2)
    s.turns()
    assert s.log.lines == ["warning: unable to upgrade in place: the new version does not start: "
                           f"SyntaxError; still serving with s6ipc {__version__}"]
    assert s.daemon.upgrade_deadline is None
    assert _listed(s) == (protocol.encode_list_reply([b"x"]), [])


@pytest.mark.parametrize("setup", [{"exec_error": ExecFailure("/x", 2)}], indirect=True)
def test_a_failed_exec_logs_one_line_and_serves_on(setup: Setup) -> None:
    s = setup
    s.store(b"x", 100_000)
    idle = Raw(s.path)
    s.turns()
    os.kill(os.getpid(), signal.SIGUSR2)
    s.turns()
    assert s.log.lines == ["warning: unable to upgrade in place: unable to exec /x: No such file or "
                           f"directory; still serving with s6ipc {__version__}"]
    assert s.system.discarded and not s.system.memfds and s.daemon.upgrade_deadline is None
    assert _listed(s) == (protocol.encode_list_reply([b"x"]), [])  # accepting again
    assert _listed(s, idle) == (protocol.encode_list_reply([b"x"]), [])
    idle.close()


@pytest.mark.parametrize("setup", [{"lameduck_ms": 5000}], indirect=True)
def test_the_lameduck_is_handed_over(setup: Setup) -> None:
    s = setup
    s.store(b"x", 100_000)
    busy = Raw(s.path)
    busy.send_raw(b"\0\0")
    s.turns()
    os.kill(os.getpid(), signal.SIGTERM)
    s.turns()
    assert not s.daemon.running
    os.kill(os.getpid(), signal.SIGUSR2)
    s.turns()
    busy.send_raw(LIST_FRAME[2:])
    state = s.upgrade()
    assert state["lameduck"]["running"] is False
    assert state["lameduck"]["deadline"] == pytest.approx(1000.0 + 5.0)
    assert busy.reply() == (protocol.encode_list_reply([b"x"]), [])
    # the new image is in lameduck: nobody is busy, so it ends at once, as the old one would have
    assert not s.daemon.running
    assert s.daemon.serve() == 3
    busy.close()


def test_carried_clients_are_checked_against_the_rules_again(setup: Setup) -> None:
    s = setup
    idle = Raw(s.path)
    s.turns()
    os.kill(os.getpid(), signal.SIGUSR2)
    with pytest.raises(Exec) as info:
        s.turns()
    abandon(s.daemon)
    rule = os.path.join(s.rules, f"uid/{os.geteuid()}")
    os.unlink(os.path.join(rule, "allow"))
    open(os.path.join(rule, "deny"), "w").close()
    s.daemon = s.new_daemon()
    s.daemon.start(info.value.state["daemon"])
    assert not s.daemon.clients
    assert idle.closed(timeout=1)
    idle.close()


def test_a_state_naming_a_closed_descriptor_is_refused(setup: Setup) -> None:
    s = setup
    fd = 999  # not open
    state = {"store": {"slots": [{"id": "78", "limit": [T.sec, 0], "fd": fd}], "free": []}, "clients": [],
             "lameduck": {"running": True, "deadline": None}}
    other = s.new_daemon()
    with pytest.raises(ValueError, match="Bad file descriptor"):
        other.start(state)
    other.close()


def test_a_setdump_in_progress_goes_on_in_the_new_image(setup: Setup) -> None:
    s = setup
    dumper = Raw(s.path)
    assert s.ask(dumper, protocol.encode_setdump(2)) == (protocol.encode_setdump_reply(2), [])
    os.kill(os.getpid(), signal.SIGUSR2)
    state = s.upgrade()
    assert [c["dumping"] for c in state["clients"]] == [2]
    limit = tai.from_unix_ns(s.clock.wall_ns()).add_ms(60_000)
    fds = [new_fd(), new_fd()]
    body = b"." + protocol.encode_entries([protocol.DumpEntry(limit, i) for i in (b"one", b"two")])
    dumper.send(body, fds)
    for fd in fds:
        os.close(fd)
    s.turns()
    assert dumper.reply() == (b"\0", [])
    assert [(e.id, e.limit) for e in s.daemon.store.entries()] == [(b"one", limit), (b"two", limit)]
    dumper.close()


def test_a_state_naming_another_descriptor_as_the_guardian_is_not_acted_on() -> None:
    """Only a pipe is written to and closed: a state that names a socket (the listening one, a held
    one) as the guardian's pipe leaves it open."""
    import socket

    a, b = socket.socketpair()
    try:
        HolderLife(None, Quiet()).released({"guardian": [1, a.fileno()]})  # type: ignore[arg-type]
        a.getsockname()  # still open
        r, w = os.pipe()
        HolderLife(None, Quiet()).released({"guardian": [os.getpid() + 10**6, w]})  # type: ignore[arg-type]
        assert os.read(r, 1) == b"k"  # the byte, then the close
        assert os.read(r, 1) == b""
        os.close(r)
    finally:
        a.close()
        b.close()
