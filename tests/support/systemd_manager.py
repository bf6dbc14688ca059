"""A real systemd manager for tests, on a machine whose PID 1 is not systemd.

The method: the real ``/lib/systemd/systemd``
binary runs as a *user manager* owned by root, in a private mount namespace (``unshare``) whose
``/run/systemd`` is a tmpfs holding ``system/`` (else ``systemd --user`` exits 1: "Trying to run
as user instance, but the system has not been booted with systemd"; where there is no
``/run/systemd`` to mount it on, ``/run`` itself is a tmpfs in that namespace), in its own cgroup
``s6ipc-sd-<pid>/payload`` in every hierarchy systemd uses, with its own ``XDG_RUNTIME_DIR``, and
``SYSTEMD_UNIT_PATH`` set to our unit directory only (no trailing ``:``: nothing of the host's is
loaded; stand-ins for ``basic``/``sockets``/``shutdown``/``exit`` targets are written). Its log
goes to /dev/kmsg, bind-mounted inside the namespace to a FIFO that ``cat`` appends to
``manager.log``. ``systemctl --user`` drives it through ``$XDG_RUNTIME_DIR/systemd/private``.
Teardown: ``systemctl --user exit``, then whatever is left in our cgroups is killed by PID, the
cgroups are removed, and the temporary directory too. Leftovers of a killed run are cleaned by
the next one. Nothing outside /tmp and our cgroups is touched.

:func:`start` raises :class:`Unavailable` with the exact failing command and its output when the
manager cannot run here (no root, no CAP_SYS_ADMIN, read-only cgroupfs, no systemd, or / not a
mount point — a plain chroot — so that ``unshare`` cannot make it private).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Dict, Iterator, List, Optional

import pytest

from tests.support.processes import unshare_hint

SYSTEMD = "/lib/systemd/systemd"
CG_PREFIX = "s6ipc-sd-"


class Unavailable(Exception):
    """A real systemd manager cannot run on this machine (the message says exactly why)."""


def cgroup_dirs() -> List[str]:
    """The hierarchies systemd uses: cgroup2 alone, or (hybrid) the unified one plus name=systemd."""
    def fstype(path: str) -> str:
        out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
        return out.stdout.strip()

    if fstype("/sys/fs/cgroup") == "cgroup2fs":
        return ["/sys/fs/cgroup"]
    dirs = []
    if os.path.isdir("/sys/fs/cgroup/unified") and fstype("/sys/fs/cgroup/unified") == "cgroup2fs":
        dirs.append("/sys/fs/cgroup/unified")
    if os.path.isdir("/sys/fs/cgroup/systemd"):
        dirs.append("/sys/fs/cgroup/systemd")
    return dirs


def _procs(top: str) -> List[int]:
    pids = []
    for root, _, files in os.walk(top):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(root, "cgroup.procs")) as f:
                    pids += [int(x) for x in f.read().split()]
            except OSError:
                pass
    return pids


def _remove_cgroup(top: str) -> None:
    for p in _procs(top):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while _procs(top) and time.monotonic() < deadline:
        time.sleep(0.05)
    for root, _, _ in sorted(os.walk(top), key=lambda x: -len(x[0])):
        try:
            os.rmdir(root)
        except OSError:
            pass


def cleanup_stale() -> None:
    """Remove the cgroups and directories of earlier runs whose owner process is gone."""
    for d in cgroup_dirs():
        for name in os.listdir(d):
            if name.startswith(CG_PREFIX) and not _alive(int(name[len(CG_PREFIX):] or 0)):
                _remove_cgroup(os.path.join(d, name))
    for name in os.listdir("/tmp"):
        if name.startswith(CG_PREFIX) and not _alive(int(name[len(CG_PREFIX):].split(".")[0] or 0)):
            shutil.rmtree(os.path.join("/tmp", name), ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_STAND_INS = {
    **{f"{t}.target": f"[Unit]\nDescription={t}.target (test stand-in)\nDefaultDependencies=no\n"
       for t in ("harness", "basic", "sysinit", "sockets", "shutdown", "multi-user", "default")},
    "exit.target": "[Unit]\nDescription=Exit the manager\nDefaultDependencies=no\n"
                   "Requires=systemd-exit.service\nAfter=systemd-exit.service\n",
    "systemd-exit.service": "[Unit]\nDescription=Exit the manager\nDefaultDependencies=no\n"
                            "Requires=shutdown.target\nAfter=shutdown.target\nSuccessAction=exit-force\n"
                            "[Service]\nSlice=-.slice\n",
}

_START = r"""
set -e
# no /run/systemd (a machine systemd never ran on, a fresh tmpfs /run): a private /run to hold one
if [ ! -d /run/systemd ]; then mount -n -t tmpfs -o mode=755 tmpfs /run; mkdir /run/systemd; fi
mount -n -t tmpfs -o mode=755 tmpfs /run/systemd
mkdir -p /run/systemd/system
mount -n --bind "$1/kmsg.fifo" /dev/kmsg
for d in $3; do echo $$ > "$d/$2/payload/cgroup.procs"; done
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$1/home" USER=root LOGNAME=root LANG=C.UTF-8 \
    XDG_RUNTIME_DIR="$1/xdg" SYSTEMD_UNIT_PATH="$1/units" \
    SYSTEMD_GENERATOR_PATH="$1/empty" SYSTEMD_ENVIRONMENT_GENERATOR_PATH="$1/empty" \
    "$4" --user --unit=harness.target --log-target=kmsg --log-level=info
"""


class UserManager:
    """A running ``systemd --user`` with our units (see the module doc). Use :func:`start`."""

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix=f"{CG_PREFIX}{os.getpid()}.", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.units = os.path.join(self.base, "units")
        self.xdg = os.path.join(self.base, "xdg")
        self.cg = f"{CG_PREFIX}{os.getpid()}"
        self.cgdirs = cgroup_dirs()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.reader: Optional[subprocess.Popen[bytes]] = None
        for d in ("units", "home", "empty"):
            os.makedirs(os.path.join(self.base, d))
        os.makedirs(self.xdg, mode=0o700)
        for name, text in _STAND_INS.items():
            self.write_unit(name, text)

    # -- units ------------------------------------------------------------------------------
    def write_unit(self, name: str, text: str) -> str:
        path = os.path.join(self.units, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- driving it ---------------------------------------------------------------------------
    @property
    def env(self) -> Dict[str, str]:
        return dict(os.environ, XDG_RUNTIME_DIR=self.xdg, SYSTEMD_OFFLINE="0")

    def systemctl(self, *args: str, check: bool = True,
                  timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["systemctl", "--user", "--no-pager", *args], capture_output=True, text=True,
                                env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"systemctl {' '.join(args)}: exit {result.returncode}: "
                                 f"{result.stderr.strip()}\n--- manager.log:\n{self.log(20)}")
        return result

    def prop(self, unit: str, name: str) -> str:
        return self.systemctl("show", "-p", name, "--value", unit).stdout.strip()

    def state(self, unit: str) -> str:
        return f"{self.prop(unit, 'ActiveState')}/{self.prop(unit, 'SubState')}"

    def wait_state(self, unit: str, wanted: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(unit)
            if state == wanted or time.monotonic() > deadline:
                return state
            time.sleep(0.05)

    def log(self, lines: int = 0) -> str:
        try:
            with open(os.path.join(self.base, "manager.log"), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:]) if lines else text

    # -- life cycle ---------------------------------------------------------------------------
    def _launch(self) -> None:
        if not self.cgdirs:
            raise Unavailable("no usable cgroup hierarchy under /sys/fs/cgroup")
        for d in self.cgdirs:
            for sub in ("payload", "supervisor"):
                try:
                    os.makedirs(os.path.join(d, self.cg, sub), exist_ok=True)
                except OSError as e:
                    raise Unavailable(f"cannot create cgroup {d}/{self.cg}/{sub}: {e.strerror}") from None
        fifo = os.path.join(self.base, "kmsg.fifo")
        os.mkfifo(fifo)
        log = os.path.join(self.base, "manager.log")
        cgdirs = " ".join(self.cgdirs)
        self.reader = subprocess.Popen(
            ["/bin/sh", "-c", f'for d in {cgdirs}; do echo $$ > "$d/{self.cg}/supervisor/cgroup.procs"; '
                              f'done; exec cat 0<>"{fifo}" >>"{log}"'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "/bin/bash", "-c", _START, "harness",
                 self.base, self.cg, cgdirs, SYSTEMD],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + 15
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log(20)
                raise Unavailable(f"the manager exited with status {self.proc.returncode}:\n{log}"
                                  + unshare_hint(log))
            result = subprocess.run(["systemctl", "--user", "show", "-p", "SystemState", "--value"],
                                    capture_output=True, text=True, env=self.env, timeout=10)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.05)
        raise Unavailable(f"the manager did not come up (SystemState {state!r}):\n{self.log(20)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.systemctl("exit", check=False, timeout=15)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for d in self.cgdirs:
            top = os.path.join(d, self.cg)
            if os.path.isdir(top):
                _remove_cgroup(os.path.join(top, "payload"))
        if self.reader is not None:
            self.reader.kill()
            self.reader.wait(5)
        for d in self.cgdirs:
            top = os.path.join(d, self.cg)
            if os.path.isdir(top):
                _remove_cgroup(top)
        if not os.environ.get("S6IPC_KEEP_MANAGER"):
            shutil.rmtree(self.base, ignore_errors=True)


def start() -> UserManager:
    """Start a manager (see the module doc) or raise :class:`Unavailable` saying exactly why not."""
    if os.geteuid() != 0:
        raise Unavailable("a real systemd manager needs root with CAP_SYS_ADMIN (mount namespace, cgroups)")
    for tool in (SYSTEMD, shutil.which("unshare"), shutil.which("systemctl")):
        if not tool or not os.access(tool, os.X_OK):
            raise Unavailable(f"missing executable: {tool or 'unshare/systemctl'}")
    cleanup_stale()
    manager = UserManager()
    try:
        manager._launch()
    except BaseException:
        manager.stop()
        raise
    return manager


def start_or_skip() -> UserManager:
    """:func:`start`, or skip the calling test (or module, from a fixture) saying exactly why not."""
    import pytest

    try:
        return start()
    except Unavailable as e:
        pytest.skip(f"no real systemd manager here: {e}")


@pytest.fixture
def user_manager() -> Iterator[UserManager]:
    """A fresh manager for one test (skipped, with the exact reason, where none can run)."""
    try:
        m = start()
    except Unavailable as e:
        pytest.skip(f"no real systemd manager here: {e}")
    try:
        yield m
    finally:
        m.stop()
