"""guardian: the descriptors of fdholderd kept by a forked child across an exec, handed to a fresh
holder if the new image dies (real forks, pipes and abstract sockets; the programs' test under
s6-supervise is tests/s6/test_fdholder_guardian.py)."""

from __future__ import annotations

import os
import time
from typing import Iterator, List, Tuple

import pytest

from s6ipc.fdholder import guardian, tai
from s6ipc.fdholder.store import FdStore
from s6ipc.sockets.unix import listening_abstract_names
from tests.support.fdholder import Quiet


@pytest.fixture
def store() -> Iterator[Tuple[FdStore, List[int]]]:
    """A store holding the read ends of three pipes (and the write ends, for the test)."""
    s = FdStore()
    writers = []
    for n in range(3):
        r, w = os.pipe()
        limit = tai.Tain(tai.from_unix_ns(time.time_ns()).sec + 3600 + n, 0)
        s.add(f"unix:/p/{n}".encode(), limit, r, False)
        writers.append(w)
    yield s, writers
    s.close_all()
    for w in writers:
        os.close(w)


def _path() -> str:
    return f"/nonexistent/guardian-test-{os.getpid()}-{time.monotonic_ns()}.sock"


def _offered(path: str) -> bool:
    with open("/proc/net/unix") as f:
        return f"@{guardian.guardian_name(path)}" in f.read()


def test_released_it_exits_and_offers_nothing(store: Tuple[FdStore, List[int]]) -> None:
    path = _path()
    pid, w = guardian.guard(store[0], path, Quiet())
    assert os.get_inheritable(w), "the write end crosses the exec"
    guardian.release(pid, w)  # reaps it
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not _offered(path)
    assert guardian.collect(path, Quiet()) is None


def test_when_the_new_image_dies_a_fresh_holder_gets_every_descriptor(
        store: Tuple[FdStore, List[int]]) -> None:
    held, writers = store
    path = _path()
    pid, w = guardian.guard(held, path, Quiet())
    os.close(w)  # what the death of the new image does: EOF without the byte
    deadline = time.monotonic() + 10
    while not _offered(path):
        assert time.monotonic() < deadline, "the guardian never offered"
        time.sleep(0.01)
    log = Quiet()
    taken = guardian.collect(path, log)
    assert taken is not None and log.lines == [
        "warning: took 3 descriptors from the guardian of the image that died after its exec"]
    def described(s: FdStore) -> List[object]:
        return [(e.id, e.limit, e.slot) for e in s.entries()]
    assert described(taken) == described(held)
    for mine, theirs in zip(held.entries(), taken.entries()):
        assert theirs.held.fd != mine.held.fd and not os.get_inheritable(theirs.held.fd)
        assert os.fstat(theirs.held.fd).st_ino == os.fstat(mine.held.fd).st_ino
    os.write(writers[1], b"x")
    assert os.read(taken.get(b"unix:/p/1").held.fd, 1) == b"x"  # type: ignore[union-attr]
    assert os.waitpid(pid, 0)[1] == 0  # it exits once they are taken
    taken.close_all()


def test_a_guardian_of_another_path_is_refused() -> None:
    """A peer on the name that says it holds for another socket (a truncated name, a forgery)."""
    import socket

    from s6ipc.base import unixmessage

    path = _path()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fake:
        fake.bind("\0" + guardian.guardian_name(path))
        fake.listen(1)
        child = os.fork()
        if child == 0:  # pragma: no cover
            conn, _ = fake.accept()
            unixmessage.send_message(conn, b'{"path": "/elsewhere", "slots": [], "free": [], "count": 0}')
            time.sleep(1)
            os._exit(0)
        log = Quiet()
        assert guardian.collect(path, log) is None
        name = guardian.guardian_name(path)
        assert log.lines == [f"warning: unable to take the descriptors offered at @{name}: "
                             "not a guardian of this holder"]
        os.waitpid(child, 0)


def test_a_squatted_name_does_not_stop_the_guardian(store: Tuple[FdStore, List[int]]) -> None:
    """Someone binds the guardian's name first: the guardian takes NAME.XXXXXXXX, and the fresh
    holder, after one warning for the squatter, finds it there."""
    import socket

    held, _ = store
    path = _path()
    name = guardian.guardian_name(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind("\0" + name)
        squatter.listen(1)
        pid, w = guardian.guard(held, path, Quiet())
        os.close(w)
        deadline = time.monotonic() + 10
        while len(listening_abstract_names(name)) < 2:
            assert time.monotonic() < deadline, "the guardian never offered"
            time.sleep(0.01)
        log = Quiet()
        taken = guardian.collect(path, log)  # the squatter accepts nothing: its connection times out
        assert taken is not None and len(taken) == 3
        assert log.lines[0].startswith(f"warning: unable to take the descriptors offered at @{name}: ")
        assert log.lines[-1] == ("warning: took 3 descriptors from the guardian of the image that died "
                                 "after its exec")
        assert os.waitpid(pid, 0)[1] == 0
        taken.close_all()
