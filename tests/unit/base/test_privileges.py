"""s6ipc.base.privileges: s6-applyuidgid's group list, its order of changes, and its failures.

The id changes run in a forked child (never in the test process); the ones that need root are
skipped without it, the failures are checked either way.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable

import pytest

from s6ipc.base.errors import SystemFailure
from s6ipc.base.privileges import apply_uidgid, dumpable_as_after_exec, normalise_groups
from tests.support.forked import in_child

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing ids needs root")


@pytest.mark.parametrize("gids, primary, expected", [
    ([], 5, [5]),                       # an empty list becomes the primary alone
    ([5, 1, 2], 5, [5, 1, 2]),          # already first: as it is
    ([1, 5, 2], 5, [5, 1, 2]),          # moved to the front
    ([1, 5, 2, 5], 5, [5, 1, 2, 5]),    # only the first occurrence moves; duplicates stay
    ([1, 2], 5, [5, 1, 2]),             # absent: prepended
    ([0], 0, [0]),
])
def test_the_primary_group_comes_first(gids: list, primary: int, expected: list) -> None:  # type: ignore[type-arg]
    assert normalise_groups(gids, primary) == expected
    assert normalise_groups(tuple(gids), primary) == expected


def _in_child(work: Callable[[], Any]) -> Any:
    """Run *work* in a forked child; its JSON result, or ``["raised", str, exit_code]``."""
    return in_child(work, (SystemFailure,))


def _ids() -> Any:
    import ctypes

    dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
    return [os.getresuid(), os.getresgid(), sorted(os.getgroups()), dumpable]


def test_zeros_and_no_list_change_nothing() -> None:
    before = _ids()

    def work() -> Any:
        apply_uidgid()
        apply_uidgid(0, 0, None)
        return _ids()

    assert _in_child(work) == json.loads(json.dumps(before))


@needs_root
def test_ids_change_for_good_in_s6s_order() -> None:
    def work() -> Any:
        apply_uidgid(65534, 65533, [100, 65533, 7])
        changed = _ids()
        dumpable_as_after_exec()
        return changed + [_ids()[3]]

    resuid, resgid, groups, dumpable, after = _in_child(work)
    assert resuid == [65534, 65534, 65534]       # real, effective, saved: nothing to regain
    assert resgid == [65533, 65533, 65533]
    assert groups == [7, 100, 65533]
    assert dumpable == 0                          # the kernel cleared it at the change
    assert after == 1                             # as execve would set it again


@needs_root
def test_an_empty_list_leaves_only_the_primary() -> None:
    def work() -> Any:
        apply_uidgid(0, 4321, [])
        return _ids()

    _, resgid, groups, _ = _in_child(work)
    assert resgid == [4321, 4321, 4321] and groups == [4321]


@needs_root
def test_a_list_without_gid_takes_the_current_egid_as_primary() -> None:
    def work() -> Any:
        os.setegid(55)
        apply_uidgid(groups=[9])
        return sorted(os.getgroups())

    assert _in_child(work) == [9, 55]


def test_out_of_range_ids_are_einval_not_a_traceback() -> None:
    assert _in_child(lambda: apply_uidgid(gid=2**40)) == ["raised", "unable to setgid: Invalid argument", 111]
    assert _in_child(lambda: apply_uidgid(uid=2**40)) == ["raised", "unable to setuid: Invalid argument", 111]
    assert _in_child(lambda: apply_uidgid(groups=[2**40])) == [
        "raised", "unable to set supplementary group list: Invalid argument", 111]


def test_a_refused_change_names_the_step() -> None:
    def work() -> Any:
        if os.geteuid() == 0:
            os.setresuid(65534, 65534, 65534)  # no way back: every later change is refused
        return apply_uidgid(uid=1, gid=1, groups=[1])

    got = _in_child(work)
    assert got == ["raised", f"unable to set supplementary group list: {os.strerror(errno.EPERM)}", 111]


def test_dumpable_is_left_alone_while_real_and_effective_ids_differ() -> None:
    def work() -> Any:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
        if os.geteuid() == 0:
            os.setresuid(0, 65534, 0)
            dumpable_as_after_exec()
            differing = libc.prctl(3, 0, 0, 0, 0)
            os.setresuid(0, 0, 0)
        else:
            differing = 0
        dumpable_as_after_exec()
        return [differing, libc.prctl(3, 0, 0, 0, 0)]

    assert _in_child(work) == [0, 1]
