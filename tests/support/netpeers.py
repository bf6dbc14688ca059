"""Loopback peers for the TCP tests: a fake DNS server, a fake ident server, one-connection harnesses.

Nothing here reaches the network: servers bind 127.x.y.z addresses chosen at random per test (any
127/8 address works on Linux, so concurrent test runs do not collide on ports 53 and 113), and
programs under test get ``DNSCACHEIP`` pointing at them.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

T_A, T_PTR, T_AAAA = 1, 12, 28


def loopback_address(first: int = 53) -> str:
    """A random address in 127.<first>.0.0/16 that nothing is bound to yet (by us)."""
    return f"127.{first}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"


def _wire(name: Union[str, bytes]) -> bytes:
    """*name* in wire form; a bytes name may hold any byte (NUL, invalid UTF-8) but ``.``."""
    raw = name if isinstance(name, bytes) else name.encode()
    out = b""
    for label in raw.rstrip(b".").split(b"."):
        if label:
            out += bytes([len(label)]) + label
    return out + b"\0"


def _read_question(packet: bytes) -> Tuple[str, int, int]:
    pos, labels = 12, []
    while packet[pos]:
        n = packet[pos]
        labels.append(packet[pos + 1 : pos + 1 + n].decode("utf-8", "surrogateescape"))
        pos += 1 + n
    qtype, _ = struct.unpack_from(">HH", packet, pos + 1)
    return ".".join(labels).lower() + ".", qtype, pos + 5


@dataclass
class FakeDns:
    """A DNS server on ``ip`` port 53 (UDP, and TCP for truncated answers), answering from
    :attr:`records`: ``{(name with final dot, qtype): [value…]}`` (PTR: a name, A/AAAA: an
    address text). Missing names get NXDOMAIN; names in :attr:`silent` get no answer; names in
    :attr:`truncate` get a truncated UDP answer (the full one over TCP); :attr:`rcode` forces
    an RCODE for every answer. :attr:`queries` logs (transport, name, qtype)."""

    ip: str = field(default_factory=loopback_address)
    records: Dict[Tuple[str, int], List[Union[str, bytes]]] = field(default_factory=dict)
    silent: Set[str] = field(default_factory=set)
    truncate: Set[str] = field(default_factory=set)
    rcode: Optional[int] = None
    queries: List[Tuple[str, str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.ip, 53))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((self.ip, 53))
        self.tcp.listen(16)
        self._stop = False
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self._threads:
            t.start()

    def add_ptr(self, ip: str, name: Union[str, bytes]) -> None:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
        if len(packed) == 4:
            arpa = ".".join(str(b) for b in reversed(packed)) + ".in-addr.arpa."
        else:
            arpa = ".".join(reversed("".join(f"{b:02x}" for b in packed))) + ".ip6.arpa."
        self.records.setdefault((arpa, T_PTR), []).append(name)

    def answer(self, query: bytes, transport: str) -> Optional[bytes]:
        name, qtype, end = _read_question(query)
        self.queries.append((transport, name, qtype))
        if name in self.silent:
            return None
        values = self.records.get((name, qtype), [])
        known = any(n == name for n, _ in self.records)
        rcode = self.rcode if self.rcode is not None else (0 if known else 3)
        flags = 0x8180 | rcode
        if transport == "udp" and name in self.truncate:
            flags |= 0x0200
            values = []
        answers = b""
        for value in values if rcode == 0 else []:
            if qtype == T_PTR:
                rdata = _wire(value)
            else:
                family = socket.AF_INET6 if qtype == T_AAAA else socket.AF_INET
                rdata = socket.inet_pton(family, os.fsdecode(value))
            answers += struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
        count = len(values) if rcode == 0 else 0
        header = struct.pack(">HHHHHH", struct.unpack_from(">H", query)[0], flags, 1, count, 0, 0)
        return header + query[12:end] + answers

    def _serve_udp(self) -> None:
        while not self._stop:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer(data, "udp")
            except IndexError:
                self.queries.append(("bad", data.hex(), 0))
                continue
            if reply is not None:
                self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                data = b""
                while len(data) < 2 or len(data) < 2 + struct.unpack_from(">H", data)[0]:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if len(data) >= 14:
                    reply = self.answer(data[2:], "tcp")
                    if reply is not None:
                        conn.sendall(struct.pack(">H", len(reply)) + reply)

    def close(self) -> None:
        self._stop = True
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@dataclass
class FakeIdent:
    """An ident server on ``ip`` port 113: *reply* maps the query line (``RP , LP``) to the bytes
    to send (None: close without answering; ``"silent"``: never answer). :attr:`lines` logs the
    raw queries."""

    ip: str
    reply: Callable[[str], Optional[bytes]]
    lines: List[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.ip, 113))
        self.sock.listen(16)
        self._held: List[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(1024)
                if not chunk:
                    break
                data += chunk
            self.lines.append(data)
            answer = self.reply(data.decode().strip())
            if answer == b"silent":
                self._held.append(conn)
                continue
            if answer is not None:
                conn.sendall(answer)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self._held:
            c.close()


class Listener:
    """A Python server on *ip*: each connection gets its peer address written back, then closed."""

    def __init__(self, ip: str, backlog: int = 16, serve: bool = True) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((ip, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        if serve:
            threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(f"peer {peer[0]} {peer[1]}\n".encode())
                except OSError:  # the client went away first
                    pass

    def close(self) -> None:
        self.sock.close()


@dataclass
class Served:
    """What one connection through a program under test gave."""

    returncode: int
    stderr: str
    received: bytes          # what the client read
    client: Tuple[str, int]  # the client's address
    server: Tuple[str, int]  # the listening address


def read_to_eof(sock: socket.socket, timeout: float = 20) -> bytes:
    """Everything *sock* receives until the peer closes (or *timeout* between chunks)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def environ_lines(data: bytes) -> List[str]:
    """``env``'s output (one NAME=value per line) as a list, in order."""
    return [line for line in data.decode("utf-8", "replace").split("\n") if line]


def serve_one(argv: Sequence[str], env: Mapping[str, str], *, family: int = socket.AF_INET,
              listen_ip: str = "127.0.0.1", client_ip: Optional[str] = None, send: bytes = b"",
              tcp_env: bool = True, timeout: float = 20, pass_fds: Sequence[int] = (),
              dual_stack_client: bool = False) -> Served:
    """Accept one loopback connection and run *argv* on it (fds 0 and 1 = the connection) with
    *env* plus, with *tcp_env*, what s6-tcpserverd sets (PROTO, TCPREMOTEIP, TCPREMOTEPORT,
    TCPCONNNUM=1, IPv6 addresses in skalibs' form). The client sends *send*, shuts down its
    writing side and reads until EOF. With *dual_stack_client*, the listener is an IPv6 socket
    with IPV6_V6ONLY off and the client an IPv4 one connecting to 127.0.0.1 (a mapped peer)."""
    from s6ipc.sockets.inet import from_sockaddr, ip_fmt

    listener = socket.socket(family, socket.SOCK_STREAM)
    if dual_stack_client:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((listen_ip, 0))
    listener.listen(1)
    client = socket.socket(socket.AF_INET if dual_stack_client else family, socket.SOCK_STREAM)
    if client_ip is not None:
        client.bind((client_ip, 0))
    target = ("127.0.0.1", listener.getsockname()[1]) if dual_stack_client else listener.getsockname()[:2]
    client.connect(target)
    conn, peer = listener.accept()
    full = dict(env)
    if tcp_env:
        ip, port = from_sockaddr(peer, family)
        full.update({"PROTO": "TCP", "TCPREMOTEIP": ip_fmt(ip), "TCPREMOTEPORT": str(port),
                     "TCPCONNNUM": "1"})
    try:
        proc = subprocess.Popen(list(argv), stdin=conn, stdout=conn, stderr=subprocess.PIPE, env=full,
                                pass_fds=pass_fds)
    finally:
        conn.close()
    client.settimeout(timeout)
    if send:
        client.sendall(send)
    received = b""
    try:
        client.shutdown(socket.SHUT_WR)
        received = read_to_eof(client, timeout)
    except OSError:
        pass
    _, err = proc.communicate(timeout=timeout)
    served = Served(proc.returncode, err.decode("utf-8", "replace"), received,
                    client.getsockname()[:2], listener.getsockname()[:2])
    client.close()
    listener.close()
    return served
