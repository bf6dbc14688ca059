"""The fd-holder daemon (s6-fdholderd): a store of descriptors served over the socket on fd 0.

Some facts about s6-fdholderd (2.11.3.2) and the kernel that this loop reproduces or relies on:

* **Clients.** At most *maxconn* (default 16, at most 256); fd 0 is polled only below that and
  outside lameduck, so extra clients wait in the backlog. Each new client is checked against
  the access rules (uid/gid, s6 key order; a directory is re-read at each connection, a cdb is
  held in memory and re-read on SIGHUP). A refused client is closed without a word.
* **Rights** come from the allowing rule's environment only: ``S6_FDHOLDER_RETRIEVE_REGEX`` and
  ``S6_FDHOLDER_STORE_REGEX`` are POSIX EREs searched in the id (first definition wins; empty
  means "everything", absent means "nothing"; store rights also govern delete and
  retrieve-with-delete); ``S6_FDHOLDER_LIST``/``GETDUMP``/``SETDUMP`` grant by mere presence.
* **Deadlines.** With ``-t``, a client is dropped if no reply has been queued for it within t ms
  of connecting; the deadline lapses once a reply is fully sent and is re-armed when the next
  reply is queued (a retrieve or a setdump start does not re-arm it). Held descriptors expire at
  their absolute TAI limit, compared with the wall clock.
* **Replies** go through a per-client outbox; a descriptor in a reply not yet sent stays open
  even if its entry is deleted meanwhile (reference counting), so a reply never carries a
  reused descriptor number.
* **Signals**: SIGTERM starts the lameduck (no more accepting, exit as soon as no client has pending
  I/O, or when the ``-T`` deadline passes); SIGHUP re-reads a cdb (keeping the old one if that
  fails). SIGUSR2 (only with an *on_upgrade* hook; s6 dies on it) upgrades in place: the hook
  (:meth:`s6ipc.daemon.lifecycle.Lifecycle.requested`) starts the preflight as a child the loop
  watches (SIGCHLD is caught for it), never waits for; once it passed, the loop drains like a
  lameduck (no accepting, finish the I/O in progress, at most :data:`UPGRADE_DRAIN`), then
  :meth:`FdHolderDaemon.run` returns ``Ending(exec_argv=…)``: the program execs, handing over the
  store and the idle clients (fdholder/life.py); the library never does. CPython's C handler writes
  each signal number to the wakeup pipe at once; the loop reads them from there, between requests.
* **Dumps** go in messages of at most 253 descriptors (s6 2.12 and later: skalibs 2.14's
  ``UNIXMESSAGE_MAXFDS``), 255 with ``S6IPC_S6=2.11``; the getdump header and the setdump reply
  announce ``1 + (n-1)/MAXFDS`` messages, which libs6's clients check against their own rule, so
  one rule cannot serve both lines at 254–255 and 507–510 descriptors (:mod:`s6ipc.base.s6release`).
  Requests are taken with up to 255 descriptors per message, whichever line sends them.
* **Exit status** is a bit mask: 1 if descriptors are still held, 2 if clients are still
  connected.
* **Running out of descriptors**: ``accept`` failing with EMFILE/ENFILE makes s6 die; here the
  listening socket is left alone for a back-off delay (clients wait in the backlog). Descriptors
  the kernel could not install in a request (MSG_CTRUNC) get an ENFILE reply.

Deliberate differences are listed in docs/fdholderd.md.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket

from ..access.rules import CdbRules, FsRules, check, rules_from_cdb, rules_from_dir
from ..base import unixmessage
from ..base.backoff import NO_DESCRIPTORS, AcceptBackoff
from ..base.clock import SYSTEM_CLOCK, Clock
from ..base.errors import BadInput, SystemFailure, Unusable
from ..base.execution import exited_children
from ..base.log import Log
from ..base.s6release import DEFAULT, S6Release
from ..base.selfpipe import SelfPipe, give_back, polled_selfpipe
from ..base.typeshim import NamedTuple, dataclass, field
from ..base.unixmessage import Message, Outbox, ProtocolError
from ..daemon.counters import read_counts
from ..daemon.lifecycle import Ending
from ..daemon.readiness import claim_notification_fd, write_newline
from ..sockets.unix import check_socket, peer_credentials
from . import protocol, tai
from .rights import Rights, RightsError, rights_from_modifs
from .store import FdStore

__all__ = [
    "MAXCONN_DEFAULT", "MAXCONN_MAX", "MAXFDS_DEFAULT", "OUTBOX_HIGH", "PARTIAL_GRACE", "UPGRADE_DRAIN",
    "Client", "DaemonConfig", "FdHolderDaemon", "CarriedClient", "ParsedState", "parse_state", "OPERATIONS",
]

#: The requests counted by operation (a setdump's data messages count with their setdump).
OPERATIONS = ("store", "retrieve", "delete", "list", "getdump", "setdump")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple, Union

MAXCONN_DEFAULT = 16
MAXCONN_MAX = 256
MAXFDS_DEFAULT = 1000
#: Stop reading a client's requests while this many reply bytes wait for it.
OUTBOX_HIGH = 1 << 20
_ACCEPT_BURST = 16
_MAX_POLL_MS = 3_600_000
#: How long the rest of a message may take to arrive once its first bytes did (s6 allows no time).
PARTIAL_GRACE = 1.0
#: How long an upgrade waits for clients in the middle of a request before it drops them.
UPGRADE_DRAIN = 2.0

# -- clients ----------------------------------------------------------------------------------
@dataclass(eq=False)
class Client:
    sock: socket.socket
    rights: Rights
    deadline: Optional[float]  # monotonic; None: infinite
    decoder: unixmessage.Decoder = field(default_factory=lambda: unixmessage.Decoder(protocol.MAX_REQUEST))
    outbox: Outbox = field(default_factory=Outbox)
    dumping: int = 0
    events: int = 0
    partial_deadline: Optional[float] = None  # monotonic: a started message must be complete by then
    uid: int = -1  # the peer's, from SO_PEERCRED (for the live view)
    gid: int = -1
    since: float = 0.0  # monotonic: when it connected

    def next_deadline(self) -> Optional[float]:
        if self.deadline is None:
            return self.partial_deadline
        if self.partial_deadline is None:
            return self.deadline
        return min(self.deadline, self.partial_deadline)

    @property
    def fd(self) -> int:
        return self.sock.fileno()


@dataclass
class DaemonConfig:
    """s6-fdholderd's options, before :meth:`normalise`."""

    rules_dir: Optional[str] = None
    rules_cdb: Optional[str] = None
    verbosity: int = 1
    notify: bool = False
    maxconn: int = MAXCONN_DEFAULT
    maxfds: int = MAXFDS_DEFAULT
    timeout_ms: int = 0
    lameduck_ms: int = 0
    #: Descriptors per dump message follow this s6 line (``S6IPC_S6``: :mod:`s6ipc.base.s6release`).
    release: S6Release = DEFAULT

    def normalise(self) -> None:
        """Apply s6's caps: maxconn 1..256; maxfds at least 1 and at most RLIMIT_NOFILE - 6.

        Raises :class:`BadInput` (exit 100 "no access rights specified!", exit 111 "open file
        limit too low") and :class:`SystemFailure` ("getrlimit").
        """
        if self.rules_dir is None and self.rules_cdb is None:
            raise BadInput("no access rights specified!")
        self.maxconn = min(max(self.maxconn, 1), MAXCONN_MAX)
        try:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except OSError as e:
            raise SystemFailure("getrlimit", e.errno or errno.EINVAL) from None
        if soft != resource.RLIM_INFINITY:
            if soft < 7:
                raise Unusable("open file limit too low")
            if self.maxfds > soft:
                self.maxfds = soft - 6
        self.maxfds = max(self.maxfds, 1)


#: One request handler: (daemon, client, parsed request, its message) → None.
if TYPE_CHECKING:
    Handler = Callable[["FdHolderDaemon", Client, protocol.Request, Message], None]


#: SIGUSR2's hook (:meth:`s6ipc.daemon.lifecycle.Lifecycle.requested`): it starts the preflight
#: beside the loop, whose verdict calls :meth:`FdHolderDaemon.stop_for_exec` if the new code passed.
if TYPE_CHECKING:
    UpgradeHook = Callable[[], None]


class FdHolderDaemon:
    """The daemon's state and loop. :meth:`start` checks fd 0 and prepares (raising s6's fatal
    errors), :meth:`serve` runs until the lameduck ends and returns the exit status (:meth:`run`:
    an :class:`Ending`, which may ask for the exec of an in-place upgrade).

    *clock* gives the time for deadlines, back-off and expiry (tests move it instead of sleeping).
    With *on_upgrade*, SIGUSR2 upgrades the daemon in place (without, it kills it, as in s6).
    """

    def __init__(self, config: DaemonConfig, log: Log, listen_fd: int = 0, *,
                 clock: Clock = SYSTEM_CLOCK, on_upgrade: Optional[UpgradeHook] = None) -> None:
        config.normalise()
        self.config = config
        self.log = log
        self.listen_fd = listen_fd
        self.clock = clock
        self.store = FdStore()
        self.clients: Dict[int, Client] = {}
        self.rules: Union[FsRules, CdbRules, None] = None
        self.running = True
        self._lameduck_deadline: Optional[float] = None
        self._timeout = config.timeout_ms / 1000 if config.timeout_ms else None
        self._poller = select.poll()
        self._selfpipe: Optional[SelfPipe] = None
        self._listener: Optional[socket.socket] = None
        self._listening = False
        self._backoff = AcceptBackoff()
        self.on_upgrade = on_upgrade
        self._upgrade_argv: Optional[List[str]] = None
        self._ending = Ending()
        self._watched: Dict[int, Callable[[int], None]] = {}
        self._expected: Dict[int, Callable[[int], None]] = {}
        #: Set while an upgrade drains the clients: when it gives up waiting for them (monotonic).
        self.upgrade_deadline: Optional[float] = None
        #: Requests received since the process started, by operation (carried across upgrades).
        self.requests: Dict[str, int] = dict.fromkeys(OPERATIONS, 0)

    # -- start-up -------------------------------------------------------------------------------
    def start(self, state: Optional[Dict[str, Any]] = None, *,
              before_ready: Optional[Callable[[], None]] = None) -> None:
        """s6's start-up order: fd 0, the ``-1`` check of fd 1, signals, rules; then readiness.
        *before_ready* runs just before readiness: where a program makes descriptors of its own
        (a status socket), once fds 0 and 1 are settled and before any client can see it ready.

        With *state* (an in-place upgrade: :meth:`to_state` of the previous image), fd 1 is left
        alone — the readiness newline was written by the first image, and fd 1 may now be a held
        descriptor — and the state is taken over (:meth:`restore`) instead.
        """
        check_socket(self.listen_fd)
        if state is None:
            claim_notification_fd(self.config.notify)
        self._selfpipe = polled_selfpipe(self._poller, self.signals)
        if self.config.rules_cdb is not None:
            self.rules = rules_from_cdb(self.config.rules_cdb)
        else:
            assert self.config.rules_dir is not None
            self.rules = rules_from_dir(self.config.rules_dir, never_block=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, self.listen_fd)
        self._listener.setblocking(False)
        if state is not None:
            self.restore(state)
        if before_ready is not None:
            before_ready()
        if state is None and self.config.notify:
            write_newline(1)

    @property
    def signals(self) -> Tuple[int, ...]:
        """The signals the loop handles (and an in-place upgrade holds across the exec). SIGCHLD
        comes with SIGUSR2: the preflight is a child of the daemon."""
        upgrades = (signal.SIGUSR2, signal.SIGCHLD) if self.on_upgrade else ()
        return (signal.SIGTERM, signal.SIGHUP) + upgrades

    # -- the loop -------------------------------------------------------------------------------
    def serve(self) -> int:
        """Run until the lameduck ends; return s6's exit status bit mask."""
        return self.run().code

    def run(self) -> Ending:
        """Run until the lameduck ends (``Ending(code)``: s6's exit status bit mask) or an upgrade
        has drained (``Ending(0, exec_argv)``: everything is kept for the exec, or for
        :meth:`serve_on` if it fails)."""
        try:
            while self.step():
                pass
        except BaseException:
            self._detach_listener()
            raise
        if self._ending.exec_argv is not None:
            return self._ending
        self._detach_listener()
        return Ending((1 if len(self.store) else 0) | (2 if self.clients else 0))

    @property
    def ending(self) -> Ending:
        """Why the loop ended once :meth:`step` returned False for an upgrade (``exec_argv`` set)."""
        return self._ending

    def serve_on(self) -> None:
        """After :meth:`run` returned for an exec that failed: take connections and requests again."""
        self._ending = Ending()
        self.upgrade_deadline = None
        self._upgrade_argv = None

    def _detach_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.detach()

    def step(self, wait: bool = True) -> bool:
        """One turn of the loop: expire, drop late clients, poll (without waiting unless *wait*),
        serve what is ready. False once the lameduck has ended (the loop is over)."""
        now = self.clock.monotonic()
        self.store.expire(tai.from_unix_ns(self.clock.wall_ns()))
        self._drop_late_clients(now)
        if self.upgrade_deadline is not None and self._upgrade_when_drained(now):
            return False
        if not self.running:
            if self._lameduck_deadline is not None and now >= self._lameduck_deadline:
                return False
            if not any(self._busy(c) for c in self.clients.values()):
                return False
        self._update_interest(now)
        try:
            events = self._poller.poll(self._poll_timeout(now) if wait else 0)
        except InterruptedError:
            return True
        self._dispatch(events)
        return True

    def close(self) -> None:
        """Release what :meth:`start` and the loop hold — clients, held descriptors, the
        self-pipe (previous signal handlers come back) — for a daemon embedded in a program that
        goes on. The listening socket itself is the caller's."""
        for c in list(self.clients.values()):
            self._drop(c)
        self.store.close_all()
        give_back(self._poller, self._selfpipe, self._listener)
        self._selfpipe = self._listener = None

    def watch(self, fd: int, on_event: Callable[[int], None]) -> None:
        """Poll *fd* too (a status socket…); *on_event(mask)* is called from the loop when it is
        readable. The descriptor stays the caller's."""
        self._watched[fd] = on_event
        self._poller.register(fd, select.POLLIN)

    def unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def expect_child(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """*on_exit(status)* from the loop when child *pid* (the preflight) has been reaped."""
        self._expected[pid] = on_exit

    def unread_signals(self) -> bytes:
        """Take the signal numbers the loop has not read yet out of the self-pipe."""
        unread = b""
        while self._selfpipe is not None:
            chunk = self._selfpipe.read()
            if not chunk:
                break
            unread += chunk
        return unread

    def stop_for_exec(self, argv: List[str]) -> None:
        """The new code passed its preflight: drain like a lameduck (at most :data:`UPGRADE_DRAIN`),
        then end the loop with ``Ending(0, argv)``. A lameduck under way (SIGTERM) is handed over
        in the state: the next image goes on with it."""
        self._upgrade_argv = argv
        self.upgrade_deadline = self.clock.monotonic() + UPGRADE_DRAIN

    def _busy(self, c: Client) -> bool:
        return bool(c.outbox) or c.decoder.partial

    @property
    def _open(self) -> bool:
        """Whether new connections and new requests are taken (neither lameduck nor upgrade)."""
        return self.running and self.upgrade_deadline is None

    def _poll_timeout(self, now: float) -> Optional[int]:
        deadlines = [d for d in (c.next_deadline() for c in self.clients.values()) if d is not None]
        if not self.running and self._lameduck_deadline is not None:
            deadlines.append(self._lameduck_deadline)
        if self.upgrade_deadline is not None:
            deadlines.append(self.upgrade_deadline)
        if self._backoff and not self._listening:
            deadlines.append(self._backoff.until)
        seconds: Optional[float] = None
        if deadlines:
            seconds = min(deadlines) - now
        limit = self.store.next_limit()
        if limit is not None:
            until = limit.unix() - self.clock.wall_ns() / 1e9
            seconds = until if seconds is None else min(seconds, until)
        if seconds is None:
            return None
        return max(0, min(_MAX_POLL_MS, int(seconds * 1000) + 1))

    def _update_interest(self, now: float) -> None:
        want_listen = (self._open and len(self.clients) < self.config.maxconn
                       and not self._backoff.waiting(now))
        if want_listen != self._listening:
            if want_listen:
                self._poller.register(self.listen_fd, select.POLLIN)
            else:
                self._poller.unregister(self.listen_fd)
            self._listening = want_listen
        for c in self.clients.values():
            events = 0
            if c.outbox.size < OUTBOX_HIGH and (self._open or c.decoder.partial):
                events |= select.POLLIN
            if c.outbox:
                events |= select.POLLOUT
            if events == c.events:
                continue
            if not c.events:
                self._poller.register(c.fd, events)
            elif events:
                self._poller.modify(c.fd, events)
            else:
                self._poller.unregister(c.fd)
            c.events = events

    def _dispatch(self, events: List[Tuple[int, int]]) -> None:
        assert self._selfpipe is not None
        accept = False
        for fd, mask in events:
            if fd == self._selfpipe.fileno():
                self._handle_signals()
            elif fd == self.listen_fd:
                if self._listening:
                    accept = True
            elif fd in self._watched:
                self._watched[fd](mask)
            else:
                c = self.clients.get(fd)
                if c is None:
                    continue
                if mask & select.POLLOUT and not self._flush(c):
                    continue
                if mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._read(c)
        if accept and self._open:
            self._accept()

    def _drop_late_clients(self, now: float) -> None:
        late = [c for c in self.clients.values() if (d := c.next_deadline()) is not None and d <= now]
        for c in late:
            self._drop(c)

    # -- signals ----------------------------------------------------------------------------------
    def _handle_signals(self) -> None:
        """Act on every signal read, in order. A SIGTERM during an upgrade starts the lameduck,
        which the state hands over (the next image goes on with it)."""
        assert self._selfpipe is not None
        for signo in self._selfpipe.read():
            if signo == signal.SIGTERM and self.running:
                self.running = False
                if self.config.lameduck_ms:
                    self._lameduck_deadline = self.clock.monotonic() + self.config.lameduck_ms / 1000
            elif signo == signal.SIGHUP and isinstance(self.rules, CdbRules):
                try:
                    self.rules.reload()
                except SystemFailure:
                    pass
            elif signo == signal.SIGUSR2 and self.on_upgrade:
                self.on_upgrade()
            elif signo == signal.SIGCHLD:
                self._reap()

    def _reap(self) -> None:
        """Wait for every exited child (the preflight; any other is reaped and ignored)."""
        for pid, status in exited_children():
            on_exit = self._expected.pop(pid, None)
            if on_exit is not None:
                on_exit(status)

    # -- in-place upgrade -------------------------------------------------------------------------
    def to_state(self) -> Dict[str, Any]:
        """What an in-place upgrade hands over, as JSON data: the store (:meth:`FdStore.to_state`),
        the clients (descriptor, deadline, setdump in progress, connection time: only idle ones are
        left by then) and
        the lameduck. Deadlines are monotonic times, which mean the same after an exec. The options
        and the rules are not in it: the new image has the same command line and re-reads the rules."""
        clients = [{"fd": c.fd, "deadline": c.deadline, "dumping": c.dumping, "since": c.since}
                   for c in self.clients.values()]
        return {"store": self.store.to_state(), "clients": clients,
                "lameduck": {"running": self.running, "deadline": self._lameduck_deadline},
                "counters": {"requests": dict(self.requests)}}

    def descriptors(self) -> Dict[str, int]:
        """Every descriptor the state refers to, by name: the listening socket, the held ones (by
        slot), the clients'."""
        named = {"listen": self.listen_fd}
        named.update((f"held {e.slot}", e.held.fd) for e in self.store.entries())
        named.update((f"client {fd}", fd) for fd in self.clients)
        return named

    def restore(self, state: Dict[str, Any]) -> None:
        """Take over what :meth:`to_state` described, after :meth:`start` (rules read, fd 0
        checked). The descriptors become close-on-exec again. A client is checked against the
        rules again (its rights may have changed); a refused one is closed.

        Raises ValueError (KeyError, TypeError) if *state* is malformed or names a closed descriptor.
        """
        parsed = parse_state(state)
        for fd in [e.held.fd for e in parsed.store.entries()] + [c.fd for c in parsed.clients]:
            try:
                os.set_inheritable(fd, False)
            except OSError as e:
                raise ValueError(f"descriptor {fd}: {os.strerror(e.errno or errno.EBADF)}") from None
        self.store = parsed.store
        for carried in parsed.clients:
            sock = socket.socket(fileno=carried.fd)
            sock.setblocking(False)
            client = self._welcome(sock)
            if client is None:
                sock.close()
                continue
            client.deadline = carried.deadline
            client.dumping = carried.dumping
            client.since = carried.since
            self.clients[carried.fd] = client
        self.running = parsed.running
        self._lameduck_deadline = parsed.lameduck_deadline
        self.requests = parsed.requests

    def _upgrade_when_drained(self, now: float) -> bool:
        """Once no client is in the middle of a request (or the drain deadline passed: those still
        busy are dropped), end the loop for the exec: True."""
        assert self._upgrade_argv is not None and self.upgrade_deadline is not None
        busy = [c for c in self.clients.values() if self._busy(c)]
        if busy and now < self.upgrade_deadline:
            return False
        for c in busy:
            self._drop(c)
        self._ending = Ending(0, self._upgrade_argv)
        return True

    # -- connections ------------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(_ACCEPT_BURST):
            if len(self.clients) >= self.config.maxconn:
                return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                code = e.errno or errno.EIO
                if code == errno.ECONNABORTED:
                    continue
                if code in NO_DESCRIPTORS:
                    if self._backoff.failed(self.clock.monotonic()) and self.config.verbosity:
                        self.log.warn(f"unable to accept: {os.strerror(code)}")
                    return
                raise SystemFailure("accept", code) from None
            self._backoff.succeeded()
            sock.setblocking(False)
            client = self._welcome(sock)
            if client is None:
                sock.close()
            else:
                self.clients[client.fd] = client

    def _welcome(self, sock: socket.socket) -> Optional[Client]:
        """Check a new client against the rules; its :class:`Client`, or None to close it."""
        verbose = self.config.verbosity > 0
        try:
            _, uid, gid = peer_credentials(sock)
        except OSError as e:
            if verbose:
                self.log.warn(f"unable to getpeereid: {os.strerror(e.errno or errno.EIO)}")
            return None
        assert self.rules is not None
        try:
            decision = check(self.rules, uid, gid)
        except SystemFailure as e:
            if verbose:
                self.log.warn(f"error while checking rules: {e.reason}")
            return None
        if not decision.allowed:
            return None
        if decision.exec and verbose:
            self.log.warn(f"unused exec string in rules for uid {uid} gid {gid}")
        try:
            rights = rights_from_modifs(decision.modif_strings())
        except RightsError as e:
            if verbose:
                self.log.warn(f"invalid {e.variable} value: {e.value}: {e.message}")
                self.log.warn("unable to parse_env: Success")
            return None
        now = self.clock.monotonic()
        deadline = now + self._timeout if self._timeout else None
        return Client(sock, rights, deadline, uid=uid, gid=gid, since=now)

    def _drop(self, c: Client) -> None:
        if c.events:
            self._poller.unregister(c.fd)
        self.clients.pop(c.fd, None)
        c.outbox.discard()
        c.decoder.discard()
        c.sock.close()

    def _flush(self, c: Client) -> bool:
        """Send what the client's socket takes; False if the client was dropped."""
        try:
            done = c.outbox.flush(c.sock.sendmsg)
        except OSError:
            self._drop(c)
            return False
        if done:
            c.deadline = None
            self._process(c)
        return c.fd in self.clients

    def _read(self, c: Client) -> None:
        try:
            if unixmessage.recv_into(c.sock, c.decoder) == 0:
                self._drop(c)
                return
        except BlockingIOError:
            return
        except (OSError, ProtocolError):
            self._drop(c)
            return
        self._process(c)

    def _update_partial(self, c: Client) -> None:
        """Start or stop the clock of a message whose first bytes arrived (see PARTIAL_GRACE)."""
        if not c.decoder.incomplete:
            c.partial_deadline = None
        elif c.partial_deadline is None:
            grace = min(PARTIAL_GRACE, self._timeout) if self._timeout else PARTIAL_GRACE
            c.partial_deadline = self.clock.monotonic() + grace

    def _process(self, c: Client) -> None:
        """Handle the complete requests buffered for *c* while its outbox has room.

        Descriptor ownership has one place: a request's descriptors belong to its message; a
        handler that keeps one (store, setdump) takes it out of ``message.fds``; whatever is left
        there when the handler returns — or raises — is closed here.
        """
        while c.outbox.size < OUTBOX_HIGH:
            try:
                message = c.decoder.next_message()
                if message is None:
                    break
            except ProtocolError:
                self._drop(c)
                return
            try:
                request = protocol.parse_request(message.payload, message.nfds, c.dumping)
                operation = _OPERATION_OF.get(type(request))
                if operation is not None:
                    self.requests[operation] += 1
                _HANDLERS[type(request)](self, c, request, message)
            except ProtocolError:
                self._drop(c)
                return
            finally:
                unixmessage.close_fds(message.fds)
        if c.outbox:
            self._flush(c)
        if c.fd in self.clients:
            self._update_partial(c)

    # -- requests: one function each, as s6-fdholderd.c's table of do_* -------------------------
    def _answer(self, c: Client, code: int, arm: bool = True) -> None:
        c.outbox.put(bytes((code,)))
        if arm:
            self._arm(c)

    def _arm(self, c: Client) -> None:
        if c.deadline is None and self._timeout:
            c.deadline = self.clock.monotonic() + self._timeout

    def do_store(self, c: Client, request: protocol.Store, m: Message) -> None:
        store = self.store
        if m.fds_lost:
            self._answer(c, errno.ENFILE)
        elif not c.rights.store.search(request.id):
            self._answer(c, errno.EPERM)
        elif len(store) >= self.config.maxfds:
            self._answer(c, errno.ENFILE)
        elif store.get(request.id) is not None:
            self._answer(c, errno.EBUSY)
        else:
            self._answer(c, 0)
            store.add(request.id, request.limit, m.fds.pop(0), unique_limit=True)

    def do_delete(self, c: Client, request: protocol.Delete, m: Message) -> None:
        entry = self.store.get(request.id)
        if not c.rights.store.search(request.id):
            self._answer(c, errno.EPERM)
        elif entry is None:
            self._answer(c, errno.ENOENT)
        else:
            self._answer(c, 0)
            self.store.remove(entry)

    def do_retrieve(self, c: Client, request: protocol.Retrieve, m: Message) -> None:
        entry = self.store.get(request.id)
        allowed = c.rights.retrieve.search(request.id) and (
            not request.delete or c.rights.store.search(request.id))
        if not allowed:
            self._answer(c, errno.EPERM)
        elif entry is None:
            self._answer(c, errno.ENOENT)
        else:
            c.outbox.put(b"\0", [entry.held])
            if request.delete:
                self.store.remove(entry)

    def do_list(self, c: Client, request: protocol.List_, m: Message) -> None:
        if not c.rights.list:
            self._answer(c, errno.EPERM)
        else:
            c.outbox.put(protocol.encode_list_reply([e.id for e in self.store.entries()]))
            self._arm(c)

    def do_getdump(self, c: Client, request: protocol.GetDump, m: Message) -> None:
        if not c.rights.getdump:
            self._answer(c, errno.EPERM)
            return
        entries = list(self.store.entries())
        per_message = self.config.release.unixmessage_maxfds
        c.outbox.put(protocol.encode_getdump_header(len(entries), per_message))
        for start in range(0, len(entries), per_message):
            chunk = entries[start : start + per_message]
            body = protocol.encode_entries([protocol.DumpEntry(e.limit, e.id) for e in chunk])
            c.outbox.put(body, [e.held for e in chunk])
        self._arm(c)

    def do_setdump(self, c: Client, request: protocol.SetDump, m: Message) -> None:
        if not c.rights.setdump:
            self._answer(c, errno.EPERM)
        elif request.count > self.config.maxfds or request.count + len(self.store) > self.config.maxfds:
            self._answer(c, errno.ENFILE)
        else:
            c.dumping = request.count
            c.outbox.put(protocol.encode_setdump_reply(request.count, self.config.release.unixmessage_maxfds))

    def do_setdump_data(self, c: Client, request: protocol.SetDumpData, m: Message) -> None:
        if not c.rights.setdump:
            self._answer(c, errno.EPERM)
            return
        if m.fds_lost or len(self.store) + request.count > self.config.maxfds:
            self._answer(c, errno.ENFILE)
            return
        if request.entries is None:
            raise ProtocolError("bad setdump entries")
        taken = m.fds[: len(request.entries)]
        del m.fds[: len(taken)]
        for entry, fd in zip(request.entries, taken):
            self.store.add(entry.id, entry.limit, fd, unique_limit=False)
        c.dumping -= request.count
        self._answer(c, errno.EAGAIN if c.dumping else 0)


class CarriedClient(NamedTuple):
    fd: int
    deadline: Optional[float]
    dumping: int
    since: float


class ParsedState(NamedTuple):
    """What :meth:`FdHolderDaemon.to_state` wrote, read back (no descriptor touched yet)."""

    store: FdStore
    clients: List[CarriedClient]
    running: bool
    lameduck_deadline: Optional[float]
    requests: Dict[str, int]


def parse_state(state: Dict[str, Any]) -> ParsedState:
    """Read a daemon state back without touching a descriptor — what :meth:`FdHolderDaemon.restore`
    does first, and what an upgrade's preflight runs in the new code against the current state.
    Raises ValueError (KeyError, TypeError) when this code cannot read *state*."""
    store = FdStore.from_state(state["store"])
    clients = [CarriedClient(int(c["fd"]), None if c["deadline"] is None else float(c["deadline"]),
                             int(c["dumping"]), float(c["since"])) for c in state["clients"]]
    lameduck = state["lameduck"]
    deadline = lameduck["deadline"]
    running = bool(lameduck["running"])
    requests = read_counts(dict(state.get("counters") or {}).get("requests", {}), OPERATIONS)
    return ParsedState(store, clients, running, None if deadline is None else float(deadline), requests)


_OPERATION_OF: Dict[type, str] = {
    protocol.Store: "store", protocol.Delete: "delete", protocol.Retrieve: "retrieve", protocol.List_: "list",
    protocol.GetDump: "getdump", protocol.SetDump: "setdump",
}
_HANDLERS: Dict[type, Handler] = {
    protocol.Store: FdHolderDaemon.do_store,  # type: ignore[dict-item]
    protocol.Delete: FdHolderDaemon.do_delete,  # type: ignore[dict-item]
    protocol.Retrieve: FdHolderDaemon.do_retrieve,  # type: ignore[dict-item]
    protocol.List_: FdHolderDaemon.do_list,  # type: ignore[dict-item]
    protocol.GetDump: FdHolderDaemon.do_getdump,  # type: ignore[dict-item]
    protocol.SetDump: FdHolderDaemon.do_setdump,  # type: ignore[dict-item]
    protocol.SetDumpData: FdHolderDaemon.do_setdump_data,  # type: ignore[dict-item]
}
