"""ipcserver-access against Debian's s6-ipcserver-access, run directly (no server) on a socket.

Each differential test runs the same scenario — rules directory, options, environment, fd 0 — through
``s6ipc s6-ipcserver-access`` and ``/usr/bin/s6-ipcserver-access`` and compares exit code, stdout
(the program's output: ``env`` shows the environment *in order*) and stderr (pids normalised).
Every scenario also states the expected exit code, so two identical failures cannot pass.

The helpers shared with the other access-control test modules live in
(tests/support/access.py). The end of this file runs the worked example of
docs/access-control.md for real (group ``wheel``, per-user environment).
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import socket
import subprocess
import tempfile
from typing import Dict, Iterator, List

import pytest

from tests.support.access import (
    ACCESS_WORDS,
    BASE_ENV,
    GID,
    UID,
    Result,
    RuleSpec,
    both,
    make_rules,
    needs_s6,
    normalise,
    same,
)
from tests.support.processes import S6IPC, request, run


@pytest.fixture
def tmp() -> Iterator[str]:
    """A scratch directory every user can traverse (the tests run servers as nobody too)."""
    d = tempfile.mkdtemp(prefix="s6acc", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- the rule lookup and the log lines ----------------------------------------------------------
REFERENCE_RULES: Dict[str, RuleSpec] = {
    "uid/1000": {"deny": True},
    "gid/1000": {"allow": True},
    "uid/1001": {"allow": True, "deny": True},
    "gid/2000": {"allow": True, "env": {"G": b"group\n"}},
    "uid/default": {"deny": True},
    "uid/1002": {"allow": True, "env": {"BAR": b"bar\n"}, "exec": b"echo fromexec ${PROTO}\n"},
    "uid/1003": {"allow": True, "env": {
        "FOO": b"hello world  \t\r\nsecond line\n", "SPACES": b"   \n", "NUL": b"a\0b\n",
        "INHERITED": b"", ".hidden": b"x\n", "A=B": b"y\n", "PROTO": b"pr\n", "IPCLOCALPATH": b"lp\n",
        "EMPTYLINE": b"\n"}},
    "uid/1004": {"allow": True, "env": {"PATH": b"/nonexistent\n"}},
    "uid/1005": {"allow": True, "exec": b"echo a\0echo b\n"},
    "uid/self": {"allow": True, "env": {"SELF": b"uid\n"}},
    "gid/self": {"allow": True, "env": {"SELF": b"gid\n"}},
}


@needs_s6
@pytest.mark.parametrize("uid,gid,opts,rc", [
    ("1000", "1000", ["-v2"], 1),   # uid deny beats gid allow: Permission denied
    ("1001", "1000", ["-v2"], 0),   # allow beats deny in one rule directory
    ("1010", "2000", ["-v2"], 0),   # gid rule
    ("1010", "1000", ["-v2"], 0),
    ("1010", "3000", ["-v2"], 1),   # uid/default deny
    ("1010", "3000", ["-v1"], 1),   # a deny is silent at -v1
    ("1002", "3000", [], 0),        # exec rule: execlineb -Pc, prog ignored, no substitution
    ("1003", "3000", ["-v0"], 0),   # envdir semantics, rule env overrides PROTO, not LOCALPATH
    ("1004", "3000", [], 0),        # rule PATH does not change the program search
    ("1005", "3000", [], 0),        # exec string is a C string: cut at the first NUL
    (str(UID), "3000", [], 0),      # uid/self
    ("1010", str(GID), [], 0),      # gid/self
])
def test_rules_directory(tmp: str, uid: str, gid: str, opts: List[str], rc: int) -> None:
    rules = make_rules(os.path.join(tmp, "rules"), REFERENCE_RULES)
    env = {**BASE_ENV, "IPCREMOTEEUID": uid, "IPCREMOTEEGID": gid}
    result = same(both([*opts, "-i", rules, "env"], env), rc)
    if uid == "1003":
        lines = result.out.decode().splitlines()
        for expected in ("FOO=hello world", "SPACES=", "NUL=a", "PROTO=pr", "IPCLOCALPATH=", "EMPTYLINE="):
            assert expected in lines
        assert not any(line.startswith(("INHERITED=", "A=B", ".hidden")) for line in lines)
    if uid == "1002":
        assert result.out == b"fromexec ${PROTO}\n"


@needs_s6
def test_missing_rules_directory_denies(tmp: str) -> None:
    result = same(both(["-v2", "-i", os.path.join(tmp, "nothing"), "true"]), 1)
    assert result.err == ("s6-ipcserver-access: info: deny pid P uid 1000 gid 1000: "
                          "No such file or directory\n")


@needs_s6
def test_default_verbosity_logs_allow_and_no_ruleset_warns(tmp: str) -> None:
    result = same(both(["true"]), 0)
    assert result.err == "s6-ipcserver-access: info: allow pid P uid 1000 gid 1000\n"
    result = same(both(["-v2", "true"]), 0)
    assert result.err.startswith("s6-ipcserver-access: warning: invoked without a ruleset!\n")


@needs_s6
@pytest.mark.parametrize("env,rc", [
    ({"PATH": "/usr/bin:/bin"}, 100),                                             # PROTO not set
    ({**BASE_ENV, "IPCREMOTEEUID": ""}, 100),                                     # invalid $IPCREMOTEEUID
    ({**BASE_ENV, "IPCREMOTEEUID": "+1"}, 100),
    ({**BASE_ENV, "IPCREMOTEEUID": "4294967296"}, 100),
    ({**BASE_ENV, "IPCREMOTEEUID": "007"}, 0),
    ({k: v for k, v in BASE_ENV.items() if k != "IPCREMOTEEGID"}, 100),          # IPCREMOTEEGID not set
    ({"PATH": "/usr/bin:/bin", "PROTO": "FOO", "IPCREMOTEEUID": "1"}, 100),       # FOOREMOTEEUID not set
    ({"PATH": "/usr/bin:/bin", "PROTO": "FOO", "FOOREMOTEEUID": "1", "FOOREMOTEEGID": "2"}, 0),
    ({"PATH": "/usr/bin:/bin", "PROTO": "", "REMOTEEUID": "1", "REMOTEEGID": "2"}, 0),
])
def test_environment_checks(env: Dict[str, str], rc: int) -> None:
    result = same(both(["env"], env), rc)
    if env.get("PROTO") == "FOO" and rc == 0:
        assert b"FOOLOCALPATH=\n" in result.out


@needs_s6
@pytest.mark.parametrize("args", [[], [""], ["-v"], ["-vx", "true"], ["-q", "true"], ["--x", "true"],
                                  ["-i"], ["-E", "-x"]])
def test_usage_errors(args: List[str]) -> None:
    result = same(both(args), 100)
    assert result.err == (
        "s6-ipcserver-access: usage: s6-ipcserver-access [ -v verbosity ] [ -e | -E ] [ -l localname ] "
        "[ -i rulesdir | -x rulesfile ] prog...\n")


@needs_s6
def test_without_env_and_localname(tmp: str, sockdir: str) -> None:
    rules = make_rules(os.path.join(tmp, "rules"), {"uid/1000": {"allow": True, "env": {
        "KEPT": b"k\n", "IPCCONNNUM": b"9\n", "PROTO": b"x\n"}}})
    env = {**BASE_ENV, "IPCCONNNUM": "3", "IPCREMOTEPATH": "/r", "IPCLOCALPATH": "/old"}
    out = same(both(["-E", "-l", "ignored", "-i", rules, "env"], env), 0).out.decode()
    assert "KEPT=k" in out
    for name in ("PROTO", "IPCREMOTEEUID", "IPCREMOTEEGID", "IPCREMOTEPATH", "IPCLOCALPATH", "IPCCONNNUM"):
        assert f"{name}=" not in out
    out = same(both(["-l", "", "-i", rules, "env"], env), 0).out.decode()
    assert "IPCLOCALPATH=\n" in out and "IPCCONNNUM=9\n" in out
    # getsockname of a real connection, and the failure when fd 0 is not a socket
    path = os.path.join(sockdir, "s")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            conn, _ = listener.accept()
            with conn:
                out = same(both(["-i", rules, "env"], env, conn), 0).out.decode()
    assert f"IPCLOCALPATH={path}\n" in out
    results = {who: Result(p.returncode, p.stdout, normalise(p.stderr.decode())) for who, p in (
        (w, run([*ACCESS_WORDS[w], "-i", rules, "env"], stdin=subprocess.DEVNULL, env=env))
        for w in ("program", "s6"))}
    err = same(results, 111).err
    assert err == ("s6-ipcserver-access: info: allow pid P uid 1000 gid 1000\n"
                   "s6-ipcserver-access: fatal: unable to ipc_local: Socket operation on non-socket\n")


@needs_s6
def test_cdb_backend_and_last_ruleset_wins(tmp: str) -> None:
    rules = make_rules(os.path.join(tmp, "rules"), REFERENCE_RULES)
    cdb = os.path.join(tmp, "rules.cdb")
    assert run([S6IPC, "accessrules-cdb-from-fs", cdb, rules]).returncode == 0
    for uid, gid, rc in (("1000", "1000", 1), ("1003", "3000", 0), ("1002", "1", 0), ("1010", "2000", 0)):
        env = {**BASE_ENV, "IPCREMOTEEUID": uid, "IPCREMOTEEGID": gid}
        same(both(["-v2", "-x", cdb, "env"], env), rc)
        same(both(["-v2", "-x", "/nonexistent.cdb", "-i", rules, "env"], env), rc)
    missing = os.path.join(tmp, "missing.cdb")
    err = same(both(["-i", rules, "-x", missing, "true"]), 111).err
    assert err.endswith(f"unable to cdb_init {missing}: No such file or directory\n")
    # the environment checks come before the cdb is opened
    same(both(["-x", os.path.join(tmp, "missing.cdb"), "true"], {"PATH": "/bin"}), 100)


@needs_s6
def test_exec_failure(tmp: str) -> None:
    err = same(both(["/nonexistent/prog"]), 127).err
    assert err.endswith("fatal: unable to exec /nonexistent/prog: No such file or directory\n")
    err = same(both([tmp]), 126).err
    assert err.endswith(f"fatal: unable to exec {tmp}: Permission denied\n")


# -- the worked example of docs/access-control.md -----------------------------------------------
def _wheel_gid() -> int:
    try:
        return grp.getgrnam("wheel").gr_gid
    except KeyError:
        pass
    if os.geteuid() != 0 or shutil.which("groupadd") is None:
        pytest.skip("no group wheel and no way to create it (needs root and groupadd)")
    created = run(["groupadd", "-r", "wheel"])
    if created.returncode != 0:
        pytest.skip(f"groupadd wheel failed: {created.stderr.decode(errors='replace')}")
    return grp.getgrnam("wheel").gr_gid


def _connect_as(uid: int, gid: int, path: str) -> bytes:
    """Connect to *path* from a process with euid *uid* and egid *gid*; return what it read."""
    script = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
              "s.shutdown(socket.SHUT_WR)\nb=b''\nwhile True:\n c=s.recv(4096)\n if not c: break\n b+=c\n"
              "sys.stdout.buffer.write(b)\n")
    p = run(["/usr/bin/python3", "-c", script, path], user=uid, group=gid, extra_groups=[])
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (clients connect as other users)")
def test_guide_example_wheel_only_with_per_user_env(tmp: str, sockdir: str, server_factory) -> None:  # type: ignore[no-untyped-def]
    """docs/access-control.md, run as written: group wheel may connect, alice gets her own env."""
    wheel = _wheel_gid()
    alice, bob, mallory = 23001, 23002, 23003
    rules = os.path.join(tmp, "rules")
    # -- the commands of the guide (section "Worked example") --
    make_rules(rules, {
        f"gid/{wheel}": {"allow": True, "env": {"ROLE": b"admin\n"}},
        f"uid/{alice}": {"allow": True, "env": {"ROLE": b"admin\n", "GREETING": b"hello alice\n"}},
    })
    cdb = os.path.join(tmp, "rules.cdb")
    assert run([S6IPC, "accessrules-cdb-from-fs", cdb, rules]).returncode == 0
    path = os.path.join(sockdir, "admin.sock")
    service = ["sh", "-c", 'echo "uid=$IPCREMOTEEUID role=${ROLE:-none} greeting=${GREETING:-none}"']
    server = server_factory([S6IPC, "ipcserver", "-1", path, S6IPC, "ipcserver-access", "-v2", "-x", cdb,
                             *service])
    assert _connect_as(alice, wheel, path) == b"uid=23001 role=admin greeting=hello alice\n"
    assert _connect_as(bob, wheel, path) == b"uid=23002 role=admin greeting=none\n"
    assert _connect_as(mallory, 100, path) == b""          # not in wheel: refused, nothing written
    assert _connect_as(alice, 100, path) == b"uid=23001 role=admin greeting=hello alice\n"  # the uid rule
    assert request(path) == b""                           # root's primary group is not wheel
    log = server.log()
    assert f"ipcserver-access: info: deny pid {server.proc.pid} uid {mallory} gid 100: " \
           "No such file or directory" in log
    assert re.search(rf"ipcserver-access: info: allow pid \d+ uid {bob} gid {wheel}\n", log)
