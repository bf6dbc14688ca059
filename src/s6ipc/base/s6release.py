"""Which s6 release s6ipc's programs behave like, where s6 releases differ in what a user sees.

Some facts about the s6 releases a user meets (read in skarnet's sources at the tags, and run: Debian
12's s6 2.11.3.2 on skalibs 2.13.1.1, Debian 13's s6 2.13.1.0 on skalibs 2.14.3.0):

* s6-ipcserverd 2.12.0.0 and every release since (2.13.1.0 in Debian 13, 2.15 upstream) give a
  child ``IPCCONNNUM`` = the connections from the same uid *other than this one* (0 for the first);
  2.11.3.2 counted this one too (1 for the first). The ``allow … count N/M`` log line and ``-C``
  (a connection is refused when N would exceed M) did not change: both count this one. s6-networking
  2.6.0.0 and later made the same change to s6-tcpserverd's ``TCPCONNNUM``.
* s6-ipcserverd's ``-c`` is clamped to 16384 since 2.12.0.0 (``ABSOLUTE_MAXCONN``; its HTML page
  still says 1000), to 1000 in 2.11.3.2; ``-c 0`` means 1 in both.
* s6-ipcserverd 2.12.0.0+ starts each child with ``posix_spawn`` (skalibs' ``cspawn``): a program that
  cannot be executed is a warning of the daemon, ``unable to spawn PROG: REASON`` (at verbosity 1
  and above), and no child, so no ``allow`` or ``end`` line. 2.11.3.2 forked a child that said
  ``s6-ipcserver (child): fatal: unable to exec PROG: REASON`` and died.
* skalibs 2.14.0.0 (every s6 from 2.12.0.0 on is built on it) carries at most 253 descriptors in one
  ``unixmessage`` (``UNIXMESSAGE_MAXFDS``), 255 before; a receiver refuses more (ENOBUFS). The fd
  holder's getdump and setdump announce how many messages a dump takes, ``1 + (n-1)/MAXFDS``, and
  libs6's client refuses (EPROTO) a count that does not follow its own rule: for 254, 255, 507…510
  descriptors a 2.11 client and a 2.12+ client want different counts, and a message of 254 or 255
  descriptors reaches a 2.12+ client as ENOBUFS. A daemon's reply cannot satisfy both lines; a client
  can accept either.

What that means for us: one choice for every program, made from the environment so that it follows a
service through ``s6ipc ipcserver``'s chain, an s6 service directory's ``env/`` or a systemd unit's
``Environment=``. The default is the newest upstream behaviour (s6 2.12.0.0 and later: Debian 13's
2.13.1.0, upstream's 2.15); ``S6IPC_S6=2.11`` gives s6 2.11.3.2's (Debian 12's). A variable, not an
option: s6's programs own their option letters.
"""

from __future__ import annotations

from .errors import BadInput
from .typeshim import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

__all__ = ["VARIABLE", "S6Release", "S6_2_11", "S6_2_12", "DEFAULT", "s6_release"]

#: The environment variable that chooses the line.
VARIABLE = "S6IPC_S6"


class S6Release(NamedTuple):
    """What one line of s6 releases does where the lines differ."""

    #: How the line is named in ``S6IPC_S6`` and in the docs.
    name: str
    #: Added to the number of *other* live connections from the same peer to give ``IPCCONNNUM``.
    connnum_offset: int
    #: The ceiling of s6-ipcserverd's (and s6-tcpserverd's) ``-c``.
    absolute_maxconn: int
    #: True: a program that cannot be executed is the daemon's ``unable to spawn`` warning.
    spawn_failure_in_daemon: bool
    #: Descriptors per message in the fd holder's dumps (skalibs' ``UNIXMESSAGE_MAXFDS``).
    unixmessage_maxfds: int

    def connnum(self, others: int) -> int:
        """``IPCCONNNUM``/``TCPCONNNUM`` for a connection with *others* live from the same peer."""
        return others + self.connnum_offset

    def dump_messages(self, count: int) -> int:
        """How many messages a dump of *count* descriptors takes (libs6's ``1 + (n-1)/MAXFDS``)."""
        return 1 + (count - 1) // self.unixmessage_maxfds if count else 0


S6_2_11 = S6Release("2.11", 1, 1000, False, 255)
S6_2_12 = S6Release("2.12", 0, 16384, True, 253)
DEFAULT = S6_2_12

#: Each value ``S6IPC_S6`` accepts: 2.11 for the old line, any release of the new one.
_NAMES = {"2.11": S6_2_11, "2.12": S6_2_12, "2.13": S6_2_12, "2.14": S6_2_12, "2.15": S6_2_12}


def s6_release(environ: Mapping[str, str]) -> S6Release:
    """The line ``S6IPC_S6`` in *environ* chooses (unset or empty: :data:`DEFAULT`).

    A value may name a whole release (``2.11.3.2``, ``2.13.1.0``); its first two numbers choose.
    Raises :class:`BadInput` (exit 100) for anything else.
    """
    value = environ.get(VARIABLE, "")
    if not value:
        return DEFAULT
    major_minor = ".".join(value.split(".")[:2])
    release = _NAMES.get(major_minor)
    if release is None or not all(part.isdigit() and part.isascii() for part in value.split(".")):
        raise BadInput(f"invalid ${VARIABLE}: {value} (2.11 for s6 2.11's behaviour, 2.12 to 2.15 for "
                       "the newer one)")
    return release
