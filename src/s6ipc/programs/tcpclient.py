"""tcpclient: connect to a TCP server, put the connection on fds 6 and 7, set the TCP variables, exec prog.

s6-tcpclient 2.5.1.3's steps (the address rounds are :mod:`s6ipc.sockets.connect`, names
:mod:`s6ipc.access.dns`, ident :mod:`s6ipc.access.ident`). Its messages without an errno keep skalibs 2.13's
doubled colon (``fatal: : unable to connect to a suitable IP address``).
"""

from __future__ import annotations

import errno
import os
import socket

from ..access import dns, ident
from ..base.errors import BadInput, SystemFailure
from ..base.messages import Reporter
from ..base.options import Command, UsageError, flag, parse_uint, setting
from ..chain.options import CLIENT_VERBOSITY
from ..chain.run import exec_into, modify_environ
from ..sockets.connect import LOCAL_ADDRESSES, MAX_ADDRESSES, connect, literal_addresses
from ..sockets.inet import from_sockaddr, ip46_scan, ip_fmt, parse_port
from ..sockets.unix import move_to_client_fds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional, Tuple

USAGE = ("[ -q | -Q | -v ] [ -4 | -6 ] [ -d | -D ] [ -r | -R ] [ -h | -H ] [ -n | -N ] [ -t timeoutinfo ] "
         "[ -l localname ] [ -T timeoutconn ] [ -i localip ] [ -p localport ] host port prog...")


def _unable(reporter: Reporter, text: str, code: int) -> NoReturn:
    """skalibs 2.13's ``strerr_diefu*x``: ``fatal: : unable to …`` (its doubled colon)."""
    reporter.fatal(f": unable to {text}", code)


def _conn_timeouts(text: str) -> Tuple[int, int]:
    digits = len(text) - len(text.lstrip("0123456789"))
    if not digits:
        raise UsageError("T")
    first = parse_uint(text[:digits]) if digits <= 10 else 0xFFFFFFFF
    if digits == len(text):
        return first, 0
    if text[digits] != "+":
        raise UsageError("T")
    return first, parse_uint(text[digits + 1 :])


def _local_ip(text: str) -> bytes:
    got = ip46_scan(text)
    if got is None:
        raise UsageError("i")
    return got[0]


def _local_port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError:
        raise UsageError("p") from None


COMMAND = Command({
    **CLIENT_VERBOSITY, "4": flag("ip4"), "6": flag("ip6"), "d": flag("nodelay", False), "D": flag("nodelay"),
    "r": flag("ident"), "R": flag("ident", False), "h": flag("remotehost"), "H": flag("remotehost", False),
    "n": flag("qualify"), "N": flag("qualify", False), "t": setting("timeout", parse_uint),
    "l": setting("localname"), "T": setting("rounds", _conn_timeouts), "i": setting("local_ip", _local_ip),
    "p": setting("local_port", _local_port),
}, 3)


class _Options:
    def __init__(self, args: List[str]) -> None:
        self.verbosity = 1
        self.ip4 = self.ip6 = False
        self.nodelay = False
        self.ident = False
        self.remotehost = True
        self.qualify = True
        self.timeout = 0
        self.localname: Optional[str] = None
        self.rounds = (2, 58)
        self.local_ip: Optional[bytes] = None
        self.local_port = 0
        rest = COMMAND.parse(args, self)
        if not self.ip6:
            self.ip4 = True
        self.host, self.port_text, self.prog = rest[0], rest[1], rest[2:]


def _resolve_host(reporter: Reporter, o: _Options, config: dns.Config,
                  deadline: Optional[float]) -> List[bytes]:
    """A/AAAA resolution of a host name (the qualified names in order, the first that answers)."""
    qtypes = ([dns.T_AAAA] if o.ip6 else []) + ([dns.T_A] if o.ip4 else [])
    resolver = dns.Resolver(config)
    status = errno.ENOENT
    answered = False
    for name in dns.qualified(o.host, config, o.qualify):
        answers = resolver.resolve([(name, t) for t in qtypes], deadline)
        found = [ip for a in answers if not a.status for ip in dns.addresses_of(a)]
        if found:
            return found[:MAX_ADDRESSES]
        answered = answered or any(not a.status for a in answers)
        status = next((a.status for a in answers if a.status), status)
    if answered:
        return []
    _unable(reporter, f"resolve {o.host}: {dns.error_text(status)}", 111)


def _addresses(reporter: Reporter, o: _Options, config: dns.Config,
               deadline: Optional[float]) -> List[bytes]:
    if o.host in ("", "0"):
        return list(LOCAL_ADDRESSES)
    found = literal_addresses(o.host, o.ip4, o.ip6)
    if not found:
        if not o.remotehost:
            raise UsageError("host")
        found = _resolve_host(reporter, o, config, deadline)
    if not found:
        raise BadInput(f"no IP address for {o.host}")
    return found


def _names(reporter: Reporter, o: _Options, config: dns.Config, local: bytes, remote: bytes,
           deadline: Optional[float]) -> List[str]:
    """The TCPLOCALHOST/TCPREMOTEHOST modifs from one round of PTR queries."""
    if not any(any(server) for server in config.servers):
        _unable(reporter, f"resolve IP addresses: {dns.error_text(errno.ENETUNREACH)}", 111)
    questions = []
    if o.localname is None:
        questions.append((dns.arpa_name(local), dns.T_PTR))
    if o.remotehost:
        questions.append((dns.arpa_name(remote), dns.T_PTR))
    answers = dns.Resolver(config).resolve(questions, deadline)
    modifs = []
    for var, wanted in (("TCPLOCALHOST", o.localname is None), ("TCPREMOTEHOST", o.remotehost)):
        if wanted:
            name = dns.first_name(answers.pop(0))
            modifs.append(var if name is None else f"{var}={name}")
    return modifs


def _remote_info(reporter: Reporter, o: _Options, remote: Tuple[bytes, int], local: Tuple[bytes, int],
                 deadline: Optional[float]) -> str:
    try:
        return "TCPREMOTEINFO=" + ident.query(remote[0], remote[1], local[0], local[1], deadline)
    except ident.IdentRefused as e:
        if o.verbosity:
            reporter.warn(f"ident server replied: {e.text}")
    except OSError as e:
        if o.verbosity:
            reporter.warn(f"unable to s6net_ident_client: {os.strerror(e.errno or errno.EIO)}")
    return "TCPREMOTEINFO="


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o = _Options(args)
    try:
        port = parse_port(o.port_text)
    except ValueError:
        raise BadInput(f"invalid port number: {o.port_text}") from None
    deadline = dns.deadline_after(o.timeout * 1000)
    config = dns.load_config()  # always, as s6-tcpclient 2.5 does (an unreadable resolv.conf: 111)
    addresses = _addresses(reporter, o, config, deadline)
    sock = connect(addresses, port, rounds=o.rounds, deadline=deadline, local_ip=o.local_ip,
                   local_port=o.local_port, warn=reporter.warn)
    if sock is None:
        _unable(reporter, "connect to a suitable IP address", 111)
    if o.nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        local = from_sockaddr(sock.getsockname(), sock.family)
    except OSError as e:
        raise SystemFailure("get local address and port", e.errno or errno.EIO) from None
    try:
        remote = from_sockaddr(sock.getpeername(), sock.family)
    except OSError as e:
        raise SystemFailure("get remote address and port", e.errno or errno.EIO) from None
    if o.verbosity >= 2:
        reporter.info(f"connected to {ip_fmt(remote[0])} port {remote[1]}")
    modifs = ["PROTO=TCP", f"TCPREMOTEIP={ip_fmt(remote[0])}", f"TCPREMOTEPORT={remote[1]}",
              f"TCPLOCALIP={ip_fmt(local[0])}", f"TCPLOCALPORT={local[1]}"]
    if o.localname is not None:
        modifs.append(f"TCPLOCALHOST={o.localname}")
    if o.remotehost or o.localname is None:
        modifs += _names(reporter, o, config, local[0], remote[0], deadline)
    if o.ident:
        modifs.append(_remote_info(reporter, o, remote, local, deadline))
    move_to_client_fds(sock)
    modify_environ(modifs)
    exec_into(reporter, o.prog)
