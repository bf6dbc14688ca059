"""tcpserver-access as a library: from rules, environment and connection to a final command or a refusal.

The ``tcpserver-access`` program (:func:`evaluate`, which scans the client out of the environment)
and the in-process fast path of a TCP daemon (:class:`FastTcpAccess`, whose client is the daemon's
peer) both run :func:`decide`. Some facts about s6-tcpserver-access 2.5.1.3
it follows, in the program's order:

1. ``PROTO`` must be set (any value, P); ``${P}REMOTEIP`` must scan as an address (prefix parse,
   IPv6 first: an IPv4-mapped address is an IPv6 one) and ``${P}REMOTEPORT`` be a whole 16-bit
   decimal; else exit 100 (``PROTO not set``, ``TCPREMOTEIP not set``, ``invalid $TCPREMOTEIP``…).
2. ``-D``: TCP_NODELAY on fd 1 (a failure is a warning at verbosity >= 1).
3. The banner (``-B``, concatenated, 511 bytes at most) is written to fd 1 **before** any check,
   within the deadline (``-t`` ms, one deadline for banner, ident and DNS); failure: 111.
4. IP rules (``ip4/``/``ip6/`` keys, see :mod:`s6ipc.access.rules`). No ruleset: allowed (warning at
   verbosity 2). DENY: exit 1; NOTFOUND: exit 1 with ``-H``, else the reversedns rules decide
   later. Refusals log ``deny pid P ip IP: REASON`` at verbosity 2. A rules error: 111
   ``unable to check fs ruleset for IP in DIR`` (``cdb``).
5. ``getsockname`` of fd 0 gives ``${P}LOCALIP`` and ``${P}LOCALPORT`` (111 ``socket_local``).
6. ``-r``: ident (:mod:`s6ipc.access.ident`): ``${P}REMOTEINFO=id``, or unset. A failure is fatal with
   ``-w`` (the default): exit 2 (the server refused or closed), 99 (timeout), 111 (other), with
   ``fatal: reject pid P ip IP`` at verbosity 2 and warnings at verbosity 3; with ``-W`` it only
   unsets. Without ``-r``, ``${P}REMOTEINFO`` is unset.
7. ``-H``: ``${P}LOCALHOST`` = the ``-l`` name or unset, ``${P}REMOTEHOST`` unset. ``-h`` (the
   default): one round of PTR queries (:mod:`s6ipc.access.dns`; the local one only without ``-l``);
   a name keeps its final dot; a failed query leaves the variable unset (an empty answer sets
   ``${P}LOCALHOST`` empty); ``-p`` then asks A/AAAA for the remote name and unsets it unless
   the client's address is among the answers (a failed query is fatal with ``-w``: 99 on timeout,
   else 111). If the IP rules said NOTFOUND, the reversedns rules decide now: no name or
   NOTFOUND or DENY is exit 1.
8. Allowed: ``allow pid P ip IP`` at verbosity >= 1. Environment: the rule's modifications
   first, then those of steps 5-7 (so rules cannot override the TCPLOCAL*/TCPREMOTEHOST/INFO
   variables). A rule's exec string runs as ``/usr/lib/execline/bin/execlineb -c STRING``
   (``-c``, not ipcserver-access's ``-Pc``); else prog.

DNS resolution counts as a failure of the whole round — fatal with ``-w`` (111, after the
warning ``unable to init DNS`` at verbosity 2) — when the resolver cannot be initialised or no
configured server has a usable address (``DNSCACHEIP=0.0.0.0``).

The fast path (:class:`FastTcpAccess`) decides in the daemon only what needs no network exchange
and writes nothing to the client: options with ``-H``, ``-R`` and no ``-B``. Everything else —
DNS, ident, banners (a fallback after a banner would send it twice), odd environments, rules errors,
programs that cannot be executed — is handed to the real program for that connection, which does
and reports exactly what it always does. It takes the client's address and port from the peer
the daemon identified (:class:`TcpClient`: the bytes it printed as ``TCPREMOTEIP``), never scanning
them back out of the environment. Log lines and pids: :mod:`s6ipc.access.fastpath`.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import socket

from ..base.durations import poll_ms
from ..base.envdir import merge_env
from ..base.errors import BadInput, SystemFailure
from ..base.execution import Spawner
from ..base.log import Log
from ..base.options import Command, Option, flag, parse_uint, setting
from ..base.typeshim import Protocol, dataclass, field
from ..sockets.inet import from_sockaddr, ip46_scan, ip_fmt, parse_port
from . import dns, ident
from .fastpath import RULES_OPTIONS, FastPath, LogLine, Outcome, RulesSource
from .rules import EXECLINEB, NOT_FOUND, Decision, Verdict, check_ip, check_reversedns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["MAX_BANNER", "USAGE", "Connection", "FastTcpAccess", "FdConnection", "Network",
           "SocketConnection", "TcpAccessOptions", "TcpClient", "client_from_env", "decide", "evaluate",
           "parse_options"]

USAGE = ("[ -v verbosity ] [ -W | -w ] [ -D | -d ] [ -H | -h ] [ -R | -r ] [ -P | -p ] [ -l localname ] "
         "[ -B banner ] [ -t timeout ] [ -i rulesdir | -x rulesfile ] prog...")
#: skalibs' buffer_1small holds 512 bytes, one of which always stays free.
MAX_BANNER = 511


@dataclass(frozen=True)
class TcpAccessOptions:
    """s6-tcpserver-access's command line, parsed."""

    prog: Tuple[str, ...]
    verbosity: int = 1
    fatal: bool = True         # -w / -W
    nodelay: bool = False      # -D / -d
    dns: bool = True           # -h / -H
    ident: bool = False        # -r / -R
    paranoid: bool = False     # -p / -P
    localname: Optional[str] = None
    banner: bytes = b""
    timeout_ms: int = 0
    rules_kind: Optional[str] = None  # "fs" (-i), "cdb" (-x) or None
    rules_path: str = ""


def _banner(fields: Dict[str, Any], text: str) -> None:
    """``-B banner``: each one is added to the banner, which may not grow past :data:`MAX_BANNER`."""
    banner = fields.get("banner", b"") + os.fsencode(text)
    if len(banner) > MAX_BANNER:
        raise BadInput("banner too long")
    fields["banner"] = banner


_COMMAND = Command({
    "W": flag("fatal", False), "w": flag("fatal", True), "D": flag("nodelay", True),
    "d": flag("nodelay", False), "H": flag("dns", False), "h": flag("dns", True), "R": flag("ident", False),
    "r": flag("ident", True), "P": flag("paranoid", False), "p": flag("paranoid", True),
    "v": setting("verbosity", parse_uint),
    "l": setting("localname"), "B": Option(True, _banner), "t": setting("timeout_ms", parse_uint),
    **RULES_OPTIONS,
}, program=True)


def parse_options(args: Sequence[str]) -> TcpAccessOptions:
    """Parse the arguments after the program name. Raises :class:`UsageError`, or
    :class:`BadInput` (exit 100) ``banner too long``."""
    fields: Dict[str, Any] = {}
    rest = _COMMAND.parse(list(args), fields)
    return TcpAccessOptions(tuple(rest), **fields)


class Connection(Protocol):
    """The connection as tcpserver-access sees it (fd 0 and fd 1 of the program)."""

    def set_nodelay(self) -> None:
        """TCP_NODELAY on the writing end. Raises OSError."""

    def write(self, data: bytes, deadline: Optional[float]) -> None:
        """Write all of *data* before *deadline*. Raises OSError (ETIMEDOUT at the deadline)."""

    def local_address(self) -> Tuple[bytes, int]:
        """``getsockname`` of the reading end: (address bytes, port). Raises OSError."""


class SocketConnection:
    """A :class:`Connection` over a connected socket object (the fast path's)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    def set_nodelay(self) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes, deadline: Optional[float]) -> None:
        # a fresh connection's send buffer always holds a banner (511 bytes at most)
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view, socket.MSG_DONTWAIT):]

    def local_address(self) -> Tuple[bytes, int]:
        return _ip_address(self.sock)


class FdConnection:
    """A :class:`Connection` over fds 0 and 1 (the program's)."""

    def set_nodelay(self) -> None:
        with socket.socket(fileno=os.dup(1)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes, deadline: Optional[float]) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        while view:
            left = dns.remaining(deadline)
            if not poller.poll(poll_ms(left)):
                raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            view = view[os.write(1, view):]

    def local_address(self) -> Tuple[bytes, int]:
        with socket.socket(fileno=os.dup(0)) as s:
            return _ip_address(s)


def _ip_address(sock: _socket.socket) -> Tuple[bytes, int]:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
    return from_sockaddr(sock.getsockname(), sock.family)


@dataclass
class Network:
    """How tcpserver-access reaches the network (replaceable for tests and embedders)."""

    resolver: Callable[[dns.Config], dns.Resolver] = dns.Resolver
    ident_query: Callable[[bytes, int, bytes, int, Optional[float]], str] = ident.query
    dns_config: Callable[[Mapping[str, str]], dns.Config] = dns.load_config


class _Reject(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class TcpClient(Protocol):
    """What tcpserver-access's decision needs of a client: its address and port. A TCP daemon's
    peers (:class:`s6ipc.serve.tcppeer.TcpPeer`) are such clients."""

    @property
    def ip(self) -> bytes:
        """The address: 4 bytes, or 16 (an IPv4-mapped client of a v6 socket stays 16 bytes)."""
        ...

    @property
    def port(self) -> int: ...

    @property
    def key(self) -> str:
        """The address as skalibs prints it (``ip_fmt(ip)``: the ``TCPREMOTEIP`` the daemon set)."""
        ...


def client_from_env(env: Mapping[str, str]) -> Tuple[str, bytes, int]:
    """``PROTO``, ``${PROTO}REMOTEIP`` (scanned) and ``${PROTO}REMOTEPORT`` of *env*, as
    s6-tcpserver-access reads them. Raises :class:`BadInput` (exit 100)."""
    proto = env.get("PROTO")
    if proto is None:
        raise BadInput("PROTO not set")
    name = proto + "REMOTEIP"
    value = env.get(name)
    if value is None:
        raise BadInput(f"{name} not set")
    got = ip46_scan(value)
    if got is None:
        raise BadInput(f"invalid ${name}")
    name = proto + "REMOTEPORT"
    value = env.get(name)
    if value is None:
        raise BadInput(f"{name} not set")
    try:
        return proto, got[0], parse_port(value)
    except ValueError:
        raise BadInput(f"invalid ${name}") from None


@dataclass(eq=False)
class _Check:
    """One connection's evaluation: the state the steps share."""

    o: TcpAccessOptions
    proto: str
    ip: bytes
    port: int
    ip_text: str
    env: Mapping[str, str]
    conn: Connection
    source: RulesSource
    net: Network
    lines: List[LogLine] = field(default_factory=list)
    modifs: List[str] = field(default_factory=list)
    deadline: Optional[float] = None

    def line(self, level: int, kind: str, text: str) -> None:
        if self.o.verbosity >= level:
            self.lines.append(LogLine(kind, text))

    def deny(self, decision: Decision) -> Outcome:
        self.line(2, "info", f"deny pid {{pid}} ip {self.ip_text}: {os.strerror(decision.errno)}")
        return Outcome(self.lines, False, decision=decision)

    def rules_error(self, what: str, e: SystemFailure) -> Outcome:
        error = SystemFailure(f"check {self.o.rules_kind} ruleset for {what} in {self.o.rules_path}", e.errno)
        return Outcome(self.lines, False, error=error)

    def reject(self, code: int) -> Outcome:
        self.line(2, "fatal", f"reject pid {{pid}} ip {self.ip_text}")
        return Outcome(self.lines, False, exit_code=code)

    def run(self) -> Outcome:
        proto = self.proto
        if self.o.nodelay:
            try:
                self.conn.set_nodelay()
            except OSError as e:
                self.line(1, "warning", f"unable to socket_tcpnodelay: {os.strerror(e.errno or errno.EIO)}")
        self.deadline = dns.deadline_after(self.o.timeout_ms)
        if self.o.banner:
            try:
                self.conn.write(self.o.banner, self.deadline)
            except OSError as e:
                return Outcome(self.lines, False, error=SystemFailure("write banner", e.errno or errno.EIO))
        try:
            rules = self.source.get()
        except SystemFailure as e:
            return Outcome(self.lines, False, error=e)
        if rules is None:
            self.line(2, "warning", "invoked without a ruleset!")
            decision = Decision(Verdict.ALLOW)
        else:
            try:
                decision = check_ip(rules, self.ip)
            except SystemFailure as e:
                return self.rules_error("IP", e)
        if decision.verdict is Verdict.DENY or (decision.verdict is Verdict.NOTFOUND and not self.o.dns):
            return self.deny(decision)
        try:
            local_ip, local_port = self.conn.local_address()
        except (OSError, ValueError) as e:
            code = e.errno if isinstance(e, OSError) and e.errno else errno.EAFNOSUPPORT
            return Outcome(self.lines, False, error=SystemFailure("socket_local", code))
        p = proto
        self.modifs += [f"{p}LOCALIP={ip_fmt(local_ip)}", f"{p}LOCALPORT={local_port}"]
        try:
            self.remote_info(local_ip, local_port)
            if not self.o.dns:
                self.modifs.append(f"{p}LOCALHOST" if self.o.localname is None
                                   else f"{p}LOCALHOST={self.o.localname}")
                self.modifs.append(f"{p}REMOTEHOST")
            else:
                name = self.names(local_ip)
                if decision.verdict is Verdict.NOTFOUND:
                    if name and rules is not None:
                        try:
                            decision = check_reversedns(rules, name)
                        except SystemFailure as e:
                            return self.rules_error("reverse DNS", e)
                    else:
                        decision = NOT_FOUND
                    if not decision.allowed:
                        return self.deny(decision)
        except _Reject as r:
            return self.reject(r.code)
        if self.o.verbosity >= 1:
            self.line(1, "info", f"allow pid {{pid}} ip {self.ip_text}")
        exec_string = decision.exec_string()
        argv = list(self.o.prog) if exec_string is None else [EXECLINEB, "-c", os.fsdecode(exec_string)]
        modifs = decision.modif_strings() + self.modifs
        return Outcome(self.lines, True, argv, merge_env(self.env, modifs), self.env, decision=decision)

    def remote_info(self, local_ip: bytes, local_port: int) -> None:
        name = self.proto + "REMOTEINFO"
        if not self.o.ident:
            self.modifs.append(name)
            return
        try:
            info: Optional[str] = self.net.ident_query(self.ip, self.port, local_ip, local_port,
                                                       self.deadline)
        except ident.IdentRefused as e:
            self.line(3, "warning", f"ident server replied: {e.text}")
            if self.o.fatal:
                raise _Reject(2) from None
            info = None
        except OSError as e:
            code = e.errno or errno.EIO
            self.line(3, "warning", f"unable to s6net_ident_client: {os.strerror(code)}")
            if self.o.fatal:
                raise _Reject(99 if code == errno.ETIMEDOUT else 111) from None
            info = None
        self.modifs.append(name if info is None else f"{name}={info}")

    def names(self, local_ip: bytes) -> Optional[str]:
        """The DNS step: sets the LOCALHOST/REMOTEHOST modifs, returns the remote name (or None)."""
        local_var, remote_var = self.proto + "LOCALHOST", self.proto + "REMOTEHOST"
        if self.o.localname is not None:
            self.modifs.append(f"{local_var}={self.o.localname}")
        try:
            config = self.net.dns_config(self.env)
            if not any(any(server) for server in config.servers):
                raise SystemFailure("init DNS", errno.ENETUNREACH)
        except SystemFailure as e:
            self.line(2, "warning", str(e))
            if self.o.fatal:
                raise _Reject(111) from None
            self.modifs.append(remote_var)
            return None
        resolver = self.net.resolver(config)
        questions = [(dns.arpa_name(self.ip), dns.T_PTR)]
        if self.o.localname is None:
            questions.insert(0, (dns.arpa_name(local_ip), dns.T_PTR))
        answers = resolver.resolve(questions, self.deadline)
        if self.o.localname is None:
            local_name = dns.first_name(answers[0])
            self.modifs.append(local_var if local_name is None else f"{local_var}={local_name}")
        name = dns.first_name(answers[-1])
        if name and self.o.paranoid:
            qtype = dns.T_AAAA if len(self.ip) == 16 else dns.T_A
            check = resolver.resolve([(name, qtype)], self.deadline)[0]
            if check.status or not check.records:
                code = check.status or errno.ENOENT
                self.line(3, "warning", f"unable to (paranoidly) resolve {name}: {dns.error_text(code)}")
                if self.o.fatal:
                    raise _Reject(99 if code == errno.ETIMEDOUT else 111)
                name = None
            elif self.ip not in dns.addresses_of(check):
                name = None
        self.modifs.append(f"{remote_var}={name}" if name else remote_var)
        return name or None


def decide(options: TcpAccessOptions, proto: str, ip: bytes, port: int, env: Mapping[str, str],
           conn: Connection, source: RulesSource, network: Optional[Network] = None,
           ip_text: Optional[str] = None) -> Outcome:
    """Decide for the client at *ip*, *port* of a connection whose environment is *env* (``PROTO``
    *proto*), from step 2 of the module docstring on.

    The one decision of tcpserver-access, whether the client comes from the environment
    (:func:`evaluate`, the program) or from the daemon's peer (:class:`FastTcpAccess`). *ip_text*
    is *ip* as skalibs prints it (computed when not given). Writes the banner and sets TCP_NODELAY
    through *conn*. Any failure is in the returned :attr:`Outcome.error` (111), and a refusal's
    exit code in :attr:`Outcome.exit_code`.
    """
    text = ip_fmt(ip) if ip_text is None else ip_text
    return _Check(options, proto, ip, port, text, env, conn, source, network or Network()).run()


def evaluate(options: TcpAccessOptions, env: Mapping[str, str], conn: Connection, source: RulesSource,
             network: Optional[Network] = None) -> Outcome:
    """Decide for one connection whose tcpserver-access environment is *env* (module docstring):
    the client is scanned out of it (:func:`client_from_env`), then :func:`decide`.

    Raises :class:`BadInput` (exit 100) for the environment checks; see :func:`decide` for the rest.
    """
    proto, ip, port = client_from_env(env)
    return decide(options, proto, ip, port, env, conn, source, network)


class FastTcpAccess(FastPath[TcpClient]):
    """A TCP daemon's per-connection policy doing tcpserver-access's work in-process.

    A policy for :class:`s6ipc.serve.loop.Server` whose identity is
    :class:`s6ipc.serve.tcppeer.TcpPeers`: call it with the peer (a :class:`TcpClient`), the
    environment prepared for the child (``PROTO=TCP``, ``TCPREMOTEIP``, ``TCPREMOTEPORT``,
    ``TCPCONNNUM``…) and the accepted socket; it returns the spawner and the environment to spawn,
    or None when the connection is refused (then close it). Options that need the network (``-h``,
    ``-r``) or write to the client (``-B``) make every connection go to *fallback*, the real
    program. Other arguments: see :class:`s6ipc.access.fastpath.FastPath`.
    """

    def __init__(self, options: TcpAccessOptions, log: Log, fallback: Spawner,
                 standin: Optional[Spawner] = None, path_env: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(options, log, fallback, standin, path_env)
        self.tcp_options = options
        #: True when connections are decided here; False: they all go to the program.
        self.in_process = not options.dns and not options.ident and not options.banner

    def outcome(self, peer: TcpClient, env: Dict[str, str], conn: object) -> Optional[Outcome]:
        if not self.in_process or not isinstance(conn, _socket.socket):
            return None
        outcome = decide(self.tcp_options, "TCP", peer.ip, peer.port, env, SocketConnection(conn),
                         self.source, ip_text=peer.key)
        if not outcome.allowed and outcome.error is None and outcome.exit_code != 1:
            return None
        return outcome
