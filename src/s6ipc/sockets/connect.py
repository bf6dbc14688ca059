"""Connecting to a TCP server the way s6-tcpclient 2.5.1.3 does: addresses, rounds, deadlines.

Some facts about s6-tcpclient this module reproduces:

* The host ``""`` or ``0`` means [::1, 127.0.0.1], whatever the family options say. Otherwise the
  host is first scanned as a list of literal addresses (separated by ``,;`` space, tab, CR, LF,
  and ``:`` for IPv4-only lists): IPv4 only by default, IPv6 only with ``-6``, both with
  ``-4 -6``. With name resolution on (``-h``) a host that is no such list is resolved (A, AAAA, or
  both: AAAA then A); at most 16 addresses are kept.
* Connection rounds (``-T a+b``, default 2+58): every address is tried for *a* seconds; those that
  failed are tried again for *b* seconds in a second round (b = 0: no second round). With a single
  address the two are added up into one try. The overall deadline (``-t``) caps every try. Each
  try uses a fresh non-blocking socket of the address's family (of ``-i``'s family when a local
  address is given), bound to ``-i``/``-p`` when given.
* A failure that is not retried prints ``warning: unable to connect to IP port PORT: REASON``
  (whatever the verbosity).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time

from ..base.durations import poll_ms
from ..base.errors import SystemFailure
from .inet import family_of, ip_fmt, scan_list, to_sockaddr

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["MAX_ADDRESSES", "LOCAL_ADDRESSES", "literal_addresses", "connect"]

MAX_ADDRESSES = 16
LOCAL_ADDRESSES = (b"\0" * 15 + b"\1", b"\x7f\0\0\1")


def literal_addresses(host: str, ip4: bool, ip6: bool) -> List[bytes]:
    """The literal address list *host* starts with, for the families asked (module docstring)."""
    if ip6 and not ip4:
        return scan_list(host, socket.AF_INET6, MAX_ADDRESSES)
    if not ip6:
        return scan_list(host, socket.AF_INET, MAX_ADDRESSES)
    return scan_list(host, None, MAX_ADDRESSES)


def _connect_once(ip: bytes, port: int, local_ip: Optional[bytes], local_port: int,
                  deadline: float) -> socket.socket:
    """One try: a connected socket, or OSError (ETIMEDOUT at *deadline*). SystemFailure when the
    socket cannot be created or bound (s6 dies then)."""
    family = family_of(local_ip if local_ip is not None else ip)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise SystemFailure("create socket", e.errno or errno.EIO) from None
    try:
        sock.setblocking(False)
        if local_ip is not None or local_port:
            bind_ip = local_ip if local_ip is not None else bytes(4 if family == socket.AF_INET else 16)
            try:
                sock.bind(to_sockaddr(bind_ip, local_port)[1])
            except OSError as e:
                raise SystemFailure("bind socket", e.errno or errno.EIO) from None
        if family_of(ip) != family:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        err = sock.connect_ex(to_sockaddr(ip, port)[1])
        if err == errno.EINPROGRESS:
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            left = max(0.0, deadline - time.monotonic())
            if not poller.poll(poll_ms(left)):
                raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(True)
    return sock


def connect(addresses: Sequence[bytes], port: int, *, rounds: Tuple[int, int] = (2, 58),
            deadline: Optional[float] = None, local_ip: Optional[bytes] = None, local_port: int = 0,
            warn: Callable[[str], None] = lambda text: None) -> Optional[socket.socket]:
    """Connect to the first of *addresses* that answers, in s6-tcpclient's rounds.

    *rounds* is ``-T`` (seconds), *deadline* the overall ``time.monotonic()`` deadline (None:
    none). *warn* gets each ``unable to connect to IP port PORT: REASON`` text. Returns the
    connected, blocking socket, or None when every try failed. Raises :class:`SystemFailure`
    (``create socket``, ``bind socket``).
    """
    first, second = rounds
    if len(addresses) == 1:
        first, second = first + second, 0
    retry: List[bytes] = []
    for index, (timeout, candidates) in enumerate(((first, list(addresses)), (second, retry))):
        for ip in candidates:
            limit = time.monotonic() + timeout
            if deadline is not None:
                limit = min(limit, deadline)
            try:
                return _connect_once(ip, port, local_ip, local_port, limit)
            except OSError as e:
                if index == 0 and second:
                    retry.append(ip)
                else:
                    reason = os.strerror(e.errno or errno.EIO)
                    warn(f"unable to connect to {ip_fmt(ip)} port {port}: {reason}")
    return None
