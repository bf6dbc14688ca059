"""The package as a user installs it: a wheel built from the checkout, installed outside any venv.

The wheel (``pip wheel``, the same PEP 517 build as ``python -m build``) is installed for Debian's
``/usr/bin/python3`` itself, in a temporary user scheme (``PYTHONUSERBASE``, ``--user``): what a
system-wide install does in ``/usr/local``, without touching the machine. From there:

* ``s6ipc links`` finds its console script in the interpreter's scripts directory (not next to the
  interpreter, where a venv keeps it) and the links serve, in one process;
* ``--version`` names that script;
* the man pages generated from docs/ at build time are installed under ``share/man``, found by
  ``man`` through PATH, and render with ``man -l``;
* without any extra (Debian's python3 has no uvicorn), the daemons' preflight passes and an
  ipcserverd started from the install upgrades in place on SIGUSR2 (the preflight imports every
  module: the uvicorn integration made every upgrade of a plain install fail).

And a real upgrade of an install, from this checkout's wheel to the same tree numbered
``0.1.0.post1`` (both built in a temp dir, never dist/), with ipcserverd, tcpserver4d and fdholderd
started from the install and ``s6ipc upgrade -j`` giving the verdict (generation 1, the newer
version): in a venv made by /usr/bin/python3 with no extra (``pip install --upgrade``), and from
Debian's pipx (``pipx install --force``, which removes the venv and makes it again under the
running daemons).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

from s6ipc.chain.registry import PROGRAMS
from tests.support.fdholder import make_rules
from tests.support.processes import S6IPC, RunningServer, request, run, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM_PYTHON = "/usr/bin/python3"
PIP = [os.path.join(os.path.dirname(S6IPC), "python"), "-m", "pip"]


@pytest.fixture(scope="module")
def installed() -> Iterator[Tuple[str, Dict[str, str]]]:
    """(user base, environment using it) with the wheel installed for /usr/bin/python3."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("Debian's python3 is not installed")
    if shutil.which("pandoc") is None:
        pytest.skip("pandoc is not installed (apt-get install pandoc): the wheel would have no man pages")
    base = tempfile.mkdtemp(prefix="s6inst", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        wheels = os.path.join(base, "wheels")
        built = run([*PIP, "wheel", "-q", "--no-deps", "-w", wheels, ROOT], timeout=300,
                    env={**os.environ, "S6IPC_REQUIRE_MAN": "1"})
        assert built.returncode == 0, built.stderr.decode(errors="replace")[-2000:]
        wheel = glob.glob(os.path.join(wheels, "s6ipc-*.whl"))
        assert len(wheel) == 1, wheel
        env = {"PATH": f"{base}/bin:/usr/bin:/bin", "PYTHONUSERBASE": base, "HOME": base}
        done = run([*PIP, "--python", SYSTEM_PYTHON, "install", "-q", "--user", "--break-system-packages",
                    "--no-deps", "--no-warn-script-location", wheel[0]], timeout=300,
                   env={**os.environ, **env})
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        yield base, env
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_links_work_outside_a_venv(installed: Tuple[str, Dict[str, str]], sockdir: str) -> None:
    base, env = installed
    script = os.path.join(base, "bin", "s6ipc")
    version = run([script, "--version"], env=env)
    assert version.returncode == 0, version.stderr
    assert f"python: {SYSTEM_PYTHON} ".encode() in version.stdout
    assert f"entry script: {script}\n".encode() in version.stdout
    links = os.path.join(sockdir, "bin")
    made = run([script, "links", links], env=env)
    assert (made.returncode, made.stderr) == (0, b"")
    assert os.path.realpath(os.path.join(links, "s6-ipcserverd")) == os.path.realpath(script)
    path = os.path.join(sockdir, "s")
    srv = RunningServer(["s6-ipcserver", "-1", path, "echo", "hi"],
                        env={**env, "PATH": f"{links}:{env['PATH']}"})
    try:
        assert request(path) == b"hi\n"
        with open(f"/proc/{srv.proc.pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[:2] == [SYSTEM_PYTHON.encode(), os.fsencode(f"{links}/s6-ipcserver")]
    finally:
        srv.stop()


def test_man_pages_installed_and_rendered(installed: Tuple[str, Dict[str, str]]) -> None:
    if shutil.which("man") is None:
        pytest.skip("man-db is not installed (apt-get install man-db)")
    base, env = installed
    for name in (*PROGRAMS, "uvicorn"):  # the programs, and the console script s6ipc-uvicorn
        page = os.path.join(base, "share", "man", "man1", f"s6ipc-{name}.1")
        assert os.path.isfile(page), page
    for guide in ("s6ipc", "s6ipc-s6", "s6ipc-systemd", "s6ipc-python-api"):
        assert os.path.isfile(os.path.join(base, "share", "man", "man7", f"{guide}.7")), guide
    page = os.path.join(base, "share", "man", "man1", "s6ipc-ipcserverd.1")
    found = run(["man", "-w", "s6ipc-ipcserverd"], env={**env, "MANPATH": ""})  # from PATH: bin → share/man
    assert found.stdout.decode().strip() == page, found
    shown = subprocess.run(["man", "-l", page], env={**env, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""},
                           capture_output=True, timeout=60)
    text = shown.stdout.decode(errors="replace")
    assert shown.returncode == 0, shown.stderr
    assert "S6IPC-IPCSERVERD(1)" in text and "Synopsis" in text
    assert "s6ipc ipcserverd [ -v verbosity ] [ -1 ]" in text
    assert shown.stderr == b"", shown.stderr  # no troff warning


def test_systemd_extra_check_names_what_is_missing() -> None:
    """make's check before building python-systemd: one line naming every missing piece, exit 1."""
    script = os.path.join(ROOT, "scripts", "systemd-extra-check")
    ok = run([script, SYSTEM_PYTHON])
    tools = all(shutil.which(t) for t in ("pkg-config", "gcc"))
    buildable = tools and run(["pkg-config", "--exists", "libsystemd"]).returncode == 0
    assert ok.returncode == (0 if buildable else 1)
    bare = run(["/bin/sh", script, "/nonexistent/python3"], env={"PATH": "/nonexistent"})
    assert bare.returncode == 1
    missing = b"pkg-config libsystemd-dev gcc python3-dev"
    assert bare.stderr == (b"make: warning: the systemd extra (python-systemd) needs libsystemd-dev "
                           b"pkg-config gcc python3-dev; missing: " + missing + b": not installed, s6ipc "
                           b"uses its standard-library backend (apt-get install " + missing + b")\n")


def test_a_plain_install_passes_the_preflight_and_upgrades_in_place(installed: Tuple[str, Dict[str, str]],
                                                                    sockdir: str) -> None:
    base, env = installed
    script = os.path.join(base, "bin", "s6ipc")
    assert run([SYSTEM_PYTHON, "-c", "import uvicorn"], env=env).returncode != 0, "this test needs no uvicorn"
    for program, args in (("ipcserverd", ["cat"]), ("tcpserver4d", ["cat"]),
                          ("fdholderd", ["-i", os.path.join(sockdir, "rules")])):
        checked = run([script, "preflight", program, *args], env=env, stdin=subprocess.DEVNULL)
        assert (checked.returncode, checked.stderr) == (0, b""), (program, checked.stderr)
    path = os.path.join(sockdir, "s")
    srv = RunningServer([script, "ipcserver", "-v", "-1", path, "echo", "hi"], env=env)
    try:
        assert request(path) == b"hi\n"
        srv.signal(signal.SIGUSR2)
        wait_until(lambda: "upgraded in place" in srv.log(), 20)
        assert "unable to upgrade" not in srv.log(), srv.log()
        assert srv.proc.poll() is None and request(path) == b"hi\n"
    finally:
        srv.stop()


# -- upgrading a real install in place: 0.1.0 → a newer wheel, the daemons started from the install ----

NEWER = "0.1.0.post1"


@pytest.fixture(scope="module")
def two_wheels() -> Iterator[Tuple[str, str]]:
    """(this checkout's wheel, the wheel of the same tree numbered NEWER), built in a temp dir
    (never dist/), without man pages (pandoc's time is not what these tests are about)."""
    base = tempfile.mkdtemp(prefix="s6whl", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        tree = os.path.join(base, "tree")
        skipped = shutil.ignore_patterns(".venv*", ".git", "dist", "build", "bench", "tests", "*.egg-info",
                                         "__pycache__")
        # ROOT/run: `make run`'s demo socket, left there after README's `make run` (not copyable)
        shutil.copytree(ROOT, tree, ignore=lambda d, names: set(skipped(d, names)) | (
            {"run"} if os.path.samefile(d, ROOT) else set()))
        for relative, old in (("pyproject.toml", 'version = "0.1.0"'),
                              (os.path.join("src", "s6ipc", "__init__.py"), '__version__ = "0.1.0"')):
            with open(os.path.join(tree, relative)) as f:
                text = f.read()
            assert text.count(old) == 1, relative
            with open(os.path.join(tree, relative), "w") as f:
                f.write(text.replace(old, old.replace("0.1.0", NEWER)))
        wheels = []
        env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no pandoc: setup.py builds without man pages
        for source, out in ((ROOT, "old"), (tree, "new")):
            built = run([*PIP, "wheel", "-q", "--no-deps", "-w", os.path.join(base, out), source],
                        timeout=300, env=env)
            assert built.returncode == 0, built.stderr.decode(errors="replace")[-2000:]
            found = glob.glob(os.path.join(base, out, "s6ipc-*.whl"))
            assert len(found) == 1, found
            wheels.append(found[0])
        yield wheels[0], wheels[1]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _daemons(script: str, sockdir: str, env: Dict[str, str]) -> List[Tuple[str, RunningServer]]:
    """ipcserverd, tcpserver4d and fdholderd started from the install's console script *script*."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rules = make_rules(sockdir, {"uid/0": {}})
    commands = {"ipcserverd": ["ipcserver", "-1", os.path.join(sockdir, "s"), "echo", "hi"],
                "tcpserver4d": ["tcpserver4", "-1", "127.0.0.1", str(port), "echo", "hi"],
                "fdholderd": ["fdholder-daemon", "-1", "-i", rules, os.path.join(sockdir, "h")]}
    return [(program, RunningServer([script, *args], env=env)) for program, args in commands.items()]


def _upgraded_to_the_newer_wheel(script: str, sockdir: str, env: Dict[str, str],
                                 install_newer: Callable[[], None]) -> None:
    """Start the three daemons from *script*, install the newer wheel, ``s6ipc upgrade -j`` each:
    generation 1, the newer version, and the socket still served."""
    assert run([script, "--version"], env=env).stdout.startswith(b"s6ipc 0.1.0 ")
    daemons = _daemons(script, sockdir, env)
    try:
        install_newer()
        assert run([script, "--version"], env=env).stdout.startswith(f"s6ipc {NEWER} ".encode())
        for program, server in daemons:
            done = run([script, "upgrade", "-j", "-t", "60000", str(server.proc.pid)], env=env)
            assert done.returncode == 0, (program, done.stderr, server.log())
            verdict = json.loads(done.stdout)
            assert (verdict["program"], verdict["generation"], verdict["version"]) == (program, 1, NEWER)
            if program != "fdholderd":  # the stand-in served during the exec: the pause is its hand-back
                assert verdict["pause_ms"] < verdict["exec_ms"], verdict
            assert "warning" not in server.log() and server.proc.poll() is None, server.log()
        assert request(os.path.join(sockdir, "s")) == b"hi\n"
    finally:
        for _, server in daemons:
            server.stop()


def test_a_venv_of_debians_python_without_extras_upgrades_in_place(two_wheels: Tuple[str, str],
                                                                  sockdir: str, tmp_path: str) -> None:
    """``python3 -m venv`` from /usr/bin/python3, ``pip install s6ipc`` (no extra, no uvicorn), the
    daemons started from it; ``pip install -U`` of a newer wheel into the same venv; SIGUSR2."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("Debian's python3 is not installed")
    old, new = two_wheels
    venv = os.path.join(str(tmp_path), "venv")
    assert run([SYSTEM_PYTHON, "-m", "venv", venv], timeout=120).returncode == 0
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    assert run([*pip, old], timeout=300).returncode == 0
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    assert run([os.path.join(venv, "bin", "python"), "-c", "import uvicorn"], env=env).returncode != 0

    def install_newer() -> None:
        done = run([*pip, "--upgrade", new], timeout=300)
        assert done.returncode == 0, done.stderr

    _upgraded_to_the_newer_wheel(os.path.join(venv, "bin", "s6ipc"), sockdir, env, install_newer)


def test_a_pipx_install_upgrades_in_place(two_wheels: Tuple[str, str], sockdir: str, tmp_path: str) -> None:
    """``pipx install`` of the wheel (Debian's pipx, its venv from /usr/bin/python3), the daemons
    started from pipx's ``s6ipc``; ``pipx install --force`` of the newer wheel (pipx removes the venv
    and makes it again under the running daemons); SIGUSR2."""
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.skip("pipx is not installed (apt-get install pipx)")
    old, new = two_wheels
    home = str(tmp_path)
    # offline (no index): pipx 1.7 (Debian 13) makes its shared-libraries venv with
    # `pip install --force-reinstall --upgrade "pip >= 23.1"`, which needs a pip wheel to install even
    # when the venv's pip is new enough; Debian's own (python3-pip-whl, the one `python3 -m venv`
    # installs) is found there. pipx 1.1 (Debian 12) asks `--upgrade pip`, satisfied in place.
    env = {"PATH": f"{home}/bin:/usr/bin:/bin", "HOME": home, "PIPX_HOME": os.path.join(home, "pipx"),
           "PIPX_BIN_DIR": os.path.join(home, "bin"), "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": "/usr/share/python-wheels"}
    done = run([pipx, "install", "--python", SYSTEM_PYTHON, old], env=env, timeout=300)
    assert done.returncode == 0, done.stderr

    def install_newer() -> None:
        again = run([pipx, "install", "--force", "--python", SYSTEM_PYTHON, new], env=env, timeout=300)
        assert again.returncode == 0, again.stderr

    _upgraded_to_the_newer_wheel(os.path.join(home, "bin", "s6ipc"), sockdir, env, install_newer)
