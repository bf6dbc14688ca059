"""Every number from argv or the environment goes through one scanner with skalibs' limits
(s6ipc.options.scan_magnitude): huge LISTEN_PID/LISTEN_FDS, UID/GID, descriptor numbers — side
by side with s6 where s6 has the program — and a source check that no other ``int()`` parses
outside input."""

from __future__ import annotations

import ast
import os
import pathlib

import pytest

import s6ipc
from s6ipc.base.options import UINT32_MAX, UINT64_MAX, UsageError, parse_uint, scan_magnitude
from tests.support import hostile
from tests.support.fdholder import ALL_RIGHTS, Holder, Impls, make_links, make_rules
from tests.support.processes import S6IPC, run, theirs

HUGE = "9" * 5000          # past CPython's 4300-digit int() limit
ZEROS = "0" * 5000 + "7"   # a small number written long


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("0", UINT32_MAX, 0), ("4294967295", UINT32_MAX, 4294967295), ("4294967296", UINT32_MAX, None),
    (HUGE, UINT32_MAX, None), (HUGE, UINT64_MAX, None), (ZEROS, UINT32_MAX, 7),
    ("18446744073709551615", UINT64_MAX, UINT64_MAX), ("18446744073709551616", UINT64_MAX, None),
])
def test_scan_magnitude_bounds_before_converting(text: str, limit: int, expected: object) -> None:
    assert scan_magnitude(text, 10, limit) == expected


@pytest.mark.parametrize("text", ["", "+5", " 5", "5 ", "5_0", "\u0665", "\uff15", "-1", "0x5", "5\n"])
def test_only_ascii_digits_are_numbers(text: str) -> None:
    """int() takes all of these (but "-1", "0x5"); skalibs' uint0_scan takes none."""
    with pytest.raises(UsageError):
        parse_uint(text)


# Every int() call in the sources, vetted: none converts text that came from outside.
VETTED = {
    ("access/cdb.py", "int(a)"), ("access/cdb.py", "int(b)"),        # struct-unpacked
    ("base/environment.py", "int(sig)"),                             # a signal number
    ("fdholder/client.py", "int(fd_timeout * 1000)"),                # a float
    ("fdholder/server.py", "int(seconds * 1000)"),                   # a float
    ("fdholder/protocol.py", "int(_U32.unpack_from(data, pos)[0])"),  # struct-unpacked
    ("base/options.py", "int(significant or '0', base)"),            # THE scanner
    ("base/options.py", "int(text[pos])"),                           # one ASCII digit checked
    ("base/descriptors.py", "int(name)"),                            # /proc/self/fd names
    ("sockets/unix.py", "int(_socket.SOCK_DGRAM if datagram else _socket.SOCK_STREAM)"),
    ("base/systemd_backend.py", "int(fd)"),                          # libsystemd's ints
    ("sockets/tcp.py", "int(_socket.SOCK_DGRAM if datagram else _socket.SOCK_STREAM)"),
    ("access/ident.py", "int(s[n])"),                                # one ASCII digit checked
    ("sockets/inet.py", "int(text[pos], 16)"),                       # one hex digit checked
    ("programs/tcpserver.py", "int(letter)"),                        # getopt's "4" or "6"
    ("daemon/upgrade.py", "int(s)"),                                 # pthread_sigmask's signals
    ("daemon/liveview.py", "int(seconds)"),                          # a float
    ("daemon/liveview.py", "int(line.split()[2])"),                  # /proc/PID/status (the kernel's)
    ("daemon/metrics.py", "int(value)"), ("daemon/metrics.py", "float(value)"),  # JSON numbers, typed
    ("daemon/httpexport.py", "int(left * 1000)"),                    # a float
    ("daemon/httpexport.py", "float(text)"),                         # ≤ 16 ASCII digits and one dot, checked
    ("daemon/lifecycle.py", "float(f.read().split()[0])"),           # /proc/uptime
    ("daemon/upgrade.py", "int(stat[stat.rindex(b')') + 2:].split()[19])"),  # /proc/PID/stat
    ("fdholder/guardian.py", "int(name)"),                           # /proc/self/fd names
    ("sockets/unix.py", "int(fields[3], 16)"),                       # /proc/net/unix (the kernel's)
    # the handed-over state (the sealed memfd this process made, JSON numbers): the upgrade facts
    ("daemon/lifecycle.py", "int(raw.get('upgrades', 0))"), ("daemon/lifecycle.py", "float(at)"),
    ("daemon/lifecycle.py", "int(raw.get('upgrade_failures', 0))"), ("daemon/lifecycle.py", "float(pause)"),
    ("daemon/lifecycle.py", "float(last['at'])"),
    ("fdholder/life.py", "int(named[0])"), ("fdholder/life.py", "int(named[1])"),  # the guardian's pid, fd
    ("serve/life.py", "int(named['pid'])"), ("serve/life.py", "int(named['fd'])"),  # the stand-in's pid, fd
    ("daemon/lifecycle.py", "float(started)"),                      # last_upgrade.exec_ms
    ("serve/standin.py", "float(stopped)"),                          # a JSON number, its type checked
    ("base/libc.py", "int(on)"),                                     # a bool
    ("base/execution.py", "int(name)"),                              # /proc/self/fd names
    ("daemon/upgrade.py", "int(-timeout // 1)"),                     # a float
    ("daemon/lifecycle.py", "int(_signal.SIGUSR2)"),                 # a signal number
    ("serve/admission.py", "float(text)"),                           # ≤ 32 ASCII digits and one dot, checked
    ("serve/admission.py", "int(rate)"), ("serve/admission.py", "float(debt)"),  # floats
    ("serve/admission.py", "int(episode[0])"), ("serve/admission.py", "int(ep[0])"),  # its own counts
}
#: What an in-place upgrade reads back: the JSON state the previous image wrote (a memfd it handed
#: over; its numbers are JSON numbers already, int() only pins their type).
VETTED_STATE_READERS = {"daemon/lifecycle.py", "serve/life.py", "serve/peers.py", "fdholder/server.py",
                        "fdholder/store.py"}
STATE_FIELDS = ("state[", "raw[", "obj[", "int(status_fd)", "c[", "item[", "int(s)", "int(x)", "int(v)",
                "int(pid)", "int(uid)", "int(gid)", "int(fd)", "int(value)", "float(deadline)")


def test_no_other_int_parses_input() -> None:
    root = pathlib.Path(s6ipc.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("int", "float"):
                found.add((path.relative_to(root).as_posix(), ast.unparse(node)))
    state = {(f, call) for f, call in found
             if f in VETTED_STATE_READERS and any(field in call for field in STATE_FIELDS)}
    assert found - VETTED - state == set(), "new int()/float() calls: parse outside input with s6ipc.options"


# -- defect 7: applyuidgid -U --------------------------------------------------------------------
@pytest.mark.parametrize(("uid", "gid"), [(HUGE, "0"), ("0", HUGE), (HUGE, HUGE), ("4294967296", "0"),
                                          ("+1", "0"), ("\u0661", "0"), (ZEROS, "0")])
def test_applyuidgid_env_ids_like_s6(uid: str, gid: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "UID": uid, "GID": gid, "GIDLIST": ""}
    ours = run([S6IPC, "applyuidgid", "-U", "true"], env=env)
    s6 = run(theirs("applyuidgid") + ["-U", "true"], env=env)
    assert (ours.returncode, ours.stderr.replace(b"applyuidgid", b"s6-applyuidgid", 1)) == \
        (s6.returncode, s6.stderr.replace(b"s6-s6-", b"s6-"))
    assert b"Traceback" not in ours.stderr


# -- defect 5: LISTEN_PID / LISTEN_FDS at the ipcserver chain's start ---------------------------
@pytest.mark.parametrize("variable", ["LISTEN_PID", "LISTEN_FDS", "LISTEN_PIDFDID"])
def test_huge_listen_variables_do_not_kill_the_chain(sockdir: str, variable: str) -> None:
    path = os.path.join(sockdir, "s")
    env = {"PATH": "/usr/bin:/bin", "LISTEN_PID": "1", "LISTEN_FDS": "1", variable: HUGE}
    err = hostile.serves_hi_then_stops([S6IPC, "ipcserver", "-1", path, "echo", "hi"], env, path)
    assert b"Traceback" not in err


def test_huge_listen_variables_when_fd0_already_is_the_socket(sockdir: str) -> None:
    """ipcserverd given its socket on fd 0 by s6's binder, stale LISTEN_* of 5000 digits."""
    path = os.path.join(sockdir, "s")
    env = {"PATH": "/usr/bin:/bin", "LISTEN_PID": HUGE, "LISTEN_FDS": HUGE}
    argv = ["/usr/bin/s6-ipcserver-socketbinder", path, S6IPC, "ipcserverd", "-1", "echo", "hi"]
    assert b"Traceback" not in hostile.serves_hi_then_stops(argv, env, path)


# -- defect 8: -d above INT_MAX -----------------------------------------------------------------
@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_links(str(tmp_path_factory.mktemp("links")))


@pytest.mark.parametrize("fd", ["2147483647", "2147483648", "4294967295"])
def test_fdholder_store_descriptor_numbers(links: str, sockdir: str, fd: str) -> None:
    """s6 says EBADF for 2147483647; above INT_MAX it casts to a negative int and stores some other
    descriptor (exit 0: docs/fdholder-store.md). Ours says EBADF for every one, stores nothing."""
    holder = Holder(Impls("ours", links)("fdholder-daemon"), os.path.join(sockdir, "h"),
                    ["-i", make_rules(sockdir, {"uid/0": ALL_RIGHTS})])
    try:
        ours = run(Impls("ours", links)("fdholder-store") + ["-d", fd, holder.path, "x"])
        assert (ours.returncode, ours.stderr) == (1, b"s6-fdholder-store: fatal: unable to store fd: "
                                                     b"Bad file descriptor\n")
        if fd == "2147483647":
            s6 = run(theirs("fdholder-store") + ["-d", fd, holder.path, "x"])
            assert (s6.returncode, s6.stderr) == (ours.returncode, ours.stderr)
        listing = run(Impls("ours", links)("fdholder-list") + [holder.path])
        assert listing.stdout == b""
    finally:
        holder.stop()


@pytest.mark.parametrize("fd", ["2147483648", "4294967295", "4294967296", HUGE])
def test_sdnotify_bridge_descriptor_numbers(fd: str) -> None:
    result = run([S6IPC, "sdnotify-bridge", "-d", fd, "true"])
    assert b"Traceback" not in result.stderr
    if int(fd[:11]) > UINT32_MAX:
        assert result.returncode == 100 and b"usage:" in result.stderr
    else:
        message = f"sdnotify-bridge: fatal: unable to use notification fd {fd}: Bad file descriptor\n"
        assert (result.returncode, result.stderr) == (111, message.encode())
