"""s6ipc.chain.run: stage words, recognising our own programs, the environment modifications of a
stage, the privilege stage, and handing the process on (in-process for ours, execve for others).

What ends the process runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from typing import Dict, Optional

import pytest

from s6ipc.base.execution import installed_prefix
from s6ipc.base.options import UsageError
from s6ipc.chain.run import PrivilegeOptions, ProgramCall, own_program_call, stage

PREFIX = installed_prefix()


def _child(code: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    prelude = ("import json, os, sys\nfrom s6ipc.chain import run\nfrom s6ipc.base.messages import Reporter\n"
               "from s6ipc.base.execution import installed_prefix\nPREFIX = installed_prefix()\n")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=20, env=env)


# -- stage / own_program_call --------------------------------------------------------------------------
def test_stage_names_our_program_in_the_callers_style() -> None:
    assert stage("ipcserverd", "") == [*PREFIX, "ipcserverd"]
    assert stage("ipcserverd", "s6-") == [*PREFIX, "s6-ipcserverd"]


def test_own_program_call() -> None:
    assert own_program_call([*PREFIX, "s6-ipcserver-access", "-v2", "p"]) == ProgramCall(
        "ipcserver-access", "s6-ipcserver-access", ["-v2", "p"])
    assert own_program_call(stage("tcpserver4d", "") + ["p"]) == ProgramCall(
        "tcpserver4d", "tcpserver4d", ["p"])
    assert own_program_call(["/usr/bin/s6-ipcserverd", "p"]) is None
    assert own_program_call([]) is None


# -- PrivilegeOptions ----------------------------------------------------------------------------------
def test_privilege_options_as_s6_ipcserver_takes_them() -> None:
    p = PrivilegeOptions()
    assert p.stage("") == []
    p.take("u", "1000")
    p.take("g", "100")
    p.take("G", "5,6")
    assert (p.uid, p.gid, p.groups, p.from_env) == (1000, 100, [5, 6], False)
    assert p.stage("s6-") == [*PREFIX, "s6-applyuidgid", "-u", "1000", "-g", "100", "-G", "5,6", "--"]


def test_minus_U_resets_earlier_ids_and_later_ones_still_apply() -> None:
    p = PrivilegeOptions()
    for letter, value in (("u", "5"), ("G", "1"), ("U", ""), ("g", "7")):
        p.take(letter, value)
    assert p.stage("") == [*PREFIX, "applyuidgid", "-Uz", "-g", "7", "--"]


def test_zero_ids_mean_no_change_but_an_empty_group_list_is_a_drop() -> None:
    p = PrivilegeOptions()
    p.take("u", "0")
    p.take("g", "0")
    assert p.stage("") == []
    p.take("G", "")
    assert p.stage("") == [*PREFIX, "applyuidgid", "-G", "", "--"]


@pytest.mark.parametrize("letter, value", [
    ("u", "x"), ("g", "-1"), ("G", "abc"), ("G", ",5"), ("u", "4294967296")])
def test_bad_privilege_values_are_usage_errors(letter: str, value: str) -> None:
    with pytest.raises(UsageError):
        PrivilegeOptions().take(letter, value)


def test_a_group_list_stops_quietly_where_no_number_starts() -> None:
    p = PrivilegeOptions()
    p.take("G", "5,,x,6")   # skalibs' gid_scanlist: [5]
    assert p.groups == [5]


# -- modify_environ ---------------------------------------------------------------------------------------
def test_modify_environ_follows_env_merge_order() -> None:
    out = _child("""
        run.modify_environ(["A", "C=3", "B=2", "NOPE"])
        print(json.dumps(list(os.environ.items())))
    """, env={"LC_ALL": "C.UTF-8", "X": "1", "A": "a", "B": "b", "Y": "y"})
    assert out.returncode == 0, out.stderr
    # A's slot is taken by the last entry (Y), C is appended; B set is removed the same way (C moves
    # into its slot) and appended
    assert [k for k, _ in json.loads(out.stdout)] == ["LC_ALL", "X", "Y", "C", "B"]
    assert dict(json.loads(out.stdout))["B"] == "2"


def test_modify_environ_reaches_the_c_environment_of_children() -> None:
    out = _child("""
        run.modify_environ(["GONE", "NEW=yes"])
        os.execvp("sh", ["sh", "-c", 'echo "${GONE-unset} $NEW"'])
    """, env={"PATH": "/usr/bin:/bin", "GONE": "x"})
    assert out.stdout == "unset yes\n"


# -- run_program / exec_into ------------------------------------------------------------------------------
def test_run_program_turns_a_usage_error_into_the_usage_line() -> None:
    out = _child("run.run_program('s6-listen-pid', [])")
    assert (out.returncode, out.stderr) == (100, "s6-listen-pid: usage: s6-listen-pid prog...\n")


def test_run_program_turns_a_library_error_into_its_exit_code() -> None:
    out = _child("run.run_program('ipcserver-access', ['prog'])", env={"PATH": "/usr/bin:/bin"})
    assert (out.returncode, out.stderr) == (100, "ipcserver-access: fatal: PROTO not set\n")


def test_run_program_of_an_unknown_word_is_a_key_error() -> None:
    out = _child("""
        try:
            run.run_program('nope', [])
        except KeyError as e:
            print(e)
    """)
    assert out.stdout == "'nope'\n"


def test_exec_into_our_stage_runs_it_in_this_process() -> None:
    out = _child("""
        def fake(word, args):
            print(json.dumps([word, args, sys.argv]), flush=True)
            os._exit(7)
        run.run_program = fake
        run.exec_into(Reporter('x'), PREFIX + ['s6-ipcserverd', '-v2', 'prog'])
    """)
    assert out.returncode == 7
    word, args, argv = json.loads(out.stdout)
    assert (word, args) == ("s6-ipcserverd", ["-v2", "prog"])
    assert argv == [*PREFIX, "s6-ipcserverd", "-v2", "prog"]   # what the exec'd program would see


def test_exec_into_a_foreign_program_execs_with_sigpipe_back_to_default() -> None:
    out = _child("""
        import signal
        print(signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN, flush=True)
        run.exec_into(Reporter('x'), ['sh', '-c', 'echo $$; grep SigIgn /proc/$$/status'])
    """, env={"PATH": "/usr/bin:/bin"})
    first, pid, sigign = out.stdout.split("\n")[:3]
    assert first == "True"                                   # CPython ignores SIGPIPE...
    mask = int(sigign.split()[1], 16)
    assert not mask >> (signal.SIGPIPE - 1) & 1              # ...the exec'd program does not
    assert not mask >> (signal.SIGXFSZ - 1) & 1


def test_exec_into_a_missing_program_is_s6s_message() -> None:
    out = _child("run.exec_into(Reporter('s6-applyuidgid'), ['s6ipc-no-such-program', 'x'])",
                 env={"PATH": "/usr/bin:/bin"})
    assert (out.returncode, out.stderr) == (
        127, "s6-applyuidgid: fatal: unable to exec s6ipc-no-such-program: No such file or directory\n")


def test_import_stage_imports_only_our_programs_module() -> None:
    out = _child("""
        before = set(sys.modules)
        run.import_stage(['/bin/true'])
        foreign = sorted(m for m in set(sys.modules) - before if m.startswith('s6ipc.programs.'))
        run.import_stage(PREFIX + ['s6-listen-pid', 'x'])
        ours = sorted(m for m in set(sys.modules) - before if m.startswith('s6ipc.programs.'))
        print(json.dumps([foreign, ours]))
    """)
    assert json.loads(out.stdout) == [[], ["s6ipc.programs.listen_pid"]]


def test_conclude_a_refusal_logs_then_exits_1() -> None:
    out = _child("""
        from s6ipc.access.fastpath import LogLine, Outcome
        line = LogLine('info', 'deny pid {pid} uid 5 gid 5: x')
        run.conclude(Reporter('s6-ipcserver-access'), Outcome([line], False))
    """)
    assert out.returncode == 1
    pid = out.stderr.split()[4]
    assert out.stderr == f"s6-ipcserver-access: info: deny pid {pid} uid 5 gid 5: x\n" and pid.isdigit()
