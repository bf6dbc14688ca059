"""Test launcher: put sockets on fds 3, 4, … and set LISTEN_* as systemd would, then exec argv.

Usage: passfds.py [SPEC]... [--pid self|VALUE] [--fds VALUE] [--names VALUE] [--pidfdid self|VALUE]
                  [--unset-pid] -- argv...

SPEC is one of ``listen:PATH`` (listening AF_UNIX stream socket bound to PATH, or ``@name``),
``bound:PATH`` (bound, not listening), ``dgram:PATH``, ``tcp`` (listening TCP on 127.0.0.1),
``pipe`` (a pipe's read end), ``closed`` (nothing: the fd number is left closed), ``inherit:N``
(the fd N this launcher inherited — the way a test hands back an fd "from the fd store"). Defaults:
LISTEN_PID is this process (exec keeps the PID), LISTEN_FDS the number of SPECs, no names.
The sockets' fds are inheritable, as systemd passes them.
"""

from __future__ import annotations

import os
import socket
import sys


def make(spec: str) -> int:
    kind, _, arg = spec.partition(":")
    address = "\0" + arg[1:] if arg.startswith("@") else arg
    if kind in ("listen", "bound"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if not arg.startswith("@") and os.path.lexists(arg):
            os.unlink(arg)
        s.bind(address)
        if kind == "listen":
            s.listen(16)
        return s.detach()
    if kind == "dgram":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(address)
        return s.detach()
    if kind == "tcp":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        return s.detach()
    if kind == "pipe":
        r, w = os.pipe()
        os.close(w)
        return r
    if kind == "closed":
        return -1
    if kind == "inherit":
        return os.dup(int(arg))
    raise SystemExit(f"passfds: unknown spec {spec}")


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    opts, argv = args[:split], args[split + 1 :]
    specs = []
    settings = {}
    i = 0
    while i < len(opts):
        if opts[i] in ("--pid", "--fds", "--names", "--pidfdid"):
            settings[opts[i][2:]] = opts[i + 1]
            i += 2
            continue
        if opts[i] == "--unset-pid":
            settings["unset-pid"] = "1"
        else:
            specs.append(opts[i])
        i += 1
    fds = [make(spec) for spec in specs]
    # move everything far away first, then down to 3, 4, …
    high = []
    for fd in fds:
        if fd < 0:
            high.append(-1)
            continue
        h = os.dup2(fd, 100 + len(high))
        os.close(fd)
        high.append(h)
    for n, h in enumerate(high):
        if h >= 0:
            os.dup2(h, 3 + n, inheritable=True)
            os.close(h)
    env = os.environ
    pid = settings.get("pid", "self")
    env["LISTEN_PID"] = str(os.getpid()) if pid == "self" else pid
    if "unset-pid" in settings:
        del env["LISTEN_PID"]
    env["LISTEN_FDS"] = settings.get("fds", str(len(specs)))
    if "names" in settings:
        env["LISTEN_FDNAMES"] = settings["names"]
    if "pidfdid" in settings:
        value = settings["pidfdid"]
        if value == "self":
            pidfd = os.pidfd_open(os.getpid())
            value = str(os.fstat(pidfd).st_ino)
            os.close(pidfd)
        env["LISTEN_PIDFDID"] = value
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
