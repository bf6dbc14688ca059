"""TCP (and UDP) listening sockets the way s6-networking's binders make them.

Some facts about IP sockets on Linux this module relies on:

* ``SO_REUSEADDR`` on a listener lets a new ``bind`` succeed while the port still has TIME_WAIT
  entries (left when the *server* side closed first, which is every connection a handler ends);
  it never lets two live listeners share a port (EADDRINUSE either way).
* An AF_INET6 socket takes IPv4 clients as ``::ffff:a.b.c.d`` unless ``IPV6_V6ONLY`` is set;
  skalibs sets it on every IPv6 socket it creates, so s6's binders never make dual-stack sockets
  (systemd's ``ListenStream=PORT`` does: see :mod:`s6ipc.serve.tcppeer`).
* ``listen(fd, n)``: the kernel caps *n* at ``net.core.somaxconn``. Without ``listen`` a TCP
  socket is bound but refuses connections; ``poll`` reports POLLHUP on it.
* Binding a port below ``net.ipv4.ip_unprivileged_port_start`` (1024) needs CAP_NET_BIND_SERVICE:
  EACCES otherwise.
* Accepted sockets are blocking whatever the listener's O_NONBLOCK, and inherit SO_REUSEADDR
  and IPV6_V6ONLY from it.
"""

from __future__ import annotations

import errno
import socket

from ..base.errors import SystemFailure
from .inet import to_sockaddr

__all__ = ["bind_tcp_socket"]

_INT_MAX = 0x7FFFFFFF


def bind_tcp_socket(ip: bytes, port: int, display: str, *, reuse: bool = True,
                    backlog: int = socket.SOMAXCONN, datagram: bool = False,
                    blocking: bool = False) -> int:
    """Create, bind and (if *backlog* is not 0) listen on an IP socket; return its fd.

    s6-tcpserver4/6-socketbinder's sequence: a TCP socket (UDP with *datagram*) of the family of
    *ip* (4 or 16 bytes), non-blocking unless *blocking*, ``IPV6_V6ONLY`` on IPv6,
    ``SO_REUSEADDR`` with *reuse* (its failure ignored), ``bind`` to *ip*:*port* with scope id
    and flow info 0, then ``listen``. The fd is close-on-exec. *display* is how the address
    appears in messages (s6 shows the arguments as given).

    Raises :class:`SystemFailure` ("create socket", "bind to DISPLAY ", "listen to DISPLAY ":
    s6's messages have a space before the colon).
    """
    family, address = to_sockaddr(ip, port)
    kind = int(socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM)
    if not blocking:
        kind |= socket.SOCK_NONBLOCK
    try:
        sock = socket.socket(family, kind | socket.SOCK_CLOEXEC)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except OSError as e:
        raise SystemFailure("create socket", e.errno or errno.EINVAL) from None
    if reuse:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except OSError:
            pass
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise SystemFailure(f"bind to {display} ", e.errno or errno.EINVAL) from None
    if backlog:
        try:
            sock.listen(min(backlog, _INT_MAX))
        except OSError as e:
            sock.close()
            raise SystemFailure(f"listen to {display} ", e.errno or errno.EINVAL) from None
    return sock.detach()
