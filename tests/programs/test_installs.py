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
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Dict, Iterator, Tuple

import pytest

from s6ipc.chain.registry import PROGRAMS
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
