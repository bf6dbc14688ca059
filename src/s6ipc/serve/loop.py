"""The accept loop of ipcserverd: one listening socket, one spawned program per connection.

Some facts about the kernel and CPython that this loop relies on:

* **Signals** arrive through the self-pipe (:mod:`s6ipc.base.selfpipe`): SIGCHLD, SIGTERM, SIGHUP,
  SIGQUIT and SIGABRT are handled in the loop, in arrival order, never in the middle of a spawn;
  every other signal keeps its default action, as in s6. A daemon built on the loop may catch
  more (:meth:`Server.on_signal`). Reaping is :class:`s6ipc.serve.children.ChildTable`'s.
* **Descriptors.** Children receive the connection on fds 0 and 1 (``dup2`` clears close-on-exec
  on the copies) and the inherited fd 2. Everything else the daemon holds is made close-on-exec
  at start-up — the listening socket above all, and also whatever the daemon's own parent leaked
  to it (s6 passes those on; we do not) — so no descriptor leaks into a child.
* **fd 1.** Without ``-1`` it is closed at start (as s6 does); with ``-1`` it carries one newline,
  then is closed. Either way /dev/null (close-on-exec) is then opened on fd 1 so that ``accept``
  can never hand out fd 1, whose ``dup2`` onto itself would keep close-on-exec set.
* **Backlog.** The listening socket is polled only while fewer than *maxconn* children live:
  at the limit, clients wait in the kernel's backlog rather than being refused.
* **Spawning.** ``posix_spawn`` (glibc: ``clone(CLONE_VM|CLONE_VFORK)``) copies no page tables,
  which is why it beats s6's ``fork`` in CPU per connection, but it suspends the loop until the child
  has exec'd. Handing spawns to threads (CPython releases the GIL around ``posix_spawn``) was
  measured and rejected: the GIL hand-offs cost more CPU per connection (≈ +50 µs) than the
  overlap saved on two cores (docs/benchmarks.md).
* **Running out of descriptors** (EMFILE, ENFILE) makes ``accept`` fail while the socket stays
  readable: s6 spins on it at 100 % CPU, logging a warning per try. We log once per episode and
  stop polling the socket for a back-off delay (:mod:`s6ipc.base.backoff`; cut short by a child's
  exit), then retry; queued clients wait in the backlog meanwhile.
* **CPython's private socket API on the hot path.** Accepting goes through ``socket._accept``
  (the C method behind ``socket.accept``: ``(fd, address)``, no ``socket.socket`` object built)
  and each connection is wrapped in a bare ``_socket.socket``, which saves two Python-level
  objects per connection (measured in docs/benchmarks.md). Both exist in every CPython from 3.3
  to 3.13; if a release removes them, :func:`_accept_method` fails at :meth:`Server.start`
  (AttributeError, a test in tests/unit) — the fallback is ``sock.accept()`` and
  ``socket.socket(fileno=…)``, correct and a few µs slower.
* **The peer** (who connected, what is counted per peer for ``-C``, the per-connection variables)
  is a :class:`s6ipc.serve.peers.PeerIdentity`: s6-ipcserverd's SO_PEERCRED/``IPC*`` by default.
"""


from __future__ import annotations

import _signal
import _socket
import errno
import fcntl
import os
import select

from ..base.backoff import NO_DESCRIPTORS, AcceptBackoff
from ..base.clock import SYSTEM_CLOCK, Clock
from ..base.descriptors import close_on_exec_above
from ..base.errors import ExecFailure, SystemFailure, Unusable
from ..base.execution import Spawner
from ..base.log import Log
from ..base.s6release import DEFAULT, S6Release
from ..base.selfpipe import SelfPipe, give_back, polled_selfpipe
from ..base.typeshim import Protocol, dataclass, field
from ..daemon.lifecycle import Ending
from ..daemon.liveview import NAME_VARIABLE, every
from ..daemon.readiness import NOTIFY_VARIABLES, claim_notification_fd, write_newline
from ..sockets.listenfds import LISTEN_VARIABLES
from ..sockets.unix import check_listening_stream
from .children import ChildTable
from .peers import Peer, PeerIdentity, PeerUnknown, UnixPeers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

    from .admission import Admission

__all__ = [
    "PRIVATE_VARIABLES", "HANDLED_SIGNALS", "Ending", "ServerConfig", "child_environment",
    "Server", "ChildSpawner", "REFUSAL_REASONS", "EXIT_OUTCOMES",
]

_BURST = 64
#: Why an accepted connection was closed without a child: ``maxconn`` never happens (at ``-c``
#: the loop stops accepting and clients wait in the backlog, as s6's), ``localmaxconn`` (``-C``),
#: ``access`` (the access rules said no, or the peer's identity could not be read), ``spawn``
#: (fork or exec failed), ``rate`` and ``prefix`` (admission control, when it refuses).
REFUSAL_REASONS = ("maxconn", "localmaxconn", "access", "spawn", "rate", "prefix")
#: How a child ended: exit 0, another exit code, killed by a signal.
EXIT_OUTCOMES = ("ok", "failed", "signaled")

#: Variables a supervisor or activator meant for the daemon only: never passed to children.
PRIVATE_VARIABLES = LISTEN_VARIABLES + NOTIFY_VARIABLES + (NAME_VARIABLE,)
#: The signals the loop handles itself (a daemon adds others with :meth:`Server.on_signal`).
HANDLED_SIGNALS = (_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGABRT)


class ChildSpawner(Protocol):
    """What the loop asks of what a policy returns: a :class:`Spawner`, or one wrapping it."""

    @property
    def name(self) -> str: ...

    def spawn(self, fd: int, env: Dict[str, str]) -> int: ...


#: A per-connection policy: given (the peer, env prepared for the child, connection socket), return
#: the spawner and environment to use, or None to refuse the connection (it is then closed).
#: The access-control fast paths plug in here (:mod:`s6ipc.access.fastpath`; they read the peer).
if TYPE_CHECKING:
    ConnectionPolicy = Callable[[Peer, Dict[str, str], _socket.socket],
                                Optional[Tuple[ChildSpawner, Dict[str, str]]]]
#: ``(interval, function)``: called from the loop at least every *interval* seconds while it runs —
#: the systemd watchdog ping, tied to the loop's liveness rather than to a timer thread.
if TYPE_CHECKING:
    Heartbeat = Tuple[float, Callable[[], None]]


@dataclass(eq=False)
class ServerConfig:
    """What s6-ipcserverd's options say, after s6's normalisation (see :meth:`normalised`)."""

    argv: List[str]
    verbosity: int = 1
    lookup: bool = True
    maxconn: int = 40
    localmaxconn: int = 40
    notify: bool = False
    #: The s6 line followed where releases differ (``S6IPC_S6``: :mod:`s6ipc.base.s6release`).
    release: S6Release = DEFAULT
    #: ``-A`` values, in order (parsed by :func:`s6ipc.serve.admission.parse_limits`).
    admission: List[str] = field(default_factory=list)

    def normalised(self) -> ServerConfig:
        """maxconn 0 → 1, capped at the release's ceiling (16384; 1000 for 2.11); localmaxconn =
        maxconn with -P or when above it."""
        maxconn = min(max(self.maxconn, 1), self.release.absolute_maxconn)
        local = self.localmaxconn
        if not self.lookup or local > maxconn:
            local = maxconn
        return ServerConfig(self.argv, verbosity=self.verbosity, lookup=self.lookup, maxconn=maxconn,
                            localmaxconn=local, notify=self.notify,
                            admission=list(self.admission), release=self.release)


def _reserve_fd1() -> None:
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    if null != 1:
        os.dup2(null, 1, inheritable=False)
        os.close(null)


def child_environment(environ: Dict[str, str], identity: PeerIdentity) -> Dict[str, str]:
    """The environment every child starts from: the daemon's, minus what is private to the daemon,
    with the variables each connection sets already in place (empty), in s6's order.

    s6 applies its per-connection modifications with skalibs' ``env_merge``: unsetting a variable
    moves the *last* entry into its slot, setting one removes it that way and appends it. Placing
    the keys here, once, lets each connection fill in the values (a dict keeps a key's position on
    assignment), so children see s6's exact order at no per-connection cost. The identity's
    :attr:`~s6ipc.serve.peers.PeerIdentity.unset` variables (``-P``: IPCREMOTEEUID, IPCREMOTEEGID) are
    removed, not set.
    """
    items = [(k, v) for k, v in environ.items() if k not in PRIVATE_VARIABLES]
    for name in identity.variables:
        for j, (key, _) in enumerate(items):
            if key == name:
                last = items.pop()
                if j < len(items):
                    items[j] = last
                break
        if name not in identity.unset:
            items.append((name, ""))
    return dict(items)


def _accept_method(listener: _socket.socket) -> Callable[[], Tuple[int, object]]:
    """The C accept of *listener* (see "CPython's private socket API" in the module docstring)."""
    return listener._accept  # type: ignore[attr-defined,no-any-return]


class Server:
    """s6-ipcserverd's loop over the listening socket on fd 0.

    :meth:`start` checks fd 0 and prepares (raising :class:`SystemFailure` or
    :class:`~s6ipc.base.errors.BadInput` with s6's exit codes); :meth:`serve` runs until SIGTERM, SIGQUIT
    or SIGABRT (or :meth:`stop_for_exec`) and returns an :class:`Ending`. *log* receives the
    daemon's lines, *child_log* the lines s6 prints from a child that could not exec
    (``s6-ipcserver (child): fatal: …``). *identity* says who a peer is (default: SO_PEERCRED and
    ``IPC*`` variables, :class:`~s6ipc.serve.peers.UnixPeers`); *spawner* starts a child per connection
    (default: ``config.argv`` by posix_spawn); *policy* may replace or refuse the spawn per
    connection; *on_ready* hooks run once after the ``-1`` newline (readiness sinks), *on_exit*
    hooks once when the loop ends; *heartbeat* is called from the loop at least every interval.
    *admission* (``-A``) may close a connection before anything else is done with it.
    """

    def __init__(self, config: ServerConfig, log: Log, child_log: Log, listen_fd: int = 0, *,
                 identity: Optional[PeerIdentity] = None, spawner: Optional[Spawner] = None,
                 policy: Optional[ConnectionPolicy] = None, on_ready: Sequence[Callable[[], None]] = (),
                 on_exit: Sequence[Callable[[], None]] = (), heartbeat: Optional[Heartbeat] = None,
                 clock: Clock = SYSTEM_CLOCK, admission: Optional[Admission] = None) -> None:
        self.config = config.normalised()
        self.log = log
        self.child_log = child_log
        self.listen_fd = listen_fd
        self.identity: PeerIdentity = identity if identity is not None else UnixPeers(self.config.lookup)
        self.children = ChildTable()
        self.spawner = spawner if spawner is not None else Spawner(self.config.argv)
        self.policy = policy
        self.on_ready = list(on_ready)
        self.on_exit = list(on_exit)
        self.heartbeat = heartbeat
        self.clock = clock
        self.admission = admission
        if admission is not None:  # its lines and expiries
            from .admission import TICK  # imported with the Admission: only the servers with -A pay for it

            beats = [(TICK, admission.tick)] + ([heartbeat] if heartbeat is not None else [])
            self.heartbeat = every(beats, clock.monotonic)
        self.base_env = child_environment(dict(os.environ), self.identity)
        self._selfpipe: Optional[SelfPipe] = None
        self._listener: Optional[_socket.socket] = None
        self._accept: Callable[[], Tuple[int, object]] = _not_started
        self._burst = 1
        self._poller = select.poll()
        self._polling_listener = False
        self._backoff = AcceptBackoff()
        self._running = True
        self._final_signals: Tuple[int, ...] = ()
        self._ending = Ending()
        self._watched: Dict[int, Callable[[int], None]] = {}
        self._signal_hooks: Dict[int, Callable[[], None]] = {}
        #: A stand-in serving during the daemon's exec (:meth:`stand_in`): its own lines are not said.
        self._standing_in = False
        #: Connections accepted since the process started (carried across in-place upgrades:
        #: :mod:`s6ipc.serve.life`), those given a child, those closed without one by reason
        #: (:data:`REFUSAL_REASONS`), and the children's ends by outcome (:data:`EXIT_OUTCOMES`):
        #: counted, nothing more, on the hot path. accepted = spawned + sum(refusals) + in flight.
        self.accepted = 0
        self.spawned = 0
        self.refusals: Dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.exits: Dict[str, int] = dict.fromkeys(EXIT_OUTCOMES, 0)

    # -- what a daemon built on the loop may add ----------------------------------------------
    def watch(self, fd: int, on_event: Callable[[int], None], events: int = select.POLLIN) -> None:
        """Poll *fd* too; *on_event(mask)* is called from the loop when it is ready."""
        self._watched[fd] = on_event
        self._poller.register(fd, events)

    def unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def expect_child(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """Child *pid* is the daemon's, not a connection's: *on_exit(status)* when it is reaped."""
        self.children.expect(pid, on_exit)

    def unread_signals(self) -> bytes:
        """Take the signal numbers the loop has not read yet out of the self-pipe."""
        if self._selfpipe is None:
            return b""
        unread = b""
        while True:
            chunk = self._selfpipe.read()
            if not chunk:
                return unread
            unread += chunk

    @property
    def exec_pending(self) -> bool:
        """Whether the loop ended (or is ending) for an exec: :meth:`stop_for_exec`, not cancelled."""
        return self._ending.exec_argv is not None

    def on_signal(self, sig: int, hook: Callable[[], None]) -> None:
        """Catch *sig* (one the loop does not handle itself) and call *hook* from the loop."""
        if sig in HANDLED_SIGNALS:
            raise ValueError(f"signal {sig} is the loop's own")
        self._signal_hooks[sig] = hook
        if self._selfpipe is not None:
            self._selfpipe.add(sig)

    @property
    def signals(self) -> Tuple[int, ...]:
        """Every signal the loop catches: its own and those of :meth:`on_signal`."""
        return HANDLED_SIGNALS + tuple(self._signal_hooks)

    def stop_for_exec(self, argv: List[str]) -> None:
        """End the loop; :meth:`serve` returns ``Ending(0, argv)`` (children are left running).
        Nothing once a signal ended the loop for good (SIGTERM read before the preflight's exit)."""
        if not self._running and not self.exec_pending:
            return
        self._ending = Ending(0, list(argv))
        self._running = False

    def counts(self) -> Dict[str, Any]:
        """The counters (docs/status.md's ``counters``): accepted, refused by reason, spawned,
        exits by outcome."""
        return {"accepted": self.accepted, "refused": dict(self.refusals), "spawned": self.spawned,
                "exits": dict(self.exits)}

    def stand_in(self, channel: int, limit: float, caught: Sequence[int], ignored: Sequence[int]) -> None:
        """In a stand-in just forked (:mod:`s6ipc.serve.standin`), before :meth:`serve`: go on with
        the same listening socket, children and counts, but with nothing of the daemon's — its
        watched descriptors, signal hooks, readiness hooks, heartbeat, log line at the end. It
        hears *caught* signals only (on a self-pipe of its own: SIGTERM ends the loop), ignores
        *ignored*, and its loop ends when *channel* is readable (or at EOF), or *limit* seconds from
        now. Raises :class:`SystemFailure` (``selfpipe_init``)."""
        for fd in list(self._watched):
            self.unwatch(fd)
        give_back(self._poller, self._selfpipe, None)
        self._signal_hooks.clear()
        for sig in ignored:
            _signal.signal(sig, _signal.SIG_IGN)
        self._selfpipe = polled_selfpipe(self._poller, caught)
        self.on_ready, self.on_exit = [], []
        self._standing_in, self._running, self._ending, self._final_signals = True, True, Ending(), ()
        deadline = self.clock.monotonic() + limit

        def check() -> None:
            if self.clock.monotonic() >= deadline:
                self._quit(())

        def told(mask: int) -> None:
            try:  # read what was said: a socket closed with unread data resets its peer's reads
                os.read(channel, 64)
            except OSError:
                pass
            self._quit(())

        self.heartbeat = (min(limit, 0.5), check)
        self.watch(channel, told)

    def serve_on(self) -> None:
        """After :meth:`stop_for_exec` and an exec that failed: the next :meth:`serve` goes on
        with everything as it was (children, counters, the listening socket)."""
        self._ending = Ending()
        self._running = True

    def close(self) -> None:
        """Give back what :meth:`start` took, for a program that goes on without the loop: the
        self-pipe (the previous signal handlers and wakeup fd come back) and the polled
        descriptors. The listening socket and the children stay the caller's."""
        for fd in list(self._watched):
            self.unwatch(fd)
        self._set_listening(False)
        give_back(self._poller, self._selfpipe, self._listener)
        self._selfpipe = self._listener = None
        self._accept = _not_started

    # -- start-up ---------------------------------------------------------------------------
    def start(self, *, checked: bool = False) -> None:
        """Check fd 0, set up fds and signals, log ``starting``, write the ``-1`` newline.

        *checked*: the daemon's intake (:func:`s6ipc.serve.intake.take_daemon_socket`) has already
        checked :attr:`listen_fd` (a listening stream socket of the identity's family) and made it
        close-on-exec, so neither is done again.
        """
        if not checked:
            check_listening_stream(self.listen_fd, (self.identity.family,))
            os.set_inheritable(self.listen_fd, False)
        claim_notification_fd(self.config.notify)
        if not self.config.notify:
            _reserve_fd1()
        close_on_exec_above(2)
        self._install_signals()
        listener = _socket.socket(self.identity.family, _socket.SOCK_STREAM, 0, self.listen_fd)
        self._listener = listener
        self._accept = _accept_method(listener)
        nonblocking = fcntl.fcntl(self.listen_fd, fcntl.F_GETFL) & os.O_NONBLOCK
        self._burst = _BURST if nonblocking else 1
        if self.identity.ready_first:
            self._write_ready_line()
        if self.config.verbosity >= 2:
            self.log.info("starting")
            self._status()
        if not self.identity.ready_first:
            self._write_ready_line()
        for hook in self.on_ready:
            hook()
        self._set_listening(True)

    def _write_ready_line(self) -> None:
        if self.config.notify:
            write_newline(1, self.identity.ready_line(self.listen_fd))
            _reserve_fd1()

    def _install_signals(self) -> None:
        self._selfpipe = polled_selfpipe(self._poller, HANDLED_SIGNALS + tuple(self._signal_hooks))

    def _set_listening(self, on: bool) -> None:
        if on and not self._polling_listener:
            self._poller.register(self.listen_fd, select.POLLIN)
        elif not on and self._polling_listener:
            self._poller.unregister(self.listen_fd)
        self._polling_listener = on

    # -- the loop ---------------------------------------------------------------------------
    def serve(self) -> Ending:
        """Run the loop; returns after SIGTERM, SIGQUIT, SIGABRT or :meth:`stop_for_exec`.

        Raises :class:`SystemFailure` (``trouble with selfpipe``, ``wait_nohang``) and
        :class:`~s6ipc.base.errors.BadInput` (``trouble with socket``, exit 111).
        """
        assert self._selfpipe is not None, "serve() before start()"
        listen_fd, wakeup = self.listen_fd, self._selfpipe.fileno()
        poll = self._poller.poll
        monotonic = self.clock.monotonic
        backoff = self._backoff
        next_beat = 0.0
        while self._running:
            timeout = None
            if backoff and not self._polling_listener:
                timeout = max(0.0, backoff.until - monotonic()) * 1000
            if self.heartbeat is not None:
                next_beat, wait = self._beat(next_beat)
                timeout = wait if timeout is None else min(timeout, wait)
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            if not events and backoff:
                if not backoff.waiting(monotonic()):
                    self._resume_after_backoff()
                continue
            for fd, mask in events:
                if fd == wakeup:
                    if mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        raise SystemFailure("trouble with selfpipe", errno.EIO)
                    self._handle_signals()
                elif fd == listen_fd:
                    if self._polling_listener:
                        if mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                            raise Unusable("trouble with socket")
                        self._accept_ready()
                else:
                    on_event = self._watched.get(fd)
                    if on_event is not None:
                        on_event(mask)
        if self._final_signals:
            self.children.kill_all(self._final_signals)
        for hook in self.on_exit:
            hook()
        if self.config.verbosity >= 2 and self._ending.exec_argv is None and not self._standing_in:
            self.log.info("exiting")
        return self._ending

    def _beat(self, due: float) -> Tuple[float, float]:
        """Call the heartbeat if *due* has passed; return the next due time and the ms until it."""
        assert self.heartbeat is not None
        interval, beat = self.heartbeat
        now = self.clock.monotonic()
        if now >= due:
            beat()
            due = now + interval
        return due, (due - now) * 1000

    def _resume_after_backoff(self) -> None:
        self._set_listening(len(self.children) < self.config.maxconn)

    def _accept_ready(self) -> None:
        """Accept what is queued: one connection, or a burst while the socket is non-blocking.

        A burst saves a ``poll`` per connection under load; it ends at EAGAIN (the queue is empty:
        not an error), at *maxconn* live children, or after ``_BURST`` connections so that signals
        are handled promptly. A blocking listening socket (``-B``, some activators) gets exactly one
        ``accept`` per readiness event, as s6 does, so the loop never blocks in ``accept``.
        """
        accept = self._accept
        maxconn = self.config.maxconn
        children = self.children
        family = self.identity.family
        for attempt in range(self._burst):
            if len(children) >= maxconn:
                self._reap()
                if len(children) >= maxconn:
                    self._set_listening(False)
                    return
            try:
                fd, address = accept()
            except OSError as e:
                code = e.errno or errno.EIO
                if code == errno.EAGAIN and attempt:
                    return
                self._accept_failed(code)
                return
            self._backoff.succeeded()
            self.accepted += 1
            conn = _socket.socket(family, _socket.SOCK_STREAM, 0, fd)
            try:
                refusal = self._serve_connection(conn, address)
                if refusal:
                    self.refusals[refusal] = self.refusals.get(refusal, 0) + 1
                else:
                    self.spawned += 1
            finally:
                conn.close()

    @property
    def refused(self) -> int:
        """Connections accepted and closed without a child, whatever the reason."""
        return sum(self.refusals.values())

    def _accept_failed(self, code: int) -> None:
        if code in NO_DESCRIPTORS:
            if self._backoff.failed(self.clock.monotonic()) and self.config.verbosity >= 1:
                self.log.warn(f"unable to accept: {os.strerror(code)}")
            self._set_listening(False)
        elif self.config.verbosity >= 1:
            self.log.warn(f"unable to accept: {os.strerror(code)}")

    def _serve_connection(self, conn: _socket.socket, address: object) -> str:
        """Spawn the child for one connection: "", or why it was closed without one (a key of
        :data:`REFUSAL_REASONS`; a peer whose identity cannot be read counts as ``access``)."""
        config = self.config
        try:
            peer = self.identity.identify(conn, address)
        except PeerUnknown as e:
            if config.verbosity >= 1:
                self.log.warn(str(e))
            return "access"
        admission = self.admission
        if admission is not None:
            reason = admission.admit(peer)
            if reason is not None:
                return reason
        num = self.children.count(peer.key)
        if num >= config.localmaxconn:
            # Children that exited but whose SIGCHLD is still in the wakeup pipe must not count.
            self._reap()
            num = self.children.count(peer.key)
        if num >= config.localmaxconn:
            self.log.info(peer.deny_line(num, config.localmaxconn))
            return "localmaxconn"
        env = self.base_env.copy()
        peer.fill(env, config.release.connnum(num), address)
        spawner: ChildSpawner = self.spawner
        if self.policy is not None:
            decision = self.policy(peer, env, conn)
            if decision is None:
                return "access"
            spawner, env = decision
        try:
            pid = spawner.spawn(conn.fileno(), env)
        except ExecFailure as e:
            if not config.release.spawn_failure_in_daemon:
                self.child_log.error(str(e))
            elif config.verbosity >= 1:
                self.log.warn(f"unable to spawn {e.name}: {os.strerror(e.errno)}")
            return "spawn"
        except OSError as e:
            if config.verbosity >= 1:
                self.log.warn(f"unable to spawn {spawner.name}: {os.strerror(e.errno or errno.EIO)}")
            return "spawn"
        count = self.children.add(pid, peer)
        if admission is not None:
            admission.spawned(peer)
        if config.verbosity >= 2:
            self.log.info(peer.allow_line(pid, count, config.localmaxconn))
            self._status()
        if len(self.children) >= config.maxconn:
            self._set_listening(False)
        return ""

    def _status(self) -> None:
        self.log.info(f"status: {len(self.children)}/{self.config.maxconn}")

    # -- signals and children ---------------------------------------------------------------
    def _handle_signals(self) -> None:
        """Act on every signal read, in order: none is left unread behind one that ends the loop.
        A signal that ends the daemon cancels an exec that was coming (the daemon exits instead)."""
        assert self._selfpipe is not None
        for signo in self._selfpipe.read():
            if signo == _signal.SIGCHLD:
                self._reap()
            elif signo == _signal.SIGTERM:
                if self.config.verbosity >= 2 and not self._standing_in:
                    self.log.info("received SIGTERM, quitting")
                self._quit(())
            elif signo == _signal.SIGHUP:
                if self.config.verbosity >= 2:
                    self.log.info("received SIGHUP, sending SIGTERM+SIGCONT to all connections")
                self.children.kill_all((_signal.SIGTERM, _signal.SIGCONT))
            elif signo == _signal.SIGQUIT:
                if self.config.verbosity >= 2:
                    self.log.info("received SIGQUIT, sending SIGTERM+SIGCONT to all connections and quitting")
                self._quit((_signal.SIGTERM, _signal.SIGCONT))
            elif signo == _signal.SIGABRT:
                if self.config.verbosity >= 2:
                    self.log.info("received SIGABRT, sending SIGKILL to all connections and quitting")
                self._quit((_signal.SIGKILL,))
            elif self._running:  # a daemon's own signal (SIGUSR2) means nothing once the loop ends
                hook = self._signal_hooks.get(signo)
                if hook is not None:
                    hook()

    def _quit(self, final: Tuple[int, ...]) -> None:
        """End the loop for good (no exec), sending *final* to every child first (SIGQUIT, SIGABRT;
        a later one's signals win, as if it had come alone)."""
        if final:
            self._final_signals = final
        self._ending = Ending()
        self._running = False

    def _reap(self) -> None:
        """Collect every exited child; resume accepting if a slot freed."""
        self.children.reap(self._finish)
        if self._backoff:
            self._backoff.cut_short(self.clock.monotonic())
            self._resume_after_backoff()
        elif not self._polling_listener and len(self.children) < self.config.maxconn:
            self._set_listening(True)

    def _finish(self, pid: int, peer: Peer, status: int) -> None:
        """Count an exited child's end (ok: exit 0, failed: another code, signaled); log its end
        line at -v2."""
        outcome = "signaled" if os.WIFSIGNALED(status) else "failed" if os.WEXITSTATUS(status) else "ok"
        self.exits[outcome] += 1
        if self.admission is not None:
            self.admission.ended(peer)
        if self.config.verbosity >= 2:
            if os.WIFSIGNALED(status):
                self.log.info(f"end pid {pid} {peer.end_name()} signal {os.WTERMSIG(status)}")
            else:
                self.log.info(f"end pid {pid} {peer.end_name()} exitcode {os.WEXITSTATUS(status)}")
            self._status()


def _not_started() -> Tuple[int, object]:
    raise SystemFailure("accept before start", errno.EBADF)
