"""s6ipc.sockets.inet against libskarnet 2.13.1.1 itself (ctypes), on pinned examples and random input."""

from __future__ import annotations

import random
import socket

import pytest

from s6ipc.sockets import inet
from tests.support.skalibs import c_fmt, c_scan, c_scanlist, installed_soname, skarnet

EXAMPLES = [
    "127.0.0.1", "127.0.0.1xyz", "127.0.0.1:80", "127.0.0.1 foo", "127.0.0.257", "0127.0.0.1",
    "127.1", "0", "", " 127.0.0.1", "1.2.3", "1.2.3.", "4294967295.1.1.1", "4294967296.1.1.1",
    "1.1.1.4294967296", "1.1.1.42949672951", "+1.2.3.4", "1.-2.3.4", "255.255.255.255",
    "::1", "::1x", "::1 trailing", "::ffff:127.0.0.1", "::ffff:7f00:1", "[::1]", "::", ":::", "::x",
    "1::", "1:::", "1::2:", "1::2::3", ":1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:", "1:2:3:4:5:6:7:8g",
    "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1:2:3:4:5:6::7", "1:2:3:4:5::6", "::1:2:3:4:5:6",
    "::1:2:3:4:5:6:7", "00001::", "10000::", "fffff::", "FFFF::ABCD", "2001:db8::3", "1:0:2:3:4:5:6:7",
    "1.2.3.4", "1::", "fe80::1%lo", "0:0:0:0:0:0:0:1", "::0:1", "a:b", "dead:beef::1.2",
]


@pytest.fixture(scope="module")
def lib():  # type: ignore[no-untyped-def]
    return skarnet()


def _random_text(rng: random.Random) -> str:
    alphabet = "0123456789abcdefABCDEFxg:.,; \t"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))


def _random_ip6_text(rng: random.Random) -> str:
    groups = [f"{rng.choice([0, 0, 0, 1, 0xff, 0xffff, rng.randrange(65536)]):x}" for _ in range(8)]
    if rng.random() < 0.5:
        i = rng.randrange(8)
        j = rng.randrange(i, 9)
        return ":".join(groups[:i]) + "::" + ":".join(groups[j:]) + rng.choice(["", "x", ":", " 1"])
    return ":".join(groups)


def _same_ip6_scan(lib, text: str) -> None:  # type: ignore[no-untyped-def]
    """Our ip6_scan is skalibs 2.13's (Debian 12's). skalibs 2.14.0.1 rewrote it (Debian 13 has
    2.14.3.0): where our scan stops at a ``.`` — an IPv4 tail, which 2.14 reads (``::ffff:1.2.3.4``),
    or a ``.`` after a complete address, which 2.14 refuses — the two differ, and only there
    (docs/s6.md). Everywhere else, and with skalibs 2.13 everywhere, they are equal."""
    ours, theirs = inet.ip6_scan(text), c_scan(lib, "ip6_scan", text.encode())
    if ours != theirs and installed_soname("libskarnet") != "libskarnet.so.2.13":
        assert ours is not None and text[ours[1]:ours[1] + 1] == ".", (text, ours, theirs)
        return
    assert ours == theirs, text


@pytest.mark.parametrize("text", EXAMPLES)
def test_scanners_match_skalibs_on_examples(lib, text: str) -> None:  # type: ignore[no-untyped-def]
    raw = text.encode()
    assert inet.ip4_scan(text) == c_scan(lib, "ip4_scan", raw)
    _same_ip6_scan(lib, text)


def test_scanners_match_skalibs_on_random_input(lib) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(11)
    for _ in range(20000):
        text = _random_text(rng) if rng.random() < 0.5 else _random_ip6_text(rng)
        raw = text.encode()
        assert inet.ip4_scan(text) == c_scan(lib, "ip4_scan", raw), text
        _same_ip6_scan(lib, text)


def test_formatting_matches_skalibs(lib) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(12)
    cases = [bytes(16), b"\0" * 15 + b"\1", inet.V4MAPPED_PREFIX + b"\x7f\0\0\1", bytes(4), b"\xff" * 4]
    for _ in range(20000):
        groups = [rng.choice([0, 0, 1, 0xabcd, rng.randrange(65536)]) for _ in range(8)]
        cases.append(b"".join(g.to_bytes(2, "big") for g in groups))
        cases.append(bytes(rng.randrange(256) for _ in range(4)))
    for ip in cases:
        assert inet.ip_fmt(ip) == c_fmt(lib, ip), ip.hex()


def test_pinned_examples() -> None:
    assert inet.parse_ip("127.0.0.1:80") == b"\x7f\0\0\1"
    assert inet.parse_ip("127.0.0.257") == b"\x7f\0\0\1"
    assert inet.ip_fmt(inet.parse_ip("::ffff:127.0.0.1")) == "::ffff:127"
    assert inet.ip_fmt(inet.parse_ip("::ffff:7f00:1")) == "::ffff:7f00:1"
    assert inet.ip_fmt(inet.parse_ip("1:0:2:3:4:5:6:7")) == "1:0:2:3:4:5:6:7"
    assert inet.ip_fmt(inet.parse_ip("1:0:0:2:0:0:0:3")) == "1:0:0:2::3"
    assert inet.ip_fmt(inet.parse_ip("1:0:0:2:3:0:0:4")) == "1::2:3:0:0:4"
    assert len(inet.parse_ip("1.2.3.4")) == 4 and len(inet.parse_ip("1::")) == 16
    for bad in ("localhost", "1.2.3", "", " ::1", "[::1]"):
        with pytest.raises(ValueError):
            inet.parse_ip(bad)
    with pytest.raises(ValueError):
        inet.parse_ip("::1", socket.AF_INET)
    assert inet.parse_ip("::1", socket.AF_INET6) == b"\0" * 15 + b"\1"


@pytest.mark.parametrize("text,port", [("80", 80), ("00080", 80), ("0", 0), ("65535", 65535),
                                       ("0000000000065535", 65535)])
def test_ports(text: str, port: int) -> None:
    assert inet.parse_port(text) == port


@pytest.mark.parametrize("text", ["65536", "+1", "", "5x", " 5", "-1", "٣", "99999999999999999999"])
def test_bad_ports(text: str) -> None:
    with pytest.raises(ValueError):
        inet.parse_port(text)


@pytest.mark.parametrize("text", ["127.0.0.1,127.0.0.2", "127.0.0.1:127.0.0.2;; 1.1.1.1 x 2.2.2.2",
                                  "::1,::2", "::1 ::2,1.2.3.4", "1.2.3.4;::1", ",1.2.3.4", "",
                                  " ".join(f"10.0.0.{i}" for i in range(20)), "::1::2", "1.2.3.4:5"])
def test_lists_match_skalibs(lib, text: str) -> None:  # type: ignore[no-untyped-def]
    raw = text.encode()
    assert inet.scan_list(text, socket.AF_INET) == c_scanlist(lib, "ip4_scanlist", raw)
    assert inet.scan_list(text, socket.AF_INET6) == c_scanlist(lib, "ip6_scanlist", raw)
    assert inet.scan_list(text) == c_scanlist(lib, "ip46full_scanlist", raw)


def test_network_and_mapped() -> None:
    ip = inet.parse_ip("2001:db8::3")
    assert inet.ip_fmt(inet.network(ip, 126)) == "2001:db8::"
    assert inet.ip_fmt(inet.network(ip, 127)) == "2001:db8::2"
    assert inet.network(b"\x7f\0\0\2", 8) == b"\x7f\0\0\0"
    assert inet.network(b"\x7f\0\0\2", 0) == bytes(4)
    with pytest.raises(ValueError):
        inet.network(b"\x7f\0\0\2", 33)
    assert inet.is_v4mapped(inet.parse_ip("::ffff:7f00:1"))
    assert not inet.is_v4mapped(inet.parse_ip("::1"))


def test_sockaddr_conversions() -> None:
    assert inet.from_sockaddr(("::ffff:127.0.0.1", 80, 0, 0), socket.AF_INET6) == (
        inet.V4MAPPED_PREFIX + b"\x7f\0\0\1", 80)
    assert inet.from_sockaddr(("fe80::1%lo", 1, 0, 1), socket.AF_INET6)[0] == inet.parse_ip("fe80::1")
    assert inet.from_sockaddr(("127.0.0.1", 5), socket.AF_INET) == (b"\x7f\0\0\1", 5)
    with pytest.raises(ValueError):
        inet.from_sockaddr(("/tmp/x",), socket.AF_UNIX)
    assert inet.to_sockaddr(b"\x7f\0\0\1", 9) == (socket.AF_INET, ("127.0.0.1", 9))
    assert inet.to_sockaddr(inet.parse_ip("::1"), 9) == (socket.AF_INET6, ("::1", 9, 0, 0))


def test_exported_from_the_package() -> None:
    import s6ipc

    assert s6ipc.ip_fmt(s6ipc.parse_ip("::ffff:127.0.0.1")) == "::ffff:127"
    assert s6ipc.check_ip.__module__ == "s6ipc.access.rules"
    assert s6ipc.check_reversedns.__module__ == "s6ipc.access.rules"
