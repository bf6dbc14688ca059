"""Typed errors raised by the library.

The library never prints and never exits: it raises one of these, and the program layer
(`s6ipc.programs.*`) turns it into an s6-style message and exit code.
"""

from __future__ import annotations

import os


class S6ipcError(Exception):
    """Base class of every error the library raises on purpose."""


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
    """The caller handed us something unusable (not a socket, invalid $VAR...).

    ``str()`` is the whole message tail; ``exit_code`` is what s6 exits with (100 by default).
    """

    def __init__(self, message: str, exit_code: int = 100) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ExecFailure(S6ipcError):
    """``execve`` of *name* failed (s6 semantics: exit 127 for ENOENT, 126 otherwise)."""

    def __init__(self, name: str, errno: int) -> None:
        super().__init__(name, errno)
        self.name = name
        self.errno = errno

    @property
    def exit_code(self) -> int:
        return 127 if self.errno == 2 else 126

    def __str__(self) -> str:
        return f"unable to exec {self.name}: {os.strerror(self.errno)}"
