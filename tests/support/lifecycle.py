"""A fake of the operating system as a daemon's life uses it (:class:`s6ipc.daemon.lifecycle.System`),
so that the lifecycle is tested without re-executing Python, and a notifier that records.

:class:`FakeSystem` keeps what a real exec would act on as plain data: the blocked signals, the
descriptors cleared of close-on-exec, the memfds written (as the JSON they hold), the preflights
started (:class:`FakePreflight`, ended by :meth:`FakeLoop.child_exited`), the signals raised again.
Its :meth:`~FakeSystem.exec` raises :class:`Exec` (what a successful exec would hand over) or, with
*exec_error*, the error a failed exec raises.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Iterable, List, NoReturn, Optional, Sequence, Set, Tuple

from s6ipc.base.errors import S6ipcError
from s6ipc.daemon.lifecycle import System
from s6ipc.daemon.readiness import Notifier


class Exec(Exception):
    """What :meth:`FakeSystem.exec` raises instead of replacing the process: the command line, the
    state in the memfd and the descriptors kept open."""

    def __init__(self, argv: List[str], state: Dict[str, Any], kept: Set[int]) -> None:
        super().__init__("exec")
        self.argv, self.state, self.kept = argv, state, kept


def _no_exec(argv: List[str]) -> NoReturn:
    raise AssertionError("the fake system never execs for real")


class FakePreflight:
    """What :meth:`FakeSystem.start_preflight` returns: a :class:`s6ipc.daemon.upgrade.PreflightChild`
    whose verdict is *problem*, with a real pipe for its stderr (so a real loop can poll it) and a
    pid no process has (it is never signalled: :meth:`kill` records)."""

    timeout = 30.0

    def __init__(self, pid: int, problem: Optional[str]) -> None:
        self.pid, self.problem = pid, problem
        self.stderr_fd, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.started = 0.0
        self.killed = 0
        self.closed = False

    def read_output(self) -> bool:
        try:
            return bool(os.read(self.stderr_fd, 4096)) or self._write_end >= 0
        except BlockingIOError:
            return True

    def overdue(self, now: float) -> bool:
        return now > self.started + self.timeout + 1

    def kill(self) -> None:
        self.killed += 1

    def verdict(self, status: int) -> Optional[str]:
        for fd in (self.stderr_fd, self._write_end):
            if fd >= 0:
                os.close(fd)
        self._write_end = -1
        self.closed = True
        return self.problem


class FakeLoop:
    """A daemon's loop as the lifecycle sees it (:class:`s6ipc.daemon.lifecycle.UpgradeLoop`):
    records what is watched and expected; :meth:`child_exited` plays a reaped child; *unread* is
    what the self-pipe still holds when the lifecycle drains it."""

    def __init__(self) -> None:
        self.watched: Dict[int, Callable[[int], None]] = {}
        self.expected: Dict[int, Callable[[int], None]] = {}
        self.stopped: List[List[str]] = []
        self.unread = b""

    def watch(self, fd: int, on_event: Callable[[int], None]) -> None:
        self.watched[fd] = on_event

    def unwatch(self, fd: int) -> None:
        self.watched.pop(fd, None)

    def expect_child(self, pid: int, on_exit: Callable[[int], None]) -> None:
        self.expected[pid] = on_exit

    def stop_for_exec(self, argv: List[str]) -> None:
        self.stopped.append(list(argv))

    def unread_signals(self) -> bytes:
        unread, self.unread = self.unread, b""
        return unread

    def child_exited(self, pid: int, status: int = 0) -> None:
        self.expected.pop(pid)(status)


class FakeSystem(System):
    """The lifecycle's OS seam, in memory.

    *problem*: what every preflight answers (None: the new code starts); *exec_error*: what the exec
    raises (None: :class:`Exec`); *taken*: the state a new image finds (:meth:`take_state`).
    """

    def __init__(self, *, problem: Optional[str] = None, exec_error: Optional[S6ipcError] = None,
                 taken: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(_no_exec)
        self.problem, self.exec_error, self.taken = problem, exec_error, taken
        self.preflights: List[Tuple[str, List[str], Dict[str, Any]]] = []
        self.children: List[FakePreflight] = []
        self.raised: List[int] = []
        self.taken_pending: List[int] = []
        self.execs: List[List[str]] = []
        self.blocked: Set[int] = set()
        self.kept: Set[int] = set()
        self.closed_on_exec: List[int] = []
        self.memfds: Dict[int, Dict[str, Any]] = {}
        self.discarded: List[int] = []
        self.restored: List[List[int]] = []
        self.ages: Dict[int, float] = {}
        #: pids that are not this process's children (every other one is)
        self.strangers: Set[int] = set()
        self._next_fd = 900

    def exec(self, argv: List[str]) -> NoReturn:
        self.execs.append(list(argv))
        if self.exec_error is not None:
            raise self.exec_error
        raise Exec(list(argv), self.memfds[max(self.memfds)], set(self.kept))

    def start_preflight(self, program: str, args: Sequence[str], state: Dict[str, Any]) -> Any:
        self.preflights.append((program, list(args), json.loads(json.dumps(state))))
        child = FakePreflight(-1000 - len(self.children), self.problem)
        self.children.append(child)
        return child

    def raise_signal(self, sig: int) -> None:
        self.raised.append(sig)

    def take_pending(self, sig: int) -> None:
        self.taken_pending.append(sig)

    def reexec_argv(self, program: str, args: Sequence[str]) -> List[str]:
        return ["/venv/bin/s6ipc", program, *args]

    def write_state(self, state: Dict[str, Any]) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self.memfds[fd] = json.loads(json.dumps(state))  # what crosses the exec is JSON
        return fd

    def take_state(self, warn: Callable[[str], object]) -> Optional[Dict[str, Any]]:
        taken, self.taken = self.taken, None
        return taken

    def discard_state(self, fd: int) -> None:
        self.discarded.append(fd)
        del self.memfds[fd]

    def keep_across_exec(self, fds: Iterable[int]) -> None:
        self.kept.update(fds)

    def close_on_exec(self, fds: Iterable[int]) -> None:
        for fd in fds:
            self.kept.discard(fd)
            self.closed_on_exec.append(fd)

    def block_signals(self, signals: Iterable[int]) -> List[int]:
        before = sorted(self.blocked)
        self.blocked.update(int(s) for s in signals)
        return before

    def restore_mask(self, mask: Iterable[int]) -> None:
        self.blocked = {int(s) for s in mask}
        self.restored.append(sorted(self.blocked))

    def process_ages(self, pids: Iterable[int]) -> Dict[int, Optional[float]]:
        return {pid: self.ages.get(pid) for pid in pids}

    def our_children(self, pids: Iterable[int]) -> List[int]:
        return [pid for pid in pids if pid not in self.strangers]


class RecordingNotifier(Notifier):
    """A notifier with an address whose datagrams are recorded (their first field each), not sent."""

    def __init__(self) -> None:
        super().__init__("@fake-notify")
        self.sent: List[str] = []

    def send(self, *fields: str, fds: Sequence[int] = (), pid: Optional[int] = None) -> bool:
        self.sent.append(fields[0])
        return True
