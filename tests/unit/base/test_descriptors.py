"""s6ipc.base.descriptors.move_fd: the one "put this fd there" of every stage, with s6's words."""

from __future__ import annotations

import os

import pytest

from s6ipc.base.descriptors import fd_word, move_fd
from s6ipc.base.errors import SystemFailure


def closed_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


def test_the_fd_is_moved_and_made_inheritable_or_not() -> None:
    for inheritable in (True, False):
        r, w = os.pipe()
        target = os.open(os.devnull, os.O_RDONLY)
        move_fd(w, target, inheritable=inheritable)
        with pytest.raises(OSError):
            os.fstat(w)
        assert os.get_inheritable(target) is inheritable
        os.write(target, b"x")
        assert os.read(r, 1) == b"x"
        os.close(r)
        os.close(target)


def test_onto_itself_only_the_flag_changes() -> None:
    r, w = os.pipe()
    move_fd(w, w)
    assert os.get_inheritable(w)
    move_fd(w, w, inheritable=False)
    assert not os.get_inheritable(w)
    os.close(r)
    os.close(w)


def test_failures_use_s6s_words() -> None:
    target = os.open(os.devnull, os.O_RDONLY)
    fd = closed_fd()
    with pytest.raises(SystemFailure) as info:
        move_fd(fd, fd)
    assert str(info.value) == f"unable to uncoe fd {fd}: Bad file descriptor"  # s6: "uncoe stdin" on 0
    with pytest.raises(SystemFailure) as info:
        move_fd(fd, target)
    assert str(info.value) == "unable to move fd: Bad file descriptor"  # s6-fdholder-retrieve's
    os.fstat(target)  # left as it was
    os.close(target)


def test_fd_word() -> None:
    assert [fd_word(fd) for fd in (0, 1, 2, 3)] == ["stdin", "stdout", "stderr", "fd 3"]
