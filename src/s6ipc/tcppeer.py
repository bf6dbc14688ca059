"""TCP peers for the server loop: s6-tcpserver4d's and s6-tcpserver6d's identity of a client.

Some facts about TCP listeners and s6-networking 2.5.1.3 this module relies on (Linux):

* The peer is its IP address; the port is not part of it: ``-C`` counts live connections per
  address (4 bytes, or 16 for IPv6 — an IPv4-mapped ``::ffff:a.b.c.d`` is its own 16-byte
  address, not the IPv4 one).
* Each child gets ``PROTO=TCP``, ``TCPREMOTEIP``, ``TCPREMOTEPORT``, ``TCPCONNNUM`` (connections
  from this address, this one included), in that order, with skalibs' ``env_merge`` placement;
  nothing else (``TCPLOCALIP``/``TCPLOCALPORT`` are tcpserver-access's).
* Addresses print as skalibs does: dotted decimal, and RFC 5952 IPv6 **without** a dotted quad
  (``::ffff:7f00:1``; CPython's ``accept`` gives ``::ffff:127.0.0.1``: converted here, once per
  address). CPython's IPv4 text is already skalibs' (``inet_ntop``), so it is used as is.
* Log lines: 4d names a peer ``IP:PORT``, 6d ``IP port PORT``; both end lines say ``ip IP``.
  The ``-1`` line is the local port and a newline (``getsockname``), written after the
  ``starting`` lines by 4d and before them by 6d.
* A dual-stack IPv6 socket (``IPV6_V6ONLY`` 0, systemd's ``ListenStream=PORT``) takes IPv4
  clients as mapped addresses: serve it with 6d (or ``tcpserverd``); s6's 4d would report
  ``0.0.0.0`` for every client, which is why ours refuses a socket of the other family.
"""

from __future__ import annotations

import _socket
import socket
from typing import Dict, Hashable, Optional, Tuple

from .errors import BadInput
from .inet import ip6_fmt
from .peers import Peer, PeerLog
from .sockets import check_socket, socket_kind

_FAMILY_NAMES: Dict[int, str] = {socket.AF_INET: "an IPv4", socket.AF_INET6: "an IPv6"}
_CACHE_MAX = 4096


def _kind_name(family: int) -> str:
    if family == socket.AF_UNIX:
        return "a Unix domain socket"
    return f"{_FAMILY_NAMES[family]} socket" if family in _FAMILY_NAMES else f"a family {family} socket"


class TcpPeerIdentity:
    """The identity of s6-tcpserver4d (*family* ``AF_INET``) or s6-tcpserver6d (``AF_INET6``).

    With *family* None (``tcpserverd``) the listening socket decides at :meth:`check_listener`:
    an IPv4 socket is served as 4d does, an IPv6 one as 6d does.
    """

    variables: Tuple[str, ...] = ("PROTO", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPCONNNUM")
    removed: Tuple[str, ...] = ()

    def __init__(self, family: Optional[int] = None) -> None:
        self.wanted = family
        self.family: int = family if family is not None else socket.AF_INET
        self.ready_first = self.family == socket.AF_INET6
        self._v6_names: Dict[str, str] = {}

    def check_listener(self, fd: int) -> None:
        """fd 0 must be a stream socket of this identity's family (BadInput 100 / 111)."""
        check_socket(fd)
        family, kind, _ = socket_kind(fd)  # not listening: poll says POLLHUP, as with s6
        if self.wanted is None and family in _FAMILY_NAMES:
            self.family = family
            self.ready_first = family == socket.AF_INET6
        if family != self.family:
            wanted = "an IP socket" if self.wanted is None else f"{_FAMILY_NAMES[self.family]} socket"
            hint = " (use tcpserver6d or tcpserverd)" if family == socket.AF_INET6 else ""
            raise BadInput(f"stdin is not {wanted} but {_kind_name(family)}{hint}", 111)
        if kind != socket.SOCK_STREAM:
            raise BadInput("stdin is not a stream socket", 111)

    def ready_line(self, fd: int) -> bytes:
        """The local port in decimal and a newline (s6: just the newline if getsockname fails)."""
        try:
            with socket.socket(self.family, socket.SOCK_STREAM, 0, fd) as sock:
                try:
                    port = sock.getsockname()[1]
                finally:
                    sock.detach()
        except OSError:
            return b"\n"
        return b"%d\n" % port

    def _text(self, address: object) -> str:
        host = address[0]  # type: ignore[index]
        if self.family == socket.AF_INET:
            return str(host)
        name = self._v6_names.get(host)
        if name is None:
            if len(self._v6_names) >= _CACHE_MAX:
                self._v6_names.clear()
            name = self._v6_names[host] = ip6_fmt(socket.inet_pton(socket.AF_INET6, host.split("%")[0]))
        return name

    def identify(self, conn: _socket.socket, address: object, log: PeerLog) -> Optional[Peer]:
        ip = self._text(address)
        port = address[1]  # type: ignore[index]
        name = f"{ip}:{port}" if self.family == socket.AF_INET else f"{ip} port {port}"
        return ip, name, port

    def fill(self, env: Dict[str, str], peer: Peer, address: object, num: int) -> None:
        env["PROTO"] = "TCP"
        env["TCPREMOTEIP"] = str(peer[0])
        env["TCPREMOTEPORT"] = str(peer[2])
        env["TCPCONNNUM"] = str(num)

    def count(self, num: int) -> str:
        return str(num)

    def end_name(self, key: Hashable) -> str:
        return f"ip {key}"
