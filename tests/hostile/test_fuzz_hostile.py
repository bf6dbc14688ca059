"""The class sweep: every program (``s6ipc list``) run in a hostile process state — odd
environment entries, blocked and ignored signals, closed fds 0/1/2, huge and odd numbers in
every numeric option and variable. Never a traceback; only a documented exit code; a daemon
that starts serves and stops on SIGTERM (even inherited blocked and ignored); descriptors held
by an fd holder stay intact.

Budget: about a minute on the 2-core CI machine (few examples per program, each a process).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, Iterator, List, Sequence

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from s6ipc.base import unixmessage
from s6ipc.fdholder import protocol
from tests.support import hostile, remembered
from tests.support.fdholder import ALL_RIGHTS, Holder, Impls, Raw, inode, make_links, make_rules
from tests.support.processes import S6IPC, run, stop_process

HUGE = "9" * 5000
NUMBERS = ["0", "1", "7", "2147483647", "2147483648", "4294967295", "4294967296", "18446744073709551616",
           HUGE, "0" * 5000 + "3", "-1", "+1", " 1", "\u0661", "", "0x10", "1:2", "3,4"]
NUMBER = st.sampled_from(NUMBERS)
NUMERIC_VARIABLES = ["UID", "GID", "GIDLIST", "LISTEN_PID", "LISTEN_FDS", "LISTEN_PIDFDID", "WATCHDOG_USEC",
                     "WATCHDOG_PID", "IPCREMOTEEUID", "IPCREMOTEEGID", "S6_FD#", "S6_FD_0", "S6_FDLIMIT_0"]
ODD_ENTRIES = [b"=x", b"NOEQ", b"==", b"=a=b", b"DUP=1", b"DUP=2", b"\xff\xfe=\xfd", b"V=\xff\x00"[:4],
               b"LISTEN_FDNAMES=" + b":" * 300, b"NOTIFY_SOCKET=@s6t-nowhere", b"NOTIFY_SOCKET=/nonexistent",
               b"S6_FDID_0=fz", b"PROTO=IPC", b"PROTO=", b"S6IPC_SYSTEMD_BACKEND=\xff", b"PATH="]
SIGNALS = [signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGPIPE,
           signal.SIGALRM, signal.SIGUSR1]
EXIT_CODES = {0, 1, 100, 111, 126, 127}
#: each example is a process (or a daemon): report the failing example as found, do not shrink it
NO_SHRINK = (Phase.explicit, Phase.generate)


@st.composite
def hostile_state(draw: st.DrawFn, closable: Sequence[int] = (0, 1, 2)) -> Dict[str, object]:
    numeric = [f"{name}={value}".encode("utf-8", "surrogateescape")
               for name, value in draw(st.lists(st.tuples(st.sampled_from(NUMERIC_VARIABLES), NUMBER),
                                                max_size=4))]
    entries = [b"PATH=/usr/bin:/bin", *draw(st.lists(st.sampled_from(ODD_ENTRIES), max_size=5)), *numeric]
    return {
        "entries": draw(st.permutations(entries)),
        "blocked": draw(st.lists(st.sampled_from(SIGNALS), max_size=4, unique=True)),
        "ignored": draw(st.lists(st.sampled_from([s for s in SIGNALS if s != signal.SIGPIPE]),
                                 max_size=4, unique=True)),
        "closed": draw(st.lists(st.sampled_from(list(closable)), max_size=3, unique=True)),
    }


def options(draw: st.DrawFn, letters: str) -> List[str]:
    out: List[str] = []
    for letter in draw(st.lists(st.sampled_from(list(letters)), max_size=3, unique=True)):
        out += [f"-{letter}", draw(NUMBER)]
    return out


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """A links directory, an fd holder of ours holding "keep" (a pipe), rules, a cdb."""
    base = str(tmp_path_factory.mktemp("fz"))
    links = make_links(os.path.join(base, "links"))
    rules = make_rules(base, {f"uid/{os.getuid()}": ALL_RIGHTS})
    holder = Holder(Impls("ours", links)("fdholder-daemon"), os.path.join(base, "h"), ["-i", rules])
    r, w = os.pipe()
    raw = Raw(holder.path)
    raw.send(protocol.encode_store(protocol.tai.infinite_from(protocol.tai.now()), b"keep"), [r])
    assert raw.reply() == (b"\0", [])
    raw.close()
    cdb = os.path.join(base, "rules.cdb")
    assert run([S6IPC, "accessrules-cdb-from-fs", cdb, rules]).returncode == 0
    busy = socket.socket(socket.AF_INET6)  # dual-stack: the port is taken on 127.0.0.1 and ::1
    busy.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    busy.bind(("::", 0))
    busy.listen(1)  # nobody accepts: a client's connection waits, then is reset at teardown
    closed = socket.socket()  # bound, not listening: connections to it are refused at once
    closed.bind(("127.0.0.1", 0))
    yield {"base": base, "holder": holder.path, "rules": rules, "cdb": cdb, "ino": str(inode(r)),
           "busy_port": str(busy.getsockname()[1]), "closed_port": str(closed.getsockname()[1])}
    busy.close()
    closed.close()
    try:
        got = Raw(holder.path)  # the held descriptor is intact after the whole sweep
        got.send(protocol.encode_retrieve(b"keep", False))
        reply = got.reply()
        assert reply is not None and reply[0] == b"\0" and len(reply[1]) == 1
        assert inode(reply[1][0]) == inode(r)
        os.close(reply[1][0])
        got.close()
        assert holder.alive()
    finally:
        holder.stop()
        os.close(r)
        os.close(w)


Builder = Callable[[st.DrawFn, Dict[str, str]], List[str]]

def _binder(d: st.DrawFn, a: Dict[str, str], ip: str) -> List[str]:
    return [*options(d, "b"), ip, d(st.sampled_from([a["busy_port"], d(NUMBER)])), "true"]


ONE_SHOT: Dict[str, Builder] = {
    "accessrules-cdb-from-fs": lambda d, a: [os.path.join(a["base"], "out.cdb"), a["rules"]],
    "accessrules-fs-from-cdb": lambda d, a: [os.path.join(a["base"], f"tree{time.monotonic_ns()}"), a["cdb"]],
    "applyuidgid": lambda d, a: [*options(d, "ugG"), *d(st.sampled_from([[], ["-U"], ["-z", "-U"]])), "true"],
    "fdholder-delete": lambda d, a: [*options(d, "t"), a["holder"], "fz"],
    "fdholder-getdump": lambda d, a: [*options(d, "t"), a["holder"], "true"],
    "fdholder-list": lambda d, a: [*options(d, "t"), a["holder"]],
    "fdholder-retrieve": lambda d, a: [*d(st.sampled_from([[], ["-D"]])), *options(d, "t"), a["holder"], "fz",
                                       "true"],
    "fdholder-setdump": lambda d, a: [*options(d, "t"), a["holder"]],
    "fdholder-store": lambda d, a: [*options(d, "dtT"), a["holder"], "fz"],
    "fdholder-transferdump": lambda d, a: [*d(st.sampled_from([[], ["-t", f"{d(NUMBER)}:{d(NUMBER)}"]])),
                                           a["holder"], a["holder"]],
    "fdholderd": lambda d, a: [*options(d, "vcntT"), "-i", a["rules"]],
    "ipcclient": lambda d, a: [os.path.join(a["base"], "nobody-listens"), "true"],
    "ipcserver-access": lambda d, a: [*options(d, "v"), "-x", a["cdb"], "true"],
    "ipcserver-socketbinder": lambda d, a: [*options(d, "ba"),
                                            os.path.join(a["base"], f"b{time.monotonic_ns()}"), "true"],
    "ipcserverd": lambda d, a: [*options(d, "vcC"), "true"],
    "sdnotify-bridge": lambda d, a: [*options(d, "dt"), "true"],
    "systemd-socket": lambda d, a: [*options(d, "ba"), "true"],
    "listen-fds": lambda d, a: [*options(d, "f"), "true"],
    "listen-pid": lambda d, a: ["true"],
    "status": lambda d, a: [*d(st.sampled_from([[], ["-j"]])), d(NUMBER)],
    "upgrade": lambda d, a: [*d(st.sampled_from([[], ["-j"]])), *options(d, "t"), d(NUMBER)],
    "metrics": lambda d, a: [*d(st.sampled_from([[], ["-P"]])), *options(d, "n"), "-t", "500", d(NUMBER)],
    # its request comes on stdin, whatever the state made of it: bounded by -t, whatever it is
    "metrics-http": lambda d, a: [*options(d, "n"), "-t", "300", "-T", "300", d(NUMBER)],
    "proxy-server": lambda d, a: [*d(st.sampled_from([[], ["-1"], ["-2"], ["--only-v2"]])), *options(d, "tv"),
                                  "true"],
    "systemd-accept": lambda d, a: ["true"],
    "tcpclient": lambda d, a: [*options(d, "tTp"), "127.0.0.1", a["closed_port"], "true"],
    "tcpserver-access": lambda d, a: [*options(d, "vt"), "-x", a["cdb"], "true"],
    # the wrappers and binders on a port already bound in the area: they stop at the bind
    "tcpserver-socketbinder": lambda d, a: _binder(d, a, "127.0.0.1"),
    "tcpserver4-socketbinder": lambda d, a: _binder(d, a, "127.0.0.1"),
    "tcpserver6-socketbinder": lambda d, a: _binder(d, a, "::1"),
    "tcpserver": lambda d, a: [*options(d, "cCb"), "127.0.0.1", a["busy_port"], "true"],
    "tcpserver4": lambda d, a: [*options(d, "cCb"), "127.0.0.1", a["busy_port"], "true"],
    "tcpserver6": lambda d, a: [*options(d, "cCb"), "::1", a["busy_port"], "true"],
    **{name: lambda d, a: [*options(d, "vcC"), "true"]
       for name in ("tcpserverd", "tcpserver4d", "tcpserver6d")},
}
DAEMONS = ["ipcserver", "fdholder-daemon"]


def test_the_sweep_covers_every_program() -> None:
    listed = run([S6IPC, "list"]).stdout.decode().split()
    assert sorted([*ONE_SHOT, *DAEMONS]) == listed


def check_exit(name: str, code: int, err: bytes, state: Dict[str, object]) -> None:
    assert b"Traceback" not in err, (name, err[-2000:])
    assert code in EXIT_CODES, (name, code, err[-2000:])
    if 2 not in state["closed"] and code != 0:  # type: ignore[operator]
        assert err.strip(), (name, code, "failed without a word")


def _one_shot(name: str, args: List[str], state: Dict[str, object]) -> None:
    argv = [S6IPC, name, *args]
    try:
        result = hostile.run(argv, state["entries"], blocked=state["blocked"],  # type: ignore[arg-type]
                             ignored=state["ignored"], closed=state["closed"], timeout=20)  # type: ignore[arg-type]
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv[:6]} hung in state {state}")
    check_exit(name, result.returncode, result.stderr, state)


@pytest.mark.parametrize("name", sorted(ONE_SHOT))
def test_one_shot_programs_in_a_hostile_state(area: Dict[str, str], name: str) -> None:
    """The examples that failed once (tests/hostile/remembered/one-shot.json) every time, then a
    few new ones; a new failure is written there (commit it with the fix)."""
    for example in remembered.examples("one-shot", name):
        _one_shot(name, remembered.concrete(example["args"], area), example["state"])

    @settings(max_examples=5, deadline=None, database=None, phases=NO_SHRINK,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(data=st.data(), state=hostile_state())
    def sweep(data: st.DataObject, state: Dict[str, object]) -> None:
        args = ONE_SHOT[name](data.draw, area)
        example = {"args": remembered.symbolic(args, area), "state": state}
        with remembered.on_failure("one-shot", name, example):
            _one_shot(name, args, state)

    sweep()


def serves(path: str, proc: subprocess.Popen[bytes], expect: Callable[[socket.socket], None]) -> bool:
    """Connect once the socket exists; False when the process ended first, or hung up on the
    client and then ended (it failed after binding). Raises when it hung up and lives on."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(path)
                expect(s)
                return True
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.05)
        except (ConnectionResetError, BrokenPipeError):
            # accepted by a daemon that was failing on its environment after the bind: it must exit
            proc.wait(10)
            return False
    raise AssertionError("neither served nor exited within 15 s")


def hi(s: socket.socket) -> None:
    assert s.recv(10) == b"hi\n"


def listing(s: socket.socket) -> None:
    """A fresh holder lists nothing: status 0, count 0."""
    unixmessage.send_message(s, b"L")
    expected = unixmessage.frame(b"\0\0\0\0\0")
    data = b""
    while len(data) < len(expected):
        chunk = s.recv(100)
        assert chunk, "the holder closed the connection"
        data += chunk
    assert data == expected


def _daemon(name: str, options_: List[str], state: Dict[str, object], area: Dict[str, str]) -> bool:
    """Start daemon *name* with *options_* in *state*; whether it served (then it must stop on TERM)."""
    path = os.path.join(area["base"], f"d{time.monotonic_ns()}")
    if name == "ipcserver":
        argv = [S6IPC, name, *options_, path, "/bin/echo", "hi"]
        expect = hi
    else:
        argv = [S6IPC, name, *options_, "-i", area["rules"], path]
        expect = listing
    errlog = os.path.join(area["base"], "err")
    with open(errlog, "wb") as err:
        proc = hostile.popen(argv, state["entries"], blocked=state["blocked"],  # type: ignore[arg-type]
                             ignored=state["ignored"], closed=state["closed"],  # type: ignore[arg-type]
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    served = False
    try:
        if serves(path, proc, expect):
            served = True
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
            assert code in {0, 1, 2, 3}, (argv[:6], code)  # fdholderd: s6's bit mask
        else:
            code = proc.wait(10)
    finally:
        stop_process(proc)
    with open(errlog, "rb") as f:
        check_exit(name, code, f.read(), state)
    return served


@pytest.mark.parametrize("name", DAEMONS)
def test_daemons_in_a_hostile_state_serve_and_stop_on_term(area: Dict[str, str], name: str) -> None:
    """As the one-shot sweep: the remembered examples (tests/hostile/remembered/daemons.json)
    first, then new ones."""
    for example in remembered.examples("daemons", name):
        _daemon(name, remembered.concrete(example["options"], area), example["state"], area)
    served = []

    @settings(max_examples=6, deadline=None, database=None, phases=NO_SHRINK,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(data=st.data(), state=hostile_state())
    def sweep(data: st.DataObject, state: Dict[str, object]) -> None:
        options_ = options(data.draw, "cCb" if name == "ipcserver" else "cnbtT")
        with remembered.on_failure("daemons", name, {"options": options_, "state": state}):
            if _daemon(name, options_, state, area):
                served.append(state)

    sweep()
    assert served, "no example got as far as serving: the sweep tested nothing"


def test_a_failing_example_is_kept_and_given_back(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What the sweeps rely on: an example that fails is written down once, with the run's
    scratch values as placeholders, and comes back exactly (bytes, surrogates, signals)."""
    monkeypatch.setattr(remembered, "DIRECTORY", str(tmp_path))
    area = {"base": "/tmp/pytest-7/fz0", "closed_port": "41234"}
    args = ["-t", "\udcff\u0661", "/tmp/pytest-7/fz0/h", "41234", "4123"]
    state = {"entries": [b"=x", b"V=\xff"], "blocked": [signal.SIGTERM], "ignored": [], "closed": [0]}
    for _ in range(2):
        with pytest.raises(AssertionError), \
                remembered.on_failure("s", "prog", {"args": remembered.symbolic(args, area), "state": state}):
            raise AssertionError("the example failed")
    kept = remembered.examples("s", "prog")
    assert len(kept) == 1
    assert kept[0]["args"] == ["-t", "\udcff\u0661", "{base}/h", "{closed_port}", "4123"]
    assert remembered.concrete(kept[0]["args"], {"base": "/tmp/other", "closed_port": "5"}) == [
        "-t", "\udcff\u0661", "/tmp/other/h", "5", "4123"]
    assert kept[0]["state"] == state
    with remembered.on_failure("s", "other", {"args": []}):
        pass  # success: nothing kept
    assert remembered.examples("s", "other") == []


def test_remembered_examples_name_programs_that_exist() -> None:
    for sweep, known in (("one-shot", ONE_SHOT), ("daemons", DAEMONS)):
        path = os.path.join(remembered.DIRECTORY, f"{sweep}.json")
        with open(path) as f:
            assert set(json.load(f)) <= set(known), f"{path}: examples of programs the sweep no longer runs"
