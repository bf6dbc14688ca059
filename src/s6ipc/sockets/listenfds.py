"""The systemd socket-activation protocol: ``LISTEN_*`` parsed, checked, selected, consumed.

Choosing *where* a listening socket comes from (fd 0, systemd, an fd holder) is
:mod:`s6ipc.serve.intake`, which stands on this module.

Some facts about socket activation that this module relies on (systemd 252, Linux):

* **The protocol** (sd_listen_fds(3)). The manager passes sockets as fds 3, 4, … and sets
  ``LISTEN_FDS`` (their count), ``LISTEN_PID`` (the process they are meant for) and, when names are
  known, ``LISTEN_FDNAMES`` (one ``:``-separated name per fd: ``FileDescriptorName=``, the socket
  unit's name by default, ``FDNAME=`` for fd-store entries — which come *after* the socket-unit fds,
  ``stored`` when unnamed, ``connection`` for Accept=yes). Names are not unique. Without
  ``LISTEN_FDNAMES`` every fd is named ``unknown``.
* **The PID check.** Variables whose ``LISTEN_PID`` is not this process are not an error but
  "nothing for us" (a wrapper that forked instead of exec'ing — the classic pitfall). A missing
  ``LISTEN_PID`` or ``LISTEN_FDS`` is "nothing" too. Newer managers add ``LISTEN_PIDFDID`` (the
  inode of a pidfd of the intended process, Linux ≥ 6.9 pidfs); when present and checkable here
  it must match, when the kernel has no pidfs inodes it is ignored.
* **Numbers** are parsed as libsystemd's ``safe_atoi``/``parse_pid`` do: leading white space, a
  sign, ``0x``/``0o``/``0b`` prefixes and C octal ``0NN`` are accepted; trailing garbage is EINVAL;
  ``LISTEN_FDS`` ≤ 0 is EINVAL; a PID of 0, a negative PID or one beyond ``pid_t`` is ERANGE. A
  name count different from ``LISTEN_FDS`` is EINVAL.
* **Close-on-exec.** The fds arrive inheritable; taking them sets FD_CLOEXEC on each (a closed
  one is EBADF), so they never leak into a child by accident.
* **The environment.** After taking the fds the ``LISTEN_*`` variables must go, or a program
  exec'd later in the *same PID* (every stage of an s6 chain) believes it got fds that
  close-on-exec has closed. libsystemd's ``unsetenv()`` (python-systemd's default) does not
  reach Python's ``os.environ``, whose copy is what ``os.execve`` passes on; ``os.environ.pop``
  updates both, so that is what this module does, with either backend.
* **Sharing.** The passed fds are duplicates of the sockets the manager keeps: their file status
  flags (O_NONBLOCK) are shared with the manager's copy, and ``shutdown()`` on them would hurt it.
  So this module moves them (``dup2``) but never changes their flags or shuts them down.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket

from ..base import systemd_backend
from ..base.descriptors import move_fd
from ..base.errors import BadInput, S6ipcError, SystemFailure
from ..base.options import scan_magnitude
from ..base.typeshim import NamedTuple
from .unix import IP_FAMILIES, UNIX_FAMILIES, listener_problem, socket_address

__all__ = [
    "LISTEN_FDS_START", "LISTEN_VARIABLES", "PassedFd", "parse_pid", "parse_count", "pidfd_inode",
    "take_systemd_fds", "listen_fds", "socket_address", "matching", "close_fds", "select_listener", "move_fd",
    "adopt_systemd_socket", "forget_systemd_sockets", "FDNAME_MAX", "UNNAMED", "read_listen_variables",
    "pidfd_id", "fdname_problem", "check_fdname", "explain",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

LISTEN_FDS_START = 3
#: The variables of the protocol, removed from ``os.environ`` once read.
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID")

_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1
_ULONG_MAX = 2**64 - 1
_PID_MAX = 2**31 - 1
_SD_WHITESPACE = " \t\n\r"
_C_SPACE = " \t\n\r\v\f"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


FDNAME_MAX = 255
#: What ``sd_listen_fds_with_names`` calls an fd that has no name.
UNNAMED = "unknown"


class PassedFd(NamedTuple):
    """One fd passed by systemd, with its ``LISTEN_FDNAMES`` name (``unknown`` when unnamed)."""

    fd: int
    name: str


# -- the protocol, standard-library path ------------------------------------------------------
def _c_number(text: str, *, unsigned: bool) -> int:
    """systemd's ``safe_atoi`` (signed, int range) or ``safe_atolu`` (unsigned long); OSError on error."""
    s = text.lstrip(_SD_WHITESPACE)
    base = 0
    if s[:2] in ("0b", "0B"):
        base, s = 2, s[2:]
    elif s[:2] in ("0o", "0O"):
        base, s = 8, s[2:]
    after_prefix = s
    t = s.lstrip(_C_SPACE)
    negative = False
    if t[:1] in ("+", "-") and t:
        negative, t = t[0] == "-", t[1:]
    if base == 0:
        if t[:2] in ("0x", "0X") and t[2:3] and t[2] in "0123456789abcdefABCDEF":
            base, t = 16, t[2:]
        elif t[:1] == "0":
            base = 8
        else:
            base = 10
    valid = _DIGITS[:base]
    count = 0
    while count < len(t) and t[count].isascii() and t[count].lower() in valid:
        count += 1
    if count == 0 or count != len(t):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    found = scan_magnitude(t, base, _ULONG_MAX)
    if found is None:
        raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
    magnitude = found
    if unsigned:
        if magnitude > _ULONG_MAX or (magnitude and after_prefix[:1] == "-"):
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        return magnitude
    value = -magnitude if negative else magnitude
    if not -_LONG_MAX - 1 <= value <= _LONG_MAX or not -_INT_MAX - 1 <= value <= _INT_MAX:
        raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
    return value


def parse_pid(text: str) -> int:
    """``LISTEN_PID`` as libsystemd's ``parse_pid`` reads it; OSError(EINVAL/ERANGE) otherwise."""
    pid = _c_number(text, unsigned=True)
    if not 0 < pid <= _PID_MAX:
        raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
    return pid


def parse_count(text: str) -> int:
    """``LISTEN_FDS`` as libsystemd's ``safe_atoi`` reads it (> 0, fds fit in an int); OSError."""
    n = _c_number(text, unsigned=False)
    if n <= 0 or n > _INT_MAX - LISTEN_FDS_START:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return n


def _visit_nothing(fds: range) -> None:
    pass


def read_listen_variables(environ: Mapping[str, Optional[str]], *,
                          visit: Callable[[range], None] = _visit_nothing) -> Optional[List[PassedFd]]:
    """The one reader of ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``, in libsystemd's order.

    None when ``LISTEN_PID`` or ``LISTEN_FDS`` is unset, or when ``LISTEN_PID`` (valid) names
    another process — the count and names are then not read, as ``sd_listen_fds`` does not read
    them. Else the fds 3, 4, … with their names (``unknown`` without ``LISTEN_FDNAMES``).
    *visit* gets the listed fds after the count is read and before the names are (where
    ``sd_listen_fds`` sets close-on-exec on them). Raises OSError with libsystemd's errno:
    EINVAL/ERANGE for an invalid ``LISTEN_PID``, EINVAL for an invalid ``LISTEN_FDS`` or a name
    count that differs (:func:`explain` turns each into its one message); whatever *visit* raises.
    The receiving side (:func:`listen_fds`) and the giving side (:func:`s6ipc.sockets.give.pending_list`)
    both read the variables through this function.
    """
    pid_text = environ.get("LISTEN_PID")
    if pid_text is None or parse_pid(pid_text) != os.getpid():
        return None
    count_text = environ.get("LISTEN_FDS")
    if count_text is None:
        return None
    n = parse_count(count_text)
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + n)
    visit(fds)
    names_text = environ.get("LISTEN_FDNAMES")
    names = names_text.split(":") if names_text is not None else [UNNAMED] * n
    if len(names) != n:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return [PassedFd(fd, name) for fd, name in zip(fds, names)]


def _set_close_on_exec(fds: range) -> None:
    for fd in fds:
        flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        if not flags & fcntl.FD_CLOEXEC:
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)


def _stdlib_listen_fds_with_names(environ: Mapping[str, Optional[str]]) -> List[Tuple[int, str]]:
    """``sd_listen_fds_with_names(0)`` in Python: same results, same errnos (OSError)."""
    return [tuple(p) for p in read_listen_variables(environ, visit=_set_close_on_exec) or []]  # type: ignore[misc]


def pidfd_inode(pid: int) -> Optional[int]:
    """The inode of a pidfd of *pid*, or None where ``pidfd_open`` fails."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def pidfd_id(pid: int) -> Optional[int]:
    """The ``LISTEN_PIDFDID`` of process *pid* (its pidfd's inode), or None where the kernel gives
    pidfds no identity (no pidfs: every pidfd has the same inode, so this process's and its
    parent's compare equal). The one pidfs check, for the taking side and the giving side."""
    own = pidfd_inode(pid)
    parent = pidfd_inode(os.getppid()) if os.getppid() > 0 else None
    if own is None or parent is None or own == parent:
        return None
    return own


def _pidfdid_matches(text: Optional[str]) -> bool:
    """False only when ``LISTEN_PIDFDID`` is set, pidfs identities exist here, and it is not ours."""
    if text is None:
        return True
    own = pidfd_id(os.getpid())
    if own is None:
        return True
    try:
        return _c_number(text, unsigned=True) == own
    except OSError:
        return False


# -- the fd-name rule -------------------------------------------------------------------------
def fdname_problem(name: str) -> Optional[str]:
    """Why *name* cannot be an fd name (``LISTEN_FDNAMES``, ``FDNAME=``), or None when it can.

    systemd's ``fdname_is_valid`` allows ASCII without control characters and without ``:``, at
    most 255 characters, and the empty name. We are stricter in two ways, decided here once for
    ``listen-fds -n``, :func:`s6ipc.sockets.give.spawn_with_sockets` and the fd store
    (:meth:`s6ipc.daemon.readiness.Notifier.store_fds`): no space (a name is one word in our messages and
    in unit files), and not empty — ``FileDescriptorName=`` cannot set one (empty there means "the
    unit's name"), ``FDNAME=`` with an empty value is how a client forgets to name, and an empty
    field in ``LISTEN_FDNAMES`` cannot be chosen by name by any of our stages.
    """
    if not name:
        return "invalid fd name: it is empty"
    if ":" in name:
        return f"invalid fd name {name!r}: it contains ':' (the LISTEN_FDNAMES separator)"
    if len(name.encode("utf-8", "surrogateescape")) > FDNAME_MAX:
        return f"invalid fd name: longer than {FDNAME_MAX} bytes ({len(name)} characters)"
    bad = [c for c in name if not 32 < ord(c) < 127]
    if bad:
        return f"invalid fd name {name!r}: {bad[0]!r} is not printable ASCII without space"
    return None


def check_fdname(name: str) -> None:
    """Raise :class:`BadInput` (exit 100) unless *name* is a valid fd name (:func:`fdname_problem`)."""
    problem = fdname_problem(name)
    if problem is not None:
        raise BadInput(problem)


# -- taking the passed fds (both paths) -----------------------------------------------------
def _snapshot() -> Dict[str, Optional[str]]:
    return {name: os.environ.get(name) for name in LISTEN_VARIABLES}


def _why_none(env: Mapping[str, Optional[str]], pidfdid_matches: bool = True) -> str:
    """Why an offer read without error holds nothing for this process (no parsing here)."""
    if env.get("LISTEN_FDS") is None or env.get("LISTEN_PID") is None:
        missing = "LISTEN_FDS" if env.get("LISTEN_FDS") is None else "LISTEN_PID"
        return f"no socket passed by systemd ({missing} is not set)"
    if not pidfdid_matches:
        return "the sockets passed by systemd are for another process (LISTEN_PIDFDID does not match)"
    return (
        f"the sockets passed by systemd are for another process (LISTEN_PID={env['LISTEN_PID']}, "
        f"this is {os.getpid()}): was this started through a wrapper that did not exec?"
    )


def _invalid_variable(error: OSError, environ: Mapping[str, Optional[str]]) -> Optional[str]:
    """Which variable *error* (EINVAL/ERANGE from reading *environ*) is about; None for another errno."""
    if (error.errno or errno.EINVAL) not in (errno.EINVAL, errno.ERANGE):
        return None
    for variable, parse in (("LISTEN_PID", parse_pid), ("LISTEN_FDS", parse_count)):
        try:
            parse(environ.get(variable) or "")
        except OSError:
            return variable
    return "LISTEN_FDNAMES"


def explain(error: OSError, environ: Mapping[str, Optional[str]]) -> S6ipcError:
    """The one message for *error*, raised while reading *environ*'s ``LISTEN_*`` (by
    :func:`read_listen_variables` or libsystemd): :class:`BadInput` (exit 100) naming the invalid
    variable for EINVAL/ERANGE, :class:`SystemFailure` naming the first listed fd that is not
    open otherwise."""
    code = error.errno or errno.EINVAL
    count_text = environ.get("LISTEN_FDS")
    variable = _invalid_variable(error, environ)
    if variable == "LISTEN_FDNAMES":
        names = (environ.get("LISTEN_FDNAMES") or "").split(":")
        return BadInput(f"LISTEN_FDNAMES gives {len(names)} names for LISTEN_FDS={count_text} fds")
    if variable is not None:
        return BadInput(f"invalid {variable}: {environ.get(variable)!r}")
    try:
        n = parse_count(count_text or "")
    except OSError:
        n = 0
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + n):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            return SystemFailure(f"use fd {fd} listed in LISTEN_FDS={count_text}", code)
    return SystemFailure("take the fds listed in LISTEN_FDS", code)


def take_systemd_fds(unset: bool = True, backend: Optional[str] = None, *,
                     lenient_pid: bool = False) -> Tuple[List[PassedFd], str]:
    """Like :func:`listen_fds`, plus the reason there are none ("" when there are some).

    With *lenient_pid*, an invalid ``LISTEN_PID`` is "nothing for us" (the reason says so) instead
    of an error: the intake's rule, where another source may still have a socket.
    """
    env = _snapshot()
    path = systemd_backend.choose(backend) if env["LISTEN_PID"] is not None else systemd_backend.STDLIB
    matches = True
    try:
        matches = _pidfdid_matches(env["LISTEN_PIDFDID"])
        if not matches:
            raw: List[Tuple[int, str]] = []
        elif path == systemd_backend.LIBSYSTEMD:
            raw = systemd_backend.listen_fds_with_names()
        else:
            raw = _stdlib_listen_fds_with_names(env)
    except OSError as e:
        error = explain(e, env)
        if lenient_pid and _invalid_variable(e, env) == "LISTEN_PID":
            return [], str(error)
        raise error from None
    finally:
        if unset:
            for name in LISTEN_VARIABLES:
                os.environ.pop(name, None)
    passed = [PassedFd(fd, name) for fd, name in raw]
    return passed, ("" if passed else _why_none(env, matches))


def listen_fds(*, unset: bool = True, backend: Optional[str] = None) -> List[PassedFd]:
    """The fds systemd passed to this process (``sd_listen_fds_with_names``), now close-on-exec.

    Returns [] when there are none or they are meant for another process. With *unset* (the
    default) every ``LISTEN_*`` variable is removed from ``os.environ`` (and so from the C
    environment), whatever the outcome. *backend*: ``stdlib``, ``python-systemd`` or None for
    ``$S6IPC_SYSTEMD_BACKEND``/auto. Raises :class:`BadInput` for garbage values,
    :class:`SystemFailure` for a listed fd that is not open.
    """
    return take_systemd_fds(unset, backend)[0]


# -- choosing among them ---------------------------------------------------------------------
def matching(passed: Sequence[PassedFd], *, name: Optional[str] = None,
             path: Optional[str] = None) -> List[PassedFd]:
    """The fds of *passed* named *name* (if given) and bound to *path* (if given)."""
    return [p for p in passed
            if (name is None or p.name == name) and (path is None or socket_address(p.fd) == path)]


def close_fds(passed: Sequence[PassedFd], keep: Sequence[int] = ()) -> None:
    """Close the fds of *passed* except those in *keep* (errors ignored)."""
    for p in passed:
        if p.fd not in keep:
            try:
                os.close(p.fd)
            except OSError:
                pass


def _describe(p: PassedFd) -> str:
    address = socket_address(p.fd)
    return f"fd {p.fd} {p.name}" + (f" {address}" if address else "")


#: What a listener of these families is called in messages.
_KINDS: Dict[Tuple[int, ...], str] = {UNIX_FAMILIES: "Unix stream", IP_FAMILIES: "TCP",
                                      (socket.AF_INET,): "IPv4 TCP", (socket.AF_INET6,): "IPv6 TCP"}


def select_listener(passed: Sequence[PassedFd], *, name: Optional[str] = None,
                    path: Optional[str] = None, families: Tuple[int, ...] = UNIX_FAMILIES) -> PassedFd:
    """The one listening stream socket of *families* among *passed*, narrowed by *name* and/or *path*.

    *path* is a filesystem path, ``@abstract``, ``IP:PORT`` or ``[IP6]:PORT``. Raises
    :class:`BadInput` (exit 100) when no fd matches, when the matching fd is of the wrong kind, or
    when several qualify (ambiguity is an error: name the one you want).
    """
    if not passed:
        raise BadInput("no socket passed by systemd")
    listing = ", ".join(_describe(p) for p in passed)
    candidates = list(passed)
    if name is not None:
        candidates = [p for p in candidates if p.name == name]
        if not candidates:
            raise BadInput(f"no socket named {name} among those passed by systemd ({listing})")
    if path is not None:
        candidates = [p for p in candidates if socket_address(p.fd) == path]
        if not candidates:
            raise BadInput(f"no socket bound to {path} among those passed by systemd ({listing})")
    kind = _KINDS.get(families, "stream")
    problems = [(p, listener_problem(p.fd, families)) for p in candidates]
    usable = [p for p, problem in problems if problem is None]
    if len(usable) == 1:
        return usable[0]
    if not usable:
        if len(candidates) == 1:
            p, problem = problems[0]
            raise BadInput(f"the socket passed by systemd as fd {p.fd} ({p.name}) {problem}")
        raise BadInput(
            f"none of the fds passed by systemd is a listening {kind} socket ({listing})"
        )
    which = ", ".join(_describe(p) for p in usable)
    raise BadInput(f"{len(usable)} listening {kind} sockets were passed by systemd ({which}): "
                   "choose one by name or path")


# -- taking one -----------------------------------------------------------------------------
def adopt_systemd_socket(*, name: Optional[str] = None, path: Optional[str] = None, target: int = 0,
                         backend: Optional[str] = None, close_others: bool = True,
                         families: Tuple[int, ...] = UNIX_FAMILIES) -> PassedFd:
    """Take the listening socket systemd passed (by *name* / *path*) and put it on fd *target*.

    ``LISTEN_*`` leave ``os.environ``; the fds not chosen are closed (as the exec that follows
    would do, since they are close-on-exec) unless *close_others* is False. Returns the chosen
    :class:`PassedFd` (its original fd number and name). Raises :class:`BadInput` (nothing for
    us, wrong PID, unknown name, wrong kind, ambiguity, garbage values) or :class:`SystemFailure`.
    """
    passed, reason = take_systemd_fds(True, backend)
    if not passed:
        raise BadInput(reason)
    chosen = select_listener(passed, name=name, path=path, families=families)
    move_fd(chosen.fd, target)
    if close_others:
        close_fds(passed, keep=(chosen.fd, target))
    return chosen


def forget_systemd_sockets() -> None:
    """Drop systemd's offer: ``LISTEN_*`` leave ``os.environ``; the listed fds become close-on-exec.

    For a process that got its socket elsewhere (fd 0): best effort, never raises.
    """
    env = _snapshot()
    for name in LISTEN_VARIABLES:
        os.environ.pop(name, None)
    try:
        read_listen_variables(env, visit=_close_on_exec_quietly)
    except OSError:
        pass


def _close_on_exec_quietly(fds: range) -> None:
    for fd in fds[:1024]:
        try:
            os.set_inheritable(fd, False)
        except OSError:
            break
