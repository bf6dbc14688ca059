"""ip4/, ip6/ and reversedns/ rule keys, against libs6 2.11.3.2's own keycheck functions (ctypes)."""

from __future__ import annotations

import os
import random

import pytest

from s6ipc.access.rules import Verdict, check_ip, check_reversedns, ip_keys, reversedns_keys, rules_from_dir
from s6ipc.sockets import inet
from tests.support.skalibs import installed_soname, s6_keys


def test_ip4_keys_are_libs6s() -> None:
    rng = random.Random(4)
    samples = [b"\x7f\0\0\2", bytes(4), b"\xff" * 4] + [rng.randbytes(4) for _ in range(300)]
    for ip in samples:
        assert list(ip_keys(ip)) == s6_keys(4, ip), inet.ip_fmt(ip)


def test_ip4_key_examples() -> None:
    keys = list(ip_keys(b"\x7f\0\0\2"))
    assert keys[:3] == ["ip4/127.0.0.2_32", "ip4/127.0.0.2_31", "ip4/127.0.0.0_30"]
    assert keys[24] == "ip4/127.0.0.0_8" and keys[-1] == "ip4/0.0.0.0_0" and len(keys) == 33


def test_ip6_keys_match_libs6_on_byte_boundaries_and_fix_the_rest() -> None:
    """s6 2.11.3.2 clears bits LSB-first inside a byte: its keys are right only for /8k. libs6 2.13
    (Debian 13) names the network at every length, as ours always did: there they are all equal."""
    fixed = installed_soname("libs6") != "libs6.so.2.11"
    rng = random.Random(6)
    samples = [inet.parse_ip("::1"), inet.parse_ip("2001:db8::3"), inet.parse_ip("::ffff:7f00:1")]
    samples += [rng.randbytes(16) for _ in range(100)]
    for ip in samples:
        ours, theirs = list(ip_keys(ip)), s6_keys(6, ip)
        assert len(ours) == len(theirs) == 129
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if i % 8 == 0 or fixed:
                assert a == b
        for a in ours:  # ours always name the network
            addr, n = a[4:].rsplit("_", 1)
            assert inet.network(inet.parse_ip(addr), int(n)) == inet.parse_ip(addr)
    # the spec's observed cases: 2.11.3.2 looks up ::1_127 and 2001:db8::3_126
    assert ip_keys(inet.parse_ip("::1"))[1] == "ip6/::_127"
    assert s6_keys(6, inet.parse_ip("::1"))[1] == ("ip6/::_127" if fixed else "ip6/::1_127")
    assert ip_keys(inet.parse_ip("2001:db8::3"))[2] == "ip6/2001:db8::_126"
    network = "ip6/2001:db8::_126" if fixed else "ip6/2001:db8::3_126"
    assert s6_keys(6, inet.parse_ip("2001:db8::3"))[2] == network


def test_reversedns_keys() -> None:
    assert reversedns_keys("a.b.example.") == ["reversedns/a.b.example", "reversedns/b.example",
                                               "reversedns/example", "reversedns/@"]
    assert reversedns_keys("host") == ["reversedns/host", "reversedns/@"]
    assert reversedns_keys("") == ["reversedns/@"]


def _rule(base: str, key: str, verdict: str) -> None:
    os.makedirs(f"{base}/{key}", exist_ok=True)
    open(f"{base}/{key}/{verdict}", "w").close()


def test_longest_prefix_wins_and_deny_beats_shorter_allow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = str(tmp_path)
    _rule(base, "ip4/127.0.0.0_8", "allow")
    _rule(base, "ip4/127.0.0.2_32", "deny")
    _rule(base, "ip4/127.000.0.3_32", "deny")  # non-canonical: never matches
    _rule(base, "ip6/::_127", "allow")
    rules = rules_from_dir(base)
    assert check_ip(rules, b"\x7f\0\0\2").verdict is Verdict.DENY
    assert check_ip(rules, b"\x7f\0\0\3").verdict is Verdict.ALLOW
    assert check_ip(rules, b"\x0a\0\0\1").verdict is Verdict.NOTFOUND
    assert check_ip(rules, inet.parse_ip("::1")).verdict is Verdict.ALLOW
    assert check_ip(rules, inet.parse_ip("::2")).verdict is Verdict.NOTFOUND
    # a mapped address is an IPv6 one: ip4/ rules do not apply
    assert check_ip(rules, inet.parse_ip("::ffff:7f00:3")).verdict is Verdict.NOTFOUND
    _rule(base, "reversedns/example", "allow")
    _rule(base, "reversedns/bad.example", "deny")
    assert check_reversedns(rules, "x.good.example.").verdict is Verdict.ALLOW
    assert check_reversedns(rules, "x.bad.example.").verdict is Verdict.DENY
    assert check_reversedns(rules, "other.org.").verdict is Verdict.NOTFOUND


def test_damaged_ip_rules_are_backend_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = str(tmp_path)
    open(f"{base}/ip4", "w").close()  # ip4 is a file: ENOTDIR
    from s6ipc.base.errors import SystemFailure

    with pytest.raises(SystemFailure) as info:
        check_ip(rules_from_dir(base), b"\x7f\0\0\1")
    assert info.value.errno == 20


def test_cdb_answers_are_remembered_until_the_file_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from s6ipc.access.cdb import write_cdb
    from s6ipc.access.rules import rules_from_cdb

    path = str(tmp_path / "r.cdb")
    write_cdb(path, [(b"ip4/127.0.0.0_8", b"A\0\0\0\0")])
    rules = rules_from_cdb(path)
    assert check_ip(rules, b"\x7f\0\0\1").verdict is Verdict.ALLOW
    assert check_ip(rules, b"\x7f\0\0\1").verdict is Verdict.ALLOW  # from memory
    write_cdb(path, [(b"ip4/127.0.0.0_8", b"D")])
    assert rules.refresh()
    assert check_ip(rules, b"\x7f\0\0\1").verdict is Verdict.DENY
