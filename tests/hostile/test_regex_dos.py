"""Rights regexes run on identifiers the clients choose: a backtracking matcher (Python's re)
takes exponential time on ``^([a-z0-9]+-?)+$`` and an id that almost matches — 26 bytes froze
the daemon for 6 s. Every search is a lazily built DFA now: the same answers as glibc (here
through s6-fdholderd, byte for byte) at a bounded cost per byte; bench/fdholder_regex.py times
it against s6 (docs/benchmarks.md)."""

from __future__ import annotations

import os
import time
from typing import Dict, List

import pytest

from s6ipc.fdholder import ere, protocol
from tests.support.fdholder import Holder, Impls, Raw, make_links, make_rules

EVIL = [b"^([a-z0-9]+-?)+$", b"^(a+)+$", b"^(a|aa)+$", b"(x+x+)+y", b"^([a-z]+\\.?)+[A-Z]$",
        b"^(a*)*b$", b"(a|a?)+c", b"^((ab)*|a)*$"]
SUBJECTS = [b"a" * 254 + b"!", b"a" * 255, b"x" * 255, b"ab" * 127 + b"a", b"a-" * 127 + b"!",
            b"a" * 254 + b".", b"a" * 200 + b"\n" + b"a" * 54]


@pytest.mark.parametrize("pattern", EVIL)
def test_worst_cases_cost_bounded_time(pattern: bytes) -> None:
    """The old matcher needed hours for any of these at 255 bytes; each takes milliseconds."""
    compiled = ere.compile_ere(pattern)
    started = time.monotonic()
    for subject in SUBJECTS:
        compiled.search(subject)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("pattern", EVIL)
def test_work_is_at_most_one_automaton_step_per_byte(pattern: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: a search computes at most one new DFA transition per subject byte
    (each costing at most the NFA's size), and once built, none at all."""
    fills = []
    original = ere._Dfa._fill

    def counting(self: ere._Dfa, state: int, c: int) -> int:
        fills.append(c)
        return original(self, state, c)

    monkeypatch.setattr(ere._Dfa, "_fill", counting)
    compiled = ere.Ere(pattern, *ere.parse(pattern))
    for subject in SUBJECTS:
        before = len(fills)
        first = compiled.search(subject)
        assert len(fills) - before <= len(subject)
        before = len(fills)
        assert compiled.search(subject) == first
        assert len(fills) == before  # the second time: table look-ups only


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_links(str(tmp_path_factory.mktemp("links")))


def test_same_rights_answers_as_s6_fdholderd_and_others_are_served(links: str, sockdir: str) -> None:
    replies: Dict[str, List[bytes]] = {}
    for impl in ("ours", "s6"):
        replies[impl] = []
        for i, pattern in enumerate(EVIL):
            base = os.path.join(sockdir, f"{impl}{i}")
            os.makedirs(base)
            rules = make_rules(base, {f"uid/{os.getuid()}": {"S6_FDHOLDER_RETRIEVE_REGEX": pattern.decode(),
                                                             "S6_FDHOLDER_LIST": ""}})
            h = Holder(Impls(impl, links)("fdholder-daemon"), os.path.join(base, "s"), ["-i", rules])
            try:
                evil, other = Raw(h.path), Raw(h.path)
                for subject in SUBJECTS:
                    started = time.monotonic()
                    evil.send(protocol.encode_retrieve(subject, False))
                    other.send(b"L")  # queued behind the evil request: served right after
                    reply = evil.reply()
                    assert reply is not None
                    replies[impl].append(reply[0])
                    assert other.reply() == (b"\0\0\0\0\0", [])
                    assert time.monotonic() - started < 1.0, (impl, pattern, subject)
                evil.close()
                other.close()
            finally:
                h.stop()
    assert replies["ours"] == replies["s6"]
