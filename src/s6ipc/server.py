"""The accept loop of ipcserverd: one listening socket, one spawned program per connection.

Some facts about the kernel and CPython that this loop relies on:

* **Signals.** CPython runs Python-level handlers only between bytecodes of the main thread, but
  its C-level handler writes the signal number as one byte to the fd given to
  ``signal.set_wakeup_fd`` at once. We poll that pipe next to the listening socket and read the
  signal numbers from it, so SIGCHLD, SIGTERM, SIGHUP, SIGQUIT and SIGABRT are handled in the loop,
  in arrival order, never in the middle of a spawn. Every other signal keeps its default action,
  as in s6 (CPython's SIGINT handler is removed).
* **SIGCHLD** is not queued: one delivery may stand for many exited children, so reaping loops on
  ``waitpid(-1, WNOHANG)`` until it returns 0 or ECHILD.
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
  stop polling the socket for a back-off delay (10 ms doubling to 1 s, cut short by a child's
  exit), then retry; queued clients wait in the backlog meanwhile.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import select
import signal
import socket
import time
from typing import Callable, Dict, Hashable, List, Optional, Protocol, Sequence, Tuple

from .errors import BadInput, ExecFailure, SystemFailure
from .execution import Spawner
from .peers import PeerIdentity, UnixPeerIdentity
from .readiness import claim_notification_fd, write_newline

ABSOLUTE_MAXCONN = 1000
_BACKOFF_FIRST = 0.01
_BACKOFF_MAX = 1.0
_BURST = 64
_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: Variables a supervisor or activator meant for the daemon only: never passed to children.
PRIVATE_VARIABLES = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID",
                     "WATCHDOG_PID", "WATCHDOG_USEC")
_HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGABRT)


class Log(Protocol):
    """Where the server's log lines go (the program layer passes an s6-style reporter)."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


#: A per-connection policy: given (env prepared for the child, connection socket), return the
#: spawner and environment to use, or None to refuse the connection (it is then closed).
#: The access-control fast path plugs in here; see :attr:`Server.policy`.
ConnectionPolicy = Callable[[Dict[str, str], _socket.socket], Optional[Tuple[Spawner, Dict[str, str]]]]


class ServerConfig:
    """What s6-ipcserverd's options say, after s6's normalisation (see :meth:`normalised`)."""

    def __init__(self, argv: List[str], *, verbosity: int = 1, lookup: bool = True, maxconn: int = 40,
                 localmaxconn: int = 40, notify: bool = False) -> None:
        self.argv = argv
        self.verbosity = verbosity
        self.lookup = lookup
        self.maxconn = maxconn
        self.localmaxconn = localmaxconn
        self.notify = notify

    def normalised(self) -> ServerConfig:
        """maxconn 0 → 1, capped at 1000; localmaxconn = maxconn with -P or when above it."""
        maxconn = min(max(self.maxconn, 1), ABSOLUTE_MAXCONN)
        local = self.localmaxconn
        if not self.lookup or local > maxconn:
            local = maxconn
        return ServerConfig(self.argv, verbosity=self.verbosity, lookup=self.lookup, maxconn=maxconn,
                            localmaxconn=local, notify=self.notify)


def _close_on_exec_everything(keep_open: int) -> None:
    """Set close-on-exec on every open fd above *keep_open* (fd 2 and below stay as they are)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(keep_open + 1, 1024))
    for fd in fds:
        if fd > keep_open:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _reserve_fd1() -> None:
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    if null != 1:
        os.dup2(null, 1, inheritable=False)
        os.close(null)


def child_environment(environ: Dict[str, str], variables: Sequence[str],
                      removed: Sequence[str] = ()) -> Dict[str, str]:
    """The environment every child starts from: the daemon's, minus what is private to the daemon,
    with the variables each connection sets already in place (empty), in s6's order.

    s6 applies its per-connection modifications with skalibs' ``env_merge``: unsetting a variable
    moves the *last* entry into its slot, setting one removes it that way and appends it. Placing
    the keys here, once, lets each connection fill in the values (a dict keeps a key's position on
    assignment), so children see s6's exact order at no per-connection cost. *variables* are the
    peer identity's, in s6's order; those in *removed* are removed, not set.
    """
    items = [(k, v) for k, v in environ.items() if k not in PRIVATE_VARIABLES]
    for name in variables:
        for j, (key, _) in enumerate(items):
            if key == name:
                last = items.pop()
                if j < len(items):
                    items[j] = last
                break
        if name not in removed:
            items.append((name, ""))
    return dict(items)


class Server:
    """s6-ipcserverd's loop over the listening socket on fd 0.

    :meth:`start` checks fd 0 and prepares (raising :class:`SystemFailure` or
    :class:`~s6ipc.errors.BadInput` with s6's exit codes); :meth:`serve` runs until SIGTERM, SIGQUIT
    or SIGABRT and returns the exit code (0). *log* receives the daemon's lines, *child_log* the
    lines s6 prints from a child that could not exec (``s6-ipcserver (child): fatal: …``).
    *peer* says who the clients are (:mod:`s6ipc.peers`; default: s6-ipcserverd's Unix peers).
    """

    def __init__(self, config: ServerConfig, log: Log, child_log: Log, listen_fd: int = 0,
                 peer: Optional[PeerIdentity] = None) -> None:
        self.config = config.normalised()
        self.log = log
        self.child_log = child_log
        self.listen_fd = listen_fd
        self.peer: PeerIdentity = peer if peer is not None else UnixPeerIdentity(self.config.lookup)
        self.children: Dict[int, Hashable] = {}
        self.per_peer: Dict[Hashable, int] = {}
        self._warnings = _Warnings(log, self.config.verbosity >= 1)
        self.spawner = Spawner(self.config.argv)
        self.base_env = child_environment(dict(os.environ), self.peer.variables, self.peer.removed)
        self._wakeup_r = -1
        self._listener: Optional[socket.socket] = None
        self._accept: Callable[[], Tuple[int, object]] = _not_started
        self._burst = 1
        self._poller = select.poll()
        self._polling_listener = False
        self._backoff = 0.0
        self._running = True
        self._final_signals: Tuple[int, ...] = ()
        #: Optional per-connection policy (None: always spawn ``config.argv``).
        self.policy: Optional[ConnectionPolicy] = None
        #: Called once, right after the ``-1`` newline (readiness sinks such as sd_notify).
        self.on_ready: List[Callable[[], None]] = []
        #: Called once when the loop ends, before :meth:`serve` returns.
        self.on_exit: List[Callable[[], None]] = []
        #: ``(interval, function)``: called from the loop at least every *interval* seconds while it
        #: runs — the systemd watchdog ping, tied to the loop's liveness rather than to a timer thread.
        self.heartbeat: Optional[Tuple[float, Callable[[], None]]] = None

    # -- start-up ---------------------------------------------------------------------------
    def start(self) -> None:
        """Check fd 0, set up fds and signals, log ``starting``, write the ``-1`` newline."""
        peer = self.peer
        peer.check_listener(self.listen_fd)
        os.set_inheritable(self.listen_fd, False)
        claim_notification_fd(self.config.notify)
        if not self.config.notify:
            _reserve_fd1()
        _close_on_exec_everything(2)
        self._install_signals()
        self._listener = socket.socket(peer.family, socket.SOCK_STREAM, 0, self.listen_fd)
        self._accept = self._listener._accept  # type: ignore[attr-defined]  # (fd, address), no wrapper
        nonblocking = fcntl.fcntl(self.listen_fd, fcntl.F_GETFL) & os.O_NONBLOCK
        self._burst = _BURST if nonblocking else 1
        if peer.ready_first:
            self._write_ready_line()
        if self.config.verbosity >= 2:
            self.log.info("starting")
            self._status()
        if not peer.ready_first:
            self._write_ready_line()
        for hook in self.on_ready:
            hook()
        self._set_listening(True)

    def _write_ready_line(self) -> None:
        if self.config.notify:
            write_newline(1, self.peer.ready_line(self.listen_fd))
            _reserve_fd1()

    def _install_signals(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_r = r
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, _ignore_handler)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        self._poller.register(r, select.POLLIN)

    def _set_listening(self, on: bool) -> None:
        if on and not self._polling_listener:
            self._poller.register(self.listen_fd, select.POLLIN)
        elif not on and self._polling_listener:
            self._poller.unregister(self.listen_fd)
        self._polling_listener = on

    # -- the loop ---------------------------------------------------------------------------
    def serve(self) -> int:
        """Run the loop; returns 0 after SIGTERM, SIGQUIT or SIGABRT. Raises :class:`SystemFailure`."""
        listen_fd, wakeup = self.listen_fd, self._wakeup_r
        poll = self._poller.poll
        next_beat = 0.0
        while self._running:
            timeout = None
            if self._backoff and not self._polling_listener:
                timeout = self._backoff * 1000
            if self.heartbeat is not None:
                next_beat, wait = self._beat(next_beat)
                timeout = wait if timeout is None else min(timeout, wait)
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            if not events and self._backoff:
                self._resume_after_backoff()
                continue
            for fd, mask in events:
                if fd == wakeup:
                    if mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        raise SystemFailure("trouble with selfpipe", errno.EIO)
                    self._handle_signals()
                elif fd == listen_fd and self._polling_listener:
                    if mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        raise BadInput("trouble with socket", 111)
                    self._accept_ready()
        if self._final_signals:
            self._kill_all(*self._final_signals)
        for hook in self.on_exit:
            hook()
        if self.config.verbosity >= 2:
            self.log.info("exiting")
        return 0

    def _beat(self, due: float) -> Tuple[float, float]:
        """Call the heartbeat if *due* has passed; return the next due time and the ms until it."""
        assert self.heartbeat is not None
        interval, beat = self.heartbeat
        now = time.monotonic()
        if now >= due:
            beat()
            due = now + interval
        return due, (due - now) * 1000

    def _live(self) -> int:
        """Connections counted against maxconn: the running children."""
        return len(self.children)

    def _resume_after_backoff(self) -> None:
        self._set_listening(self._live() < self.config.maxconn)

    def _accept_ready(self) -> None:
        """Accept what is queued: one connection, or a burst while the socket is non-blocking.

        A burst saves a ``poll`` per connection under load; it ends at EAGAIN (the queue is empty:
        not an error), at *maxconn* live children, or after ``_BURST`` connections so that signals
        are handled promptly. A blocking listening socket (``-B``, some activators) gets exactly one
        ``accept`` per readiness event, as s6 does, so the loop never blocks in ``accept``.
        """
        accept = self._accept
        maxconn = self.config.maxconn
        family = self.peer.family
        for attempt in range(self._burst):
            if self._live() >= maxconn:
                self._reap()
                if self._live() >= maxconn:
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
            self._backoff = 0.0
            conn = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
            try:
                self._serve_connection(conn, address)
            finally:
                conn.close()

    def _accept_failed(self, code: int) -> None:
        if code in _NO_DESCRIPTORS:
            if not self._backoff:
                if self.config.verbosity >= 1:
                    self.log.warn(f"unable to accept: {os.strerror(code)}")
                self._backoff = _BACKOFF_FIRST
            else:
                self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
            self._set_listening(False)
        elif self.config.verbosity >= 1:
            self.log.warn(f"unable to accept: {os.strerror(code)}")

    def _serve_connection(self, conn: _socket.socket, address: object) -> None:
        config, peer = self.config, self.peer
        identified = peer.identify(conn, address, self._warnings)
        if identified is None:
            return
        key, name = identified[0], identified[1]
        num = self.per_peer.get(key, 0)
        if num >= config.localmaxconn:
            # Children that exited but whose SIGCHLD is still in the wakeup pipe must not count.
            self._reap()
            num = self.per_peer.get(key, 0)
        if num >= config.localmaxconn:
            self.log.info(f"deny {name} count {num}/{config.localmaxconn}: Success")
            return
        env = self.base_env.copy()
        peer.fill(env, identified, address, num + 1)
        spawner = self.spawner
        if self.policy is not None:
            decision = self.policy(env, conn)
            if decision is None:
                return
            spawner, env = decision
        fd = conn.fileno()
        try:
            pid = spawner.spawn(fd, env)
        except ExecFailure as e:
            self.child_log.error(str(e))
            return
        except OSError as e:
            if config.verbosity >= 1:
                self.log.warn(f"unable to spawn {spawner.name}: {os.strerror(e.errno or errno.EIO)}")
            return
        self.children[pid] = key
        self.per_peer[key] = num + 1
        if config.verbosity >= 2:
            self.log.info(f"allow {name} pid {pid} count {peer.count(num + 1)}/{config.localmaxconn}")
            self._status()
        if len(self.children) >= config.maxconn:
            self._set_listening(False)

    def _status(self) -> None:
        self.log.info(f"status: {len(self.children)}/{self.config.maxconn}")

    # -- signals and children ---------------------------------------------------------------
    def _handle_signals(self) -> None:
        try:
            data = os.read(self._wakeup_r, 512)
        except BlockingIOError:
            return
        for signo in data:
            if signo == signal.SIGCHLD:
                self._reap()
            elif signo == signal.SIGTERM:
                if self.config.verbosity >= 2:
                    self.log.info("received SIGTERM, quitting")
                self._running = False
            elif signo == signal.SIGHUP:
                if self.config.verbosity >= 2:
                    self.log.info("received SIGHUP, sending SIGTERM+SIGCONT to all connections")
                self._kill_all(signal.SIGTERM, signal.SIGCONT)
            elif signo == signal.SIGQUIT:
                if self.config.verbosity >= 2:
                    self.log.info("received SIGQUIT, sending SIGTERM+SIGCONT to all connections and quitting")
                self._final_signals = (signal.SIGTERM, signal.SIGCONT)
                self._running = False
            elif signo == signal.SIGABRT:
                if self.config.verbosity >= 2:
                    self.log.info("received SIGABRT, sending SIGKILL to all connections and quitting")
                self._final_signals = (signal.SIGKILL,)
                self._running = False
            if not self._running:
                return

    def _kill_all(self, *signals: int) -> None:
        for pid in list(self.children):
            for sig in signals:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass

    def _reap(self) -> None:
        """Collect every exited child; resume accepting if a slot freed."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except OSError as e:
                raise SystemFailure("wait_nohang", e.errno or errno.EIO) from None
            if pid == 0:
                break
            if pid in self.children:
                self._finish(pid, status)
        if self._backoff:
            self._backoff = _BACKOFF_FIRST
            self._resume_after_backoff()
        elif not self._polling_listener and self._live() < self.config.maxconn:
            self._set_listening(True)

    def _release(self, key: Hashable) -> None:
        left = self.per_peer[key] - 1
        if left:
            self.per_peer[key] = left
        else:
            del self.per_peer[key]

    def _finish(self, pid: int, status: int) -> None:
        """Forget an exited child and log its end line at -v2."""
        key = self.children.pop(pid)
        self._release(key)
        if self.config.verbosity >= 2:
            who = self.peer.end_name(key)
            if os.WIFSIGNALED(status):
                self.log.info(f"end pid {pid} {who} signal {os.WTERMSIG(status)}")
            else:
                self.log.info(f"end pid {pid} {who} exitcode {os.WEXITSTATUS(status)}")
            self._status()


class _Warnings:
    """The warnings of a server, shown from verbosity 1 on (what a peer identity warns on)."""

    def __init__(self, log: Log, shown: bool) -> None:
        self.log = log
        self.shown = shown

    def warn(self, text: str) -> None:
        if self.shown:
            self.log.warn(text)


def _not_started() -> Tuple[int, object]:
    raise SystemFailure("accept before start", errno.EBADF)


def _ignore_handler(signo: int, frame: object) -> None:
    """The Python-level handler: the work is done from the wakeup pipe (see the module docstring)."""
