"""base/libc.py: the subreaper attribute, read and set for real (in a forked child: pytest's own
process must not become one)."""

from __future__ import annotations

import os
import time

from s6ipc.base.libc import child_subreaper, libc, set_child_subreaper
from tests.support.forked import in_child


def _orphan_parent(subreaper: bool) -> bool:
    """In a child: make a grandchild that outlives its parent; True when it is re-parented to us."""
    set_child_subreaper(subreaper)
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - the middle process
        if os.fork() == 0:
            os.close(r)
            time.sleep(0.3)
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)
    os.close(w)
    # the grandchild is an orphan now: its parent is us (a subreaper) or someone else
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                os.waitpid(int(name), 0)
                return True
    return False


def test_a_subreaper_gets_the_orphans_of_its_descendants() -> None:
    assert in_child(lambda: _orphan_parent(True)) is True


def test_without_it_the_orphans_go_elsewhere() -> None:
    assert in_child(lambda: _orphan_parent(False)) is False


def test_the_attribute_reads_back_and_is_not_inherited_by_a_fork() -> None:
    def work() -> list:  # type: ignore[type-arg]
        seen = [child_subreaper()]
        set_child_subreaper(True)
        seen.append(child_subreaper())
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            os.write(w, b"1" if child_subreaper() else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        seen.append(os.read(r, 1) == b"1")
        set_child_subreaper(False)
        seen.append(child_subreaper())
        return seen

    assert in_child(work) == [False, True, False, False]


def test_libc_is_loaded_once() -> None:
    assert libc() is libc()
