"""The ``s6ipc`` entry point: dispatch by name, ``python -m s6ipc``, s6-NAME links, and no
traceback whatever the command line.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from s6ipc.chain.registry import PROGRAMS, program_usage
from s6ipc.cli import USAGE
from tests.support.processes import (
    S6IPC,
    VENV_PYTHON,
    RunningServer,
    nobody_ids,
    ours,
    request,
    requires_root,
    run,
)

USAGE_LINE = (USAGE + "\n").encode()
BASE_ENV = {"PATH": "/usr/bin:/bin"}


def module_usage(name: str) -> str:
    return program_usage(name)


# --- dispatch ---------------------------------------------------------------------------------------


def test_name_dispatch() -> None:
    p = run(ours("applyuidgid") + ["/bin/echo", "hi"])
    assert (p.returncode, p.stdout, p.stderr) == (0, b"hi\n", b"")
    p = run(ours("s6-applyuidgid") + ["-x"])  # the s6 spelling works too, and names the messages
    assert p.returncode == 100
    assert p.stderr.startswith(b"s6-applyuidgid: usage: s6-applyuidgid [ -z ]")


def test_python_dash_m() -> None:
    p = run([VENV_PYTHON, "-m", "s6ipc", "applyuidgid", "/bin/echo", "hi"], env=BASE_ENV)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"hi\n", b"")
    assert run([VENV_PYTHON, "-m", "s6ipc", "list"]).stdout == run([S6IPC, "list"]).stdout
    p = run([VENV_PYTHON, "-m", "s6ipc", "nope"])
    assert (p.returncode, p.stderr) == (100, b"s6ipc: fatal: no such program: nope: s6ipc list lists them\n")


def test_python_dash_m_serves(sockdir: str) -> None:
    path = os.path.join(sockdir, "s")
    srv = RunningServer([VENV_PYTHON, "-m", "s6ipc", "ipcserver", "-1", path, "echo", "hi"], env=BASE_ENV)
    try:
        assert request(path) == b"hi\n"
    finally:
        srv.stop()


def test_list() -> None:
    p = run([S6IPC, "list"])
    assert p.returncode == 0 and p.stderr == b""
    names = p.stdout.decode().splitlines()
    assert names == sorted(PROGRAMS)
    assert {"ipcserver", "ipcserver-socketbinder", "applyuidgid", "ipcserverd", "ipcclient"} <= set(names)


def test_list_to_a_closed_stdout() -> None:
    p = run(["sh", "-c", f'exec "{S6IPC}" list >&-'])
    assert p.returncode == 111
    assert p.stderr == b"s6ipc: fatal: unable to write to stdout: Bad file descriptor\n"


@pytest.mark.parametrize(
    "args", [[], [""], ["links"], ["links", "a", "b"], ["list", "x"], ["-h"], ["--help"], ["--version", "x"]],
)
def test_entry_usage(args: List[str]) -> None:
    p = run([S6IPC, *args])
    assert (p.returncode, p.stdout, p.stderr) == (100, b"", USAGE_LINE)


@pytest.mark.parametrize("word", ["nope", "s6-nope", "s6-", "s6ipc", "ipcserver-acces"])
def test_unknown_program(word: str) -> None:
    """A word that is no program is named as such (exit 100), with where to find the names."""
    p = run([S6IPC, word])
    assert (p.returncode, p.stdout) == (100, b"")
    assert p.stderr == f"s6ipc: fatal: no such program: {word}: s6ipc list lists them\n".encode()


def test_version_names_the_implementation_and_backend() -> None:
    """``--version`` says which implementation answers, which interpreter and script, which backend."""
    from s6ipc import __version__
    from s6ipc.base import systemd_backend

    p = run([S6IPC, "--version"])
    assert (p.returncode, p.stderr) == (0, b"")
    lines = p.stdout.decode().splitlines()
    with open(S6IPC, "rb") as f:  # the interpreter is the script's #! line (python or python3)
        interpreter = f.readline()[2:].decode().strip()
    assert lines == [f"s6ipc {__version__} (Python implementation)",
                     f"python: {interpreter} {sys.version.split()[0]}",
                     f"entry script: {S6IPC}",
                     f"systemd backend: {systemd_backend.choose()}"]
    forced = run([S6IPC, "--version"], env={**BASE_ENV, "S6IPC_SYSTEMD_BACKEND": "stdlib"})
    assert forced.stdout.decode().splitlines()[-1] == "systemd backend: stdlib"


def test_links_unwritable_directory() -> None:
    p = run([S6IPC, "links", "/proc/s6ipc-cannot-be-here"])
    assert p.returncode == 111
    assert p.stderr.startswith(b"s6ipc: fatal: unable to create links in /proc/s6ipc-cannot-be-here: ")


#: programs whose options skalibs' gol parses (s6-networking 2.7+): an unknown long option is a
#: fatal line of its own, not the usage line; they print that with no operand
GOL_PROGRAMS = {"proxy-server"}
BAD_OPTION: Dict[str, List[str]] = {name: [] for name in GOL_PROGRAMS}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_usage_line_matches_s6(name: str) -> None:
    """``NAME: usage: NAME USAGE``, exit 100: the text after the name is s6's, word for word.

    ``--x`` is a usage error for every skalibs program (no arguments is not: fdholderd then says
    "no access rights specified!").
    """
    if name in GOL_PROGRAMS:
        p = run([*ours(name), "--x"], stdin=subprocess.DEVNULL)
        line = f"{name}: fatal: unrecognized boolean option: --x\n"
        assert (p.returncode, p.stderr) == (100, line.encode())
    p = run([*ours(name), *BAD_OPTION.get(name, ["--x"])], stdin=subprocess.DEVNULL)
    assert p.returncode == 100
    assert p.stderr == f"{name}: usage: {name} {module_usage(name)}\n".encode()
    theirs_ = f"/usr/bin/s6-{name}"
    if not os.access(theirs_, os.X_OK):
        return  # beyond s6 (no counterpart)
    s6 = run([theirs_, "--x"], stdin=subprocess.DEVNULL)
    assert s6.returncode == 100
    assert s6.stderr == p.stderr.replace(name.encode(), f"s6-{name}".encode())


# --- links ----------------------------------------------------------------------------------------


def make_links(parent: str) -> str:
    d = os.path.join(parent, "bin")
    for _ in range(2):  # idempotent: the second run replaces the links
        p = run([S6IPC, "links", d])
        assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    return d


def test_links_cover_every_program(tmp_path: Path) -> None:
    d = make_links(str(tmp_path))
    assert sorted(os.listdir(d)) == sorted(f"s6-{name}" for name in PROGRAMS)
    for entry in os.listdir(d):
        assert os.path.realpath(os.path.join(d, entry)) == os.path.realpath(S6IPC)
        p = run([os.path.join(d, entry), *BAD_OPTION.get(entry[3:], ["--x"])], stdin=subprocess.DEVNULL)
        assert p.returncode == 100
        assert p.stderr.startswith(f"{entry}: usage: {entry} ".encode())


def exe_and_cmdline(pid: int) -> Tuple[str, List[str]]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = [w.decode() for w in f.read().split(b"\0")[:-1]]
    return os.readlink(f"/proc/{pid}/exe"), cmdline


@requires_root
def test_unchanged_s6_command_line_runs_on_links(sockdir: str) -> None:
    """An s6 run script's chain, word for word, with the link directory first in PATH.

    Every stage is one of ours through a link, so the chain runs in the first stage's process
    (tests/programs/test_link_spellings.py counts the interpreters), the drop to nobody included.
    """
    d = make_links(sockdir)
    uid, gid = nobody_ids()
    path = os.path.join(sockdir, "s")
    script = (f"exec s6-ipcserver-socketbinder -a 0700 {path} s6-applyuidgid -u {uid} -g {gid} -G '' "
              "s6-ipcserverd -1 -v2 sh -c 'id -u; echo $PROTO'")
    srv = RunningServer(["sh", "-c", script], env={"PATH": f"{d}:/usr/bin:/bin"})
    try:
        assert request(path) == f"{uid}\nIPC\n".encode()
        exe, cmdline = exe_and_cmdline(srv.proc.pid)
        # our stages, found through the links on PATH, run in the process of the first one
        assert os.path.basename(exe).startswith("python")
        assert cmdline[1:4] == [os.path.join(d, "s6-ipcserver-socketbinder"), "-a", "0700"]
        assert srv.log().startswith("s6-ipcserverd: info: ")
        assert os.stat(path).st_mode & 0o777 == 0o700
    finally:
        srv.stop()


def test_s6_ipcserver_link_runs_the_chain(sockdir: str) -> None:
    d = make_links(sockdir)
    path = os.path.join(sockdir, "s")
    srv = RunningServer(["sh", "-c", f"exec s6-ipcserver -1 {path} echo hi"],
                        env={"PATH": f"{d}:/usr/bin:/bin"})
    try:
        assert request(path) == b"hi\n"
        exe, cmdline = exe_and_cmdline(srv.proc.pid)
        assert os.path.basename(exe).startswith("python")
        assert cmdline[1:] == [os.path.join(d, "s6-ipcserver"), "-1", path, "echo", "hi"]  # in-process chain
    finally:
        srv.stop()


# --- no traceback, whatever the input ----------------------------------------------------------------

# Never an absolute path (except under a directory that does not exist) and never "/" in random
# bytes: the programs run as root, in /proc, where nothing can be created.
WORDS: List[bytes] = [
    b"", b"-", b"--", b"---", b"--foo", b"-\xff", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", "é".encode(),
    "\u0665".encode(), b"9" * 5000, b"0" * 5000 + b"1", b"4294967295", b"4294967296", b"18446744073709551616",
    b"-1", b"+5", b" 5", b"1," * 30000, b",", b":::", b"a" * 300, b"x" * 108,
    b"/nonexistent-s6ipc/" + b"x" * 200, b"%s%n", b"\n", b"\t", b"\x01", b"0", b"00", b"1", b"7777", b"0800",
    b"true", b".", b"..",
]
ALLOWED = {0, 1, 100, 111, 126, 127}
NO_SLASH = [b for b in range(1, 256) if b != ord("/")]


def hostile_vectors(name: str, count: int, seed: int) -> List[List[bytes]]:
    rng = random.Random(f"{name}:{seed}")
    letters = sorted(set(re.findall(r"-([A-Za-z0-9])\b", module_usage(name))))
    vectors: List[List[bytes]] = [[], [b""], [b"", b""], [b"-"], [b"--"], [b"--", b""], [b"-", b"-"]]
    for letter in letters:
        opt = f"-{letter}".encode()
        vectors.append([opt])
        vectors.append([opt, rng.choice(WORDS)])
        vectors.append([opt + rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)])
    while len(vectors) < count:
        words = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.3:
                words.append(bytes(rng.choice(NO_SLASH) for _ in range(rng.randint(0, 12))))
            elif rng.random() < 0.5 and letters:
                words.append(f"-{rng.choice(letters)}".encode() + rng.choice([b"", rng.choice(WORDS)]))
            else:
                words.append(rng.choice(WORDS))
        vectors.append(words)
    return vectors


HOSTILE_ENV: Dict[bytes, bytes] = {b"PATH": b"/usr/bin:/bin", b"UID": b"\xff", b"GID": b"9" * 5000,
                                   b"GIDLIST": b"\xff,1", b"PROTO": b"\xc3", b"IPCREMOTEEUID": b"-1",
                                   b"LISTEN_FDS": b"99999999999999999999", b"LISTEN_PID": b"x"}


def run_hostile(argv: Sequence[bytes]) -> Tuple[Sequence[bytes], int, bytes]:
    proc = subprocess.Popen(list(argv), cwd="/proc", env=HOSTILE_ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=3)
        return argv, proc.returncode, err
    except subprocess.TimeoutExpired:  # a server that could start (an abstract socket): fine if quiet
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return argv, 0, err


def check_hostile(batches: List[List[bytes]]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run_hostile, batches))
    bad = [(argv[:8], code, err[-300:]) for argv, code, err in results
           if b"Traceback" in err or code not in ALLOWED]
    assert not bad, bad


@pytest.mark.parametrize("name", ["ipcserver", "ipcserver-socketbinder", "applyuidgid", "ipcclient"])
def test_no_traceback_for_hostile_arguments(name: str) -> None:
    prefix = [os.fsencode(S6IPC), name.encode()]
    check_hostile([prefix + v for v in hostile_vectors(name, 30, 1)])


@pytest.mark.parametrize("name", sorted(set(PROGRAMS) - {"ipcserver", "ipcserver-socketbinder", "applyuidgid",
                                                          "ipcclient"}))
def test_no_traceback_for_hostile_arguments_other_programs(name: str) -> None:
    prefix = [os.fsencode(S6IPC), name.encode()]
    check_hostile([prefix + v for v in hostile_vectors(name, 8, 2)])


def test_no_traceback_for_hostile_entry_point_words() -> None:
    rng = random.Random(3)
    entry = os.fsencode(S6IPC)
    batches = [[entry, w] for w in WORDS]
    batches += [[entry, b"links"], [entry, b"links", b"\xff"], [entry, b"list", b""]]
    batches += [[entry, bytes(rng.choice(NO_SLASH) for _ in range(8))] for _ in range(10)]
    check_hostile(batches)


def test_s6ipc_uvicorn_without_uvicorn_is_one_line() -> None:
    """The console script is installed with s6ipc, uvicorn only with the extra: one line, exit 111."""
    code = "import sys; sys.modules['uvicorn'] = None; from s6ipc.cli import uvicorn_main; uvicorn_main()"
    out = subprocess.run([sys.executable, "-c", code, "--fd", "3", "app:app"], capture_output=True,
                         timeout=30)
    assert out.returncode == 111 and out.stdout == b"", out
    assert out.stderr.startswith(b"s6ipc-uvicorn: fatal: unable to import uvicorn: ")
    assert out.stderr.endswith(b" (pip install 's6ipc[uvicorn]')\n"), out.stderr
    assert out.stderr.count(b"\n") == 1, out.stderr
