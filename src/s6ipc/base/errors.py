"""Typed errors raised by the library.

The library never prints and never exits: it raises one of these, and the program layer
(`s6ipc.programs.*`) turns it into an s6-style message and exit code. Each error carries the exit
code s6 uses for its kind (:attr:`S6ipcError.exit_code`), so a program decides it in one place
(:meth:`s6ipc.base.messages.Reporter.die`), never at its catch sites:

=====================  ====  ============================================================
error                  exit  what it is
=====================  ====  ============================================================
:class:`BadInput`      100   the caller's input is unusable (usage-like: an invalid $VAR…)
:class:`Unusable`      111   what the process was given cannot serve (fd 0 of the wrong kind…)
:class:`SystemFailure` 111   a system call failed
:class:`Refused`       1     a peer refused or failed the operation (an fd holder's errno)
:class:`ExecFailure`   126/127  ``execve`` failed (127 for ENOENT)
=====================  ====  ============================================================
"""

from __future__ import annotations

import os

__all__ = ["S6ipcError", "SystemFailure", "BadInput", "Unusable", "Refused", "ExecFailure"]


class S6ipcError(Exception):
    """Base class of every error the library raises on purpose."""

    #: The exit code s6 uses for this kind of error.
    exit_code = 111


class SystemFailure(S6ipcError):
    """A system call failed: *operation* is the s6-style text ("bind to /run/x").

    ``str()`` gives ``unable to OPERATION: strerror`` — exactly the tail of an s6 "sys" message.
    The program layer exits 111 on it.
    """

    def __init__(self, operation: str, errno: int) -> None:
        super().__init__(operation, errno)
        self.operation = operation
        self.errno = errno

    @property
    def reason(self) -> str:
        return os.strerror(self.errno)

    def __str__(self) -> str:
        return f"unable to {self.operation}: {self.reason}"


class BadInput(S6ipcError):
    """The caller handed us something unusable (not a socket, invalid $VAR...): exit 100.

    ``str()`` is the whole message tail.
    """

    exit_code = 100

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Unusable(BadInput):
    """What the process was given cannot serve — a listening socket of the wrong kind, too low an
    open file limit, a socket in error: s6 exits 111 on these."""

    exit_code = 111


class Refused(SystemFailure):
    """A peer refused or could not do an operation (``unable to store fd: Device or resource
    busy``): exit 1, as s6's clients do."""

    exit_code = 1


class ExecFailure(S6ipcError):
    """``execve`` of *name* failed (s6 semantics: exit 127 for ENOENT, 126 otherwise)."""

    def __init__(self, name: str, errno: int) -> None:
        super().__init__(name, errno)
        self.name = name
        self.errno = errno

    @property  # a class attribute elsewhere, computed here
    def exit_code(self) -> int:  # type: ignore[override]
        return 127 if self.errno == 2 else 126

    def __str__(self) -> str:
        return f"unable to exec {self.name}: {os.strerror(self.errno)}"
