"""The admission limits on a fake clock: parsing, the buckets (exact rate under a flood, expiry,
the cap), the sources and groups of TCP and IPC peers, aggregated lines, the state handed over."""

from __future__ import annotations

import socket
from typing import Any, List

import pytest

from s6ipc.base.errors import BadInput, SystemFailure
from s6ipc.serve.admission import (
    UNTRACKED,
    AddressSources,
    Admission,
    RateTable,
    UidSources,
    parse_limits,
)
from s6ipc.serve.peers import UnixPeer
from s6ipc.serve.tcppeer import TcpPeers
from tests.support.fdholder import Quiet


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tcp_peer(ip: str) -> Any:
    v6 = ":" in ip
    return TcpPeers(socket.AF_INET6 if v6 else socket.AF_INET).identify(None, (ip, 4242))  # type: ignore[arg-type]


def admission(spec: str, tcp: bool = True) -> tuple[Admission, Clock, Quiet]:
    limits = parse_limits([spec], tcp)
    assert limits is not None
    clock, log = Clock(), Quiet()
    sources = AddressSources(limits.prefix4, limits.prefix6) if tcp else UidSources()
    return Admission(limits, sources, log, clock), clock, log


# -- parsing ---------------------------------------------------------------------------------------


def test_items_inline_and_later_wins() -> None:
    limits = parse_limits(["rate=5/s,burst=9", "burst=7,prefixconn=3,prefix4=16,prefix6=48"], True)
    assert limits is not None
    assert (limits.rate, limits.burst, limits.group_conn) == (5.0, 7, 3)
    assert (limits.prefix4, limits.prefix6) == (16, 48)
    assert parse_limits([], True) is None


@pytest.mark.parametrize("text,per_second,shown", [("20", 20.0, "20/s"), ("30/m", 0.5, "30/m"),
                                                   ("1.5/s", 1.5, "1.5/s"), ("7200/h", 2.0, "7200/h")])
def test_rates(text: str, per_second: float, shown: str) -> None:
    limits = parse_limits([f"rate={text}"], True)
    assert limits is not None and (limits.rate, limits.rate_text) == (per_second, shown)


def test_the_default_burst_is_the_rate_per_second_at_least_one() -> None:
    assert [parse_limits([f"rate={r}"], True).burst for r in ("20", "30/m", "2.7")] == [20, 1, 2]  # type: ignore[union-attr]


@pytest.mark.parametrize("spec", ["rate=", "rate=-1", "rate=1e3", "rate=1.", "rate=.5", "rate=٣", "rate=1/d",
                                  "burst=0,rate=1", "rate", "prefix6=129,rate=1", "prefixconn=x",
                                  "sources=1000001,rate=1", "prefixburst=3", "sources=5"])
def test_bad_items(spec: str) -> None:
    with pytest.raises(BadInput):
        parse_limits([spec], True)


def test_ipc_and_tcp_names_are_apart() -> None:
    assert parse_limits(["gidrate=1,gidconn=2"], False) is not None
    for spec, tcp in (("gidconn=2", True), ("prefixconn=2", False), ("prefix4=8,rate=1", False)):
        with pytest.raises(BadInput):
            parse_limits([spec], tcp)


def test_a_limits_file(tmp_path: Any) -> None:
    path = tmp_path / "limits"
    path.write_text("# comment\nrate=10/s, burst=30   # trailing\n\nprefixconn=4\n")
    limits = parse_limits([f"@{path}", "burst=31"], True)
    assert limits is not None and (limits.rate, limits.burst, limits.group_conn) == (10.0, 31, 4)
    path.write_bytes(b"rate=\xff")
    with pytest.raises(BadInput, match="not UTF-8"):
        parse_limits([f"@{path}"], True)
    path.write_text("rate=1 " * 20000)
    with pytest.raises(BadInput, match="longer than"):
        parse_limits([f"@{path}"], True)
    with pytest.raises(SystemFailure, match="read admission limits from"):
        parse_limits([f"@{tmp_path}/none"], True)


# -- the buckets -----------------------------------------------------------------------------------


def test_a_flood_gets_its_rate_and_no_more() -> None:
    """10 s of 5000 attempts a second against rate 20/s burst 40: 40 + 200 let in, to the one."""
    table = RateTable(20.0, 40, 10)
    allowed = sum(table.take("flood", 1000.0 + i / 5000)[1] for i in range(50000))
    assert allowed == 40 + 200 - 1 or allowed == 40 + 200  # the last refill lands on the 10 s edge


def test_refill_serves_again_and_full_buckets_expire() -> None:
    table = RateTable(2.0, 3, 10)
    assert [table.take("a", 0.0)[1] for _ in range(4)] == [True, True, True, False]
    assert table.take("a", 0.4)[1] is False and table.take("a", 0.5)[1] is True
    table.expire(1.9)
    assert "a" in table.due
    table.expire(2.0)
    assert table.due == {}, "a full bucket is the same as none"


def test_beyond_the_cap_new_sources_share_one_bucket() -> None:
    table = RateTable(1.0, 1, 2)
    assert table.take("a", 0.0) == ("a", True) and table.take("b", 0.0) == ("b", True)
    assert table.take("c", 0.0) == (UNTRACKED, True)
    assert table.take("d", 0.0) == (UNTRACKED, False), "one source's rate for all the untracked"
    assert table.take("a", 1.0) == ("a", True), "known sources keep their own bucket"
    assert len(table.due) == 3
    table.expire(5.0)
    assert table.take("d", 5.0) == ("d", True), "room again once idle buckets expired"


def test_debts_carry_across_other_limits() -> None:
    old = RateTable(1 / 60, 2, 10)
    old.take("a", 0.0), old.take("a", 0.0)
    debts = old.debts(0.0, str)
    assert debts == {"a": 2.0}
    new = RateTable(1 / 60, 4, 10)
    new.restore(debts, 50.0, lambda text: text)
    assert [new.take("a", 50.0)[1] for _ in range(3)] == [True, True, False]
    smaller = RateTable(1.0, 1, 10)
    smaller.restore({"a": 5.0}, 0.0, lambda text: text)
    assert smaller.due["a"] == 1.0, "a debt is capped at the burst"
    for bad in (-1, "1", True, float("nan")):
        with pytest.raises(ValueError):
            smaller.restore({"a": bad}, 0.0, lambda text: text)


# -- sources and groups ----------------------------------------------------------------------------


def test_tcp_sources_and_prefixes() -> None:
    sources = AddressSources(24, 64)
    v4, mapped = tcp_peer("127.0.0.2"), tcp_peer("::ffff:127.0.0.2")
    assert sources.source(v4) == sources.source(mapped) == "127.0.0.2"
    assert sources.group(v4) == sources.group(mapped) == sources.group(tcp_peer("127.0.0.200"))
    assert sources.group(v4) != sources.group(tcp_peer("127.0.1.2"))
    a, b = tcp_peer("2001:db8:1:2:aaaa::1"), tcp_peer("2001:db8:1:2:bbbb::9")
    assert sources.group(a) == sources.group(b) != sources.group(tcp_peer("2001:db8:1:3::1"))
    assert sources.source(a) == "2001:db8:1:2:aaaa::1"
    assert sources.group_text(sources.group(v4)) == "127.0.0.0/24"
    assert sources.group_text(sources.group(a)) == "2001:db8:1:2::/64"
    for peer in (v4, a):
        assert sources.group_key(sources.group_text(sources.group(peer))) == sources.group(peer)
        assert sources.source_key(sources.source_text(sources.source(peer))) == sources.source(peer)
    assert AddressSources(16, 64).group_key("127.0.0.0/24") is None, "another prefix length: dropped"
    assert sources.source_key(UNTRACKED) is None and sources.group_key(UNTRACKED) is None
    for bad in ("1.2.3", "x/24"):
        with pytest.raises(ValueError):
            sources.group_key(bad) if "/" in bad else sources.source_key(bad)


def test_ipc_sources_are_uids_and_groups_gids() -> None:
    sources = UidSources()
    peer = UnixPeer(1000, 100, True)
    assert (sources.source(peer), sources.group(peer)) == (1000, 100)
    assert sources.source_key("4294967295") == 4294967295
    for bad in ("-1", "4294967296", "x"):
        with pytest.raises(ValueError):
            sources.source_key(bad)


# -- admission ---------------------------------------------------------------------------------------


def test_refusals_are_logged_at_most_once_a_second_with_their_count() -> None:
    adm, clock, log = admission("rate=1/m,burst=1")
    peer = tcp_peer("10.0.0.1")
    assert adm.admit(peer) is None
    for _ in range(80):
        assert adm.admit(peer) == "rate"
        clock.now += 1 / 32  # 32 refusals a second (exact in binary) for 2.5 s
    assert log.lines == ["info: deny ip 10.0.0.1 over rate 1/m burst 1: 1 refused",
                         "info: deny ip 10.0.0.1 over rate 1/m burst 1: 32 refused in 1.0 s",
                         "info: deny ip 10.0.0.1 over rate 1/m burst 1: 32 refused in 1.0 s"]
    adm.tick()
    assert len(log.lines) == 3, "not a second yet"
    clock.now += 0.6
    adm.tick()
    assert log.lines[-1] == "info: deny ip 10.0.0.1 over rate 1/m burst 1: 15 refused in 1.1 s"
    assert adm.describe()["limited"] == ["ip 10.0.0.1"]
    clock.now += 1.0
    adm.tick()
    assert len(log.lines) == 4 and adm.episodes == {}, "a second without refusals ends the episode"
    assert adm.admit(peer) == "rate" and len(log.lines) == 5, "a new episode logs at once"


def test_per_prefix_rate_and_concurrency() -> None:
    adm, clock, log = admission("prefixrate=10/s,prefixburst=2,prefixconn=1")
    a, b, c = tcp_peer("192.0.2.1"), tcp_peer("192.0.2.2"), tcp_peer("198.51.100.1")
    assert adm.admit(a) is None
    adm.spawned(a)
    assert adm.admit(b) == "prefix", "the /24 has its one connection"
    assert adm.admit(c) is None
    adm.ended(a)
    clock.now += 1
    assert adm.admit(b) is None
    assert adm.admit(b) is None and adm.admit(b) == "rate", "two tokens a /24, then its rate"
    assert log.lines == ["info: deny prefix 192.0.2.0/24 over 1 connections: 1 refused",
                         "info: deny prefix 192.0.2.0/24 over rate 10/s burst 2: 1 refused"]


def test_gid_limits_of_an_ipc_server() -> None:
    adm, _, log = admission("gidconn=1", tcp=False)
    first, other_uid_same_gid = UnixPeer(1000, 100, True), UnixPeer(1001, 100, True)
    assert adm.admit(first) is None
    adm.spawned(first)
    assert adm.admit(other_uid_same_gid) == "prefix"
    assert log.lines == ["info: deny gid 100 over 1 connections: 1 refused"]


def test_the_state_round_trip_with_new_limits() -> None:
    adm, clock, log = admission("rate=1/m,burst=2,prefixrate=1/m,prefixburst=5")
    peer = tcp_peer("203.0.113.7")
    assert [adm.admit(peer) for _ in range(3)] == [None, None, "rate"]
    adm.admit(peer)  # one more refusal, not yet logged
    state = adm.to_state()
    assert state["sources"] == {"203.0.113.7": 2.0} and state["groups"] == {"203.0.113.0/24": 2.0}
    assert state["unlogged"] == [["rate", "203.0.113.7", 1]]
    new, new_clock, new_log = admission("rate=1/m,burst=3,prefix4=16,prefixrate=1/m")
    new_clock.now = clock.now
    new.restore(state)
    assert [new.admit(peer) for _ in range(2)] == [None, "rate"], "one token left of three"
    assert new.group_rates is not None and list(new.group_rates.due) == [(4, 203 * 256)], \
        "the /24's bucket is not the /16's"
    new_clock.now += 1.0
    new.tick()
    assert new_log.lines[-1] == "info: deny ip 203.0.113.7 over rate 1/m burst 3: 2 refused in 1.0 s"
    for bad in ({"sources": {}, "groups": {}, "unlogged": [["what", "x", 1]]},
                {"sources": {"nope": 1}, "groups": {}, "unlogged": []},
                {"sources": {}, "groups": {}}):
        with pytest.raises((ValueError, KeyError)):
            admission("rate=1")[0].restore(bad)


def test_without_limits_in_a_table_nothing_is_tracked() -> None:
    adm, _, _ = admission("prefixconn=2")
    peers: List[Any] = [tcp_peer(f"10.0.{i}.1") for i in range(50)]
    for peer in peers:
        assert adm.admit(peer) is None
    assert adm.describe()["tracked"] == {"sources": 0, "groups": 0} and adm.live == {}


def test_past_the_cap_the_untracked_sources_are_one_and_logged_so() -> None:
    adm, clock, log = admission("rate=1/m,burst=1,sources=1")
    assert adm.admit(tcp_peer("10.0.0.1")) is None
    assert adm.admit(tcp_peer("10.0.0.2")) is None, "the first untracked source takes the shared token"
    assert adm.admit(tcp_peer("10.0.0.3")) == "rate"
    assert log.lines == ["info: deny ip (untracked) over rate 1/m burst 1: 1 refused"]
    assert adm.describe()["tracked"]["sources"] == 2 and adm.to_state()["sources"].keys() == {"10.0.0.1",
                                                                                             "(untracked)"}
    clock.now += 61
    adm.tick()
    assert adm.admit(tcp_peer("10.0.0.3")) is None and "10.0.0.3" in adm.rates.due  # type: ignore[union-attr]


def test_without_credentials_every_ipc_client_is_one_unknown_source() -> None:
    """-P: no uid, no gid — one bucket, named ``uid ?``; the state keeps it only for a -P image."""
    limits = parse_limits(["rate=1/m,burst=1"], False)
    assert limits is not None
    log = Quiet()
    adm = Admission(limits, UidSources(lookup=False), log, Clock())
    anonymous = UnixPeer(0, 0, False)
    assert adm.admit(anonymous) is None and adm.admit(anonymous) == "rate"
    assert log.lines == ["info: deny uid ? over rate 1/m burst 1: 1 refused"]
    assert adm.to_state()["sources"] == {"?": 1.0}
    assert UidSources(lookup=False).source_key("?") == "?" and UidSources().source_key("?") is None
    assert UidSources(lookup=False).source_key("1000") is None, "a uid's bucket means nothing with -P"
