"""The intake: where a daemon's listening socket comes from — fd 0, systemd, an fd holder, a bind.

One table of sources (:data:`SOURCES`), walked by one function (:func:`take_socket`), for the
daemons (``ipcserverd``, ``tcpserver*d``: :func:`take_daemon_socket`), the ``systemd-socket``
stage (:func:`take_systemd_socket`, :func:`systemd_socket_or_bind`) and the Python API
(:func:`take_listener`, :func:`listening_socket`) alike; one predicate
(:func:`s6ipc.sockets.listener_problem`) says whether a candidate is usable, and
:func:`s6ipc.base.descriptors.move_fd` puts the winner in place. A source is an object with a
``name`` and a ``take(want)`` that returns the fd holding the socket, or a :class:`Miss` saying why
not; a new source is one class here and one entry in :data:`SOURCES`.

Some facts about the sources that this module relies on:

* **The s6 convention.** A listening socket reaches a super-server as fd 0. fd 0 is therefore
  always looked at first: an explicit chain stage (a socket binder, an fd-holder retrieval, our
  ``systemd-socket``) has already decided, and stale ``LISTEN_*`` variables must not override it.
* **systemd** passes sockets only to the process named by ``LISTEN_PID``; whatever source wins,
  ``LISTEN_*`` leave ``os.environ`` so that a program exec'd later in the same PID does not
  believe it got fds that close-on-exec has closed (:func:`s6ipc.sockets.listenfds.forget_systemd_sockets`).
* **An fd holder** returns a duplicate of the descriptor it keeps: closing ours never closes the
  socket, which is what lets a server restart without refusing a client.
* **The previous image of the same daemon** (an in-place upgrade: same PID, ``execve``) is not a
  source of its own here: the socket simply is still on fd 0 across the exec.

What that means for the two kinds of caller (one parameter of the walk, :attr:`Want.daemon`):

* **A daemon** takes fd 0 when it is a socket *of any kind*, and then checks it once the way s6
  does (``stdin is not a socket``, ``stdin is not a Unix domain socket``…, exit 100/111), so that
  s6's own start-up messages come out; it takes the systemd socket otherwise. The check is made
  here, once: the loop (``Server.start(checked=True)``) does not repeat it.
* **The Python API** takes fd 0 only when it is a usable listener (a listening Unix stream
  socket, bound to *path* when one is given, never when a *name* is asked for), and otherwise
  goes on to systemd and the fd holder, naming what it tried when nothing had one.
"""

from __future__ import annotations

import os
import socket

from ..base.descriptors import move_fd
from ..base.errors import BadInput
from ..base.typeshim import NamedTuple
from ..sockets.listenfds import (
    close_fds,
    forget_systemd_sockets,
    matching,
    select_listener,
    take_systemd_fds,
)
from ..sockets.unix import (
    UNIX_FAMILIES,
    check_listening_stream,
    is_socket,
    listener_problem,
    socket_address,
    socket_kind,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "Want", "Miss", "STALE", "UNMATCHED", "Source", "SOURCES", "SOURCE_ORDER", "NoSocket", "take_socket",
    "take_listener", "listening_socket", "retrieve_from_fdholder", "take_daemon_socket",
    "take_systemd_socket", "systemd_socket_or_bind", "FdZero", "Systemd", "FdHolder", "Bound",
]


class Want(NamedTuple):
    """What the caller asks of the sources."""

    #: The ``LISTEN_FDNAMES`` name the socket must have (systemd only: fd 0 has no name).
    name: Optional[str] = None
    #: The address the socket must be bound to (a path, ``@abstract``, ``IP:PORT``).
    path: Optional[str] = None
    #: The families a usable listener may have.
    families: Tuple[int, ...] = UNIX_FAMILIES
    #: The daemons' rule for fd 0 (any socket, checked afterwards with s6's messages) instead of
    #: the API's (a usable listener, else the next source).
    daemon: bool = False
    #: The systemd backend (``stdlib``, ``python-systemd``, None: ``$S6IPC_SYSTEMD_BACKEND``/auto).
    backend: Optional[str] = None
    #: The fd holder's socket and the identifier to retrieve (both, or no fd-holder source).
    fdholder: Optional[str] = None
    fdholder_id: Optional[str] = None
    #: systemd sockets were passed but none has *name* / *path*: a miss (the next source binds),
    #: not an error.
    mismatch_is_miss: bool = False
    #: An invalid ``LISTEN_PID`` is a miss ("nothing for us"), not an error.
    lenient_pid: bool = True


#: What a :class:`Miss` says was offered all the same: ``LISTEN_FDS`` meant for another process
#: or unreadable, or sockets none of which has the name / address asked for.
STALE, UNMATCHED = "stale", "unmatched"


class Miss(NamedTuple):
    """A source had no socket: *why* (for messages); *offer*, when something was offered but not
    taken (:data:`STALE`, :data:`UNMATCHED`), which a caller may warn about."""

    why: str
    offer: str = ""


if TYPE_CHECKING:
    Taken = Union[int, Miss]


class Source:
    """One place a listening socket may come from: :attr:`name`, and :meth:`take`."""

    name = ""

    def take(self, want: Want) -> Taken:
        """The fd now holding the socket (the caller moves it into place), or a :class:`Miss`.

        Raises :class:`BadInput` when the source has a socket for us but it is unusable.
        """
        raise NotImplementedError


class FdZero(Source):
    """fd 0, the s6 convention: an earlier stage put the socket there."""

    name = "fd0"

    def take(self, want: Want) -> Taken:
        if want.daemon:
            if not is_socket(0):
                return Miss("fd 0 is not a socket")
        else:
            problem = listener_problem(0, want.families)
            if problem is not None:
                return Miss("fd 0 " + problem)
            if want.name is not None:
                return Miss(f"fd 0 has no name (asked for {want.name})")
            if want.path is not None and socket_address(0) != want.path:
                return Miss(f"fd 0 is not bound to {want.path}")
        forget_systemd_sockets()
        return 0


class Systemd(Source):
    """The sockets systemd passed (``LISTEN_FDS``: socket units, the fd store), by name / path,
    else the only usable listener; the others are closed."""

    name = "systemd"

    def take(self, want: Want) -> Taken:
        offered = STALE if "LISTEN_FDS" in os.environ else ""
        passed, reason = take_systemd_fds(True, want.backend, lenient_pid=want.lenient_pid)
        if not passed:
            return Miss(reason, offered)
        if want.mismatch_is_miss and not matching(passed, name=want.name, path=want.path):
            listing = ", ".join(f"fd {p.fd} {p.name}" for p in passed)
            wanted = f"named {want.name}" if want.name else f"bound to {want.path}"
            close_fds(passed)
            return Miss(f"no socket {wanted} among those passed by systemd ({listing})", UNMATCHED)
        try:
            chosen = select_listener(passed, name=want.name, path=want.path, families=want.families)
        except BadInput:
            close_fds(passed)
            raise
        close_fds(passed, keep=(chosen.fd,))
        return chosen.fd


def retrieve_from_fdholder(holder: str, identifier: str, timeout: Optional[float] = None) -> int:
    """Retrieve *identifier* from the s6 fd holder listening at *holder*; return a new fd.

    Uses :class:`s6ipc.fdholder.client.FdHolderClient` (wire-compatible with s6-fdholderd): the
    fd is close-on-exec. Raises :class:`~s6ipc.base.errors.SystemFailure` as that client does.
    """
    from ..fdholder.client import FdHolderClient  # only when an fd holder is asked for: no daemon needs it

    with FdHolderClient(holder, timeout=timeout) as client:
        return client.retrieve(identifier)


class FdHolder(Source):
    """Identifier :attr:`Want.fdholder_id` retrieved from the s6 fd holder at :attr:`Want.fdholder`."""

    name = "fdholder"

    def take(self, want: Want) -> Taken:
        if want.fdholder is None or want.fdholder_id is None:
            return Miss("no fd holder given")
        fd = retrieve_from_fdholder(want.fdholder, want.fdholder_id)
        problem = listener_problem(fd, want.families)
        if problem is not None:
            os.close(fd)
            raise BadInput(f"the fd {want.fdholder_id} retrieved from {want.fdholder} {problem}")
        return fd


class Bound(Source):
    """A socket bound here and now by *bind* (which returns its fd): ``systemd-socket -f``."""

    name = "bind"

    def __init__(self, bind: Callable[[], int]) -> None:
        self.bind = bind

    def take(self, want: Want) -> Taken:
        return self.bind()


#: Every source, in the order they are tried: fd 0, then systemd, then the fd holder.
SOURCES: Tuple[Source, ...] = (FdZero(), Systemd(), FdHolder())
#: Their names, in that order.
SOURCE_ORDER = tuple(source.name for source in SOURCES)


class NoSocket(BadInput):
    """No source had a socket; :attr:`misses` says why, source by source."""

    def __init__(self, misses: Sequence[Tuple[str, Miss]]) -> None:
        super().__init__("no listening socket: " + "; ".join(miss.why for _, miss in misses))
        self.misses = list(misses)

    def miss(self, name: str) -> Optional[Miss]:
        """Why source *name* had none (None when it was not tried)."""
        return next((miss for source, miss in self.misses if source == name), None)


def take_socket(want: Want, target: int = 0, *, sources: Sequence[Source] = SOURCES,
                inheritable: bool = True, on_miss: Optional[Callable[[str, Miss], None]] = None) -> str:
    """Walk *sources* in order; put the first socket found on fd *target*; return its source's name.

    *inheritable* False leaves *target* close-on-exec (a daemon keeps it for itself), True clears
    that (a stage hands it on). fd 0 as the source of another *target* is copied, not moved: the
    caller decides what becomes of fd 0. *on_miss(source name, miss)* is told of each miss as it
    happens. Raises :class:`NoSocket` when no source had one, or what a source raises
    (:class:`BadInput` for an unusable socket, SystemFailure).
    """
    misses: List[Tuple[str, Miss]] = []
    for source in sources:
        taken = source.take(want)
        if isinstance(taken, Miss):
            misses.append((source.name, taken))
            if on_miss is not None:
                on_miss(source.name, taken)
            continue
        if taken == 0 and target != 0:
            os.dup2(0, target, inheritable=inheritable)
        else:
            move_fd(taken, target, inheritable=inheritable)
        return source.name
    raise NoSocket(misses)


def take_listener(*, name: Optional[str] = None, path: Optional[str] = None, target: int = 0,
                  fdholder: Optional[str] = None, fdholder_id: Optional[str] = None,
                  backend: Optional[str] = None) -> str:
    """Put the listening socket on fd *target* (inheritable) from the first source that has one;
    return its name.

    The sources, in :data:`SOURCE_ORDER`:

    1. ``fd0`` — fd 0 is a listening Unix stream socket (the s6 convention; skipped when *name*
       is given, since fd 0 has no name; when *path* is given, fd 0 must be bound to it);
    2. ``systemd`` — ``LISTEN_FDS`` meant for this process (socket units and the fd store),
       selected by *name* / *path*, else the only listening Unix stream socket;
    3. ``fdholder`` — identifier *fdholder_id* retrieved from the s6 fd holder listening at
       *fdholder*, when both are given.

    ``LISTEN_*`` always leave ``os.environ``. Raises :class:`BadInput` when no source has a
    socket (naming what was tried) or when the chosen source is unusable, and
    :class:`~s6ipc.base.errors.SystemFailure` from the fd holder's client.
    """
    want = Want(name=name, path=path, backend=backend, fdholder=fdholder, fdholder_id=fdholder_id)
    return take_socket(want, target, inheritable=True)


def listening_socket(*, name: Optional[str] = None, path: Optional[str] = None,
                     fdholder: Optional[str] = None, fdholder_id: Optional[str] = None,
                     backend: Optional[str] = None) -> socket.socket:
    """The listening Unix stream socket of a Python daemon, from the first source that has one.

    Same sources and order as :func:`take_listener` (fd 0, then systemd, then the fd holder). The
    socket object owns a close-on-exec descriptor; fd 0, when it was the source, is replaced by
    ``/dev/null`` so that no child inherits the listener through it. Raises :class:`BadInput`.
    """
    spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    target = os.dup(spare)  # a fresh fd number to receive the socket
    os.close(spare)
    want = Want(name=name, path=path, backend=backend, fdholder=fdholder, fdholder_id=fdholder_id)
    try:
        source = take_socket(want, target, inheritable=False)
    except BaseException:
        os.close(target)
        raise
    if source == "fd0":
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0, inheritable=True)
            os.close(null)
    return socket.socket(fileno=target)


def take_daemon_socket(warn: Callable[[str], None], families: Tuple[int, ...] = UNIX_FAMILIES) -> int:
    """A super-server's intake: its listening socket on fd 0, close-on-exec, checked; its family.

    fd 0 when it is a socket of any kind (then checked exactly as s6 checks it, with s6's
    messages), else the listening socket systemd passed, moved to fd 0 (checked as it was
    chosen). When neither applies, stale ``LISTEN_FDS`` is reported through *warn* and fd 0 is
    checked as it is, so the start-up error is s6's. ``LISTEN_*`` leave ``os.environ`` in every
    case. Raises :class:`BadInput`/:class:`~s6ipc.base.errors.Unusable`/SystemFailure with s6's exit
    codes. The loop is then started with ``Server.start(checked=True)``.
    """
    want = Want(families=families, daemon=True)
    try:
        source = take_socket(want, 0, sources=SOURCES[:2], inheritable=False)
    except NoSocket as e:
        stale = e.miss("systemd")
        if stale is not None and stale.offer:
            warn(f"ignoring LISTEN_FDS: {stale.why}")
        source = ""
    if source != "systemd":  # fd 0, or nothing: s6's one check, with s6's messages
        check_listening_stream(0, families)
        os.set_inheritable(0, False)
    return families[0] if len(families) == 1 else socket_kind(0)[0]


def take_systemd_socket(*, name: Optional[str] = None, path: Optional[str] = None,
                        families: Tuple[int, ...] = UNIX_FAMILIES) -> None:
    """``systemd-socket``: the passed socket named *name* / bound to *path* onto fd 0 (inheritable,
    for the rest of the chain); the other passed fds are closed. Raises :class:`BadInput` saying
    why systemd offered nothing usable."""
    try:
        take_socket(Want(name=name, path=path, families=families), 0, sources=(SOURCES[1],))
    except NoSocket as e:
        raise BadInput(e.misses[0][1].why) from None


def systemd_socket_or_bind(bind: Callable[[], int], *, name: Optional[str] = None,
                           path: Optional[str] = None, warn: Callable[[str], None],
                           families: Tuple[int, ...] = UNIX_FAMILIES) -> bool:
    """``systemd-socket -f``: the passed socket named *name* / bound to *path* onto fd 0, else
    the one *bind* makes (returning its fd), onto fd 0. True when *bind* was used.

    A mismatch among the passed sockets is reported through *warn* before binding.
    """
    want = Want(name=name, path=path, families=families, mismatch_is_miss=True, lenient_pid=False)

    def note(source: str, miss: Miss) -> None:
        if miss.offer == UNMATCHED:
            warn(f"{miss.why}: binding {path}")

    bound = Bound(bind)
    return take_socket(want, 0, sources=(SOURCES[1], bound), on_miss=note) == bound.name
