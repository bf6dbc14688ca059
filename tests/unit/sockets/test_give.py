"""s6ipc.sockets.give: handing sockets over the LISTEN_FDS way.

:func:`spawn_with_sockets` runs real children (a shell that reports what it got on a passed pipe);
:func:`append_sockets` moves descriptors to 3, 4, … of its own process, so it runs in a fresh
interpreter whose only descriptors are 0-2 and the ones the case makes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from s6ipc.base.errors import BadInput, ExecFailure
from s6ipc.sockets import give
from s6ipc.sockets.listenfds import pidfd_id


@pytest.fixture
def listeners(sockdir: str) -> Iterator[List[socket.socket]]:
    made = []
    for name in ("a", "b"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(sockdir, name))
        s.listen(1)
        made.append(s)
    yield made
    for s in made:
        s.close()


#: What the child reports, on the pipe passed as fd $OUT (its stdout from then on, so that no
#: redirection adds a descriptor to what it lists; dash redirects only fds 0-9, hence /proc).
REPORT = ('exec >"/proc/$$/fd/$OUT"; '
          'echo "$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES ${LISTEN_PIDFDID-unset} ${NGINX-} '
          '${EINHORN_FD_COUNT-}"; ls /proc/$$/fd; readlink /proc/$$/fd/3; readlink /proc/$$/fd/4 || true')


def _run_with(sockets: List[Any], env: Optional[Dict[str, str]] = None, **kw: Any) -> Tuple[int, List[str]]:
    r, w = os.pipe()
    try:
        env = {"PATH": os.environ["PATH"], **(env or {}), "OUT": str(w)}
        pid = give.spawn_with_sockets(["sh", "-c", REPORT], sockets, pass_fds=[w], env=env, **kw)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return w, out.split("\n")


def _ino(s: socket.socket) -> str:
    return f"socket:[{os.fstat(s.fileno()).st_ino}]"


def test_the_child_gets_the_sockets_at_3_and_4_and_its_own_pid(listeners: List[socket.socket]) -> None:
    env = {"LISTEN_PIDFDID": "123", "LISTEN_FDS": "7"}
    out, lines = _run_with(listeners, names=["web"], env=env, schemes=["nginx", "einhorn"])
    listen_pid, sh_pid, count, names, pidfdid, nginx, einhorn = lines[0].split(" ")
    assert listen_pid == sh_pid                  # the shim set it to the PID that runs the daemon
    assert (count, names, pidfdid) == ("2", "web:unknown", "unset")   # stale LISTEN_* dropped
    assert (nginx, einhorn) == ("3;4;", "2")
    assert sorted(lines[1:7], key=int) == ["0", "1", "2", "3", "4", str(out)]   # nothing else leaks in
    assert lines[7:9] == [_ino(listeners[0]), _ino(listeners[1])]
    assert listeners[0].fileno() >= 0 and listeners[0].getsockname()  # still open here


def test_descriptor_numbers_work_as_sockets(listeners: List[socket.socket]) -> None:
    out, lines = _run_with([listeners[1].fileno()], names=["only"])
    assert lines[0].split(" ")[2:4] == ["1", "only"]
    assert sorted(lines[1:6], key=int) == ["0", "1", "2", "3", str(out)]
    assert lines[6] == _ino(listeners[1])


def test_what_is_refused_before_anything_is_spawned(listeners: List[socket.socket]) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(BadInput, match=f"^fd {r} is not a socket$"):
            give.spawn_with_sockets(["true"], [r])
        with pytest.raises(BadInput, match="^2 names for 1 fds$"):
            give.spawn_with_sockets(["true"], listeners[:1], names=["a", "b"])
        with pytest.raises(BadInput):
            give.spawn_with_sockets(["true"], listeners[:1], names=["bad:name"])
        with pytest.raises(BadInput, match=r"^fd 4 to pass is in the sockets' range \(0-4\)$"):
            give.spawn_with_sockets(["true"], listeners, pass_fds=[4])
        with pytest.raises(ExecFailure) as e:
            give.spawn_with_sockets(["s6ipc-no-such-program"], listeners, env={"PATH": "/nonexistent"})
        assert e.value.exit_code == 127
        with pytest.raises(ExecFailure):
            give.spawn_with_sockets([], listeners)
    finally:
        os.close(r)
        os.close(w)


def test_set_listen_pid() -> None:
    env: Dict[str, str] = {"LISTEN_PIDFDID": "stale"}
    give.set_listen_pid(env)
    assert env["LISTEN_PID"] == str(os.getpid())
    own = pidfd_id(os.getpid())
    assert env.get("LISTEN_PIDFDID") == (None if own is None else str(own))
    give.set_listen_pid(env, pid=1)
    assert env == {"LISTEN_PID": "1"}   # another process's pidfd id is never guessed


def test_daemon_variables() -> None:
    assert give.daemon_variables("nginx", [3, 4, 5]) == {"NGINX": "3;4;5;"}
    assert give.daemon_variables("einhorn", [3, 4]) == {
        "EINHORN_FD_COUNT": "2", "EINHORN_FD_0": "3", "EINHORN_FD_1": "4"}
    with pytest.raises(BadInput, match=r"^unknown daemon variable scheme 'x' \(known: einhorn, nginx\)$"):
        give.daemon_variables("x", [3])


def _fresh(code: str, **kw: Any) -> Any:
    prelude = ("import json, os, socket\nfrom s6ipc.sockets import give\nfrom s6ipc.base.errors import *\n"
               "def sock(high):\n"
               "    s = socket.socket(socket.AF_UNIX); fd = s.detach(); os.dup2(fd, high); os.close(fd)\n"
               "    return high\n"
               "def fail(call):\n"
               "    try:\n        call()\n    except (BadInput, SystemFailure) as e:\n"
               "        return [type(e).__name__, str(e), e.exit_code]\n    return None\n")
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=20, **kw)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_append_sockets_builds_the_list_stage_by_stage() -> None:
    got = _fresh("""
        env = {}
        first = give.append_sockets([sock(20), sock(21)], ["web"], env)
        second = give.append_sockets([sock(30)], ["admin"], env)
        gone = []
        for fd in (20, 21, 30):
            try:
                os.fstat(fd)
            except OSError:
                gone.append(fd)
        print(json.dumps({"first": first, "second": second, "env": env, "gone": gone,
                          "inheritable": [os.get_inheritable(fd) for fd in (3, 4, 5)],
                          "pending": give.pending_list(env)}))
    """)
    assert got["first"] == [[3, "web"], [4, "unknown"]]
    assert got["second"] == [[3, "web"], [4, "unknown"], [5, "admin"]]
    assert got["env"]["LISTEN_FDS"] == "3" and got["env"]["LISTEN_FDNAMES"] == "web:unknown:admin"
    assert got["gone"] == [20, 21, 30] and got["inheritable"] == [True, True, True]
    assert got["pending"] == got["second"]


def test_append_from_fd_0_leaves_dev_null_there() -> None:
    got = _fresh("""
        s = socket.socket(socket.AF_UNIX); fd = s.detach(); os.dup2(fd, 0); os.close(fd)
        env = {}
        give.append_sockets([0], [], env)
        print(json.dumps([os.readlink("/proc/self/fd/0"), give.pending_list(env)]))
    """, stdin=subprocess.DEVNULL)
    assert got == ["/dev/null", [[3, "unknown"]]]


def test_append_sockets_refuses_without_moving_anything() -> None:
    got = _fresh("""
        out = {}
        s = sock(20)
        out["stdout"] = fail(lambda: give.append_sockets([1], [], {}))
        r, w = os.pipe()   # lands on 3 and 4: in the way of the list
        out["in_the_way"] = fail(lambda: give.append_sockets([s], [], {}))
        os.dup2(r, 40); os.dup2(w, 41); os.close(r); os.close(w)
        out["pipe"] = fail(lambda: give.append_sockets([40], [], {}))
        out["twice"] = fail(lambda: give.append_sockets([s, s], [], {}))
        out["names"] = fail(lambda: give.append_sockets([s], ["a", "b"], {}))
        out["other_pid"] = fail(lambda: give.append_sockets([s], [], {"LISTEN_FDS": "1", "LISTEN_PID": "1"}))
        out["no_pid"] = fail(lambda: give.append_sockets([s], [], {"LISTEN_FDS": "1"}))
        out["closed"] = fail(lambda: give.append_sockets([50], [], {}))
        out["still_20"] = os.fstat(20).st_ino > 0
        print(json.dumps(out))
    """)
    assert got["stdout"] == ["BadInput", "fd 1 is stdout, not a socket to hand over", 100]
    assert got["in_the_way"] == ["BadInput", "fd 3 is already open and is not a socket being handed over: "
                                 "it would be overwritten (move it above the sockets' range)", 100]
    assert got["pipe"] == ["BadInput", "fd 40 is not a socket", 100]
    assert got["twice"] == ["BadInput", "fd 20 is already in the list", 100]
    assert got["names"] == ["BadInput", "2 names for 1 fds", 100]
    assert got["other_pid"][0] == "BadInput" and got["other_pid"][1].startswith(
        "the LISTEN_FDS list is for another process (LISTEN_PID=1, this is ")
    assert got["no_pid"] == ["BadInput", "LISTEN_FDS=1 is set without LISTEN_PID", 100]
    assert got["closed"] == ["SystemFailure", "unable to use fd 50: Bad file descriptor", 111]
    assert got["still_20"] is True


def test_no_list_is_an_empty_list() -> None:
    assert give.pending_list({}) == []
