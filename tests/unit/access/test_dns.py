"""s6ipc.access.dns (s6-dns's configuration, engine and answers), against loopback fake servers:
never the machine's resolver."""

from __future__ import annotations

import errno
import time
from typing import Iterator

import pytest

from s6ipc.access import dns
from s6ipc.sockets import inet
from tests.support.netpeers import FakeDns, loopback_address


@pytest.fixture
def fake() -> Iterator[FakeDns]:
    server = FakeDns()
    server.records[("a.example.", dns.T_A)] = ["127.0.0.7", "127.0.0.8"]
    server.add_ptr("127.0.0.7", "seven.example.")
    yield server
    server.close()


def test_dnscacheip_list_and_fallbacks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.1.2.3\nnameserver\t::2\nnameserverX 1.1.1.1\nnameserver 9\n"
                    "domain one.example two.example\nsearch s1.example s2.example.\n")
    got = dns.load_config({"DNSCACHEIP": "127.0.0.9, ::1;127.0.0.10"}, str(conf))
    assert [inet.ip_fmt(s) for s in got.servers] == ["127.0.0.9", "::1", "127.0.0.10"]
    got = dns.load_config({"DNSCACHEIP": "nothing"}, str(conf))  # does not scan: resolv.conf
    assert [inet.ip_fmt(s) for s in got.servers] == ["127.1.2.3", "::2"]
    assert got.suffixes == ("one.example.", "s1.example.", "s2.example.", "")
    got = dns.load_config({"DNSQUALIFY": "q1 q2."}, str(tmp_path / "missing"))
    assert [inet.ip_fmt(s) for s in got.servers] == ["::1"] and got.suffixes == ("q1.", "q2.", "")
    assert dns.qualified("h", got, True) == ["h.q1.", "h.q2.", "h."]
    assert dns.qualified("h", got, False) == ["h."] and dns.qualified("h.", got, True) == ["h."]
    conf.chmod(0)
    unreadable = tmp_path / "dir"
    unreadable.mkdir()
    with pytest.raises(dns.SystemFailure):
        dns.load_config({}, str(unreadable))  # EISDIR: the init fails


def test_arpa_names() -> None:
    assert dns.arpa_name(b"\x7f\0\0\2") == "2.0.0.127.in-addr.arpa."
    assert dns.arpa_name(inet.parse_ip("::1")) == "1." + "0." * 31 + "ip6.arpa."


def test_answers_errors_and_parallel_round(fake: FakeDns) -> None:
    resolver = dns.Resolver(dns.Config((inet.parse_ip(fake.ip),)))
    a, ptr, missing = resolver.resolve([("a.example", dns.T_A), (dns.arpa_name(b"\x7f\0\0\7"), dns.T_PTR),
                                        ("missing.example.", dns.T_A)], None)
    assert (a.status, dns.addresses_of(a)) == (0, [b"\x7f\0\0\7", b"\x7f\0\0\x08"])
    assert dns.first_name(ptr) == "seven.example."
    assert missing.status == errno.ENOENT and dns.error_text(missing.status) == "no such domain"
    assert dns.first_name(missing) is None


def test_servers_in_turn(fake: FakeDns) -> None:
    """A refusing server is left at once; REFUSED takes a server out; SERVFAIL moves on."""
    dead = inet.parse_ip(loopback_address())
    resolver = dns.Resolver(dns.Config((dead, inet.parse_ip(fake.ip))))
    start = time.monotonic()
    assert dns.addresses_of(resolver.resolve([("a.example.", dns.T_A)], None)[0])
    assert time.monotonic() - start < 2
    for rcode in (5, 2):
        fake.rcode = rcode
        fake.queries.clear()
        one = dns.Resolver(dns.Config((inet.parse_ip(fake.ip),)))
        answer = one.resolve([("a.example.", dns.T_A)], None)[0]
        assert answer.status == errno.ENETUNREACH
        # REFUSED: asked once; SERVFAIL: asked again at each of the three retry levels
        assert len(fake.queries) == (1 if rcode == 5 else 3)


def test_deadline_on_a_silent_server(fake: FakeDns) -> None:
    fake.silent.add("a.example.")
    resolver = dns.Resolver(dns.Config((inet.parse_ip(fake.ip),)))
    start = time.monotonic()
    answer = resolver.resolve([("a.example.", dns.T_A)], dns.deadline_after(700))[0]
    assert answer.status == errno.ETIMEDOUT and 0.6 < time.monotonic() - start < 2
    assert dns.error_text(errno.ETIMEDOUT) == "query timed out"

