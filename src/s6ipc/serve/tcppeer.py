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
  address). CPython's IPv4 text is already skalibs' (``inet_ntop``), so it is used as is, and
  the text of an address is its key (one text per address in both families). The address bytes
  stay on the peer (:attr:`TcpPeer.ip`): the access fast path decides on them, and nothing parses
  the text back.
* Log lines: 4d names a peer ``IP:PORT``, 6d ``IP port PORT``; both end lines say ``ip IP``.
  The ``-1`` line is the local port and a newline (``getsockname``; a bare newline if that
  fails), written after the ``starting`` lines by 4d and before them by 6d.
* A dual-stack IPv6 socket (``IPV6_V6ONLY`` 0, systemd's ``ListenStream=PORT``) takes IPv4
  clients as mapped addresses: serve it with 6d (or ``tcpserverd``); s6's 4d would report
  ``0.0.0.0`` for every client, which is why the loop's start-up check refuses a socket of the
  other family.
"""

from __future__ import annotations

import _socket

from ..sockets.inet import ip6_fmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple

__all__ = ["TcpPeer", "TcpPeers"]

_CACHE_MAX = 4096
_inet_aton = _socket.inet_aton  # CPython's IPv4 text is always dotted quad: inet_aton reads it exactly
_inet_pton = _socket.inet_pton


class TcpPeer:
    """One TCP client: its address as text (the key) and as bytes (:attr:`ip`, what the access fast
    path decides on), and its port, named the 4d or the 6d way."""

    __slots__ = ("key", "ip", "port", "v6")

    def __init__(self, ip: str, port: int, v6: bool, packed: Optional[bytes] = None) -> None:
        self.key = ip
        #: The address in network order: 4 bytes (4d), 16 (6d; a v4-mapped client stays 16 bytes).
        self.ip = packed if packed is not None else _socket.inet_pton(
            _socket.AF_INET6 if v6 else _socket.AF_INET, ip)
        self.port = port
        self.v6 = v6

    def fill(self, env: Dict[str, str], count: int, address: object) -> None:
        env["PROTO"] = "TCP"
        env["TCPREMOTEIP"] = self.key
        env["TCPREMOTEPORT"] = str(self.port)
        env["TCPCONNNUM"] = str(count)

    def _who(self) -> str:
        return f"{self.key} port {self.port}" if self.v6 else f"{self.key}:{self.port}"

    def allow_line(self, pid: int, count: int, limit: int) -> str:
        return f"allow {self._who()} pid {pid} count {count}/{limit}"

    def deny_line(self, count: int, limit: int) -> str:
        return f"deny {self._who()} count {count}/{limit}: Success"

    def end_name(self) -> str:
        return f"ip {self.key}"

    def to_state(self) -> Any:
        return [self.key, self.port]

    def describe(self) -> Dict[str, Any]:
        return {"ip": self.key, "port": self.port}


class TcpPeers:
    """The identity of s6-tcpserver4d (*family* ``AF_INET``) or s6-tcpserver6d (``AF_INET6``)."""

    variables: Tuple[str, ...] = ("PROTO", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPCONNNUM")
    unset: Tuple[str, ...] = ()

    def __init__(self, family: int) -> None:
        self.family = family
        self.v6 = family == _socket.AF_INET6
        self.ready_first = self.v6
        self._v6_names: Dict[str, Tuple[str, bytes]] = {}

    def identify(self, conn: _socket.socket, address: object) -> TcpPeer:
        host, port = address[0], address[1]  # type: ignore[index]
        if not self.v6:
            return TcpPeer(host, port, False, _inet_aton(host))
        known = self._v6_names.get(host)
        if known is None:
            if len(self._v6_names) >= _CACHE_MAX:
                self._v6_names.clear()
            packed = _inet_pton(_socket.AF_INET6, host.split("%")[0])
            known = self._v6_names[host] = (ip6_fmt(packed), packed)
        return TcpPeer(known[0], port, True, known[1])

    def ready_line(self, fd: int) -> bytes:
        try:
            sock = _socket.socket(self.family, _socket.SOCK_STREAM, 0, fd)
            try:
                port = sock.getsockname()[1]
            finally:
                sock.detach()
        except OSError:
            return b"\n"
        return b"%d\n" % port

    unit = "ip"

    def peer_from_state(self, obj: Any) -> TcpPeer:
        ip, port = obj
        if not isinstance(ip, str) or isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"{obj!r} is not a TCP peer")
        family = _socket.AF_INET6 if self.v6 else _socket.AF_INET
        try:
            _socket.inet_pton(family, ip)
        except OSError:
            raise ValueError(f"{ip!r} is not an address of this server's family") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"{port!r} is not a port")
        return TcpPeer(ip, port, self.v6)
