"""accessrules-cdb-from-fs and accessrules-fs-from-cdb against Debian's s6 programs.

* The cdb we write from a rules tree is byte-for-byte the file s6-accessrules-cdb-from-fs writes from
  the same tree (same readdir order, same record layout, same hash tables), mode 0600, replaced by
  rename.
* The tree we expand from a cdb is the tree s6-accessrules-fs-from-cdb expands (names, types, modes,
  contents), from our cdb or from s6's; fs → cdb → fs → cdb is stable.
* Error messages and exit codes are s6's. Documented differences (docs/accessrules-fs-from-cdb.md):
  skalibs 2.13's doubled colon in ``fatal: : unable to`` is not reproduced.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import tempfile
from typing import Dict, FrozenSet, Iterator, List, Tuple

import pytest

from tests.support.access import (
    BASE_ENV,
    RuleSpec,
    make_rules,
    needs_s6,
    run_access,
)
from tests.support.processes import S6IPC, run

OURS = {"cdb": [S6IPC, "s6-accessrules-cdb-from-fs"], "fs": [S6IPC, "s6-accessrules-fs-from-cdb"],
        "access": [S6IPC, "s6-ipcserver-access"]}
THEIRS = {"cdb": ["/usr/bin/s6-accessrules-cdb-from-fs"], "fs": ["/usr/bin/s6-accessrules-fs-from-cdb"],
          "access": ["/usr/bin/s6-ipcserver-access"]}

TREE: Dict[str, RuleSpec] = {
    "uid/0": {"allow": True, "env": {"FOO": b"hello world  \t\r\nsecond\n", "SPACES": b"   \n",
                                     "NUL": b"a\0b\n", "EMPTYUNSET": b"", "PROTO": b"pr\n", ".hidden": b"x\n",
                                     "A=B": b"y\n"}},
    "uid/1000": {"deny": True},
    "uid/1001": {"allow": True, "deny": True},
    "uid/1002": {"allow": True, "env": {"BAR": b"bar\n"}, "exec": b"echo fromexec ${PROTO}\n"},
    "uid/self": {},                                   # neither allow nor deny: no record
    "gid/100": {"allow": True},
    "gid/200": {"deny": True, "env": {"IGNORED": b"x\n"}, "exec": b"ignored\n"},
    "ip4/1.2.3.4_32": {"allow": True},                # any top-level name is accepted
    "uid/odd name\twith tab": {"allow": True},
    "uid/2000": {"allow": True, "exec": b"x" * 5000},  # cut at 4096 with a warning
}


@pytest.fixture
def tmp() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="s6cdb", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["/tmp", "/dev/shm"])
def tmp_on(request: pytest.FixtureRequest) -> Iterator[str]:
    """A directory in /tmp, then in /dev/shm (tmpfs): readdir orders differ between filesystems, and a
    test comparing cdbs made from two trees must not depend on one (a /tmp on tmpfs broke them)."""
    if not os.path.isdir(request.param):
        pytest.skip(f"no {request.param} on this machine")
    d = tempfile.mkdtemp(prefix="s6cdb", dir=request.param)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def content(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def records(path: str) -> List[Tuple[bytes, bytes]]:
    """The records of a cdb, decoded independently of s6ipc.cdb (djb's format, in file order)."""
    data = content(path)
    eod = struct.unpack_from("<I", data, 0)[0]
    pos, out = 2048, []
    while pos < eod:
        klen, dlen = struct.unpack_from("<II", data, pos)
        out.append((data[pos + 8 : pos + 8 + klen], data[pos + 8 + klen : pos + 8 + klen + dlen]))
        pos += 8 + klen + dlen
    return out


def allow_record(value: bytes) -> Tuple[FrozenSet[bytes], bytes]:
    """An allow record's (env entries, exec). The entries are a set: both implementations write them in
    readdir order, which is the same for one directory but not for two holding the same names (tmpfs
    lists newest first, ext4 by hash), so order is compared only between cdbs made from one tree."""
    assert value[:1] == b"A", value
    n = int.from_bytes(value[1:3], "big")
    env, rest = value[3 : 3 + n], value[3 + n :]
    m = int.from_bytes(rest[:2], "big")
    assert len(rest) == 2 + m and env[-1:] in (b"", b"\0"), value
    entries = env.split(b"\0")[:-1]
    assert len(set(entries)) == len(entries), value
    return frozenset(entries), rest[2:]


def tree(root: str) -> Dict[str, Tuple[str, int, bytes]]:
    """Every path under *root*: (kind, permission bits, content)."""
    found = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            data = content(p) if kind == "file" else b""
            found[os.path.relpath(p, root)] = (kind, stat.S_IMODE(st.st_mode), data)
    return found


def tidy(stderr: bytes, *paths: str) -> str:
    text = stderr.decode("utf-8", "replace").replace("fatal: : unable", "fatal: unable")
    text = re.sub(r":s6-accessrules-cdb-from-fs:\w{6}", ":TMP", text)
    for i, p in enumerate(paths):
        text = text.replace(p, f"<{i}>")
    return text


@needs_s6
def test_cdb_from_fs_is_byte_identical(tmp: str) -> None:
    src = make_rules(os.path.join(tmp, "rules"), TREE)
    ours, theirs = os.path.join(tmp, "ours.cdb"), os.path.join(tmp, "theirs.cdb")
    old_umask = os.umask(0)
    try:
        a = run([*OURS["cdb"], ours, src])
        b = run([*THEIRS["cdb"], theirs, src])
    finally:
        os.umask(old_umask)
    assert (a.returncode, tidy(a.stderr, ours, src)) == (b.returncode, tidy(b.stderr, theirs, src))
    assert a.returncode == 0
    assert tidy(a.stderr, ours, src) == ("s6-accessrules-cdb-from-fs: warning: possibly truncated file "
                                         "<1>/uid/2000/exec\n")
    assert content(ours) == content(theirs)
    assert stat.S_IMODE(os.stat(ours).st_mode) == 0o600
    recs = dict(records(ours))
    assert b"uid/self" not in recs and recs[b"uid/1000"] == b"D" and recs[b"uid/1001"][:1] == b"A"
    assert recs[b"gid/200"] == b"D"
    assert recs[b"uid/1002"] == b"A\x00\x08BAR=bar\x00\x00\x17echo fromexec ${PROTO}\n"
    assert len(recs[b"uid/2000"]) == 5 + 4096
    assert sorted(os.listdir(tmp)) == ["ours.cdb", "rules", "theirs.cdb"]  # no temp file left


@needs_s6
def test_cdb_replaced_atomically(tmp: str) -> None:
    """The new file replaces the old one by rename: a reader of the old file keeps the old content."""
    src = make_rules(os.path.join(tmp, "rules"), {"uid/1": {"allow": True}})
    cdb = os.path.join(tmp, "rules.cdb")
    assert run([*OURS["cdb"], cdb, src]).returncode == 0
    with open(cdb, "rb") as old:
        before = old.read()
        make_rules(src, {"uid/2": {"deny": True}})
        assert run([*OURS["cdb"], cdb, src]).returncode == 0
        old.seek(0)
        assert old.read() == before and os.fstat(old.fileno()).st_ino != os.stat(cdb).st_ino
    assert dict(records(cdb))[b"uid/2"] == b"D"


@needs_s6
@pytest.mark.parametrize("size,rc", [(4100, 0), (4101, 100)])
def test_env_size_limit(tmp: str, size: int, rc: int) -> None:
    """env blocks up to 4100 bytes compile (though readers refuse above 4096); more exits 100."""
    # two variables (an envdir value holds at most 4095 bytes): "BIG1=" 2000 "\0" "BIG2=" n "\0"
    env = {"BIG1": b"v" * 2000 + b"\n", "BIG2": b"w" * (size - 2012) + b"\n"}
    src = make_rules(os.path.join(tmp, "rules"), {"uid/1": {"allow": True, "env": env}})
    out = {}
    for who, argv in (("ours", OURS), ("s6", THEIRS)):
        cdb = os.path.join(tmp, f"{who}.cdb")
        p = run([*argv["cdb"], cdb, src])
        out[who] = (p.returncode, tidy(p.stderr, cdb, src), os.path.exists(cdb))
    assert out["ours"] == out["s6"]
    assert out["ours"][0] == rc
    if rc:
        assert out["ours"][1] == "s6-accessrules-cdb-from-fs: fatal: <1>/uid/1/env too big: Success\n"
    elif size > 4096:  # compiled, but a lookup then fails for both readers
        for who in ("ours", "s6"):
            res = {w: run_access([*a["access"], "-x", os.path.join(tmp, f"{who}.cdb"), "true"],
                                 {**BASE_ENV, "IPCREMOTEEUID": "1"}) for w, a in (("o", OURS), ("t", THEIRS))}
            assert res["o"].rc == res["t"].rc == 111
            assert res["o"].err.endswith("unable to check cdb ruleset in " + os.path.join(tmp, f"{who}.cdb")
                                         + ": Invalid argument\n")


@needs_s6
@pytest.mark.parametrize("case", ["top-file", "rule-file", "env-subdir", "exec-dir", "no-dir", "no-cdb-dir",
                                  "usage"])
def test_cdb_from_fs_errors(tmp: str, case: str) -> None:
    src = os.path.join(tmp, "rules")
    os.makedirs(os.path.join(src, "uid", "1"))
    open(os.path.join(src, "uid", "1", "allow"), "wb").close()
    cdb = os.path.join(tmp, "out.cdb")
    args = [cdb, src]
    if case == "top-file":
        open(os.path.join(src, "file"), "wb").close()
    elif case == "rule-file":
        open(os.path.join(src, "uid", "2"), "wb").close()
    elif case == "env-subdir":
        os.makedirs(os.path.join(src, "uid", "1", "env", "sub"))
    elif case == "exec-dir":
        os.makedirs(os.path.join(src, "uid", "1", "exec"))
    elif case == "no-dir":
        args = [cdb, os.path.join(tmp, "nothing")]
    elif case == "no-cdb-dir":
        args = [os.path.join(tmp, "nothing", "out.cdb"), src]
    else:
        args = [cdb]
    a, b = run([*OURS["cdb"], *args]), run([*THEIRS["cdb"], *args])
    assert (a.returncode, tidy(a.stderr, tmp)) == (b.returncode, tidy(b.stderr, tmp))
    assert a.returncode == (100 if case == "usage" else 111)
    assert not os.path.exists(cdb) and sorted(os.listdir(tmp)) == ["rules"]


@needs_s6
def test_fs_from_cdb_cross_and_round_trip(tmp_on: str) -> None:
    src = make_rules(os.path.join(tmp_on, "rules"), TREE)
    cdbs = {}
    for who, argv in (("ours", OURS), ("s6", THEIRS)):
        cdbs[who] = os.path.join(tmp_on, f"{who}.cdb")
        assert run([*argv["cdb"], cdbs[who], src]).returncode == 0
    expanded = {}
    for cdb_who, cdb in cdbs.items():           # each cdb expanded by each implementation
        for who, argv in (("ours", OURS), ("s6", THEIRS)):
            out = os.path.join(tmp_on, f"{who}-from-{cdb_who}")
            p = run([*argv["fs"], out, cdb])
            assert (p.returncode, p.stderr) == (0, b"")
            expanded[(who, cdb_who)] = tree(out)
    first = expanded[("ours", "ours")]
    assert all(t == first for t in expanded.values())
    assert first["uid/0/env/FOO"] == ("file", 0o644, b"hello world\n")
    assert first["uid/0/env/NUL"] == ("file", 0o644, b"a\nb\n")
    assert first["uid/0/env/EMPTYUNSET"] == ("file", 0o644, b"")
    assert first["uid/0/env/SPACES"] == ("file", 0o644, b"\n")
    assert first["uid/1000/deny"] == ("file", 0o644, b"") and "uid/1000/allow" not in first
    assert first["uid/1002/exec"] == ("file", 0o644, b"echo fromexec ${PROTO}\n")
    assert first["uid"] == ("dir", 0o755, b"") and "uid/self" not in first
    # fs -> cdb -> fs -> cdb: stable but for values with a NUL (written back as a newline, then cut
    # there), for s6 as for us
    for who, argv in (("ours", OURS), ("s6", THEIRS)):
        again = os.path.join(tmp_on, f"again-{who}.cdb")
        assert run([*argv["cdb"], again, os.path.join(tmp_on, "ours-from-ours")]).returncode == 0
        first_pass, second_pass = dict(records(cdbs["ours"])), dict(records(again))
        cut = first_pass[b"uid/0"].replace(b"\x004", b"\x002", 1).replace(b"a\nb", b"a")
        assert allow_record(second_pass[b"uid/0"]) == allow_record(cut)
        del first_pass[b"uid/0"], second_pass[b"uid/0"]
        assert first_pass == second_pass
    assert content(os.path.join(tmp_on, "again-ours.cdb")) == content(os.path.join(tmp_on, "again-s6.cdb"))


@needs_s6
@pytest.mark.parametrize("case", ["exists", "bad-value", "unterminated-env", "empty-value", "corrupt",
                                  "missing", "usage"])
def test_fs_from_cdb_errors(tmp: str, case: str) -> None:
    from s6ipc.access.cdb import (
        cdb_bytes,  # a writer of arbitrary records (the programs only write valid ones)
    )

    cdb = os.path.join(tmp, "in.cdb")
    good = [(b"uid/1", b"A\x00\x00\x00\x00")]
    content = {
        "exists": good, "usage": good, "missing": good,
        "bad-value": good + [(b"uid/2", b"A\x00\x09BAR=bar\x00\x00\x00")],
        "unterminated-env": good + [(b"uid/3", b"A\x00\x07BAR=bar\x00\x00")],
        "empty-value": good + [(b"uid/4", b"")],
        "corrupt": good,
    }[case]
    data = cdb_bytes(content)
    if case == "corrupt":
        data = data[:2052]  # cut inside the first record's header
    if case != "missing":
        with open(cdb, "wb") as f:
            f.write(data)
    results = {}
    for who, argv in (("ours", OURS), ("s6", THEIRS)):
        out = os.path.join(tmp, f"out-{who}")
        if case == "exists":
            os.mkdir(out)
        p = run([*argv["fs"], out] if case == "usage" else [*argv["fs"], out, cdb])
        left = os.listdir(out) if os.path.isdir(out) else None
        results[who] = (p.returncode, tidy(p.stderr, out, cdb), left)
    assert results["ours"] == results["s6"]
    rc, err, left = results["ours"]
    assert rc == (100 if case == "usage" else 111)
    if case in ("bad-value", "unterminated-env", "empty-value"):
        assert err == ("s6-accessrules-fs-from-cdb: fatal: unable to handle cdb record: <1> "
                       "does not contain valid accessrules data\n")
        assert left is None  # the half-made directory was removed
    if case == "corrupt":
        assert err == "s6-accessrules-fs-from-cdb: fatal: unable to cdb_traverse_next: invalid cdb\n"
    if case == "exists":
        assert err == "s6-accessrules-fs-from-cdb: fatal: unable to mkdir <0>: File exists\n"
    if case == "missing":
        assert err == "s6-accessrules-fs-from-cdb: fatal: unable to cdb_init: No such file or directory\n"


def test_fs_from_cdb_records_past_the_end(tmp: str) -> None:
    """Records said to run past the end of the file: a clean error (s6 2.11 reads out of bounds and
    may crash with SIGSEGV here: documented)."""
    from s6ipc.access.cdb import cdb_bytes

    cdb = os.path.join(tmp, "in.cdb")
    data = cdb_bytes([(b"uid/1", b"D")])
    with open(cdb, "wb") as f:
        f.write(struct.pack("<I", 1 << 20) + data[4:])
    out = os.path.join(tmp, "out")
    p = run([*OURS["fs"], out, cdb])
    assert p.returncode == 111
    assert p.stderr == b"s6-accessrules-fs-from-cdb: fatal: unable to cdb_traverse_next: invalid cdb\n"
    assert not os.path.exists(out)


@needs_s6
def test_s6_cdb_read_by_ours_and_ours_by_s6(tmp: str) -> None:
    """Each reader accepts the other writer's file and decides the same (exit, env, exec, log)."""
    src = make_rules(os.path.join(tmp, "rules"), TREE)
    for writer in (OURS, THEIRS):
        cdb = os.path.join(tmp, "x.cdb")
        assert run([*writer["cdb"], cdb, src]).returncode == 0
        for uid, gid in (("0", "5"), ("1000", "100"), ("1002", "5"), ("7", "100"), ("7", "200"), ("7", "7")):
            env = {**BASE_ENV, "IPCREMOTEEUID": uid, "IPCREMOTEEGID": gid}
            a = run_access([*OURS["access"], "-v2", "-x", cdb, "env"], env)
            b = run_access([*THEIRS["access"], "-v2", "-x", cdb, "env"], env)
            assert (a.rc, a.out, a.err) == (b.rc, b.out, b.err)
        os.unlink(cdb)


TCP_TREE: Dict[str, RuleSpec] = {
    "ip4/127.0.0.0_8": {"allow": True, "env": {"NET": b"loopback\n"}},
    "ip4/127.0.0.2_32": {"deny": True},
    "ip4/0.0.0.0_0": {"allow": True, "exec": b"echo default\n"},
    "ip6/::1_128": {"allow": True, "env": {"SIX": b"one\n", "GONE": b""}},
    "ip6/::ffff:7f00:0_104": {"allow": True},
    "ip6/2001:db8::_126": {"deny": True},
    "ip6/::_0": {"deny": True},
    "reversedns/example": {"allow": True},
    "reversedns/bad.example": {"deny": True},
    "reversedns/@": {"allow": True, "env": {"ANYNAME": b"1\n"}},
}


@needs_s6
def test_tcp_rules_cdb_is_byte_identical_and_expands_back(tmp_on: str) -> None:
    """ip4/, ip6/ (keys with colons) and reversedns/ trees: the same cdb as s6's, the same tree back."""
    src = make_rules(os.path.join(tmp_on, "rules"), TCP_TREE)
    ours, theirs = os.path.join(tmp_on, "ours.cdb"), os.path.join(tmp_on, "theirs.cdb")
    a = run([*OURS["cdb"], ours, src])
    b = run([*THEIRS["cdb"], theirs, src])
    assert (a.returncode, a.stderr, b.returncode, b.stderr) == (0, b"", 0, b"")
    assert content(ours) == content(theirs)
    recs = dict(records(ours))
    assert recs[b"ip6/::1_128"][:3] == b"A\x00\x0d"
    assert allow_record(recs[b"ip6/::1_128"]) == (frozenset({b"SIX=one", b"GONE"}), b"")
    assert recs[b"ip4/127.0.0.2_32"] == b"D" and recs[b"reversedns/bad.example"] == b"D"
    trees = []
    for who, argv in (("ours", OURS), ("s6", THEIRS)):
        out = os.path.join(tmp_on, f"{who}-tree")
        p = run([*argv["fs"], out, theirs])
        assert (p.returncode, p.stderr) == (0, b"")
        trees.append(tree(out))
    assert trees[0] == trees[1]
    assert trees[0]["ip6/::1_128/env/SIX"] == ("file", 0o644, b"one\n")
    assert trees[0]["ip6/::ffff:7f00:0_104/allow"] == ("file", 0o644, b"")
