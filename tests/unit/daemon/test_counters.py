"""counters: what a state's counters may be, and what is kept of them."""

from __future__ import annotations

import pytest

from s6ipc.daemon.counters import read_counts


def test_known_keys_default_to_zero_and_unknown_ones_are_kept() -> None:
    assert read_counts({"b": 2, "z": 7}, ("a", "b")) == {"a": 0, "b": 2, "z": 7}
    assert read_counts({}, ()) == {}


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_a_count_that_is_not_a_natural_number_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"counter 'a' is "):
        read_counts({"a": bad}, ("a",))


def test_not_a_mapping() -> None:
    with pytest.raises((TypeError, ValueError)):
        read_counts([1, 2], ("a",))
