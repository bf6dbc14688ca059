"""The ipcserverd fast path against the real ipcserver-access program and against s6's C chain.

Every scenario runs three times, one server each, driven by the same clients and the same live changes
to the rules:

* ``fast``    — ``socketbinder P s6ipc ipcserverd … s6ipc s6-ipcserver-access …``: our daemon decides
  in-process and spawns only the final program;
* ``program`` — the same daemon with ``python -m s6ipc s6-ipcserver-access …`` (not our prefix, so
  the program really runs per connection);
* ``s6``      — ``socketbinder P s6-ipcserverd … s6-ipcserver-access …``, all of it s6's C.

What each client reads, and the log lines (pids normalised, compared per source: the daemon's lines in
order, the access lines in order, the rest in order), must be the same for the three. The pid relation
is checked separately: the pid in ``allow pid P`` is the pid of the program that served the client.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Callable, Dict, Iterator, List

import pytest

from tests.support.access import (
    EXECLINEB,
    WHO,
    Step,
    compare,
    env_lines,
    make_rules,
    needs_s6,
    set_rules,
    start,
)
from tests.support.processes import (
    FAST_CHILDREN_CPU,
    FASTPATH_CONNECTIONS,
    S6IPC,
    SLOW_CHILDREN_CPU,
    children_cpu_seconds,
    installed_s6,
    proc_children,
    request,
    run,
    wait_until,
)


@pytest.fixture
def rules() -> Iterator[str]:
    d = os.path.join("/tmp", f"s6fp{os.getpid()}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@needs_s6
@pytest.mark.parametrize("server_v,access_v", [("-v2", "-v2"), ("-v1", "-v1"), ("-v0", "-v2"),
                                               ("-v2", "-v0")])
def test_live_rules_directory(sockdir: str, rules: str, handler: str, server_v: str, access_v: str) -> None:
    """Allow with env, explicit deny, exec rule, nothing found, uid/self: changes seen at once."""
    uid, gid = os.geteuid(), os.getegid()
    proto = ["PROTO=IPC", f"IPCREMOTEEUID={uid}", f"IPCREMOTEEGID={gid}",
             f"IPCCONNNUM={installed_s6().connnum(0)}"]
    steps: List[Step] = [
        (set_rules(rules, {f"uid/{uid}": {"allow": True, "env": {"RULEVAR": b"val  \n"}}}),
         env_lines("PATH=/usr/bin:/bin", "INHERITED=yes", *proto, "IPCREMOTEPATH=", "RULEVAR=val",
                   "IPCLOCALPATH=SOCKET")),
        (set_rules(rules, {f"uid/{uid}": {"deny": True}, f"gid/{gid}": {"allow": True}}), b""),
        (set_rules(rules, {f"gid/{gid}": {"allow": True, "exec": b"echo fromexec ${PROTO}\n"}}),
         b"fromexec ${PROTO}\n"),
        (set_rules(rules, {}), b""),
        # unsetting INHERITED moves the last variable into its place (skalibs env_merge)
        (set_rules(rules, {"uid/self": {"allow": True, "env": {"INHERITED": b""}}}),
         env_lines("PATH=/usr/bin:/bin", "IPCREMOTEPATH=", *proto, "IPCLOCALPATH=SOCKET")),
    ]
    logs = compare(sockdir, [server_v], [access_v, "-i", rules], [handler, "env"], steps,
                   set_rules(rules, {}))
    if access_v == "-v2":
        assert logs["fast"]["access"] == [
            f"s6-ipcserver-access: info: allow pid P uid {uid} gid {gid}",
            f"s6-ipcserver-access: info: deny pid P uid {uid} gid {gid}: Permission denied",
            f"s6-ipcserver-access: info: allow pid P uid {uid} gid {gid}",
            f"s6-ipcserver-access: info: deny pid P uid {uid} gid {gid}: No such file or directory",
            f"s6-ipcserver-access: info: allow pid P uid {uid} gid {gid}",
        ]
    if server_v == "-v2":  # starting, status, 5 x (allow, status, end, status), SIGTERM, exiting
        assert len(logs["fast"]["daemon"]) == 2 + 5 * 4 + 2


@needs_s6
def test_without_env_and_with_localname(sockdir: str, rules: str, handler: str) -> None:
    uid = os.geteuid()
    keep = set_rules(rules, {f"uid/{uid}": {"allow": True, "env": {"KEPT": b"k\n"}}})
    steps: List[Step] = [(keep, env_lines("PATH=/usr/bin:/bin", "INHERITED=yes", "KEPT=k"))]
    compare(sockdir, [], ["-E", "-l", "ignored", "-i", rules], [handler, "env"], steps, keep)
    keep = set_rules(rules, {f"uid/{uid}": {"allow": True, "env": {"PROTO": b"x\n"}}})
    out = env_lines("PATH=/usr/bin:/bin", "INHERITED=yes", "IPCREMOTEPATH=", f"IPCREMOTEEUID={uid}",
                    f"IPCREMOTEEGID={os.getegid()}", f"IPCCONNNUM={installed_s6().connnum(0)}", "PROTO=x",
                    "IPCLOCALPATH=")
    compare(sockdir, [], ["-l", "", "-i", rules], [handler, "env"], [(keep, out)], keep)


@needs_s6
def test_pid_in_log_lines_is_the_serving_program(sockdir: str, rules: str, handler: str) -> None:
    """``allow pid P``: P is the pid of the program that served the client, in all three."""
    make_rules(rules, {f"uid/{os.geteuid()}": {"allow": True}})
    for who in WHO:
        path = os.path.join(sockdir, f"{who}.sock")
        server = start(who, path, ["-v2"], ["-i", rules], [handler, "hold"])
        try:
            pid = int(request(path).split()[0])
            wait_until(lambda server=server: " end pid " in server.log())  # type: ignore[misc]
            log = server.log()
        finally:
            server.stop()
        assert f"ipcserver-access: info: allow pid {pid} uid" in log, (who, log)
        assert re.search(rf"ipcserverd: info: allow \d+:\d+ pid {pid} count 1/40", log), (who, log)
        assert f"end pid {pid} uid" in log, (who, log)


#: glibc's posix_spawn leaves its two internal signals (32, 33) at SIG_IGN in the program our
#: ipcserverd spawns (documented in docs/ipcserverd.md; the same with or without the fast path).
#: No program can change them, so s6's children inherit whatever the test run had: ignored too when
#: the run itself was started through posix_spawn (GNU make 4.3 starts recipes that way).
GLIBC_INTERNAL_SIGNALS = (1 << 31) | (1 << 32)


def _without_glibc_signals(state: bytes) -> bytes:
    def fix(m: re.Match[bytes]) -> bytes:
        return b"SigIgn:\t%016x" % (int(m.group(1), 16) & ~GLIBC_INTERNAL_SIGNALS)
    return re.sub(rb"SigIgn:\t([0-9a-f]+)", fix, state)


@needs_s6
def test_same_process_state(sockdir: str, rules: str, handler: str) -> None:
    """fds, ids, signal mask and ignored signals of the final program are the same in all three."""
    make_rules(rules, {f"uid/{os.geteuid()}": {"allow": True}})
    states = {}
    for who in WHO:
        path = os.path.join(sockdir, f"{who}.sock")
        server = start(who, path, [], ["-i", rules], [handler, "state"])
        try:
            states[who] = re.sub(rb"socket:\[\d+\]|/tmp/s6t-log\w+", b"X", request(path))
        finally:
            server.stop()
    assert b"SigIgn" in states["s6"] and b"fd 0 X 02\nfd 1 X 02\n" in states["s6"]
    assert states["fast"] == states["program"]
    assert _without_glibc_signals(states["fast"]) == _without_glibc_signals(states["s6"])


@needs_s6
def test_cdb_replaced_by_rename_or_rewritten(sockdir: str, rules: str, handler: str) -> None:
    """A cdb replaced atomically (accessrules-cdb-from-fs) or rewritten in place is seen at once."""
    uid = os.geteuid()
    cdb = os.path.join(rules, "rules.cdb")
    tree = os.path.join(rules, "tree")

    def compile_from(spec: Dict[str, Dict[str, object]], in_place: bool = False) -> Callable[[], None]:
        def change() -> None:
            shutil.rmtree(tree, ignore_errors=True)
            make_rules(tree, spec)  # type: ignore[arg-type]
            if in_place:
                new = cdb + ".new"
                assert run([S6IPC, "accessrules-cdb-from-fs", new, tree]).returncode == 0
                with open(new, "rb") as src, open(cdb, "r+b") as dst:
                    dst.truncate(0)
                    dst.write(src.read())
                os.unlink(new)
            else:
                assert run([S6IPC, "accessrules-cdb-from-fs", cdb, tree]).returncode == 0
        return change

    steps: List[Step] = [
        (compile_from({f"uid/{uid}": {"allow": True, "exec": b"echo one\n"}}), b"one\n"),
        (compile_from({f"uid/{uid}": {"deny": True}}), b""),
        (compile_from({f"uid/{uid}": {"allow": True, "exec": b"echo three\n"}}), b"three\n"),
        (compile_from({f"uid/{uid}": {"allow": True, "exec": b"echo four!\n"}}, in_place=True), b"four!\n"),
        (compile_from({"uid/default": {"allow": True, "exec": b"echo five\n"}}, in_place=True), b"five\n"),
    ]
    compare(sockdir, ["-v2"], ["-v2", "-x", cdb], [handler, "env"], steps, compile_from({}))


@needs_s6
def test_program_that_cannot_run(sockdir: str, rules: str) -> None:
    """The final program missing: the same fatal line from the access stage, the connection closed."""
    make_rules(rules, {f"uid/{os.geteuid()}": {"allow": True}})
    keep = set_rules(rules, {f"uid/{os.geteuid()}": {"allow": True}})
    logs = compare(sockdir, ["-v2"], ["-i", rules], ["/nonexistent/prog"], [(keep, b""), (keep, b"")], keep)
    assert logs["fast"]["access"][1] == ("s6-ipcserver-access: fatal: unable to exec /nonexistent/prog: "
                                         "No such file or directory")
    assert logs["fast"]["daemon"][4] == f"D: info: end pid P uid {os.geteuid()} exitcode 127"


def test_fast_path_spawns_no_interpreter(sockdir: str, rules: str, handler: str) -> None:
    """The fast path really is one: the CPU time of the daemon's reaped children (cutime+cstime) over
    30 connections is the handler's alone, far below one Python start-up per connection (13–30 ms
    of CPU: a quiet fresh machine's Python starts in 13, so the control allows 5 per connection)."""
    make_rules(rules, {f"uid/{os.geteuid()}": {"allow": True}})
    used = {}
    for who in ("fast", "program"):
        path = os.path.join(sockdir, f"{who}.sock")
        server = start(who, path, [], ["-i", rules], [handler, "ok"])
        try:
            for _ in range(FASTPATH_CONNECTIONS):
                assert request(path) == b"ok\n"
            wait_until(lambda server=server: not proc_children(server.proc.pid))  # type: ignore[misc]
            used[who] = children_cpu_seconds(server.proc.pid)
        finally:
            server.stop()
    assert used["program"] > SLOW_CHILDREN_CPU, used     # the control: the interpreters are visible
    assert used["fast"] < FAST_CHILDREN_CPU, used


@needs_s6
def test_exec_rule_through_execlineb(sockdir: str, rules: str, handler: str) -> None:
    """execlineb -Pc: positional parameters are not substituted, the string is cut at a NUL."""
    if not os.access(EXECLINEB, os.X_OK):
        pytest.skip("execline is not installed")
    spec = {"uid/default": {"allow": True, "exec": b"echo ${1} $# x\0echo never\n"}}
    keep = set_rules(rules, spec)  # type: ignore[arg-type]
    compare(sockdir, [], ["-i", rules], [handler, "env"], [(keep, b"${1} $# x\n")], keep)



@needs_s6
def test_execlineb_as_the_program_is_not_an_exec_rule(sockdir: str, rules: str) -> None:
    """prog may itself be execlineb; only a rule's exec file replaces it."""
    if not os.access(EXECLINEB, os.X_OK):
        pytest.skip("execline is not installed")
    plain = set_rules(rules, {"uid/default": {"allow": True}})
    with_exec = set_rules(rules, {"uid/default": {"allow": True, "exec": b"echo from the rule\n"}})
    compare(sockdir, [], ["-i", rules], [EXECLINEB, "-Pc", "echo from prog"],
            [(plain, b"from prog\n"), (with_exec, b"from the rule\n"), (plain, b"from prog\n")], plain)
    # execlineb alone reads its script from stdin (the client, which sends nothing)
    compare(sockdir, [], ["-i", rules], [EXECLINEB], [(plain, b""), (with_exec, b"from the rule\n")], plain)
