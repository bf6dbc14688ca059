"""The ``[ -t timeout ] operands…`` command line shared by the simple fd-holder clients."""

from __future__ import annotations

from ..base.options import UsageError, getopt, parse_uint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple


def parse_timeout(args: List[str], operands: int) -> Tuple[Optional[float], List[str]]:
    """Parse ``-t MS`` (0: no timeout) and require *operands* arguments after the options.

    Returns (timeout in seconds or None, the operands and whatever follows). Raises :class:`UsageError`.
    """
    opts, rest = getopt(args, "t:")
    milliseconds = 0
    for _, value in opts:
        milliseconds = parse_uint(value or "")
    if len(rest) < operands:
        raise UsageError("too few arguments")
    return (milliseconds / 1000 if milliseconds else None), rest
