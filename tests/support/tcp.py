"""TCP servers and clients for the tests: start a chain with ``-1``, read its port line, talk to it.

Everything stays on loopback (127.0.0.0/8 and ::1); distinct 127.x.y.z source addresses give
distinct client IPs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from tests.support.processes import read_all, stop_process, wait_for_ready


class TcpServer:
    """A server started with fd 1 on a pipe: ready once its ``-1`` port line arrived (``port``).

    With *merged*, stdout and stderr share one file instead (no port is read): the relative
    order of the port line and the log lines is kept.
    """

    def __init__(self, argv: Sequence[str], *, env: Optional[Dict[str, str]] = None,
                 stdin: object = subprocess.DEVNULL, merged: bool = False, ready: bool = True,
                 **kw: object) -> None:
        fd, self.log_path = tempfile.mkstemp(prefix="s6t-tcplog", dir="/tmp")
        self._log = os.fdopen(fd, "wb")
        self.ready_fd = -1
        if merged:
            self.proc = subprocess.Popen(list(argv), stdin=stdin, stdout=self._log, stderr=self._log,
                                         env=env, **kw)  # type: ignore[call-overload]
            self.port = 0
            return
        r, w = os.pipe()
        self.proc = subprocess.Popen(list(argv), stdin=stdin, stdout=w, stderr=self._log, env=env,
                                     **kw)  # type: ignore[call-overload]
        os.close(w)
        self.ready_fd = r
        self.port = int(wait_for_ready(r)) if ready else 0

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        stop_process(self.proc)
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1
        self._log.close()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def connect(port: int, host: str = "127.0.0.1", source: Optional[str] = None,
            timeout: float = 10.0) -> socket.socket:
    """A connected TCP client socket (IPv6 when *host* has a colon), bound to *source* first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source is not None:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def tcp_request(port: int, data: bytes = b"", host: str = "127.0.0.1", source: Optional[str] = None,
                timeout: float = 10.0) -> bytes:
    """Connect, send *data*, shut down writing, read everything back."""
    with connect(port, host, source, timeout) as s:
        if data:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return read_all(s)


def env_items(output: bytes) -> List[Tuple[str, str]]:
    """``env`` output as (name, value) pairs, in order."""
    return [tuple(line.split("=", 1)) for line in output.decode().splitlines() if "=" in line]  # type: ignore[misc]


def ask_address(address: str) -> bytes:
    """One request to ``HOST PORT`` (a :class:`tests.support.peers.Load` *asker* for TCP)."""
    host, port = address.rsplit(" ", 1)
    return tcp_request(int(port), host=host)
