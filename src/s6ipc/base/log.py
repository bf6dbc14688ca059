"""Where a library object's log lines go.

The library never prints: a daemon, the access fast path or a holder is given a :class:`Log`, and
the program layer passes an s6-style reporter (:class:`s6ipc.base.messages.Reporter`), which writes
``NAME: info: …`` / ``NAME: warning: …`` / ``NAME: fatal: …`` lines on fd 2, one ``write`` each.
"""

from __future__ import annotations

from .typeshim import Protocol

__all__ = ["Log"]


class Log(Protocol):
    """The three kinds of lines s6's daemons write."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def error(self, text: str) -> None:
        """A ``fatal:`` line that does not end the caller (a child that could not exec)."""
        ...
