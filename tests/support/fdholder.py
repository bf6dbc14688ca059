"""Helpers shared by the fd-holder tests (no tests here): rules directories, running holder daemons
(ours or s6's), a raw protocol client.

Imported as ``from tests.support.fdholder import ...``.
"""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from s6ipc.base import unixmessage
from tests.support.processes import ours, stop_process, theirs, wait_for_ready

ALL_RIGHTS = {
    "S6_FDHOLDER_STORE_REGEX": "",
    "S6_FDHOLDER_RETRIEVE_REGEX": "",
    "S6_FDHOLDER_LIST": "",
    "S6_FDHOLDER_GETDUMP": "",
    "S6_FDHOLDER_SETDUMP": "",
}


def make_rules(base: str, rules: Dict[str, Optional[Dict[str, str]]]) -> str:
    """A rules directory under *base*: ``{"uid/0": {VAR: value}}`` allows with that env (value
    written as ``value\\n``, so an empty value sets VAR to ""), ``{"uid/5": None}`` denies."""
    root = os.path.join(base, "rules")
    for key, env in rules.items():
        d = os.path.join(root, key)
        os.makedirs(os.path.join(d, "env"), exist_ok=True)
        if env is None:
            open(os.path.join(d, "deny"), "w").close()
            continue
        open(os.path.join(d, "allow"), "w").close()
        for name, value in env.items():
            with open(os.path.join(d, "env", name), "w") as f:
                f.write(value + "\n")
    return root


class Holder:
    """An fd-holder daemon started by fdholder-daemon (ours or s6's) with ``-1``, ready on return."""

    def __init__(self, daemon: Sequence[str], path: str, options: Sequence[str], *,
                 stderr_path: Optional[str] = None, preexec: Optional[object] = None,
                 env: Optional[Dict[str, str]] = None) -> None:
        """*daemon*: the fdholder-daemon argv prefix (``Impls(...)("fdholder-daemon")``); *env*: its
        environment (default: the test's)."""
        self.path = path
        r, w = os.pipe()
        if stderr_path is None:
            log_fd, stderr_path = tempfile.mkstemp(prefix="s6t-holder", dir="/tmp")
            os.close(log_fd)
        self.stderr_path = stderr_path
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([*daemon, "-1", *options, path],
                                         stdin=subprocess.DEVNULL, stdout=w, stderr=err, env=env,
                                         preexec_fn=preexec)  # type: ignore[arg-type]
        os.close(w)
        try:
            wait_for_ready(r)
        finally:
            os.close(r)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM and the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        stop_process(self.proc)
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


class Raw:
    """A raw protocol client: send messages (with fds), read replies, see when the daemon hangs up."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.decoder = unixmessage.Decoder()

    def send_raw(self, data: bytes, fds: Sequence[int] = ()) -> None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        self.sock.sendmsg([data], anc)

    def send(self, payload: bytes, fds: Sequence[int] = ()) -> None:
        unixmessage.send_message(self.sock, payload, fds)

    def reply(self) -> Optional[Tuple[bytes, List[int]]]:
        """The next reply (payload, fds), or None if the daemon closed the connection."""
        while True:
            m = self.decoder.next_message()
            if m is not None:
                return m.payload, m.fds
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, unixmessage.CMSG_SPACE_MAX)
            except ConnectionResetError:
                return None
            if not data:
                return None
            fds: List[int] = []
            for _, _, cdata in anc:
                fds.extend(array.array("i", cdata[: len(cdata) - len(cdata) % 4]))
            self.decoder.feed(data, fds)

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the daemon closes the connection (EOF or reset) without replying."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return data == b""

    def close(self) -> None:
        self.decoder.discard()
        self.sock.close()


def inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def wait_gone(path_check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not path_check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        time.sleep(0.01)


def make_links(directory: str) -> str:
    """``s6ipc links DIR``: our programs reachable as DIR/s6-NAME (they then print s6's names)."""
    subprocess.run([*ours("links"), directory], check=True, timeout=20)
    return directory


def links_for_everyone() -> Iterator[str]:
    """A module fixture's body: :func:`make_links` in a fresh /tmp directory other users can reach
    (for the tests that run programs as nobody), removed afterwards."""
    d = tempfile.mkdtemp(prefix="s6l", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield make_links(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Impls:
    """argv prefixes for one implementation: ``ours`` through s6-NAME links, or Debian's binaries."""

    def __init__(self, impl: str, links: str) -> None:
        self.impl = impl
        self.links = links

    def __call__(self, name: str) -> List[str]:
        if self.impl == "ours":
            return [os.path.join(self.links, "s6-" + name)]
        return theirs(name)


class Quiet:
    """A log that keeps its lines (for in-process daemons)."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def info(self, text: str) -> None:
        self.lines.append("info: " + text)

    def warn(self, text: str) -> None:
        self.lines.append("warning: " + text)

    def error(self, text: str) -> None:
        self.lines.append("fatal: " + text)


def listening(path: str) -> int:
    """A listening Unix stream socket bound at *path*: its descriptor (the caller's)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    return listener.detach()
