"""fdholderd upgraded in place (SIGUSR2) as real processes: the load proof, a broken new version.

The load proof reuses the restart harness of units/fdholder-restart (tests/support/restart_load.py):
the holder keeps the service's listening socket; client threads connect to the service in a loop
and check every reply byte for byte; meanwhile the holder is upgraded 20 times, and at each upgrade
the service is restarted at once, so that its ``fdholder-retrieve`` talks to the holder while it
preflights, drains and re-executes. An idle client of the holder stays connected across all the
upgrades and lists at each. Checked through the live view (``s6ipc status``): the generation goes
up, the PID does not change, the ids and the inodes of the held descriptors stay the same. The
proof runs three times: the holder started directly, under a real s6-supervise (``s6-svc -2``;
s6-svstat's pid and up-since unchanged), under a real systemd manager (the shipped
units/systemd/s6ipc-fdholder.service, ``systemctl reload``; the unit only ever active or reloading,
MainPID unchanged, NRestarts 0).

A broken new version comes from a copy of the package on ``PYTHONPATH`` that the holder runs from:
broken (a syntax error, a missing dependency, a state reader that wants what the running version
does not write), the preflight rejects it and the holder keeps every descriptor; broken only where
the state meets the real descriptors, the new image dies as documented (one line, exit 111). Also:
the live view's content and who may read it, sd_notify around upgrades, s6's own C clients served
across one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from s6ipc.daemon import liveview
from s6ipc.fdholder import guardian, protocol
from tests.support import systemd_manager as sdmanager
from tests.support.fdholder import Quiet, Raw
from tests.support.processes import (
    S6IPC,
    needs_reachable_interpreter,
    nobody_ids,
    requires_root,
    theirs,
    wait_until,
)
from tests.support.restart_load import PAYLOAD, UNIT, Load, start_ready, stop, unit_env
from tests.support.s6 import Scan, read_log, write_service
from tests.support.upgrade import Monotonic

UPGRADES = 20
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


def view(pid: int) -> Dict[str, object]:
    return liveview.query(pid, "fdholderd", timeout=20)


def held(pid: int) -> Dict[str, Tuple[Optional[int], str]]:
    """id → (inode, TAI limit) of every descriptor the holder *pid* holds, in slot order (its live view)."""
    return {str(e["id"]): (e["inode"], e["limit"]) for e in view(pid)["held"]}  # type: ignore[attr-defined]


def store_pipes(env: Dict[str, str], holder: str, count: int) -> None:
    """Give the holder the read ends of *count* new pipes, with a one-hour limit."""
    for n in range(count):
        r, w = os.pipe()
        subprocess.run([S6IPC, "fdholder-store", "-T", "3600000", holder, f"unix:/extra/pipe-{n}"], env=env,
                       stdin=r, check=True, timeout=20)
        os.close(r)
        os.close(w)


def wait_generation(pid: int, generation: int, timeout: float = 30) -> Dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        doc = view(pid)
        if doc["generation"] == generation:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"generation {doc['generation']}, not {generation}, after {timeout}s")
        time.sleep(0.02)


def proc_inodes(pid: int) -> Set[str]:
    """What /proc says the process holds (sockets, pipes, files) — a check beside the live view."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


@dataclass
class Proof:
    """What one run of the load proof saw."""

    pid: int
    before: Dict[str, Tuple[Optional[int], str]]
    after: Dict[str, Tuple[Optional[int], str]] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)
    generations: List[int] = field(default_factory=list)
    lists: int = 0
    spans: List[float] = field(default_factory=list)
    server_starts_during: int = 0
    proc_before: Set[str] = field(default_factory=set)
    proc_after: Set[str] = field(default_factory=set)

    def summary(self, where: str) -> str:
        total = sum(self.counts.values())
        return (f"\nfdholderd in-place upgrades ({where}): {len(self.spans)} upgrades, PID {self.pid} kept, "
                f"{len(self.before)} held descriptors kept (same inodes), {total} service connections, "
                f"{self.counts.get('refused')} refused, {self.counts.get('truncated')} truncated, "
                f"{self.counts.get('error')} other errors; {self.server_starts_during} server restarts "
                f"retrieved their socket during an upgrade; an idle holder client listed {self.lists} times "
                f"across them; SIGUSR2-to-new-generation {min(self.spans):.2f}-{max(self.spans):.2f} s")


def upgrade_under_load(rundir: str, env: Dict[str, str], log: str, holder_pid: Callable[[], int],
                       upgrade: Callable[[], None], upgrades: int = UPGRADES) -> Proof:
    """The load proof against a holder already running (see the module docstring)."""
    payload = os.path.join(rundir, "payload")
    with open(payload, "wb") as f:
        f.write(PAYLOAD)
    subprocess.run([os.path.join(UNIT, "park")], env=env, check=True, timeout=20)
    store_pipes(env, os.path.join(rundir, "holder.sock"), 3)
    pid = holder_pid()
    server_argv = [os.path.join(UNIT, "server"), "/bin/cat", payload]
    server = start_ready(server_argv, env, log)
    load = Load(os.path.join(rundir, "app.sock"), PAYLOAD)
    idle = Raw(os.path.join(rundir, "holder.sock"), timeout=30)
    proof = Proof(pid, held(pid), proc_before=proc_inodes(pid))
    requests = Monotonic()
    try:
        load.start()
        for generation in range(1, upgrades + 1):
            before = load.total
            while load.total == before:
                time.sleep(0.005)
            t0 = time.monotonic()
            upgrade()
            server.send_signal(signal.SIGTERM)
            assert server.wait(10) == 0
            server = start_ready(server_argv, env, log)
            started = time.monotonic()
            doc = wait_generation(pid, generation)
            proof.spans.append(time.monotonic() - t0)
            if started < t0 + proof.spans[-1]:
                proof.server_starts_during += 1
            proof.generations.append(int(doc["generation"]))  # type: ignore[call-overload]
            assert doc["pid"] == pid and holder_pid() == pid
            requests.check(doc["counters"]["requests"])  # type: ignore[index]
            idle.send(protocol.LIST_REQUEST)
            reply = idle.reply()
            assert reply is not None and reply[0][:1] == b"\0", reply
            proof.lists += 1
        assert requests.last["list"] >= proof.lists - 1 and requests.last["retrieve"] >= upgrades
        time.sleep(0.2)
        proof.counts = load.stop()
        proof.after = held(pid)
        proof.proc_after = proc_inodes(pid)
    finally:
        load.stop()
        idle.close()
        stop(server)
    return proof


def check(proof: Proof) -> None:
    assert list(proof.after.items()) == list(proof.before.items()) and len(proof.before) == 4
    assert all(inode is not None for inode, _ in proof.before.values())
    listed = {f"{'socket' if i.startswith('unix:/tmp') else 'pipe'}:[{n}]"
              for i, (n, _) in proof.before.items()}
    assert listed <= proof.proc_before and listed <= proof.proc_after  # what /proc says, too
    assert proof.generations == list(range(1, len(proof.generations) + 1))
    assert proof.counts["refused"] == 0, proof.counts
    assert proof.counts["truncated"] == 0 and proof.counts["error"] == 0, proof.counts
    assert proof.counts["ok"] >= len(proof.generations)
    assert proof.lists == len(proof.generations)


def test_20_upgrades_under_restart_load(rundir: str, capsys: pytest.CaptureFixture[str]) -> None:
    env = unit_env(rundir)
    log = os.path.join(rundir, "log")
    holder = start_ready([os.path.join(UNIT, "holder")], env, log)
    try:
        proof = upgrade_under_load(rundir, env, log, lambda: holder.pid,
                                   lambda: holder.send_signal(signal.SIGUSR2))
        assert holder.poll() is None
    finally:
        code = stop(holder)
    with capsys.disabled():
        print(proof.summary("started directly"))
    check(proof)
    assert code == 1  # SIGTERM: it still held the socket
    with open(log) as f:
        text = f.read()
    assert "warning" not in text and "fatal" not in text, text


# -- under a real s6-supervise ------------------------------------------------------------------
def test_20_upgrades_under_s6_supervise(scan: Scan, rundir: str, capsys: pytest.CaptureFixture[str]) -> None:
    env = unit_env(rundir)
    log = os.path.join(rundir, "log")
    run = f"exec env RUNDIR={rundir} S6IPC={S6IPC} {UNIT}/holder 2>>{log}\n"
    write_service(os.path.join(scan.dir, "holder"), run, notification_fd=1)
    scan.start()
    scan.wait_supervised("holder")
    assert scan.svwait("-U", "holder", 20000)[0] == 0, scan.log()
    fields = "up,ready,pid,updownsince,readysince"
    status = scan.svstat("holder", fields)
    proof = upgrade_under_load(rundir, env, log, lambda: scan.pid("holder"), lambda: scan.svc("-2", "holder"))
    assert scan.svstat("holder", fields) == status  # same pid, same up since, same ready since
    with capsys.disabled():
        print(proof.summary("under s6-supervise, s6-svc -2") + f"; s6-svstat {' '.join(status)} throughout")
    check(proof)


# -- under a real systemd manager -------------------------------------------------------------
SHIPPED_UNIT = os.path.join(os.path.dirname(UNIT), "systemd", "s6ipc-fdholder.service")


def holder_unit(rundir: str) -> str:
    """units/systemd/s6ipc-fdholder.service on the harness's paths."""
    with open(SHIPPED_UNIT) as f:
        text = f.read()
    paths = (("/usr/local/bin/s6ipc", S6IPC), ("/etc/s6ipc/fdholder-rules", os.path.join(UNIT, "rules")),
             ("/run/s6ipc-demo/fdholder.sock", os.path.join(rundir, "holder.sock")),
             ("/run/s6ipc-demo", rundir))
    for old, new in paths:
        text = text.replace(old, new)
    return text


class Watch:
    """Samples a unit's ActiveState/SubState/MainPID/NRestarts in a thread while the proof runs."""

    def __init__(self, m: sdmanager.UserManager, unit: str) -> None:
        self.m, self.unit = m, unit
        self.seen: Set[str] = set()
        self.pids: Set[str] = set()
        self.restarts: Set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.m.systemctl("show", "-p", "ActiveState,SubState,MainPID,NRestarts", self.unit,
                                   check=False).stdout
            props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            self.seen.add(f"{props.get('ActiveState')}/{props.get('SubState')}")
            self.pids.add(props.get("MainPID", "?"))
            self.restarts.add(props.get("NRestarts", "?"))
            time.sleep(0.03)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_20_upgrades_under_systemd(user_manager: sdmanager.UserManager, rundir: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    m = user_manager
    env = unit_env(rundir)
    log = os.path.join(rundir, "log")
    m.write_unit("holder.service", holder_unit(rundir))
    m.write_unit("holder.service.d/log.conf",
                 f"[Service]\nStandardOutput=append:{log}\nStandardError=append:{log}\n")
    m.systemctl("start", "holder.service")
    assert m.state("holder.service") == "active/running"
    main_pid = int(m.prop("holder.service", "MainPID"))
    with Watch(m, "holder.service") as watch:
        proof = upgrade_under_load(rundir, env, log, lambda: int(m.prop("holder.service", "MainPID")),
                                   lambda: m.systemctl("reload", "holder.service"))
    assert m.wait_state("holder.service", "active/running") == "active/running"
    with capsys.disabled():
        print(proof.summary("under systemd, systemctl reload") +
              f"; unit states seen {sorted(watch.seen)}, MainPID {sorted(watch.pids)}, "
              f"NRestarts {sorted(watch.restarts)}")
    check(proof)
    assert proof.pid == main_pid and watch.pids == {str(main_pid)}
    assert watch.restarts == {"0"} and m.prop("holder.service", "NRestarts") == "0"
    assert watch.seen <= {"active/running", "reloading/reload"}, watch.seen


# -- a broken new version -----------------------------------------------------------------------
@pytest.fixture
def copy(rundir: str) -> Iterator[str]:
    """A copy of the package on PYTHONPATH: the holder runs from it, the tests break it."""
    root = os.path.join(rundir, "pythonpath")
    shutil.copytree(os.path.join(SRC, "s6ipc"), os.path.join(root, "s6ipc"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    yield root


def _edit(root: str, module: str, change: Callable[[str], str]) -> Callable[[], None]:
    """Change a module of the copy; returns what puts it back."""
    path = os.path.join(root, "s6ipc", *module.split("/"))
    with open(path) as f:
        original = f.read()
    with open(path, "w") as f:
        f.write(change(original))

    def undo() -> None:
        with open(path, "w") as f:
            f.write(original)

    return undo


def _set_version(root: str, version: str) -> None:
    _edit(root, "__init__.py", lambda text: re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', text))


def _warnings(log: str) -> List[str]:
    with open(log) as f:
        return [line for line in f.read().splitlines() if "unable to upgrade in place" in line]


def _wait_warnings(log: str, count: int, timeout: float = 30) -> List[str]:
    deadline = time.monotonic() + timeout
    while len(_warnings(log)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no warning in {timeout}s")
        time.sleep(0.05)
    return _warnings(log)


BREAKAGES = {
    "syntax error": ("fdholder/ere.py", "\ndef broken(:\n", "SyntaxError"),
    "missing dependency": ("access/cdb.py", "\nimport s6ipc_no_such_dependency  # noqa\n",
                           "ModuleNotFoundError: No module named 's6ipc_no_such_dependency'"),
    # a new version that reads the state differently (a key the running one does not write)
    "state it cannot read": ("fdholder/server.py",
                             "\n\n_old_parse = parse_state\n\n\ndef parse_state(state):\n"
                             "    return _old_parse(state) if state['format2'] else None\n",
                             "KeyError: 'format2'"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_new_version_is_rejected_and_the_holder_keeps_everything(rundir: str, copy: str,
                                                                         breakage: str) -> None:
    _set_version(copy, "0.1.0+old")
    env = dict(unit_env(rundir), PYTHONPATH=copy)
    log = os.path.join(rundir, "log")
    holder = start_ready([os.path.join(UNIT, "holder")], env, log)
    try:
        subprocess.run([os.path.join(UNIT, "park")], env=env, check=True, timeout=20)
        before = held(holder.pid)
        assert view(holder.pid)["version"] == "0.1.0+old"  # it runs from the copy
        _set_version(copy, "0.2.0")
        module, addition, expected = BREAKAGES[breakage]
        undo = _edit(copy, module, lambda text: text + addition)
        holder.send_signal(signal.SIGUSR2)
        warnings = _wait_warnings(log, 1)
        assert len(warnings) == 1 and expected in warnings[0], warnings
        assert warnings[0].startswith("fdholderd: warning: unable to upgrade in place: s6ipc preflight: "), \
            warnings
        doc = view(holder.pid)
        assert (doc["generation"], doc["version"]) == (0, "0.1.0+old")
        assert held(holder.pid) == before
        ids = subprocess.run([S6IPC, "fdholder-list", os.path.join(rundir, "holder.sock")], env=env,
                             capture_output=True, timeout=20, check=True).stdout.decode().split()
        assert ids == list(before)
        undo()  # fixed: the same signal now upgrades to the version on disk
        holder.send_signal(signal.SIGUSR2)
        doc = wait_generation(holder.pid, 1)
        assert doc["version"] == "0.2.0" and held(holder.pid) == before
        assert holder.poll() is None and len(_warnings(log)) == 1
    finally:
        stop(holder)


def test_a_new_version_that_fails_after_the_exec_dies_loudly(rundir: str, copy: str) -> None:
    """What docs/fdholderd.md promises: one fatal line, exit 111, no silent holder without its store;
    and the guardian's line: it holds the parked descriptor for the restarted holder (taken here;
    the restart itself under s6-supervise: tests/s6/test_fdholder_guardian.py)."""
    env = dict(unit_env(rundir), PYTHONPATH=copy)
    log = os.path.join(rundir, "log")
    holder = start_ready([os.path.join(UNIT, "holder")], env, log)
    try:
        subprocess.run([os.path.join(UNIT, "park")], env=env, check=True, timeout=20)
        _edit(copy, "fdholder/server.py", lambda text: text + (
            "\n\ndef _restore(self, state):\n    raise ValueError('a bug in the new version')\n\n\n"
            "FdHolderDaemon.restore = _restore\n"))
        holder.send_signal(signal.SIGUSR2)
        assert holder.wait(30) == 111
    finally:
        stop(holder)
    path = os.path.join(rundir, "holder.sock")
    name = guardian.guardian_name(path)
    deadline = time.monotonic() + 10
    while f"@{name}" not in read_log("/proc/net/unix"):
        assert time.monotonic() < deadline, "no guardian"
        time.sleep(0.02)
    taken = guardian.collect(path, Quiet())
    assert taken is not None and len(taken) == 1  # the parked socket
    taken.close_all()
    with open(log) as f:
        lines = f.read().splitlines()
    assert lines[-2:] == ["fdholderd: fatal: unable to take over from the previous image: "
                          "a bug in the new version",
                          f"fdholderd: warning: the new image died after the exec: holding 1 descriptors "
                          f"for the restarted fdholderd at @{name}"], lines
    assert not _warnings(log)


# -- the live view ------------------------------------------------------------------------------
@requires_root
def test_live_view_shows_ids_expiry_and_clients_to_whoever_may_see_it(rundir: str) -> None:
    env = unit_env(rundir)
    log = os.path.join(rundir, "log")
    holder = start_ready([os.path.join(UNIT, "holder")], env, log)
    idle = None
    try:
        holder_path = os.path.join(rundir, "holder.sock")
        r, w = os.pipe()
        subprocess.run([S6IPC, "fdholder-store", "-T", "60000", holder_path, "unix:/expiring"], env=env,
                       stdin=r, check=True, timeout=20)
        subprocess.run([S6IPC, "fdholder-store", holder_path, "unix:/forever"], env=env, stdin=r,
                       check=True, timeout=20)
        idle = Raw(holder_path)
        doc = wait_clients(holder.pid, 1)
        assert [e["id"] for e in doc["held"]] == ["unix:/expiring", "unix:/forever"]  # type: ignore[index]
        expiring, forever = doc["held"]  # type: ignore[misc]
        assert 50 < expiring["expires_in"] <= 60 and forever["expires_in"] is None
        assert expiring["inode"] == forever["inode"] == os.fstat(r).st_ino
        assert doc["clients"] == [{"uid": 0, "gid": 0, "age": doc["clients"][0]["age"]}]  # type: ignore[index]
        assert (doc["program"], doc["pid"], doc["generation"], doc["lameduck"]) == \
            ("fdholderd", holder.pid, 0, False)
        text = subprocess.run([S6IPC, "status", str(holder.pid)], capture_output=True, text=True,
                              timeout=20, check=True).stdout
        assert text.startswith(f"fdholderd pid {holder.pid}, version ") and "id unix:/expiring" in text
        os.close(r)
        os.close(w)
    finally:
        if idle is not None:
            idle.close()
        stop(holder)


@requires_root
@needs_reachable_interpreter
def test_live_view_is_refused_to_other_users(rundir: str) -> None:
    """The live view is root's and the daemon's euid's only: ``s6ipc status`` run as nobody gets a
    refusal, exit 1 (nobody execs our interpreter: skipped where it cannot)."""
    holder = start_ready([os.path.join(UNIT, "holder")], unit_env(rundir), os.path.join(rundir, "log"))
    try:
        uid, gid = nobody_ids()
        as_nobody = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", S6IPC, "status"]
        refused = subprocess.run([*as_nobody, str(holder.pid)], capture_output=True, text=True, timeout=20)
        assert refused.returncode == 1, refused.stderr
        assert f"uid {uid} may not read the live view of fdholderd" in refused.stderr
    finally:
        stop(holder)


def wait_clients(pid: int, count: int, timeout: float = 10) -> Dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        doc = view(pid)
        if len(doc["clients"]) == count or time.monotonic() > deadline:  # type: ignore[arg-type]
            return doc
        time.sleep(0.02)


# -- readiness around an upgrade --------------------------------------------------------------
def _datagrams(sock: socket.socket, count: int, timeout: float = 30) -> List[str]:
    out = []
    sock.settimeout(timeout)
    for _ in range(count):
        out.append(sock.recv(4096).decode())
    return out


def test_sd_notify_says_reloading_then_ready_and_never_mainpid(rundir: str, copy: str) -> None:
    path = os.path.join(rundir, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        env = dict(unit_env(rundir), PYTHONPATH=copy, NOTIFY_SOCKET=path)
        log = os.path.join(rundir, "log")
        holder = start_ready([os.path.join(UNIT, "holder")], env, log)
        try:
            assert _datagrams(notify, 1) == ["READY=1"]
            t0 = time.monotonic_ns() // 1000
            holder.send_signal(signal.SIGUSR2)
            reloading, ready = _datagrams(notify, 2)
            wait_generation(holder.pid, 1)
            # a failed preflight: RELOADING=1 too, then READY=1 from the old image
            _edit(copy, "fdholder/ere.py", lambda text: text + "\ndef broken(:\n")
            holder.send_signal(signal.SIGUSR2)
            failed = _datagrams(notify, 2)
            assert len(_wait_warnings(log, 1)) == 1 and view(holder.pid)["generation"] == 1
        finally:
            stop(holder)
    lines = reloading.split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=") and len(lines) == 2
    assert t0 <= int(lines[1].split("=")[1]) <= time.monotonic_ns() // 1000
    assert ready == "READY=1"
    assert [m.split("\n")[0] for m in failed] == ["RELOADING=1", "READY=1"]
    assert not any("MAINPID" in m for m in [reloading, ready, *failed])


def test_s6s_own_clients_are_served_across_an_upgrade(rundir: str) -> None:
    """s6's C clients (s6-fdholder-list, s6-fdholder-retrieve) started right after SIGUSR2 are
    answered — by the old image while the preflight runs beside its loop, or by the new one after
    waiting in the backlog through the exec — and the upgrade happens."""
    c_list, c_retrieve = theirs("fdholder-list"), theirs("fdholder-retrieve")
    env = unit_env(rundir)
    log = os.path.join(rundir, "log")
    holder = start_ready([os.path.join(UNIT, "holder")], env, log)
    try:
        subprocess.run([os.path.join(UNIT, "park")], env=env, check=True, timeout=20)
        path = os.path.join(rundir, "holder.sock")
        (ident, (inode, _)), = held(holder.pid).items()
        holder.send_signal(signal.SIGUSR2)
        listed = subprocess.Popen([*c_list, path], stdout=subprocess.PIPE)
        retrieved = subprocess.Popen([*c_retrieve, path, ident, "stat", "-L", "-c", "%i", "/dev/stdin"],
                                     stdout=subprocess.PIPE)
        assert listed.communicate(timeout=30)[0].decode().split() == [ident] and listed.returncode == 0
        assert retrieved.communicate(timeout=30)[0].decode().strip() == str(inode)
        assert retrieved.returncode == 0
        wait_generation(holder.pid, 1)
    finally:
        stop(holder)


def test_the_guardian_under_systemd_with_the_shipped_unit(user_manager: sdmanager.UserManager, rundir: str,
                                                          copy: str) -> None:
    """units/systemd/s6ipc-fdholder.service (KillMode=process, Restart=on-failure, ExecReload=s6ipc
    upgrade) and a new version whose take-over fails: ``systemctl reload`` fails (the verdict), systemd
    restarts the holder under a new MainPID, and it holds every descriptor again — same ids, limits
    and inodes — taken from the guardian the old image forked before its exec."""
    m = user_manager
    env = unit_env(rundir)
    log = os.path.join(rundir, "log")
    m.write_unit("holder.service", holder_unit(rundir))
    m.write_unit("holder.service.d/test.conf",
                 f"[Service]\nStandardOutput=append:{log}\nStandardError=append:{log}\n"
                 f"Environment=PYTHONPATH={copy}\nRestartSec=100ms\n")
    m.systemctl("start", "holder.service")
    pid = int(m.prop("holder.service", "MainPID"))
    store_pipes(env, os.path.join(rundir, "holder.sock"), 3)
    before = held(pid)
    assert len(before) == 3
    _edit(copy, "fdholder/server.py", lambda text: text + (
        "\n\ndef _restore(self, state):\n    raise ValueError('a bug in the new version')\n\n\n"
        "FdHolderDaemon.restore = _restore\n"))
    reload = m.systemctl("reload", "holder.service", check=False)
    assert reload.returncode != 0, "the reload's verdict: the new image died"
    assert wait_until(lambda: m.prop("holder.service", "NRestarts") == "1", 30, 0.1)
    assert m.wait_state("holder.service", "active/running", 30) == "active/running"
    new = int(m.prop("holder.service", "MainPID"))
    assert new != pid
    assert held(new) == before
    with open(log) as f:
        text = f.read()
    assert "took 3 descriptors from the guardian" in text, text
