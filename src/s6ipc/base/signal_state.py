"""Starting a daemon from a known signal state, whatever the process inherited at ``execve``.

Some facts about signals across ``execve`` (Linux, glibc 2.36) and about s6 2.11, checked on the
binaries, that this module relies on:

* The signal mask survives ``execve``, and so does every SIG_IGN disposition; caught signals
  revert to SIG_DFL. Supervisors, shells and runners do leave signals blocked or ignored.
* A blocked signal is never discarded, even when its disposition is SIG_IGN: it stays pending.
  s6's daemons block the signals they want and read them from a signalfd, so neither an
  inherited mask nor an inherited SIG_IGN hides a signal from them. CPython delivers signals
  through handlers: a daemon of ours must unblock the signals it handles (an inherited blocked
  SIGTERM would otherwise never reach it) and install handlers over any inherited SIG_IGN.
* s6-ipcserverd leaves dispositions alone (only SIGPIPE is caught): its children start with an
  empty mask, SIGPIPE at SIG_DFL, and every signal that was SIG_IGN when the daemon started —
  SIGTERM, SIGHUP, SIGCHLD included — still SIG_IGN. ``posix_spawn`` copies the parent's
  dispositions at the moment of the spawn and turns caught ones into SIG_DFL, so a child gets
  SIG_IGN only if the parent's disposition is SIG_IGN while it spawns.
* Setting SIG_IGN discards an instance of that signal already pending (POSIX; Linux's
  ``do_sigaction``) but not one that arrives later while the signal is blocked.

So :func:`take_control` (called by :class:`~s6ipc.base.selfpipe.SelfPipe` for every signal it
catches) records which handled signals were inherited ignored and unblocks them;
:func:`ignored_for_children` wraps a spawn, giving those signals back to the child as SIG_IGN
while they stay blocked in the daemon, then re-raising whatever arrived meanwhile.
"""

from __future__ import annotations

import _signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, FrozenSet, Iterable, List, Optional, Set

__all__ = ["take_control", "inherited_ignored", "ignored_for_children"]

#: Signals a daemon of ours catches that were SIG_IGN when it took control of them.
_inherited_ignored: Set[int] = set()


def take_control(handled: Iterable[int], install: Optional[Callable[[int], object]] = None) -> None:
    """Call when installing handlers for *handled*: those that were ignored are remembered so that
    the children can still inherit them ignored (see :func:`ignored_for_children`), *install(sig)*
    puts the handler in place, and only then are they unblocked (an inherited blocked signal would
    otherwise never reach its handler; one pending — held across an in-place upgrade's exec —
    reaches the handler, never SIG_DFL). Other blocked signals stay blocked in the daemon (it does
    not rely on them); children start with an empty mask whatever the daemon's
    (:class:`~s6ipc.base.execution.Spawner`).
    """
    sigs = tuple(handled)
    for sig in sigs:
        if _signal.getsignal(sig) == _signal.SIG_IGN:
            _inherited_ignored.add(sig)
        if install is not None:
            install(sig)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, sigs)


def inherited_ignored() -> bool:
    """Whether a handled signal was SIG_IGN when :func:`take_control` was called (a spawn then
    needs :func:`ignored_for_children`)."""
    return bool(_inherited_ignored)


class ignored_for_children:  # lower case: used as a function, ``with ignored_for_children():``
    """Within the block, the inherited-ignored signals are blocked and SIG_IGN, so that a child
    spawned there inherits them ignored, as s6's children do. Instances that arrive meanwhile are
    collected and raised again once the handlers are back, so the daemon loses none of them —
    except one arriving in the few instructions between the collection and the SIG_IGN, which
    the kernel discards. Costs nothing when no handled signal was inherited ignored.

    (A class rather than a ``contextlib.contextmanager``: contextlib is not on the start path.)
    """

    __slots__ = ("_sigs", "_previous_mask", "_arrived", "_handlers")

    def __enter__(self) -> None:
        self._sigs = sigs = frozenset(_inherited_ignored)
        if not sigs:
            return
        self._previous_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, sigs)
        self._arrived: List[int] = _collect(sigs)
        self._handlers = {sig: _signal.getsignal(sig) for sig in sigs}
        try:
            for sig in sigs:
                _signal.signal(sig, _signal.SIG_IGN)
        except BaseException:
            self._restore()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if self._sigs:
            self._restore()

    def _restore(self) -> None:
        arrived = self._arrived + _collect(self._sigs)
        for sig, handler in self._handlers.items():
            _signal.signal(sig, handler)
        for sig in arrived:
            _signal.raise_signal(sig)  # pending until the mask comes back
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self._previous_mask)


def _collect(sigs: FrozenSet[int]) -> List[int]:
    """Take the pending instances of *sigs* (blocked) off the queue."""
    found: List[int] = []
    while True:
        info = _signal.sigtimedwait(sigs, 0)
        if info is None:
            return found
        found.append(info.si_signo)
