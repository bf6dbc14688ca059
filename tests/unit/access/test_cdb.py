"""s6ipc.access.cdb: djb's cdb format, written and read (byte compatibility with s6 is checked end to end in
tests/programs/test_accessrules_cdb.py, where our file and s6's are compared byte for byte)."""

from __future__ import annotations

import errno
import os
import stat
import struct
import tempfile
from typing import Dict, Iterator, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s6ipc.access.cdb import CdbFormatError, CdbReader, CdbWriter, cdb_bytes, cdb_hash, write_cdb
from s6ipc.base.errors import SystemFailure

Records = List[Tuple[bytes, bytes]]


@pytest.fixture
def tmp() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="s6cdb", dir="/tmp")
    yield d
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.isdir(p):
            os.rmdir(p)
        else:
            os.unlink(p)
    os.rmdir(d)


def reference_hash(key: bytes) -> int:
    h = 5381
    for c in key:
        h = ((h * 33) ^ c) % (1 << 32)
    return h


def test_hash_known_values() -> None:
    assert cdb_hash(b"") == 5381
    assert cdb_hash(b"a") == (5381 * 33) ^ ord("a")
    assert cdb_hash(b"uid/0") == reference_hash(b"uid/0")
    assert cdb_hash(b"\xff" * 100) == reference_hash(b"\xff" * 100)


def test_empty_cdb_is_a_header_of_empty_tables() -> None:
    data = CdbWriter().finish()
    assert data == struct.pack("<II", 2048, 0) * 256
    reader = CdbReader.from_bytes(data)
    assert reader.get(b"x") is None and list(reader) == []


def test_layout_of_one_record() -> None:
    """A hand-checked file: header entry of the record's table, the record, a two-slot table."""
    key, value = b"uid/0", b"D"
    h = cdb_hash(key)
    data = cdb_bytes([(key, value)])
    record_end = 2048 + 8 + len(key) + len(value)
    assert data[2048:record_end] == struct.pack("<II", 5, 1) + key + value
    pos, slots = struct.unpack_from("<II", data, (h & 255) * 8)
    assert (pos, slots) == (record_end, 2)
    table = [struct.unpack_from("<II", data, pos + 8 * i) for i in range(2)]
    assert table[(h >> 8) % 2] == (h, 2048) and table[1 - (h >> 8) % 2] == (0, 0)
    assert len(data) == record_end + 16
    # every empty table's header entry points where it would start: before or after the full one
    t = h & 255
    for i in range(256):
        expected = (record_end if i <= t else record_end + 16, 2 if i == t else 0)
        assert struct.unpack_from("<II", data, i * 8) == expected


records_strategy = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200)), max_size=60)


@given(records_strategy)
@settings(max_examples=150, deadline=None)
def test_round_trip(records: Records) -> None:
    reader = CdbReader.from_bytes(cdb_bytes(records))
    assert list(reader) == records
    first: Dict[bytes, bytes] = {}
    for k, v in records:
        first.setdefault(k, v)
    for k, v in first.items():
        assert reader.get(k) == v
    assert reader.get(b"\x00absent\x00") is None or b"\x00absent\x00" in first


@given(st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=300, unique=True))
@settings(max_examples=50, deadline=None)
def test_many_keys_in_crowded_tables(keys: List[bytes]) -> None:
    """Linear probing with wrap-around: every key is found, absent keys are not."""
    reader = CdbReader.from_bytes(cdb_bytes([(k, k[::-1]) for k in keys]))
    for k in keys:
        assert reader.get(k) == k[::-1]
    assert reader.get(b"not there, longer than six") is None


@given(st.binary(max_size=5000), st.binary(max_size=12))
@settings(max_examples=300, deadline=None)
def test_garbage_never_raises_anything_else(data: bytes, key: bytes) -> None:
    reader = CdbReader.from_bytes(data)
    try:
        reader.get(key)
    except CdbFormatError as e:
        assert e.errno == errno.EPROTO
    try:
        for _ in reader:
            pass
    except CdbFormatError:
        pass


@given(records_strategy.filter(bool), st.integers(min_value=0, max_value=10_000))
@settings(max_examples=150, deadline=None)
def test_truncated_files_fail_cleanly(records: Records, cut: int) -> None:
    data = cdb_bytes(records)
    reader = CdbReader.from_bytes(data[: min(cut, len(data) - 1)])
    for k, _ in records:
        try:
            reader.get(k)
        except CdbFormatError:
            pass


def test_load_errors(tmp: str) -> None:
    empty = os.path.join(tmp, "empty")
    open(empty, "wb").close()
    cases = ((os.path.join(tmp, "missing"), errno.ENOENT), (empty, errno.EINVAL), (tmp, errno.ENODEV))
    for path, code in cases:
        with pytest.raises(SystemFailure) as info:
            CdbReader(path)
        assert (info.value.operation, info.value.errno) == (f"cdb_init {path}", code)


def test_write_is_atomic_private_and_tidy(tmp: str) -> None:
    path = os.path.join(tmp, "r.cdb")
    old_umask = os.umask(0)
    try:
        write_cdb(path, [(b"a", b"1")], tag="t")
        with open(path, "rb") as old:
            write_cdb(path, [(b"a", b"2")], tag="t")
            assert CdbReader.from_bytes(old.read()).get(b"a") == b"1"
    finally:
        os.umask(old_umask)
    assert CdbReader(path).get(b"a") == b"2"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp) == ["r.cdb"]


def test_write_failures_leave_nothing(tmp: str) -> None:
    with pytest.raises(SystemFailure) as info:
        write_cdb(os.path.join(tmp, "no", "r.cdb"), [], tag="t")
    assert info.value.operation.startswith(f"mkstemp {tmp}/no/r.cdb:t:") and info.value.errno == errno.ENOENT
    target = os.path.join(tmp, "dir")
    os.mkdir(target)
    with pytest.raises(SystemFailure) as info:
        write_cdb(target, [(b"k", b"v")], tag="t")
    assert info.value.operation.startswith(f"rename {target}:t:") and info.value.errno == errno.EISDIR
    assert os.listdir(tmp) == ["dir"]
