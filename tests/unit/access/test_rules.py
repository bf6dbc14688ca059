"""s6ipc.access.rules and s6ipc.access.ipc: the library API the programs, the fast path and fdholderd use.

Behaviour against s6's binaries is tested in tests/programs/; here the API contract: lookup order,
decisions, the cdb value format both ways, live reloading, compile/expand, and :func:`evaluate`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from typing import Dict, Iterator, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s6ipc.access.cdb import CdbReader, cdb_bytes, write_cdb
from s6ipc.access.ipc import AccessOptions, RulesSource, evaluate, parse_options
from s6ipc.access.rules import (
    EXECLINEB,
    Decision,
    InvalidRules,
    Verdict,
    check,
    compile_rules,
    encode_rule_value,
    expand_rules,
    parse_rule_value,
    rules_from_cdb,
    rules_from_dir,
)
from s6ipc.base.errors import BadInput, SystemFailure
from s6ipc.base.options import UsageError


@pytest.fixture
def tmp() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="s6ar", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def rule(root: str, key: str, *files: str, env: Dict[str, bytes] = {}, exec_: bytes = b"") -> None:  # noqa: B006
    d = os.path.join(root, key)
    os.makedirs(d, exist_ok=True)
    for name in files:
        open(os.path.join(d, name), "wb").close()
    if env:
        os.makedirs(os.path.join(d, "env"), exist_ok=True)
        for name, value in env.items():
            with open(os.path.join(d, "env", name), "wb") as f:
                f.write(value)
    if exec_:
        with open(os.path.join(d, "exec"), "wb") as f:
            f.write(exec_)


class Recorder:
    """A RuleSet that records the keys asked and answers from a dict."""

    description = "test ruleset"

    def __init__(self, answers: Dict[str, Decision]) -> None:
        self.answers = answers
        self.asked: List[str] = []

    def lookup(self, key: str) -> Decision:
        self.asked.append(key)
        return self.answers.get(key, Decision(Verdict.NOTFOUND))


def test_lookup_order_and_self_keys() -> None:
    r = Recorder({})
    assert check(r, 5, 6, euid=5, egid=6).verdict is Verdict.NOTFOUND
    assert r.asked == ["uid/self", "uid/5", "gid/self", "gid/6", "uid/default"]
    r = Recorder({})
    check(r, 5, 6, euid=0, egid=0)
    assert r.asked == ["uid/5", "gid/6", "uid/default"]  # no gid/default, ever
    r = Recorder({"uid/5": Decision(Verdict.DENY), "gid/6": Decision(Verdict.ALLOW)})
    assert check(r, 5, 6, euid=0, egid=0).verdict is Verdict.DENY and r.asked == ["uid/5"]


def test_decision_reasons_and_exec_string() -> None:
    assert Decision(Verdict.DENY).errno == errno.EACCES
    assert Decision(Verdict.NOTFOUND).errno == errno.ENOENT
    assert Decision(Verdict.ALLOW).allowed and Decision(Verdict.ALLOW).exec_string() is None
    assert Decision(Verdict.ALLOW, exec=b"echo a\0echo b").exec_string() == b"echo a"
    assert Decision(Verdict.ALLOW, exec=b"\0x").exec_string() == b""  # non-empty file: execlineb -Pc ""
    assert Decision(Verdict.ALLOW, (("A", "1"), ("B", None))).modif_strings() == ["A=1", "B"]


def test_directory_backend(tmp: str) -> None:
    rule(tmp, "uid/1", "allow", "deny", env={"A": b"1\n", "U": b""}, exec_=b"echo hi\n")
    rule(tmp, "uid/2", "deny")
    rule(tmp, "uid/3")                      # neither: not found
    rules = rules_from_dir(tmp)
    assert rules.description == f"fs ruleset in {tmp}"
    assert rules.lookup("uid/1") == Decision(Verdict.ALLOW, tuple(sorted(
        (("A", "1"), ("U", None)), key=lambda m: os.listdir(os.path.join(tmp, "uid/1/env")).index(m[0]))),
        b"echo hi\n")
    assert rules.lookup("uid/2").verdict is Verdict.DENY
    assert rules.lookup("uid/3").verdict is Verdict.NOTFOUND
    assert rules_from_dir(os.path.join(tmp, "absent")).lookup("uid/1").verdict is Verdict.NOTFOUND
    # live: a change is seen by the next lookup
    os.unlink(os.path.join(tmp, "uid/1/allow"))
    assert rules.lookup("uid/1").verdict is Verdict.DENY


def test_directory_backend_errors(tmp: str) -> None:
    rule(tmp, "uid/1", "allow")
    with open(os.path.join(tmp, "uid/1/env"), "wb") as f:
        f.write(b"not a directory")
    open(os.path.join(tmp, "uid", "2"), "wb").close()
    rules = rules_from_dir(tmp)
    for key, code in (("uid/1", errno.ENOTDIR), ("uid/2", errno.ENOTDIR)):
        with pytest.raises(SystemFailure) as info:
            rules.lookup(key)
        assert (str(info.value)) == f"unable to check fs ruleset in {tmp}: {os.strerror(code)}"


@pytest.mark.parametrize("value,verdict", [
    (b"D", Verdict.DENY), (b"Dgarbage", Verdict.DENY), (b"X", Verdict.NOTFOUND), (b"x" * 9000, None),
    (b"", None), (b"A", None), (b"A\x00\x00\x00", None), (b"A\x00\x00\x00\x00", Verdict.ALLOW),
    (b"A\x10\x01" + b"e" * 4097 + b"\x00\x00", None), (b"A\x00\x00\x10\x01" + b"x" * 4097, None),
    (b"A\x00\x00\x00\x05echo", None), (b"A\x00\x00\x00\x03echo", None),
])
def test_parse_rule_value_limits(value: bytes, verdict: Verdict) -> None:
    if verdict is None:
        with pytest.raises(ValueError):
            parse_rule_value(value)
    else:
        assert parse_rule_value(value).verdict is verdict


env_names = st.text(alphabet="ABCXYZ_09", min_size=1, max_size=5)
env_values = st.one_of(st.none(), st.text(alphabet="abc =\n\t", max_size=10))


@given(st.lists(st.tuples(env_names, env_values), max_size=6), st.binary(max_size=50))
@settings(max_examples=150, deadline=None)
def test_rule_value_round_trip(env: list, exec_: bytes) -> None:  # type: ignore[type-arg]
    d = Decision(Verdict.ALLOW, tuple(env), exec_)
    back = parse_rule_value(encode_rule_value(d))
    assert (back.verdict, back.env, back.exec) == (Verdict.ALLOW, d.env, exec_)
    assert back.modif_strings() == d.modif_strings()


def test_cdb_backend_reads_raw_env_and_reloads(tmp: str) -> None:
    path = os.path.join(tmp, "r.cdb")
    write_cdb(path, [(b"uid/1", b"A\x00\x05A=1\x00B\x00\x00"), (b"uid/2", b"D")])
    rules = rules_from_cdb(path)
    d = rules.lookup("uid/1")
    assert d.env == (("A", "1"), ("B", None)) and d.raw_env == b"A=1\0B" and d.modif_strings() == ["A=1", "B"]
    assert rules.lookup("uid/2").verdict is Verdict.DENY
    assert rules.refresh() is False
    write_cdb(path, [(b"uid/2", b"A\x00\x00\x00\x00")])        # replaced by rename
    assert rules.lookup("uid/2").verdict is Verdict.DENY      # not before a refresh
    assert rules.refresh() is True and rules.lookup("uid/2").verdict is Verdict.ALLOW
    with open(path, "r+b") as f:                              # rewritten in place, same size
        data = f.read().replace(b"A\x00\x00\x00\x00", b"D\x00\x00\x00\x00")
        time.sleep(0.01)
        f.seek(0)
        f.write(data)
    assert rules.refresh() is True and rules.lookup("uid/2").verdict is Verdict.DENY
    os.unlink(path)
    with pytest.raises(SystemFailure) as info:
        rules.refresh()
    assert str(info.value) == f"unable to cdb_init {path}: No such file or directory"
    assert rules.lookup("uid/2").verdict is Verdict.DENY      # the last good content stays usable
    with open(path, "wb") as f:
        f.write(cdb_bytes([(b"uid/2", b"A\x00\x00\x00\x01")]))
    assert rules.refresh() is True
    with pytest.raises(SystemFailure) as info:
        rules.lookup("uid/2")
    assert str(info.value) == f"unable to check cdb ruleset in {path}: Invalid argument"


def test_compile_and_expand(tmp: str) -> None:
    src = os.path.join(tmp, "src")
    rule(src, "uid/1", "allow", env={"A": b"1\n"}, exec_=b"e" * 5000)
    rule(src, "uid/2", "deny")
    rule(src, "uid/self")
    warnings: List[str] = []
    records = dict(compile_rules(src, warnings.append))
    assert set(records) == {b"uid/1", b"uid/2"}
    assert warnings == [f"possibly truncated file {src}/uid/1/exec"]
    assert parse_rule_value(records[b"uid/1"]).exec == b"e" * 4096
    out = os.path.join(tmp, "out")
    expand_rules(CdbReader.from_bytes(cdb_bytes(records.items())), out, "mem")
    with open(os.path.join(out, "uid/1/env/A"), "rb") as f:
        assert f.read() == b"1\n"
    assert os.path.exists(os.path.join(out, "uid/2/deny"))
    assert not os.path.exists(os.path.join(out, "uid/self"))
    with pytest.raises(SystemFailure) as info:
        expand_rules(CdbReader.from_bytes(cdb_bytes([])), out, "mem")
    assert info.value.errno == errno.EEXIST
    bad = os.path.join(tmp, "bad")
    with pytest.raises(InvalidRules):
        expand_rules(CdbReader.from_bytes(cdb_bytes([(b"uid/1", b"A"), (b"uid/2", b"")])), bad, "mem")
    assert not os.path.exists(bad)


def test_compile_env_too_big(tmp: str) -> None:
    rule(tmp, "uid/1", "allow", env={"A": b"a" * 3000 + b"\n", "B": b"b" * 1200 + b"\n"})
    with pytest.raises(BadInput) as info:
        compile_rules(tmp)
    assert (str(info.value), info.value.exit_code) == (f"{tmp}/uid/1/env too big: Success", 100)


# -- evaluate: the shared core of the program and the fast path ---------------------------------
ENV = {"PATH": "/bin", "PROTO": "IPC", "IPCREMOTEEUID": "7", "IPCREMOTEEGID": "8", "X": "x"}


def test_parse_options() -> None:
    o = parse_options(["-v2", "-E", "-e", "-l", "", "-i", "d", "-x", "f", "prog", "-v"])
    assert o == AccessOptions(("prog", "-v"), 2, True, "", "cdb", "f")
    for bad in ([], [""], ["-v"], ["-z", "p"]):
        with pytest.raises(UsageError):
            parse_options(bad)


def test_evaluate_allow_deny_and_lines(tmp: str) -> None:
    rule(tmp, "uid/7", "allow", env={"R": b"r\n"}, exec_=b"echo x\n")
    opts = parse_options(["-v2", "-i", tmp, "prog"])
    calls: List[int] = []

    def local() -> str:
        calls.append(1)
        return "/sock"

    out = evaluate(opts, ENV, local, RulesSource(opts), euid=0, egid=0)
    assert out.allowed and out.argv == [EXECLINEB, "-Pc", "echo x\n"]
    assert list(out.env.items())[-2:] == [("R", "r"), ("IPCLOCALPATH", "/sock")] and calls == [1]
    assert [line.render(42) for line in out.lines] == ["allow pid 42 uid 7 gid 8"]
    denied = evaluate(opts, {**ENV, "IPCREMOTEEUID": "9"}, local, RulesSource(opts), euid=0, egid=0)
    assert not denied.allowed and [x.render(1) for x in denied.lines] == [
        "deny pid 1 uid 9 gid 8: No such file or directory"]
    no_env = parse_options(["-E", "-i", tmp, "prog"])
    out = evaluate(no_env, ENV, local, RulesSource(no_env), euid=0, egid=0)
    assert calls == [1] and "PROTO" not in out.env and out.env["R"] == "r"


def test_evaluate_errors(tmp: str) -> None:
    opts = parse_options(["-x", os.path.join(tmp, "none.cdb"), "prog"])
    with pytest.raises(BadInput, match="^PROTO not set$"):
        evaluate(opts, {}, lambda: "", RulesSource(opts))
    with pytest.raises(BadInput, match=r"^invalid \$IPCREMOTEEGID$"):
        evaluate(opts, {**ENV, "IPCREMOTEEGID": "x"}, lambda: "", RulesSource(opts))
    with pytest.raises(SystemFailure, match="cdb_init"):
        evaluate(opts, ENV, lambda: "", RulesSource(opts))
    free = parse_options(["prog"])

    def broken() -> str:
        raise SystemFailure("ipc_local", errno.ENOTSOCK)

    out = evaluate(free, ENV, broken, RulesSource(free))
    assert out.allowed and isinstance(out.error, SystemFailure) and len(out.lines) == 1
