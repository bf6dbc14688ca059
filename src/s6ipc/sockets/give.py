"""Handing sockets to a daemon that speaks ``LISTEN_FDS``: the giving side of sd_listen_fds(3).

Some facts about the protocol, seen from the side that passes the fds (systemd 252..259, Linux):

* **Placement.** The receiver finds its sockets at fds 3, 4, … (``SD_LISTEN_FDS_START``), in the
  order ``LISTEN_FDNAMES`` names them. An fd that is already open at one of those numbers and is
  not being handed over would be silently replaced by ``dup2``: that is refused here, never done.
  The copies are inheritable (``dup2`` clears FD_CLOEXEC), as exec needs; receivers set
  close-on-exec themselves. fd 0, when it was the source (the s6 convention), is replaced by
  ``/dev/null`` so that the daemon does not also get the listener as its stdin.
* **The PID check.** Receivers compare ``LISTEN_PID`` with ``getpid()``; a mismatch means "no fds"
  (the classic wrapper pitfall: a shell, ``env``, ``chpst`` that forks). In an exec chain the
  final program keeps this PID, so this PID is the right value. After a fork, the process that
  will run the daemon must set it again, right before its own exec: :func:`set_listen_pid`.
* **LISTEN_PIDFDID** (systemd 259, libsystemd ≥ 259 checks it when present) is the inode number of
  a pidfd of the intended process (pidfs, Linux ≥ 6.9): the same for the whole life of the
  process, exec included. A stale value (another process's) makes libsystemd ignore the fds, so it
  is either set to this process's id or removed — never passed on unchanged.
* **Names** (``LISTEN_FDNAMES``): the one rule is :func:`s6ipc.sockets.listenfds.fdname_problem`
  (systemd's ``fdname_is_valid``, without space and without the empty name). Unnamed fds are
  ``unknown``, as ``sd_listen_fds_with_names`` reports them.
* **Building a list in a chain.** Each stage appends to the list the previous stage left in the
  environment (``LISTEN_PID`` this process, ``LISTEN_FDS`` its count), so several sockets — each
  from its own binder or fd-holder retrieval — can be collected in one s6-style chain. A list left
  for *another* PID is an error here: its fds are at 3, 4, … and appending would clobber them.
* **The descriptor limit.** fd number N exists only below the soft ``RLIMIT_NOFILE``; a list
  that would need a higher number is "too many fds".
* **Daemon-specific variables.** Some daemons do not read ``LISTEN_FDS`` but have their own
  inheritance variable, e.g. nginx's ``NGINX=3;4;`` (fds ``;``-terminated; nginx needs them not
  close-on-exec, which they are not). :data:`SCHEMES` maps a daemon to the variables it needs.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import resource
import stat

from ..base.cstrings import assign, c_environment, c_words
from ..base.descriptors import open_fds
from ..base.errors import BadInput, ExecFailure, SystemFailure
from ..base.execution import PYTHON_IGNORED_SIGNALS, find_program
from ..base.options import INT_MAX
from .listenfds import (
    LISTEN_FDS_START,
    LISTEN_VARIABLES,
    UNNAMED,
    PassedFd,
    check_fdname,
    explain,
    pidfd_id,
    read_listen_variables,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Mapping, MutableMapping, Optional, Sequence, Union

__all__ = [
    "set_listen_pid", "pending_list", "append_sockets", "describe", "SCHEMES", "daemon_variables",
    "spawn_with_sockets",
    "check_fdname",  # the receiving side's rule (listenfds), which names given here must pass too
]


def set_listen_pid(environ: MutableMapping[str, str] = os.environ, pid: Optional[int] = None) -> None:
    """Make ``LISTEN_PID`` (and ``LISTEN_PIDFDID``) in *environ* name *pid* (default: this process).

    ``LISTEN_PIDFDID`` is set when this kernel has pidfs identities and *pid* is this process, and
    removed otherwise, so that no stale value survives.
    """
    own = os.getpid()
    target = own if pid is None else pid
    environ["LISTEN_PID"] = str(target)
    ident = pidfd_id(own) if target == own else None
    if ident is None:
        environ.pop("LISTEN_PIDFDID", None)
    else:
        environ["LISTEN_PIDFDID"] = str(ident)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def pending_list(environ: Mapping[str, str] = os.environ) -> List[PassedFd]:
    """The ``LISTEN_FDS`` list an earlier stage of this process left in *environ* (fds not touched).

    Read by the one reader of the protocol (:func:`s6ipc.sockets.listenfds.read_listen_variables`),
    so a list is malformed here exactly when a receiver would refuse it. [] when ``LISTEN_FDS`` is
    not set. Raises :class:`BadInput` (exit 100) for a list meant for another process or garbage
    values, :class:`SystemFailure` for a listed fd that is not open.
    """
    count_text = environ.get("LISTEN_FDS")
    if count_text is None:
        return []
    pid_text = environ.get("LISTEN_PID")
    if pid_text is None:
        raise BadInput(f"LISTEN_FDS={count_text} is set without LISTEN_PID")
    try:
        passed = read_listen_variables(environ, visit=_check_listed)
    except OSError as e:
        raise explain(e, environ) from None
    if passed is None:
        raise BadInput(f"the LISTEN_FDS list is for another process (LISTEN_PID={pid_text}, this is "
                       f"{os.getpid()}): after a wrapper that forks, run listen-pid right before the "
                       "daemon")
    return passed


def _check_listed(fds: range) -> None:
    """The listed fds must fit under the descriptor limit and be open (EBADF otherwise)."""
    if fds:
        _check_limit(fds[-1])
    for fd in fds:
        os.fstat(fd)


def _check_source(fd: int) -> None:
    if not 0 <= fd <= INT_MAX:  # no such descriptor can be open (and os.fstat raises OverflowError)
        raise SystemFailure(f"use fd {fd}", errno.EBADF)
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise SystemFailure(f"use fd {fd}", e.errno or errno.EBADF) from None
    if not stat.S_ISSOCK(mode):
        raise BadInput(f"fd {fd} is not a socket")


def _check_limit(last: int) -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and last >= soft:
        raise BadInput(f"too many fds: LISTEN_FDS={last - LISTEN_FDS_START + 1} needs fd {last}, "
                       f"beyond the descriptor limit (RLIMIT_NOFILE {soft})")


def _check_room(first: int, count: int, sources: Sequence[int]) -> None:
    _check_limit(first + count - 1)
    for target in range(first, first + count):
        if target not in sources and _fd_open(target):
            raise BadInput(f"fd {target} is already open and is not a socket being handed over: "
                           "it would be overwritten (move it above the sockets' range)")


def append_sockets(fds: Sequence[int], names: Sequence[str],
                   environ: MutableMapping[str, str] = os.environ) -> List[PassedFd]:
    """Append sockets *fds* (named *names*, ``unknown`` for the missing ones) to this process's list.

    The list is the one :func:`pending_list` reads (empty when there is none); each socket moves to
    the next free place at 3, 4, … (inheritable), its source fd is closed (fd 0 gets ``/dev/null``),
    and ``LISTEN_FDS``, ``LISTEN_FDNAMES``, ``LISTEN_PID`` and ``LISTEN_PIDFDID`` describe the new
    list. Returns it. Raises :class:`BadInput` (exit 100: not a socket, an fd given twice or already
    in the list, bad name, a foreign fd in the way, too many fds, a list for another process) or
    :class:`SystemFailure` (closed fd, exit 111); nothing is moved when it raises.
    """
    if len(names) > len(fds):
        raise BadInput(f"{len(names)} names for {len(fds)} fds")
    for name in names:
        check_fdname(name)
    current = pending_list(environ)
    first = LISTEN_FDS_START + len(current)
    listed = {p.fd for p in current}
    for i, fd in enumerate(fds):
        if fd in listed or fd in fds[:i]:
            raise BadInput(f"fd {fd} is already in the list")
        if fd in (1, 2):
            raise BadInput(f"fd {fd} is {'stdout' if fd == 1 else 'stderr'}, not a socket to hand over")
        _check_source(fd)
    _check_room(first, len(fds), fds)
    high = first + len(fds)
    temps: List[int] = []
    try:
        for fd in fds:
            temps.append(_dup_above(fd, high))
    except BaseException:
        for t in temps:
            os.close(t)
        raise
    for fd in fds:
        if fd == 0:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0, inheritable=True)
            os.close(null)
        else:
            os.close(fd)
    for i, t in enumerate(temps):
        os.dup2(t, first + i, inheritable=True)
        os.close(t)
    new = [PassedFd(first + i, names[i] if i < len(names) else UNNAMED) for i in range(len(fds))]
    result = current + new
    describe(result, environ)
    return result


def _dup_above(fd: int, low: int) -> int:
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    except OSError as e:
        raise SystemFailure(f"duplicate fd {fd}", e.errno or errno.EMFILE) from None


def describe(passed: Sequence[PassedFd], environ: MutableMapping[str, str] = os.environ) -> None:
    """Set ``LISTEN_FDS``, ``LISTEN_FDNAMES`` and (for this process) ``LISTEN_PID``/``LISTEN_PIDFDID``."""
    environ["LISTEN_FDS"] = str(len(passed))
    assign(environ, [("LISTEN_FDNAMES", ":".join(p.name for p in passed))])  # names may be fd-holder ids
    set_listen_pid(environ)


# -- daemon-specific variables ------------------------------------------------------------------
def _nginx(fds: Sequence[int]) -> Dict[str, str]:
    return {"NGINX": "".join(f"{fd};" for fd in fds)}


def _einhorn(fds: Sequence[int]) -> Dict[str, str]:
    env = {"EINHORN_FD_COUNT": str(len(fds))}
    env.update({f"EINHORN_FD_{i}": str(fd) for i, fd in enumerate(fds)})
    return env


#: Daemons that want their own variable besides (or instead of) ``LISTEN_FDS``: name → variables
#: for the list of fds. Adding one is one function here.
SCHEMES: Dict[str, Callable[[Sequence[int]], Dict[str, str]]] = {"nginx": _nginx, "einhorn": _einhorn}


def daemon_variables(scheme: str, fds: Sequence[int]) -> Dict[str, str]:
    """The variables daemon *scheme* (a key of :data:`SCHEMES`) needs for *fds*. BadInput if unknown."""
    make = SCHEMES.get(scheme)
    if make is None:
        known = ", ".join(sorted(SCHEMES))
        raise BadInput(f"unknown daemon variable scheme {scheme!r} (known: {known})")
    return make(fds)


# -- the Python API: start a child with sockets -----------------------------------------------------
if TYPE_CHECKING:
    SocketLike = Union[int, _socket.socket]
#: The exec'd shim that sets LISTEN_PID to its own PID, then execs the daemon in the same PID.
_SHIM = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'


def _inheritable_fds() -> List[int]:
    found = []
    for fd in open_fds():
        try:
            if os.get_inheritable(fd):
                found.append(fd)
        except OSError:
            pass
    return found


def spawn_with_sockets(argv: Sequence[str], sockets: Sequence[SocketLike], *,
                       names: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                       schemes: Sequence[str] = (), pass_fds: Sequence[int] = ()) -> int:
    """Start *argv* with *sockets* at fds 3, 4, … and the ``LISTEN_*`` variables naming it; return its pid.

    The child's environment is *env* (default ``os.environ``) without its ``LISTEN_*``, plus
    ``LISTEN_FDS``, ``LISTEN_FDNAMES`` (*names*, ``unknown`` for the missing ones), the variables of
    each of *schemes* (see :data:`SCHEMES`) and ``LISTEN_PID``, which ``/bin/sh`` sets to its own PID
    right before exec'ing the program in that PID (``LISTEN_PIDFDID`` is not set: the PID check is
    the one a receiver then makes). Its fds 0-2 are this process's, and so are the fds of
    *pass_fds* (same numbers, above the sockets' range: e.g. an s6 notification fd); no other
    descriptor of this process reaches it. The sockets stay open here (close them once the child has
    them, unless they are to be handed to the next generation too). Reap it with ``os.waitpid``.
    Raises :class:`BadInput` (bad name, not a socket), :class:`ExecFailure` (program not found),
    :class:`SystemFailure`.
    """
    if not argv:
        raise ExecFailure("", errno.ENOENT)
    fds = [s.fileno() if isinstance(s, _socket.socket) else s for s in sockets]
    if len(names) > len(fds):
        raise BadInput(f"{len(names)} names for {len(fds)} fds")
    for name in names:
        check_fdname(name)
    for fd in fds:
        _check_source(fd)
    clash = [fd for fd in pass_fds if fd < LISTEN_FDS_START + len(fds)]
    if clash:
        last = LISTEN_FDS_START + len(fds) - 1
        raise BadInput(f"fd {clash[0]} to pass is in the sockets' range (0-{last})")
    source = dict(os.environ if env is None else env)
    program = argv[0]
    if "/" not in program:
        program = find_program(program, source.get("PATH"))
    child_env = {k: v for k, v in source.items() if k not in LISTEN_VARIABLES}
    targets = list(range(LISTEN_FDS_START, LISTEN_FDS_START + len(fds)))
    child_env["LISTEN_FDS"] = str(len(fds))
    child_env["LISTEN_FDNAMES"] = ":".join(list(names) + [UNNAMED] * (len(fds) - len(names)))
    for scheme in schemes:
        child_env.update(daemon_variables(scheme, targets))
    high = LISTEN_FDS_START + len(fds)
    temps = [_dup_above(fd, high) for fd in fds]
    try:
        actions: List[tuple] = [(os.POSIX_SPAWN_DUP2, t, target) for t, target in zip(temps, targets)]  # type: ignore[type-arg]
        actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in pass_fds]  # clears close-on-exec
        kept = set(targets) | set(pass_fds)
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds() if fd > 2 and fd not in kept]
        try:
            return os.posix_spawn("/bin/sh", c_words(["sh", "-c", _SHIM, "sh", program, *argv[1:]]),
                                  c_environment(child_env),
                                  file_actions=actions, setsigmask=(), setsigdef=PYTHON_IGNORED_SIGNALS)
        except OSError as e:
            raise SystemFailure("spawn /bin/sh", e.errno or errno.EINVAL) from None
    finally:
        for t in temps:
            os.close(t)
