"""The s6 line chosen by S6IPC_S6 (s6ipc.base.s6release)."""

from __future__ import annotations

import pytest

from s6ipc.base.errors import BadInput
from s6ipc.base.s6release import DEFAULT, S6_2_11, S6_2_12, s6_release


@pytest.mark.parametrize(("value", "release"), [
    (None, S6_2_12), ("", S6_2_12), ("2.11", S6_2_11), ("2.11.3.2", S6_2_11), ("2.12", S6_2_12),
    ("2.13.1.0", S6_2_12), ("2.14", S6_2_12), ("2.15.0.0", S6_2_12)])
def test_the_line_a_value_chooses(value: str, release: object) -> None:
    assert s6_release({} if value is None else {"S6IPC_S6": value}) is release


@pytest.mark.parametrize("value", ["2", "2.10", "2.16", "3.0", "2.11.x", "2.11.", " 2.11", "2.١١", "latest"])
def test_anything_else_is_a_usage_error(value: str) -> None:
    with pytest.raises(BadInput) as e:
        s6_release({"S6IPC_S6": value})
    assert e.value.exit_code == 100 and str(e.value).startswith(f"invalid $S6IPC_S6: {value} (")


def test_the_default_is_the_newest_line() -> None:
    assert DEFAULT is S6_2_12


def test_connnum_counts_the_others_or_this_one_too() -> None:
    assert [S6_2_12.connnum(n) for n in range(3)] == [0, 1, 2]
    assert [S6_2_11.connnum(n) for n in range(3)] == [1, 2, 3]


@pytest.mark.parametrize(("count", "new", "old"), [
    (0, 0, 0), (1, 1, 1), (253, 1, 1), (254, 2, 1), (255, 2, 1), (256, 2, 2), (506, 2, 2), (507, 3, 2),
    (510, 3, 2), (511, 3, 3), (1000, 4, 4)])
def test_dump_messages_follow_skalibs_maxfds(count: int, new: int, old: int) -> None:
    """libs6's 1 + (n-1)/UNIXMESSAGE_MAXFDS: 253 from skalibs 2.14 (s6 2.12+), 255 before."""
    assert (S6_2_12.dump_messages(count), S6_2_11.dump_messages(count)) == (new, old)
