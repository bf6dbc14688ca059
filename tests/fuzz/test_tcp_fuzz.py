"""Random input to the TCP access and client parsers: an answer or one of the documented errors,
never anything else (a traceback in a program is a defect)."""

from __future__ import annotations

import random
import struct

from s6ipc.access import dns, ident
from s6ipc.access.ipc import RulesSource
from s6ipc.access.tcp import evaluate, parse_options
from s6ipc.base.errors import BadInput

ALPHABET = "0123456789abcdefABCDEF:.,; \t\r\nxX-+[]%/"


class _NoConnection:
    def set_nodelay(self) -> None:
        raise OSError(88, "not a socket")

    def write(self, data: bytes, deadline: object) -> None:
        raise OSError(88, "not a socket")

    def local_address(self) -> tuple:  # type: ignore[type-arg]
        raise OSError(88, "not a socket")


def _text(rng: random.Random, n: int = 40) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(n)))


def test_access_environment() -> None:
    rng = random.Random(111)
    options = parse_options(["-H", "/bin/true"])
    source = RulesSource(options)
    for _ in range(3000):
        env = {"PROTO": "TCP", "TCPREMOTEIP": _text(rng), "TCPREMOTEPORT": _text(rng, 8)}
        try:
            outcome = evaluate(options, env, _NoConnection(), source)
        except BadInput as e:
            assert str(e) in ("invalid $TCPREMOTEIP", "invalid $TCPREMOTEPORT")
            continue
        assert outcome.error is not None and outcome.error.operation == "socket_local"  # type: ignore[attr-defined]


def test_ident_replies() -> None:
    rng = random.Random(113)
    pieces = ["5", "6", " , ", ",", " : ", ":", "USERID", "ERROR", "NO-USER", "X", "UNIX", "alice", "\r", " "]
    for _ in range(5000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        try:
            got = ident.parse_reply(line, 5, 6)
        except ident.IdentRefused as e:
            assert e.text != "(invalid error code)"
        except OSError as e:
            assert e.errno in (71, 36)  # EPROTO, ENAMETOOLONG
        else:
            assert isinstance(got, str)


def test_dns_answers() -> None:
    """Random or damaged answers to a real query: parsed, or EPROTO — never an exception."""
    rng = random.Random(53)
    query = dns._Query("a.example.", dns.T_A, [b"\x7f\0\0\1"])
    good = (struct.pack(">HHHHHH", 0, 0x8180, 1, 1, 0, 0) + query.qname + struct.pack(">HH", 1, 1)
            + struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + b"\x7f\0\0\7")
    for _ in range(5000):
        packet = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
        if rng.random() < 0.3:
            packet = packet[: rng.randrange(len(packet))]
        q = dns._Query("a.example.", dns.T_A, [b"\x7f\0\0\1"])
        if len(packet) >= 12:  # shorter replies are dropped before parsing
            dns.Resolver._relevant(q, bytes(packet))
            dns.Resolver._parse(q, bytes(packet))
            assert q.answer.status in (0, 2, 71)  # ok, ENOENT (rcode 3), EPROTO
