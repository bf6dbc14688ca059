"""Bad input for access control: never an accidental allow, one clear line, the daemon stays up.

Each case runs through the fast path, the forced program and (where s6 itself survives the input)
s6's C chain, with the helpers of test_access_fastpath: the client must read nothing, the log must hold
one ``s6-ipcserver-access: fatal: …`` line (or a deny line), and a following good connection must be
served by the same daemon. Differences from s6 are the documented ones (docs/ipcserver-access.md):
a damaged cdb is reported as ``Protocol error`` where s6 2.11 prints ``Success`` (errno 0), and
execline missing gets a warning line before s6's fatal line.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import subprocess
import tempfile
from typing import Callable, Dict, Iterator, List

import pytest

from tests.support.access import (
    BASE_ENV,
    EXECLINEB,
    WHO,
    Step,
    compare,
    make_rules,
    needs_s6,
    run_access,
    set_rules,
    split_log,
    start,
)
from tests.support.processes import (
    S6IPC,
    needs_reachable_interpreter,
    proc_children,
    run,
    unshare_hint,
    wait_until,
)

UID = os.geteuid()
GOOD = b"good\n"


@pytest.fixture
def rules() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="s6bad", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def good_rules(root: str) -> Callable[[], None]:
    return set_rules(root, {f"uid/{UID}": {"allow": True, "exec": b"echo good\n"}})


def fatal_lines(logs: Dict[str, Dict[str, List[str]]], who: str) -> List[str]:
    return [line for line in logs[who]["access"] if ": fatal: " in line]


# -- odd rule directory names ---------------------------------------------------------------------
@needs_s6
def test_odd_rule_names_change_nothing(sockdir: str, rules: str, handler: str) -> None:
    """Names that are not a decimal id in canonical form never match; the default rule decides."""

    def odd() -> None:
        for entry in os.listdir(rules):
            shutil.rmtree(os.path.join(rules, entry))
        make_rules(rules, {"uid/default": {"allow": True, "exec": b"echo default\n"}})
        for name in (f" {UID}", f"{UID}\n", f"0{UID}", f"+{UID}", "-1", "9" * 250, "self ", "default\n"):
            make_rules(rules, {f"uid/{name}": {"deny": True}})
        os.makedirs(os.fsencode(rules) + b"/uid/\xff\xfe/deny")
        os.makedirs(os.path.join(rules, "gid", "..."))
        open(os.path.join(rules, "uid", "file-not-dir"), "wb").close()

    compare(sockdir, ["-v2"], ["-v2", "-i", rules], [handler, "env"], [(odd, b"default\n")], odd)
    # and s6's compiler agrees byte for byte on such a tree
    cdbs = []
    os.unlink(os.path.join(rules, "uid", "file-not-dir"))
    for prog in ([S6IPC, "accessrules-cdb-from-fs"], ["/usr/bin/s6-accessrules-cdb-from-fs"]):
        cdbs.append(os.path.join(sockdir, f"{len(cdbs)}.cdb"))
        assert run([*prog, cdbs[-1], rules]).returncode == 0
    with open(cdbs[0], "rb") as a, open(cdbs[1], "rb") as b:
        assert a.read() == b.read()


@needs_s6
def test_symlink_loop_is_a_refusal_with_one_line(sockdir: str, rules: str, handler: str) -> None:
    def loop() -> None:
        good_rules(rules)()
        shutil.rmtree(os.path.join(rules, "uid", str(UID)))
        os.symlink(str(UID), os.path.join(rules, "uid", str(UID)))

    steps: List[Step] = [(loop, b""), (good_rules(rules), GOOD)]
    logs = compare(sockdir, ["-v2"], ["-i", rules], [handler, "env"], steps, good_rules(rules))
    loop_message = "Too many levels of symbolic links"
    assert fatal_lines(logs, "fast") == [
        f"s6-ipcserver-access: fatal: unable to check fs ruleset in {rules}: {loop_message}"]
    assert f"D: info: end pid P uid {UID} exitcode 111" in logs["fast"]["daemon"]


# -- unreadable files: the daemon runs as nobody, so permissions apply -----------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the daemon runs as nobody)")
@needs_s6
@needs_reachable_interpreter
def test_unreadable_files_as_nobody(rules: str, handler: str) -> None:
    nobody = pwd.getpwnam("nobody")
    sockdir = tempfile.mkdtemp(prefix="s6n", dir="/tmp")
    os.chown(sockdir, nobody.pw_uid, nobody.pw_gid)
    as_nobody = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    base = f"uid/{UID}"

    def with_mode(path: str, mode: int, spec: Dict[str, object]) -> Callable[[], None]:
        def change() -> None:
            set_rules(rules, {base: spec})()
            os.chmod(os.path.join(rules, base, path), mode)
        return change

    steps: List[Step] = [
        # allow unreadable: access(R_OK) fails with EACCES, so it is as if absent: no rule, refused
        (with_mode("allow", 0, {"allow": True, "exec": b"echo allowed\n"}), b""),
        # deny unreadable: no rule either (refused, ENOENT rather than EACCES)
        (with_mode("deny", 0, {"deny": True}), b""),
        # an unreadable env file is a backend error: refused, fatal line
        (with_mode("env/SECRET", 0, {"allow": True, "env": {"SECRET": b"x\n"}, "exec": b"echo leak\n"}),
         b""),
        # an unreadable exec file is ignored (as if absent): prog runs
        (with_mode("exec", 0, {"allow": True, "exec": b"echo never\n"}), b"ok\n"),
        # a rules directory nobody can enter: no rule, refused
        (with_mode(".", 0o700, {"allow": True, "exec": b"echo entered\n"}), b""),
        (good_rules(rules), GOOD),
    ]
    try:
        logs = compare(sockdir, [], ["-v2", "-i", rules], [handler, "ok"], steps, good_rules(rules),
                       **as_nobody)
    finally:
        os.chmod(rules, 0o755)
        shutil.rmtree(sockdir, ignore_errors=True)
    access = logs["fast"]["access"]
    nothing = ": No such file or directory"
    assert access[0].endswith(nothing) and access[1].endswith(nothing)
    assert access[2] == f"s6-ipcserver-access: fatal: unable to check fs ruleset in {rules}: " \
                        "Permission denied"
    assert access[4].endswith(": No such file or directory")


# -- huge env files -----------------------------------------------------------------------------
@needs_s6
def test_huge_env_files(sockdir: str, rules: str, handler: str) -> None:
    """A 4 MiB one-line file gives its first 4095 bytes; 200 files of 4000 bytes all apply."""

    def huge() -> None:
        env = {f"V{i:03}": b"%03d" % i + b"x" * 3997 + b"\n" for i in range(200)}
        set_rules(rules, {f"uid/{UID}": {"allow": True, "env": env}})()
        with open(os.path.join(rules, f"uid/{UID}/env/HUGE"), "wb") as f:
            f.write(b"h" * (4 << 20))

    logs = compare(sockdir, [], ["-i", rules], [handler, "env"], [(huge, None)], huge)
    assert logs["fast"]["access"] == [f"s6-ipcserver-access: info: allow pid P uid {UID} gid {os.getegid()}"]


# -- damaged cdb files ------------------------------------------------------------------------------
def _valid_cdb(path: str) -> bytes:
    tree = tempfile.mkdtemp(prefix="s6t", dir="/tmp")
    try:
        make_rules(tree, {f"uid/{UID}": {"allow": True, "exec": b"echo good\n"}, "gid/5": {"deny": True}})
        assert run([S6IPC, "accessrules-cdb-from-fs", path, tree]).returncode == 0
    finally:
        shutil.rmtree(tree)
    with open(path, "rb") as f:
        return f.read()


def _damaged(kind: str, good: bytes) -> bytes:
    from s6ipc.access.cdb import cdb_bytes

    if kind == "truncated-header":
        return good[:100]
    if kind == "truncated-tables":  # records intact, hash tables gone
        return good[: int.from_bytes(good[:4], "little")]
    if kind == "text":
        return b"this is not a cdb\n" * 200
    if kind == "random":
        return random.Random(7).randbytes(3000)
    if kind == "empty":
        return b""
    if kind == "bad-env-length":
        return cdb_bytes([(f"uid/{UID}".encode(), b"A\x10\x01" + b"x" * 4097 + b"\x00\x00")])
    if kind == "bad-exec-length":
        return cdb_bytes([(f"uid/{UID}".encode(), b"A\x00\x00\x00\x09echo")])
    if kind == "too-long":
        return cdb_bytes([(f"uid/{UID}".encode(), b"A" + b"\x00" * 8200)])
    if kind == "empty-value":
        return cdb_bytes([(f"uid/{UID}".encode(), b"")])
    raise AssertionError(kind)


DAMAGES = ["truncated-header", "truncated-tables", "text", "random", "empty", "bad-env-length",
           "bad-exec-length", "too-long", "empty-value"]


@needs_s6
@pytest.mark.parametrize("kind", DAMAGES)
def test_damaged_cdb(sockdir: str, rules: str, handler: str, kind: str) -> None:
    cdb = os.path.join(rules, "rules.cdb")
    good = _valid_cdb(cdb)

    def damage() -> None:
        tmp = cdb + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_damaged(kind, good))
        os.rename(tmp, cdb)

    def repair() -> None:
        with open(cdb + ".tmp", "wb") as f:
            f.write(good)
        os.rename(cdb + ".tmp", cdb)

    steps: List[Step] = [(repair, GOOD), (damage, b""), (repair, GOOD)]
    logs = compare(sockdir, ["-v2"], ["-x", cdb], [handler, "env"], steps, repair, same_logs=False)
    assert logs["fast"] == logs["program"]
    ours, theirs = fatal_lines(logs, "fast"), fatal_lines(logs, "s6")
    assert len(ours) == len(theirs) == 1, (ours, theirs)
    if theirs[0].endswith(": Success"):  # s6 2.11: errno 0 for a structurally damaged file
        assert ours[0] == theirs[0][: -len("Success")] + "Protocol error"
    else:
        assert ours == theirs
    assert logs["fast"]["daemon"] == logs["s6"]["daemon"]


def test_record_past_the_end_of_the_cdb(rules: str) -> None:
    """A slot pointing at a record whose data runs past the end: a clean error (s6 2.11 does not
    check that length and reads past its mapping)."""
    from s6ipc.access.cdb import cdb_bytes

    data = bytearray(cdb_bytes([(f"uid/{UID}".encode(), b"D")]))
    data[2048 + 4 : 2048 + 8] = (1 << 20).to_bytes(4, "little")  # dlen
    cdb = os.path.join(rules, "r.cdb")
    with open(cdb, "wb") as f:
        f.write(data)
    env = {**BASE_ENV, "IPCREMOTEEUID": str(UID), "IPCREMOTEEGID": "1"}
    result = run_access([S6IPC, "s6-ipcserver-access", "-x", cdb, "true"], env)
    assert (result.rc, result.err) == (
        111, f"s6-ipcserver-access: fatal: unable to check cdb ruleset in {cdb}: Protocol error\n")


@needs_s6
def test_rules_file_is_a_directory_or_missing(sockdir: str, rules: str, handler: str) -> None:
    cdb = os.path.join(rules, "rules.cdb")
    good = _valid_cdb(cdb)

    def replace(make: Callable[[], None]) -> Callable[[], None]:
        def change() -> None:
            if os.path.isdir(cdb):
                os.rmdir(cdb)
            elif os.path.exists(cdb):
                os.unlink(cdb)
            make()
        return change

    def write_good() -> None:
        with open(cdb, "wb") as f:
            f.write(good)

    steps: List[Step] = [(replace(lambda: os.mkdir(cdb)), b""), (replace(lambda: None), b""),
                         (replace(write_good), GOOD)]
    logs = compare(sockdir, ["-v2"], ["-x", cdb], [handler, "env"], steps, replace(write_good))
    prefix = f"s6-ipcserver-access: fatal: unable to cdb_init {cdb}: "
    assert fatal_lines(logs, "fast") == [prefix + "No such device", prefix + "No such file or directory"]


# -- execline missing ---------------------------------------------------------------------------
def _cannot_hide_execline() -> str:
    """Why execline cannot be hidden in a mount namespace here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root to hide execline in a mount namespace"
    if shutil.which("unshare") is None or not os.path.isdir(os.path.dirname(EXECLINEB)):
        return f"needs unshare and {os.path.dirname(EXECLINEB)} to hide execline"
    command = ["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {os.path.dirname(EXECLINEB)}"]
    probe = subprocess.run(command, capture_output=True, text=True)
    if probe.returncode == 0:
        return ""
    return (f"cannot hide execline: {' '.join(command)}: exit {probe.returncode}: {probe.stderr.strip()}"
            + unshare_hint(probe.stderr))


_NO_HIDING = _cannot_hide_execline()


@pytest.mark.skipif(bool(_NO_HIDING), reason=_NO_HIDING or "-")
@needs_s6
def test_execline_missing(sockdir: str, rules: str, handler: str) -> None:
    """In a mount namespace where /usr/lib/execline/bin is empty, an exec rule cannot run: the
    connection is refused (nothing written), with a warning saying why, and the daemon stays."""
    mount = f"mount -t tmpfs none {os.path.dirname(EXECLINEB)}"
    hide = ["unshare", "-m", "sh", "-c", mount + ' && exec "$@"', "sh"]
    exec_rule = set_rules(rules, {f"uid/{UID}": {"allow": True, "exec": b"echo via execline\n"}})
    plain = set_rules(rules, {f"uid/{UID}": {"allow": True}})
    steps: List[Step] = [(exec_rule, b""), (plain, b"ok\n")]
    logs = compare(sockdir, ["-v2"], ["-i", rules], [handler, "ok"], steps, plain, same_logs=False, wrap=hide)
    missing = f"unable to exec {EXECLINEB}: No such file or directory"
    for who in WHO:
        assert f"D: info: end pid P uid {UID} exitcode 127" in logs[who]["daemon"]
        assert logs[who]["access"][-2] == f"s6-ipcserver-access: fatal: {missing}"
    for who in ("fast", "program"):
        assert logs[who]["access"][1] == ("s6-ipcserver-access: warning: execline is not installed "
                                          f"({EXECLINEB} not found): exec rules cannot run, "
                                          "the connection is refused")
    assert logs["fast"] == logs["program"]
    assert os.listdir(os.path.dirname(EXECLINEB))  # the host still has it


# -- a FIFO in the rules: it may block one connection, never the daemon ----------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a second client connects as nobody)")
@needs_s6
def test_fifo_env_file_blocks_one_connection_not_the_daemon(sockdir: str, rules: str, handler: str) -> None:
    import socket

    nobody = pwd.getpwnam("nobody").pw_uid
    client_b = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\n"
                "s.connect(sys.argv[1])\ns.shutdown(socket.SHUT_WR)\nsys.stdout.buffer.write(s.recv(100))\n")
    for who in WHO:
        make_rules(rules, {f"uid/{UID}": {"allow": True},
                           f"uid/{nobody}": {"allow": True, "exec": b"echo other\n"}})
        fifo = os.path.join(rules, f"uid/{UID}/env/F")
        os.makedirs(os.path.dirname(fifo), exist_ok=True)
        os.mkfifo(fifo)
        writer = os.open(fifo, os.O_RDWR)  # a writer that has not written yet
        path = os.path.join(sockdir, f"{who}.sock")
        server = start(who, path, [], ["-i", rules], [handler, "env"])
        try:
            with socket.socket(socket.AF_UNIX) as a:
                a.settimeout(10)
                a.connect(path)
                a.shutdown(socket.SHUT_WR)
                b = run(["/usr/bin/python3", "-c", client_b, path], user=nobody, timeout=10)
                assert b.stdout == b"other\n", (who, b)   # served while A waits on the FIFO
                wait_until(lambda s=server, f=fifo: _has_open(proc_children(s.proc.pid), f))
                os.write(writer, b"from the fifo\n")
                os.close(writer)  # envdir reads up to EOF (skalibs allread), for s6 as for us
                writer = -1
                got = b""
                while True:
                    chunk = a.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            assert b"\nF=from the fifo\n" in got, (who, got)
        finally:
            if writer >= 0:
                os.close(writer)
            log = server.log()
            server.stop()
            shutil.rmtree(os.path.join(rules, "uid"))
        assert split_log(log)["other"] == [] and server.proc.returncode == 0


def _has_open(pids: List[int], path: str) -> bool:
    """Whether one of *pids* has *path* open (the FIFO reader is there: data written now is read)."""
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    return True
        except OSError:
            pass
    return False
