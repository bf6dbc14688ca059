"""s6ipc.base.envdir: skalibs envdir semantics and env_merge order, checked against s6-envdir.

``s6-envdir DIR env`` reads DIR with the same skalibs ``envdir`` and applies the result with the same
``env_merge``, so its output is the reference for both :func:`read_envdir` and :func:`merge_env`,
environment order included. The property test feeds it random directories.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Dict, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s6ipc.base.envdir import decode_modifs, encode_modifs, merge_env, read_envdir, split_modifs, value_of
from s6ipc.base.errors import SystemFailure
from tests.support.processes import needs_reachable_interpreter

S6_ENVDIR = "/usr/bin/s6-envdir"
needs_s6 = pytest.mark.skipif(not os.access(S6_ENVDIR, os.X_OK), reason="Debian's s6 is not installed")
START = {"PATH": "/usr/bin:/bin", "KEEP": "k", "GONE": "g", "LAST": "l"}


@pytest.fixture
def tmp() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="s6env", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write(d: str, files: Dict[str, bytes]) -> None:
    for name, content in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(content)


def ours_env_output(d: str, start: Dict[str, str]) -> bytes:
    modifs = [name if value is None else f"{name}={value}" for name, value in read_envdir(d)]
    merged = merge_env(start, modifs)
    return "".join(f"{k}={v}\n" for k, v in merged.items()).encode("utf-8", "surrogateescape")


def s6_env_output(d: str, start: Dict[str, str]) -> bytes:
    return subprocess.run([S6_ENVDIR, d, "env"], env=start, stdout=subprocess.PIPE, check=True).stdout


@pytest.mark.parametrize("content,value", [
    (b"hello world  \t\r\nsecond line\n", b"hello world"),
    (b"a\0b\n", b"a\nb"),
    (b"", None),
    (b"\n", b""),
    (b"   \n", b""),
    (b"no newline", b"no newline"),
    (b"x" * 5000, b"x" * 4095),
    (b"x" * 4094 + b" y", b"x" * 4094),  # the 4095th byte is a space, then trimmed
    (b"\r\r\n", b""),
    (b"  lead", b"  lead"),
])
def test_value_of(content: bytes, value: bytes) -> None:
    assert value_of(content) == value


@needs_s6
def test_against_s6_envdir_by_example(tmp: str) -> None:
    write(tmp, {"FOO": b"hello world  \t\r\nsecond\n", "NUL": b"a\0b\n", "GONE": b"", ".hidden": b"x\n",
                "A=B": b"y\n", "KEEP": b"new\n", "EMPTY": b"\n", "HUGE": b"h" * 100000})
    assert ours_env_output(tmp, START) == s6_env_output(tmp, START)
    names = [n for n, _ in read_envdir(tmp)]
    assert sorted(names) == ["EMPTY", "FOO", "GONE", "HUGE", "KEEP", "NUL"]


names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789.=", min_size=1, max_size=6)
contents = st.one_of(st.binary(max_size=30), st.sampled_from([b"", b"\n", b" \t\r\n", b"a\0b", b"x" * 4100]))


@needs_s6
@given(st.dictionaries(names, contents, max_size=8), st.dictionaries(
    st.sampled_from(["KEEP", "GONE", "LAST", "A", "B", "C"]), st.text("xyz", max_size=3), max_size=4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_against_s6_envdir_property(tmp: str, files: Dict[str, bytes], extra: Dict[str, str]) -> None:
    d = tempfile.mkdtemp(dir=tmp)
    write(d, {n: c for n, c in files.items() if n not in (".", "..")})
    start = {"PATH": "/usr/bin:/bin", **extra}
    assert ours_env_output(d, start) == s6_env_output(d, start)


_raw_names = st.binary(min_size=1, max_size=8).filter(lambda b: b"=" not in b and b"\0" not in b)
_raw_values = st.one_of(st.none(), st.binary(max_size=20).filter(lambda b: b"\0" not in b))


@given(st.lists(st.tuples(_raw_names, _raw_values), max_size=10))
@settings(max_examples=200, deadline=None)
def test_modif_block_round_trip(raw: list) -> None:  # type: ignore[type-arg]
    """Any bytes (decoded as the OS hands them to us, surrogateescape) survive the block format."""
    modifs = [(os.fsdecode(n), None if v is None else os.fsdecode(v)) for n, v in raw]
    block = encode_modifs(tuple(modifs))
    assert block == b"".join(n + b"\0" if v is None else n + b"=" + v + b"\0" for n, v in raw)
    assert decode_modifs(block) == tuple(modifs)
    assert block.count(b"\0") == len(modifs)


def test_unterminated_block_and_merge_order() -> None:
    assert split_modifs(b"A=1\0B") == ["A=1", "B"]
    env = {"P": "1", "A": "2", "B": "3", "C": "4"}
    # removing A moves the last variable (C) into its place; a set goes to the end
    assert list(merge_env(env, ["A"]).items()) == [("P", "1"), ("C", "4"), ("B", "3")]
    assert list(merge_env(env, ["A=9"]).items()) == [("P", "1"), ("C", "4"), ("B", "3"), ("A", "9")]
    assert list(merge_env(env, ["C=0"]).items()) == [("P", "1"), ("A", "2"), ("B", "3"), ("C", "0")]
    assert merge_env(env, ["=x", "", "Z"]) == env


def test_errors(tmp: str) -> None:
    write(tmp, {"file": b"x"})
    os.mkdir(os.path.join(tmp, "sub"))
    write(os.path.join(tmp, "sub"), {"D": b"1\n"})
    os.mkdir(os.path.join(tmp, "sub", "inner"))
    cases = ((os.path.join(tmp, "missing"), errno.ENOENT), (os.path.join(tmp, "file"), errno.ENOTDIR),
             (os.path.join(tmp, "sub"), errno.EISDIR))
    for path, code in cases:
        with pytest.raises(SystemFailure) as info:
            read_envdir(path)
        assert (info.value.operation, info.value.errno) == (f"envdir {path}", code)


def test_fifo_without_writer_waits_for_one_as_skalibs_2_13(tmp: str) -> None:
    """openreadnclose opens blocking: the read waits for a writer, then takes what it wrote."""
    fifo = os.path.join(tmp, "FIFO")
    os.mkfifo(fifo)
    result: list = []  # type: ignore[type-arg]
    reader = threading.Thread(target=lambda: result.append(read_envdir(tmp)))
    reader.start()
    time.sleep(0.3)
    assert reader.is_alive() and not result  # waiting, not "unset"
    with open(fifo, "wb") as f:
        f.write(b"late\n")
    reader.join(5)
    assert result == [(("FIFO", "late"),)]


def test_fifo_never_waits_when_regular_files_only(tmp: str) -> None:
    os.mkfifo(os.path.join(tmp, "FIFO"))
    with pytest.raises(SystemFailure) as info:
        read_envdir(tmp, regular_only=True)
    assert info.value.errno == errno.EAGAIN


def test_vanished_file_is_eidrm(tmp: str) -> None:
    os.symlink("nowhere", os.path.join(tmp, "DANGLING"))
    with pytest.raises(SystemFailure) as info:
        read_envdir(tmp)
    assert info.value.errno == errno.EIDRM


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs a reader as nobody)")
@needs_reachable_interpreter
def test_unreadable_file_as_nobody(tmp: str) -> None:
    write(tmp, {"SECRET": b"x\n"})
    os.chmod(os.path.join(tmp, "SECRET"), 0)
    nobody = pwd.getpwnam("nobody").pw_uid
    code = ("import sys\nfrom s6ipc.base.envdir import read_envdir\n"
            "from s6ipc.base.errors import SystemFailure\n"
            "try:\n read_envdir(sys.argv[1])\nexcept SystemFailure as e:\n print(e)\n")
    import sys

    p = subprocess.run([sys.executable, "-c", code, tmp], user=nobody, capture_output=True)
    assert p.stdout.decode() == f"unable to envdir {tmp}: Permission denied\n", p.stderr
