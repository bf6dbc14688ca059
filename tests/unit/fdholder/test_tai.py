"""TAIN timestamps: the wire form s6 uses (label = 2**62 + unix + 37), text form, carries."""

from __future__ import annotations

import time

from s6ipc.fdholder import tai


def test_label_is_unix_plus_37_plus_2_62() -> None:
    t = tai.from_unix_ns(1_700_000_000 * 10**9 + 5)
    assert t == tai.Tain(0x4000000000000000 + 1_700_000_000 + 37, 5)
    assert t.pack() == bytes.fromhex("40000000") + (1_700_000_037).to_bytes(4, "big") + (5).to_bytes(4, "big")
    assert tai.unpack(t.pack()) == t


def test_now_is_the_wall_clock() -> None:
    assert abs(tai.now().unix() - time.time()) < 1


def test_text_form_round_trip() -> None:
    t = tai.Tain(0x400000006B0894661, 0x978A44F)
    assert t.text() == "@" + t.pack().hex()
    assert tai.parse_text("@400000006b0894661978a44f") == tai.Tain(0x400000006B089466, 0x1978A44F)
    assert tai.parse_text("@400000006b0894661978a44fjunk") == tai.Tain(0x400000006B089466, 0x1978A44F)
    bad_texts = ("", "@", "400000006b0894661978a44f0", "@400000006b0894661978a44",
                 "@40000000zb0894661978a44f")
    for bad in bad_texts:
        assert tai.parse_text(bad) is None


def test_add_nano_carries_and_wraps_like_c() -> None:
    assert tai.Tain(5, 999_999_999).add_nano() == tai.Tain(6, 0)
    assert tai.Tain(5, 3).add_nano() == tai.Tain(5, 4)
    assert tai.Tain(2**64 - 1, 999_999_999).add_nano() == tai.Tain(0, 0)
    # nanoseconds out of range from the wire are kept and carried as skalibs does
    assert tai.Tain(5, 4_000_000_000).add_nano() == tai.Tain(6, 3_000_000_001)


def test_ordering_and_limits() -> None:
    base = tai.now()
    assert base.add_ms(1500) == tai.Tain(base.sec + 1 + (base.nano + 500_000_000) // 10**9,
                                         (base.nano + 500_000_000) % 10**9)
    infinite = tai.infinite_from(base)
    assert infinite.pack()[0] == 0x60
    assert not tai.is_finite(infinite, base)
    assert tai.is_finite(base.add_ms(10**9), base)
    assert tai.Tain(1, 5) < tai.Tain(2, 0) < tai.Tain(2, 1)
