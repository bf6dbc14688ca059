"""The self-pipe: the signals a daemon handles, read as bytes from a descriptor it polls.

Some facts about signals in CPython that every long-lived daemon of s6ipc stands on:

* CPython runs Python-level handlers only between bytecodes of the main thread, but its C-level
  handler writes the signal number, as one byte, to the fd given to ``signal.set_wakeup_fd`` at
  once. A daemon polls the read end of that pipe beside its sockets and reads the numbers from it,
  so signals are handled in the loop, in arrival order, never in the middle of an accept, a spawn
  or a request — the role skalibs' ``selfpipe`` (a signalfd) plays in s6's daemons.
* Standard signals are not queued: one byte may stand for several deliveries of the same signal
  (SIGCHLD above all), so a handler must not count them.
* The wakeup fd is process-wide: :class:`SelfPipe` remembers the previous one and the previous
  handlers and gives them back in :meth:`SelfPipe.close`.
* CPython turns SIGINT into ``KeyboardInterrupt``; s6's daemons keep its default action (death),
  so a self-pipe puts SIGINT back to SIG_DFL when CPython's handler is in place.
* Both ends are non-blocking and close-on-exec: a child never inherits them, and a burst of
  signals that fills the pipe loses bytes, never blocks the C handler (``warn_on_full_buffer``
  is off: a full pipe already means "signals are pending").

Both daemons' loops (ipcserverd's and tcpserverd's ``Server``, ``FdHolderDaemon``) poll the pipe
beside a listening socket object they wrap around a descriptor they do not own:
:func:`polled_selfpipe` is how they start hearing signals, :func:`give_back` what their ``close()``
returns of it.
"""

from __future__ import annotations

import _signal
import errno
import os
import select

from .errors import SystemFailure
from .signal_state import take_control

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from typing import Any, Dict, Iterable, Optional

    _Handler = Any  # what signal.getsignal returns: a callable, SIG_DFL, SIG_IGN or None

__all__ = ["SelfPipe", "polled_selfpipe", "give_back"]



def _ignore_handler(signo: int, frame: object) -> None:
    """The Python-level handler: the work is done from the pipe (see the module docstring)."""


class SelfPipe:
    """Catch *signals* and deliver them as bytes on :meth:`fileno`.

    Raises OSError when the pipe cannot be made (EMFILE…). Must be created in the main thread
    (``signal.signal`` raises ValueError elsewhere).
    """

    def __init__(self, signals: Iterable[int]) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup = _signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous: Dict[int, _Handler] = {}
        if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
            self._previous[_signal.SIGINT] = _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        for sig in signals:
            self.add(sig)

    def fileno(self) -> int:
        """The read end, to poll for POLLIN."""
        return self._read_fd

    def add(self, sig: int) -> None:
        """Catch *sig* too (the signal table is open to any daemon that needs another signal)."""
        def install(sig: int) -> None:
            self._previous.setdefault(sig, _signal.signal(sig, _ignore_handler))

        take_control((sig,), install)  # remembered if it was ignored, caught, then unblocked

    def read(self) -> bytes:
        """The signal numbers that arrived since the last call, in order (empty when none)."""
        try:
            return os.read(self._read_fd, 512)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        """Give back the previous wakeup fd and handlers, then close the pipe."""
        _signal.set_wakeup_fd(self._previous_wakeup)
        for sig, handler in self._previous.items():
            _signal.signal(sig, _signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def polled_selfpipe(poller: select.poll, signals: Iterable[int]) -> SelfPipe:
    """A :class:`SelfPipe` for *signals*, its read end registered in *poller* for POLLIN. Raises
    :class:`SystemFailure` ``selfpipe_init`` (exit 111, s6's words) when it cannot be made."""
    try:
        pipe = SelfPipe(signals)
    except OSError as e:
        raise SystemFailure("selfpipe_init", e.errno or errno.EMFILE) from None
    poller.register(pipe.fileno(), select.POLLIN)
    return pipe


def give_back(poller: select.poll, pipe: Optional[SelfPipe], listener: Optional[_socket.socket]) -> None:
    """What a daemon's ``close()`` gives back for a program that goes on without the loop: *pipe*
    (from :func:`polled_selfpipe`) unregistered from *poller* and closed, so the previous signal
    handlers and wakeup fd come back, and *listener* detached: the socket object goes, the
    listening descriptor stays open, the caller's. Either may be None (not started, given back)."""
    if pipe is not None:
        poller.unregister(pipe.fileno())
        pipe.close()
    if listener is not None:
        listener.detach()
