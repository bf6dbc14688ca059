"""s6-style diagnostics: ``PROG: fatal: …`` lines on stderr, one ``write`` each.

Every message is one line, written with a single ``os.write`` on fd 2 so that lines from
concurrent processes sharing a log pipe never interleave (writes up to PIPE_BUF are atomic).
Only the program layer uses this module; the library raises errors instead.
"""

from __future__ import annotations

import errno
import os
import sys

from .errors import S6ipcError, SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["Reporter", "write_stdout", "flush_stdio"]


class Reporter:
    """Writes the messages of one program, named as it was invoked (``s6-ipcserverd``…)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _line(self, kind: str, text: str) -> None:
        line = f"{self.name}: {kind}{text}\n"
        try:
            data = line.encode("utf-8", "surrogateescape")  # bytes from outside go out as they came
        except UnicodeEncodeError:  # a lone surrogate no byte decoded to (from JSON, say)
            data = line.encode("utf-8", "backslashreplace")
        try:
            os.write(2, data)
        except OSError:
            pass

    def info(self, text: str) -> None:
        self._line("info: ", text)

    def warn(self, text: str) -> None:
        self._line("warning: ", text)

    def error(self, text: str) -> None:
        """A ``fatal:`` line that does not exit (what a dying child of ipcserverd would print)."""
        self._line("fatal: ", text)

    def fatal(self, text: str, code: int) -> NoReturn:
        self._line("fatal: ", text)
        os._exit(code)

    def usage(self, usage: str) -> NoReturn:
        """``PROG: usage: PROG USAGE`` then exit 100 (s6's dieusage)."""
        self._line("usage: ", f"{self.name} {usage}" if usage else self.name)
        os._exit(100)

    def die(self, error: S6ipcError) -> NoReturn:
        """Report a library error with s6's exit code for its kind (:attr:`S6ipcError.exit_code`)."""
        self.fatal(str(error), error.exit_code)


def write_stdout(data: bytes) -> None:
    """Write all of *data* on fd 1. Raises :class:`SystemFailure` (``write to stdout``)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view):]
    except OSError as e:
        raise SystemFailure("write to stdout", e.errno or errno.EIO) from None


def flush_stdio() -> None:
    """Flush Python's buffered streams before an exec or ``os._exit`` throws them away."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # the fd was closed when Python started (``prog >&-``)
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
