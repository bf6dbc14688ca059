"""The intake: where a daemon's listening socket comes from — fd 0, systemd, an fd holder, a bind.

One place decides, for the programs (``ipcserverd``, ``systemd-socket``) and the Python API
(:func:`listening_socket`) alike; one predicate (:func:`s6ipc.sockets.listener_problem`) says
whether a candidate is usable. Built on the systemd protocol (:mod:`s6ipc.activation`) and the fd
holder's client.

Some facts about the sources that this module relies on:

* **The s6 convention.** A listening socket reaches a super-server as fd 0. fd 0 is therefore
  always looked at first: an explicit chain stage (a socket binder, an fd-holder retrieval, our
  ``systemd-socket``) has already decided, and stale ``LISTEN_*`` variables must not override it.
* **systemd** passes sockets only to the process named by ``LISTEN_PID``; whatever source wins,
  ``LISTEN_*`` leave ``os.environ`` so that a program exec'd later in the same PID does not
  believe it got fds that close-on-exec has closed (:func:`s6ipc.activation.forget_systemd_sockets`).
* **An fd holder** returns a duplicate of the descriptor it keeps: closing ours never closes the
  socket, which is what lets a server restart without refusing a client.
* **The previous image of the same daemon** (an in-place upgrade: same PID, ``execve``) is not a
  source of its own here: the socket simply is still on fd 0 across the exec.
"""

from __future__ import annotations

import os
import socket

from ..base.errors import BadInput
from ..sockets.listenfds import (
    adopt_systemd_socket,
    close_fds,
    forget_systemd_sockets,
    matching,
    move_fd,
    select_listener,
    socket_address,
    systemd_socket_pending,
    take_systemd_fds,
    why_no_systemd_socket,
)
from ..sockets.unix import UNIX_FAMILIES, is_socket, listener_problem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

#: The order :func:`take_listener` tries its sources in, for ``ipcserverd`` and the Python API alike.
SOURCE_ORDER = ("fd0", "systemd", "fdholder")


def take_listener(*, name: Optional[str] = None, path: Optional[str] = None, target: int = 0,
                  fdholder: Optional[str] = None, fdholder_id: Optional[str] = None,
                  backend: Optional[str] = None) -> str:
    """Put the listening socket on fd *target* from the first source that has one; return its name.

    The sources, in :data:`SOURCE_ORDER`:

    1. ``fd0`` — fd 0 is a listening Unix stream socket (the s6 convention; skipped when *name*
       is given, since fd 0 has no name; when *path* is given, fd 0 must be bound to it);
    2. ``systemd`` — ``LISTEN_FDS`` meant for this process (socket units and the fd store),
       selected by *name* / *path*, else the only listening Unix stream socket;
    3. ``fdholder`` — identifier *fdholder_id* retrieved from the s6 fd holder listening at
       *fdholder*, when both are given.

    ``LISTEN_*`` always leave ``os.environ``. Raises :class:`BadInput` when no source has a
    socket (naming what was tried) or when the chosen source is unusable, and
    :class:`~s6ipc.errors.SystemFailure` from the fd holder's client.
    """
    tried: List[str] = []

    def from_fd0() -> bool:
        problem = listener_problem(0)
        if name is None and problem is None and (path is None or socket_address(0) == path):
            forget_systemd_sockets()
            if target != 0:
                os.dup2(0, target, inheritable=True)
            return True
        tried.append("fd 0 " + (problem or f"is not bound to {path}"))
        return False

    def from_systemd() -> bool:
        if systemd_socket_pending():
            adopt_systemd_socket(name=name, path=path, target=target, backend=backend)
            return True
        tried.append(why_no_systemd_socket())
        forget_systemd_sockets()
        return False

    def from_fdholder() -> bool:
        if fdholder is None or fdholder_id is None:
            tried.append("no fd holder given")
            return False
        fd = retrieve_from_fdholder(fdholder, fdholder_id)
        problem = listener_problem(fd)
        if problem is not None:
            os.close(fd)
            raise BadInput(f"the fd {fdholder_id} retrieved from {fdholder} {problem}")
        move_fd(fd, target)
        return True

    sources: Dict[str, Callable[[], bool]] = {"fd0": from_fd0, "systemd": from_systemd,
                                              "fdholder": from_fdholder}
    for source in SOURCE_ORDER:
        if sources[source]():
            return source
    raise BadInput("no listening socket: " + "; ".join(tried))


def retrieve_from_fdholder(holder: str, identifier: str, timeout: Optional[float] = None) -> int:
    """Retrieve *identifier* from the s6 fd holder listening at *holder*; return a new fd.

    Uses :class:`s6ipc.fdholder.client.FdHolderClient` (wire-compatible with s6-fdholderd): the
    fd is close-on-exec. Raises :class:`~s6ipc.errors.SystemFailure` as that client does.
    """
    from ..fdholder.client import FdHolderClient

    with FdHolderClient(holder, timeout=timeout) as client:
        return client.retrieve(identifier)


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
    try:
        source = take_listener(name=name, path=path, target=target, fdholder=fdholder,
                               fdholder_id=fdholder_id, backend=backend)
    except BaseException:
        os.close(target)
        raise
    if source == "fd0":
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0, inheritable=True)
        os.close(null)
    os.set_inheritable(target, False)
    return socket.socket(fileno=target)


def take_daemon_socket(warn: Callable[[str], None], families: Tuple[int, ...] = UNIX_FAMILIES) -> None:
    """A super-server's intake: fd 0 when it is a socket of any kind (checked afterwards exactly as
    s6 checks it, with s6's messages), else the listening socket systemd passed, moved to fd 0.

    When neither applies, fd 0 is left as it is (the daemon's start-up check then reports it the
    way s6 does) and stale ``LISTEN_FDS`` is reported through *warn*. ``LISTEN_*`` leave
    ``os.environ`` in every case. Raises :class:`BadInput` when systemd's offer is unusable.
    """
    if is_socket(0):
        forget_systemd_sockets()
    elif systemd_socket_pending():
        adopt_systemd_socket(target=0, families=families)
    else:
        if "LISTEN_FDS" in os.environ:
            warn(f"ignoring LISTEN_FDS: {why_no_systemd_socket()}")
        forget_systemd_sockets()


def systemd_socket_or_bind(bind: Callable[[], int], *, name: Optional[str] = None,
                           path: Optional[str] = None, warn: Callable[[str], None],
                           families: Tuple[int, ...] = UNIX_FAMILIES) -> bool:
    """``systemd-socket -f``: the passed socket named *name* / bound to *path* onto fd 0, else
    the one *bind* makes (returning its fd), onto fd 0. True when *bind* was used.

    A mismatch among the passed sockets is reported through *warn* before binding.
    """
    passed, _ = take_systemd_fds()
    if matching(passed, name=name, path=path):
        chosen = select_listener(passed, name=name, path=path, families=families)
        move_fd(chosen.fd, 0)
        close_fds(passed, keep=(chosen.fd, 0))
        return False
    if passed:
        listing = ", ".join(f"fd {p.fd} {p.name}" for p in passed)
        wanted = f"named {name}" if name else f"bound to {path}"
        warn(f"no socket {wanted} among those passed by systemd ({listing}): binding {path}")
    close_fds(passed)
    move_fd(bind(), 0)
    return True
