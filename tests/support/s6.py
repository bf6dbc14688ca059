"""A real s6 supervision tree for tests: Debian's s6-svscan over a scan directory in /tmp.

``Scan(base)`` copies service directories in (rewriting paths with :func:`render`), starts
``s6-svscan`` on them and offers ``svwait``/``svc``/``svstat``; ``stop()`` brings the tree down with
``s6-svscanctl -t`` and kills, by PID, anything left whose working directory or command line lies
under *base* (service processes run in the service directory; helpers name files under *base*).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

SVSCAN = "/usr/bin/s6-svscan"


def render(source: str, target: str, replace: Dict[str, str]) -> None:
    """Copy the service directory *source* to *target*, replacing strings in every text file."""
    shutil.copytree(source, target)
    for root, _, files in os.walk(target):
        for name in files:
            path = os.path.join(root, name)
            with open(path) as f:
                text = f.read()
            for old, new in replace.items():
                text = text.replace(old, new)
            mode = os.stat(path).st_mode
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, mode)


def read_log(path: str) -> str:
    """The text of a service's log file ("" while it does not exist)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def processes_under(base: str) -> List[int]:
    """PIDs whose cwd or command line mentions *base* (never this process)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if cwd.startswith(base) or base in cmdline:
            found.append(int(entry))
    return found


def write_service(directory: str, run: str, notification_fd: Optional[int] = None) -> str:
    """A service directory: an executable ``run`` holding *run* (a shell script's body after the
    ``#!/bin/sh`` line), and ``notification-fd`` when given. Returns *directory*."""
    os.makedirs(directory)
    path = os.path.join(directory, "run")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + run)
    os.chmod(path, 0o755)
    if notification_fd is not None:
        with open(os.path.join(directory, "notification-fd"), "w") as f:
            f.write(f"{notification_fd}\n")
    return directory


class Scan:
    """``s6-svscan`` running over ``BASE/scan``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.dir = os.path.join(base, "scan")
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(base, "svscan.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def add(self, name: str, source: str, replace: Dict[str, str]) -> str:
        target = os.path.join(self.dir, name)
        render(source, target, replace)
        return target

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([SVSCAN, self.dir], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    def service(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def svwait(self, flag: str, name: str, timeout_ms: int = 10000) -> Tuple[int, float]:
        """``s6-svwait FLAG -t TIMEOUT`` on a service: (exit code, seconds it took)."""
        start = time.monotonic()
        rc = subprocess.run(["s6-svwait", flag, "-t", str(timeout_ms), self.service(name)],
                            capture_output=True, timeout=timeout_ms / 1000 + 10).returncode
        return rc, time.monotonic() - start

    def wait_supervised(self, name: str, timeout: float = 10) -> None:
        """Until s6-supervise runs *and* has written its status file (s6-svok alone is too early:
        s6-svwait then fails with ``unable to s6_svstatus_read: No such file or directory``)."""
        deadline = time.monotonic() + timeout
        status = os.path.join(self.service(name), "supervise", "status")
        while subprocess.run(["s6-svok", self.service(name)]).returncode != 0 or not os.path.exists(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not supervised after {timeout}s: {self.log()}")
            time.sleep(0.01)

    def svc(self, flag: str, name: str) -> None:
        subprocess.run(["s6-svc", flag, self.service(name)], check=True, timeout=10)

    def svstat(self, name: str, fields: str = "up,ready,pid") -> List[str]:
        out = subprocess.run(["s6-svstat", "-o", fields, self.service(name)], capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.split()

    def pid(self, name: str) -> int:
        return int(self.svstat(name, "pid")[0])

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(["s6-svscanctl", "-t", self.dir], timeout=10)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        deadline = time.monotonic() + 3
        while processes_under(self.base) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in processes_under(self.base):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def scan(sockdir: str) -> Iterator[Scan]:
    s = Scan(sockdir)
    try:
        yield s
    finally:
        s.stop()
