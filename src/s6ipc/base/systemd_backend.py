"""The optional python-systemd (libsystemd) path behind s6ipc's own activation/readiness interface.

``pip install s6ipc[systemd]`` installs python-systemd (PyPI ``systemd-python``); when it imports,
:mod:`s6ipc.sockets.listenfds` and :mod:`s6ipc.daemon.readiness` call libsystemd through this module, so their
behaviour tracks the host's libsystemd. The standard-library path in those modules is always
present, and the tests run both on the same cases and assert that they agree.

Some facts about python-systemd 235 that this module works around:

* ``listen_fds_with_names(unset_environment=True)`` — the default — removes ``LISTEN_*`` with the C
  library's ``unsetenv()``, which never reaches Python's cached ``os.environ``: a later
  ``os.execve(..., os.environ)`` in the same PID would revive the variables, pointing at fds that
  close-on-exec has closed. We always call it with ``unset_environment=False`` and let the caller
  pop the variables from ``os.environ`` (``os.environ.pop`` also calls ``unsetenv``).
* ``notify()`` reads ``$NOTIFY_SOCKET`` from the *C* environment at each call. s6ipc takes the
  address out of ``os.environ`` once (so that no child inherits it) and keeps it; to send through
  libsystemd we put it back into the C environment with ``os.putenv`` for the duration of the call
  only — ``os.putenv`` does not touch ``os.environ``, which is what children get.
* ``notify()`` returns False when the variable is unset and raises ``OSError`` on a send error; its
  ``fds=`` takes integers only; a ``pid=`` other than ours is sent as SCM_CREDENTIALS when the
  kernel allows it, and silently as our own pid otherwise (libsystemd retries without credentials).
* Errors come back as ``OSError`` carrying libsystemd's negative errno, made positive.
"""

from __future__ import annotations

import os

from .errors import BadInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Sequence, Tuple

__all__ = [
    "available", "STDLIB", "LIBSYSTEMD", "BACKEND_VARIABLE", "choose", "listen_fds_with_names", "notify",
]

_UNLOADED: Any = object()
_module: Any = _UNLOADED


def _daemon() -> Any:
    """``systemd.daemon``, imported on first use (None when not installed).

    Imported lazily: a process that never meets ``LISTEN_FDS`` or ``NOTIFY_SOCKET`` does not pay
    for loading libsystemd at start-up (the ``-1`` readiness budget of the whole chain).
    """
    global _module
    if _module is _UNLOADED:
        try:  # pragma: no cover - depends on the installation
            import systemd.daemon  # type: ignore[import-untyped,import-not-found,unused-ignore]

            _module = systemd.daemon
        except ImportError:  # pragma: no cover
            _module = None
    return _module


def available() -> bool:
    """True when python-systemd imports."""
    return _daemon() is not None


STDLIB = "stdlib"
LIBSYSTEMD = "python-systemd"
#: The environment variable that picks a path for the whole process tree: ``stdlib``,
#: ``python-systemd`` or ``auto`` (the default: python-systemd when it imports).
BACKEND_VARIABLE = "S6IPC_SYSTEMD_BACKEND"


def choose(backend: Optional[str] = None) -> str:
    """The path to use: *backend* if given, else ``$S6IPC_SYSTEMD_BACKEND``, else ``auto``.

    Raises :class:`~s6ipc.base.errors.BadInput` for an unknown name, or for ``python-systemd`` when it
    is not installed.
    """
    choice = backend or os.environ.get(BACKEND_VARIABLE) or "auto"
    if choice == "auto":
        return LIBSYSTEMD if available() else STDLIB
    if choice == STDLIB:
        return STDLIB
    if choice == LIBSYSTEMD:
        if not available():
            raise BadInput("python-systemd is not installed (pip install 's6ipc[systemd]')")
        return LIBSYSTEMD
    raise BadInput(f"invalid {BACKEND_VARIABLE}: {choice} (stdlib, python-systemd or auto)")


def listen_fds_with_names() -> List[Tuple[int, str]]:
    """``sd_listen_fds_with_names(0)``: [(fd, name)…] from fd 3 on; [] when not for us.

    Raises OSError (errno from libsystemd). The caller removes ``LISTEN_*`` from ``os.environ``.
    """
    daemon = _daemon()
    if daemon is None:
        raise OSError(38, "python-systemd is not installed")
    names = daemon.listen_fds_with_names(unset_environment=False)
    return sorted((int(fd), str(name)) for fd, name in names.items())


def notify(address: str, message: str, fds: Sequence[int] = (), pid: Optional[int] = None) -> bool:
    """``sd_pid_notify_with_fds`` to *address* (a ``$NOTIFY_SOCKET`` value). Raises OSError."""
    daemon = _daemon()
    if daemon is None:
        raise OSError(38, "python-systemd is not installed")
    previous = os.environ.get("NOTIFY_SOCKET")
    os.putenv("NOTIFY_SOCKET", address)
    try:
        kwargs: dict[str, Any] = {"unset_environment": False}
        if fds:
            kwargs["fds"] = [int(fd) for fd in fds]
        if pid is not None:
            kwargs["pid"] = pid
        return bool(daemon.notify(message, **kwargs))
    finally:
        if previous is None:
            os.unsetenv("NOTIFY_SOCKET")
        else:
            os.putenv("NOTIFY_SOCKET", previous)
