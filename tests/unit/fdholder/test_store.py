"""s6ipc.fdholder.store: the daemon's store (s6's slot order, unique limits, expiry)."""

from __future__ import annotations

import os

import pytest

from s6ipc.fdholder import tai
from s6ipc.fdholder.store import FdStore

T = tai.Tain(0x4000000000000000 + 2_000_000_000, 0)


def new_fd() -> int:
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def test_slot_order_is_lifo_then_lowest_unused() -> None:
    """after deleting id1 (slot 0) and storing d1, d2: order ``d1 id2 d2``."""
    store = FdStore()
    e1 = store.add(b"id1", T, new_fd(), True)
    store.add(b"id2", T, new_fd(), True)
    store.remove(e1)
    store.add(b"d1", T, new_fd(), True)
    store.add(b"d2", T, new_fd(), True)
    assert [e.id for e in store.entries()] == [b"d1", b"id2", b"d2"]
    store.close_all()
    assert len(store) == 0


def test_store_bumps_equal_limits_by_one_nanosecond() -> None:
    store = FdStore()
    limits = [store.add(b"%d" % i, T, new_fd(), True).limit for i in range(3)]
    assert limits == [T, tai.Tain(T.sec, 1), tai.Tain(T.sec, 2)]
    # setdump does not bump
    assert store.add(b"x", T, new_fd(), False).limit == T
    store.close_all()


def test_replacing_an_id_closes_the_old_descriptor() -> None:
    store = FdStore()
    old = store.add(b"x", T, new_fd(), False)
    fd = old.held.fd
    store.add(b"x", T, new_fd(), False)
    assert len(store) == 1 and old.held.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    store.close_all()


def test_expiry_closes_in_limit_order() -> None:
    store = FdStore()
    now = tai.now()
    soon = store.add(b"soon", now.add_ms(-1), new_fd(), True)
    store.add(b"later", now.add_ms(60_000), new_fd(), True)
    assert store.next_limit() == soon.limit
    assert store.expire(now) == 1
    assert [e.id for e in store.entries()] == [b"later"]
    store.close_all()

