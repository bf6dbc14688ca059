"""Handing a running daemon's state to its next image, across ``execve`` in the same PID.

An in-place upgrade (SIGUSR2 to ``ipcserverd``, ``tcpserver*d`` or ``fdholderd``) replaces the
program a process runs by the version of s6ipc now installed on disk, without changing the process:
the supervisor sees
nothing happen, the listening socket never closes, the children stay the daemon's own. This module
holds the pieces every daemon needs for that: check that the new code can start (:func:`preflight`),
the command line that starts it (:func:`reexec_argv`), descriptors and signals across the exec
(:func:`keep_across_exec`, :func:`block_signals`), and the state itself (:func:`write_state`,
:func:`take_state`). The path that uses them, the same for every daemon, and its failure policy are
:mod:`s6ipc.daemon.lifecycle`'s.

Some facts about ``execve`` (Linux) that an in-place upgrade relies on:

* **What survives**: the PID (and so the supervisor's view: s6-supervise's pid, systemd's
  ``MainPID``), the parent, the children (still ours to ``waitpid``: a child that exits during the
  exec stays a zombie until the new image reaps it), the session and process group, uids and gids,
  rlimits, the current directory, the **signal mask** and **pending signals**, signals set to
  **SIG_IGN** (still ignored), and every descriptor *without* close-on-exec, at the same number.
* **What does not**: caught signals go back to SIG_DFL (a SIGTERM or SIGHUP arriving between the
  exec and the new image's handlers would kill it: :func:`block_signals` keeps them pending
  instead, and the new image unblocks them once its handlers are in place), the memory (every
  Python object, every module already imported), threads, close-on-exec descriptors (Python opens
  all of its own close-on-exec: :func:`keep_across_exec` clears the flag on those that must stay).
* **memfd** (``memfd_create(2)``, Linux 3.17): an anonymous file in memory, named only for
  ``/proc/PID/fd``. Without ``MFD_CLOEXEC`` it is inherited across the exec like any descriptor;
  the new image finds its number in ``$S6IPC_HANDOFF``, reads the JSON from offset 0 with
  ``pread`` and closes it, which frees it. Nothing touches the file system, so a read-only root, a
  private /tmp or another user's daemon cannot get in the way, and a crash frees the memory.
* **Seals** (``fcntl(2)``, ``F_ADD_SEALS``, Linux 3.17): a memfd made with ``MFD_ALLOW_SEALING``
  can be sealed against writing, growing and shrinking, and against further sealing; a seal is
  never removed, whoever holds a descriptor of it. ``readlink /proc/self/fd/N`` of a memfd reads
  ``/memfd:NAME (deleted)``. **``/proc/self/stat``'s field 22** (the start time, in clock ticks
  since boot) is the process's, not the image's: an exec keeps it, and a PID reused by another
  process has another one.

What that means for the hand-over: **the new image takes state only from what its own previous
image made for it** — anything else in ``$S6IPC_HANDOFF`` was put there by someone else (a parent
that leaked the variable, a forged environment, a descriptor inherited from another process). The
memfd is named ``s6ipc-handoff:PID``, sealed (write, grow, shrink, seal) once written, and its JSON
names the PID and that process's start time (``"author"``). :func:`take_state` checks all of it: a
descriptor that is not a memfd of that name (a regular file, a pipe, a socket — fd 0!), a memfd
that is not sealed (someone else may still write it), or one whose author is another process is
**ignored** with one warning and the daemon starts fresh — it is not even closed, since it is not
ours (it may be the listening socket). Only a state that passed those checks but cannot be read
(not JSON, too large) is an error (:class:`Unusable`): it was ours, and its loss is the
supervisor's to see. What this cannot tell apart is a state forged by the process itself before
it execs the daemon (a wrapper): that process chose the program too. Even then a daemon never
adopts, so never signals, a pid that is not its child (:func:`s6ipc.daemon.lifecycle.our_children`).
* **Which code runs next**: the console script ``s6ipc`` next to the running interpreter (the venv
  the daemon was started from), or ``python -m s6ipc``: a fresh interpreter imports the modules
  from disk, so a ``pip install -U s6ipc`` into that venv is what the new image runs — never the
  modules this process already imported.
* **The preflight** runs that same command line as a child with the hidden cli verb
  ``s6ipc preflight NAME args…``: it imports every module of the installed package, then asks
  program NAME to validate *args* (its optional ``preflight(args)`` function), and exits 0 silently
  or writes one line and exits non-zero. It is a plain child: its environment is the daemon's
  (``PYTHONPATH`` included), its stdin the state as JSON (a memfd), no descriptor of the daemon
  leaks into it. The daemon never waits for it: its stderr pipe is in the loop's poll set, its
  exit is reaped with the other children (not counted as a connection), and the kernel kills it
  at its timeout (an ``alarm`` set before its ``execve``), so the loop goes on accepting, serving
  and pinging the watchdog whatever the preflight does.
"""

from __future__ import annotations

import _signal
import errno
import fcntl
import os

from ..base.errors import SystemFailure, Unusable
from ..base.execution import installed_prefix, spawn_bounded
from ..base.options import INT_MAX, scan_magnitude

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

__all__ = [
    "HANDOFF_VARIABLE", "PREFLIGHT_TIMEOUT", "reexec_argv", "PreflightChild", "start_preflight", "preflight",
    "preflight_state",
    "keep_across_exec", "block_signals", "restore_mask", "write_state", "discard_state", "take_state",
    "start_ticks", "memfd_name",
]

#: The variable that carries the memfd's number into the new image.
HANDOFF_VARIABLE = "S6IPC_HANDOFF"
#: Seconds a preflight may take (importing every module: ~0.2 s on a quiet machine).
PREFLIGHT_TIMEOUT = 30.0
_MAX_STATE = 64 * 1024 * 1024
_MEMFD_PREFIX = "s6ipc-handoff:"
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


def memfd_name(pid: int) -> str:
    """The name of the memfd process *pid* hands its next image (``s6ipc-handoff:PID``)."""
    return f"{_MEMFD_PREFIX}{pid}"


def start_ticks(pid: object = "self") -> Optional[int]:
    """When process *pid* started (``/proc/PID/stat`` field 22, clock ticks since boot: the same
    across execs, another for a reused PID); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def reexec_argv(program: str, args: Sequence[str]) -> List[str]:
    """The command line that runs program *program* (``ipcserverd``, ``s6-ipcserverd``…) with *args*
    from the code installed on disk now."""
    return installed_prefix() + [program] + list(args)


class PreflightChild:
    """``s6ipc preflight PROGRAM ARGS…`` running beside the daemon's loop (:func:`start_preflight`).

    The loop polls :attr:`stderr_fd` (:meth:`read_output` on each event) and, when the child has
    exited — its pid reaped by the daemon with its other children — asks :meth:`verdict`. The
    kernel kills the child with SIGALRM at its timeout (:func:`~s6ipc.base.execution.spawn_bounded`);
    :meth:`overdue` and :meth:`kill` are for a child that even that did not end (stopped).
    """

    _KEEP = 4096  # the end of its stderr: the last line is the reason

    def __init__(self, pid: int, stderr_fd: int, argv: Sequence[str], timeout: float) -> None:
        self.pid, self.stderr_fd, self.argv, self.timeout = pid, stderr_fd, list(argv), timeout
        #: When it started (CLOCK_MONOTONIC, on the caller's clock: the caller sets it).
        self.started = 0.0
        self._output = b""

    def read_output(self) -> bool:
        """Read what the child wrote on its stderr (the end of it is kept); False at EOF."""
        while True:
            try:
                chunk = os.read(self.stderr_fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self._output = (self._output + chunk)[-self._KEEP:]

    def overdue(self, now: float) -> bool:
        """Whether the child outlived its timeout (*now*: CLOCK_MONOTONIC), by more than a second."""
        return now > self.started + self.timeout + 1

    def kill(self) -> None:
        """SIGKILL the child (it is still ours until reaped: the pid is not a stranger's)."""
        try:
            os.kill(self.pid, _signal.SIGKILL)
        except OSError:
            pass

    def verdict(self, status: int) -> Optional[str]:
        """Once reaped with wait status *status*: None if the new code can start, else the one-line
        reason. Reads the rest of the child's stderr and closes it."""
        self.read_output()
        try:
            os.close(self.stderr_fd)
        except OSError:
            pass
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return None
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == _signal.SIGALRM:
            return f"{' '.join(self.argv[:3])} did not finish within {self.timeout:g} s"
        if os.WIFSIGNALED(status):
            ending = f"killed by signal {os.WTERMSIG(status)}"
        else:
            ending = f"exit code {os.WEXITSTATUS(status)}"
        lines = [line for line in self._output.decode("utf-8", "replace").splitlines() if line.strip()]
        return f"{lines[-1].strip()} ({ending})" if lines else ending


def start_preflight(program: str, args: Sequence[str], *, timeout: float = PREFLIGHT_TIMEOUT,
                    state: Optional[Dict[str, Any]] = None) -> PreflightChild:
    """Start ``s6ipc preflight PROGRAM ARGS…`` from the installed code, as a child; returns at once.

    With *state* (JSON-serialisable: what would be handed over now, descriptor numbers included),
    the child reads it as JSON on its stdin (a memfd), so that the program's ``preflight`` can check
    that the new code reads it (:func:`preflight_state`); without, its stdin is empty. The kernel
    ends the child after *timeout* seconds (rounded up). Raises :class:`SystemFailure` when the
    child cannot be started (no memfd, no pipe, no fork).
    """
    import json

    argv = installed_prefix() + ["preflight", program] + list(args)
    data = b"" if state is None else json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    try:
        stdin = os.memfd_create("s6ipc-preflight", os.MFD_CLOEXEC)
    except OSError as e:
        raise SystemFailure("memfd_create", e.errno or errno.EIO) from None
    read_end = write_end = -1
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(stdin, view):]
        os.lseek(stdin, 0, os.SEEK_SET)
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(write_end, True)
        pid = spawn_bounded(argv, stdin, write_end, -int(-timeout // 1))
    except OSError as e:
        if read_end >= 0:
            os.close(read_end)
        raise SystemFailure(f"spawn {argv[0]}", e.errno or errno.EIO) from None
    finally:
        os.close(stdin)
        if write_end >= 0:
            os.close(write_end)
    return PreflightChild(pid, read_end, argv, timeout)


def preflight(program: str, args: Sequence[str], *, timeout: float = PREFLIGHT_TIMEOUT,
              state: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """:func:`start_preflight` and wait for its verdict: None if the new code can start, else the
    one-line reason (a child that cannot even be started is a reason too). Blocks the caller — for
    a command line; a daemon's loop watches the child instead (:mod:`s6ipc.daemon.lifecycle`)."""
    import select

    try:
        child = start_preflight(program, args, timeout=timeout, state=state)
    except SystemFailure as e:
        return str(e)
    poller = select.poll()
    poller.register(child.stderr_fd, select.POLLIN)
    while child.read_output():
        poller.poll()
    while True:
        try:
            _, status = os.waitpid(child.pid, 0)
            break
        except InterruptedError:
            continue
    return child.verdict(status)


def preflight_state() -> Optional[Dict[str, Any]]:
    """In the preflight child: the state the daemon gave :func:`preflight`, or None.

    Raises ValueError when stdin holds something that is not a JSON object.
    """
    import json
    import sys

    data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    if not data:
        return None
    state = json.loads(data)
    if not isinstance(state, dict):
        raise ValueError("the preflight state is not a JSON object")
    return state


def keep_across_exec(fds: Iterable[int]) -> None:
    """Clear close-on-exec on *fds*, so that the next image finds them open at the same numbers.

    Raises :class:`SystemFailure` (``keep fd N across exec``) when one is not open.
    """
    for fd in fds:
        try:
            os.set_inheritable(fd, True)
        except OSError as e:
            raise SystemFailure(f"keep fd {fd} across exec", e.errno or errno.EBADF) from None


def block_signals(signals: Iterable[int]) -> List[int]:
    """Block *signals* (they stay pending across the exec, for the new image's handlers); returns
    the mask before, as signal numbers, to hand over and give back with :func:`restore_mask`."""
    return sorted(int(s) for s in _signal.pthread_sigmask(_signal.SIG_BLOCK, list(signals)))


def restore_mask(mask: Iterable[int]) -> None:
    """Put the signal mask back to *mask* (what :func:`block_signals` returned in the old image):
    pending signals are delivered now, to the handlers in place."""
    _signal.pthread_sigmask(_signal.SIG_SETMASK, list(mask))


def write_state(state: Dict[str, Any]) -> int:
    """Put *state* (JSON-serialisable) in a sealed memfd the next image inherits, signed with this
    process's PID and start time (``"author"``); set ``$S6IPC_HANDOFF``.

    Returns the memfd's number (for :func:`discard_state` if the exec does not happen). Raises
    :class:`SystemFailure` when the memfd cannot be made, written or sealed, TypeError/ValueError
    when *state* is not JSON.
    """
    import json

    pid = os.getpid()
    signed = {**state, "author": {"pid": pid, "start": start_ticks()}}
    data = json.dumps(signed, separators=(",", ":"), sort_keys=True).encode()
    try:  # no MFD_CLOEXEC: the next image inherits it
        fd = os.memfd_create(memfd_name(pid), os.MFD_ALLOW_SEALING)
    except OSError as e:
        raise SystemFailure("memfd_create", e.errno or errno.EIO) from None
    doing = "write the handoff state"
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        doing = "seal the handoff state"
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError as e:
        os.close(fd)
        raise SystemFailure(doing, e.errno or errno.EIO) from None
    os.environ[HANDOFF_VARIABLE] = str(fd)
    return fd


def discard_state(fd: int) -> None:
    """Undo :func:`write_state` (the exec failed): close the memfd, unset the variable."""
    os.environ.pop(HANDOFF_VARIABLE, None)
    try:
        os.close(fd)
    except OSError:
        pass


def _not_ours(fd: int) -> Optional[str]:
    """Why descriptor *fd* is not a handoff memfd this process made (None: it is, as far as the
    kernel tells: the right name, sealed)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        return f"fd {fd}: {os.strerror(e.errno or errno.EBADF)}"
    if target != f"/memfd:{memfd_name(os.getpid())} (deleted)":
        shown = target if target.startswith(("/memfd:", "pipe:", "socket:", "anon_inode:")) else "a file"
        return f"fd {fd} is {shown}, not this process's handoff memfd"
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError as e:
        return f"unable to read the seals of fd {fd}: {os.strerror(e.errno or errno.EIO)}"
    if seals & _SEALS != _SEALS:
        return f"fd {fd} is a memfd that is not sealed"
    return None


def take_state(warn: Callable[[str], object]) -> Optional[Dict[str, Any]]:
    """In the new image: the state the previous image of this process wrote, or None when this is
    a plain start.

    Removes ``$S6IPC_HANDOFF`` (children never see it). A value that does not name this process's
    own sealed memfd, signed with its PID and start time (the module docstring), is not a state:
    one line goes to *warn* (``ignoring $S6IPC_HANDOFF: …``) and None is returned (start fresh);
    such a descriptor is left alone. The memfd itself is read and closed. Raises
    :class:`Unusable` (exit 111) for our memfd whose content is not a JSON object.
    """
    value = os.environ.pop(HANDOFF_VARIABLE, None)
    if value is None:
        return None
    try:
        fd = scan_magnitude(value, 10, INT_MAX)
    except ValueError:
        fd = None
    problem = "not a descriptor number" if fd is None else _not_ours(fd)
    if fd is None or problem is not None:
        warn(f"ignoring ${HANDOFF_VARIABLE}={value[:32]!r}: {problem}; starting fresh")
        return None
    chunks: List[bytes] = []
    offset = 0
    try:
        while True:
            chunk = os.pread(fd, 65536, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            if offset > _MAX_STATE:
                raise Unusable(f"the handoff state on fd {fd} is larger than {_MAX_STATE} bytes")
    except OSError as e:
        reason = os.strerror(e.errno or errno.EIO)
        raise Unusable(f"unable to read the handoff state on fd {fd}: {reason}") from None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    import json

    try:
        state = json.loads(b"".join(chunks))
    except ValueError as e:
        raise Unusable(f"the handoff state on fd {fd} is not JSON: {e}") from None
    if not isinstance(state, dict):
        raise Unusable(f"the handoff state on fd {fd} is not a JSON object")
    author = state.pop("author", None)
    me = {"pid": os.getpid(), "start": start_ticks()}
    if author != me:
        warn(f"ignoring ${HANDOFF_VARIABLE}={value[:32]!r}: a state written by {author!r}, this is {me!r}; "
             "starting fresh")
        return None
    return state
