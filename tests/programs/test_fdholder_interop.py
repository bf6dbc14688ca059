"""The fd holder with every s6 on either side: descriptor counts across the per-message limits.

skalibs 2.13 (s6 2.11) puts up to 255 descriptors in one message, skalibs 2.14 (s6 2.12 and later)
253, and libs6's clients refuse a dump whose announced message count does not follow their own rule
(:mod:`s6ipc.base.s6release`). So for 1 to 1000 descriptors, across 253/254/255/256/506/507/510,
with short and 255-byte ids, both directions are driven here:

* our clients (the Python API, which ``s6ipc fdholder-*`` use) into and out of our daemon and s6's;
* s6's ``s6-fdholder-transferdump`` (libs6's getdump then setdump) between our daemon and s6's, both
  ways and ours to ours.

Our daemon runs with ``S6IPC_S6`` naming the line of the s6 it is paired with. The s6 of a column is
the one installed (``/usr/bin``: 2.11.3.2 on Debian 12, 2.13.1.0 on Debian 13; its line is read off
the binary, :func:`tests.support.processes.s6_release_of`) and, when ``S6IPC_TEST_S6_PREFIX`` names
one, another build (``PREFIX/bin``: e.g. upstream s6 2.13.1.0 on skalibs 2.14.3.0 on a Debian 12
machine; docs/install.md says how to build one). What s6 cannot do with itself is asserted as such:
s6 2.11's own daemon cannot send a dump of 254 or more (one ``sendmsg`` of 255 descriptors is more
than Linux takes: EPIPE for its client) and its own clients cannot send one (EINVAL); and s6
2.13.1.0's transferdump of a large dump (1000 descriptors with 255-byte ids) out of its own daemon
fails now and then with "unable to set dump: Bad file descriptor" — into its own daemon as into
ours (in about half of the runs here, on a busy machine; never from our daemon) — so that answer is
taken as s6's own in that one cell (s6's daemon's dump read by s6's transferdump, s6 2.12+).
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from s6ipc import FdHolderClient, HeldDescriptor, OperationFailed
from s6ipc.base import unixmessage
from s6ipc.base.s6release import S6_2_11, S6_2_12, S6Release
from s6ipc.fdholder import tai
from tests.support.fdholder import ALL_RIGHTS, Holder, links_for_everyone, make_rules
from tests.support.processes import s6_release_of

PREFIX_VARIABLE = "S6IPC_TEST_S6_PREFIX"
#: What s6 2.13.1.0's transferdump sometimes says reading a large dump from its own daemon.
S6_2_13_LARGE_DUMP = "unable to set dump: Bad file descriptor"
COUNTS = [1, 253, 254, 255, 256, 506, 507, 510, 1000]
IDS = ["short", "255-byte"]


def _bindir(column: str) -> str:
    if column == "installed":
        return "/usr/bin"
    prefix = os.environ.get(PREFIX_VARIABLE)
    if not prefix:
        pytest.skip(f"${PREFIX_VARIABLE} is not set: no second s6 build to pair with (docs/install.md, "
                    "\"Testing against another s6\")")
    return os.path.join(prefix, "bin")


@pytest.fixture(scope="module")
def links() -> Iterator[str]:
    yield from links_for_everyone()


Start = Callable[[str, Optional[S6Release]], Holder]


@pytest.fixture
def holders(sockdir: str, links: str) -> Iterator[Callable[[str], Start]]:
    """``holders(bindir)(kind, line)``: a holder with every right, ``kind`` "ours" (run with
    ``S6IPC_S6=line``) or "s6" (``BINDIR/s6-fdholder-daemon``); all stopped at teardown."""
    rules = make_rules(sockdir, {"uid/0": ALL_RIGHTS})
    started: List[Holder] = []

    def for_bindir(bindir: str) -> Start:
        def start(kind: str, line: Optional[S6Release]) -> Holder:
            path = os.path.join(sockdir, f"h{len(started)}")
            if kind == "ours":
                assert line is not None
                h = Holder([os.path.join(links, "s6-fdholder-daemon")], path, ["-i", rules],
                           env=dict(os.environ, S6IPC_S6=line.name))
            else:
                h = Holder([os.path.join(bindir, "s6-fdholder-daemon")], path, ["-i", rules])
            started.append(h)
            return h
        return start

    yield for_bindir
    for h in started:
        h.stop()


def _entries(count: int, ids: str) -> List[HeldDescriptor]:
    limit = tai.now().add_ms(600_000)
    if ids == "short":
        return [HeldDescriptor(0, b"%d" % i, limit) for i in range(count)]
    return [HeldDescriptor(0, b"%04d" % i + b"x" * 251, limit) for i in range(count)]


def _setdump(h: Holder, entries: List[HeldDescriptor]) -> str:
    try:
        with FdHolderClient(h.path, timeout=30) as client:
            client.setdump(entries)
    except OperationFailed as e:
        return str(e)
    return "ok"


def _ids(h: Holder) -> List[bytes]:
    """The ids *h* holds, read with our client's getdump (descriptors closed)."""
    with FdHolderClient(h.path, timeout=30) as client:
        dump = client.getdump()
    unixmessage.close_fds([d.fd for d in dump])
    return sorted(d.id for d in dump)


def _getdump(h: Holder, want: List[bytes]) -> str:
    try:
        got = _ids(h)
    except OperationFailed as e:
        return str(e)
    return "ok" if got == want else f"{len(got)} ids"


def _transferdump(bindir: str, source: Holder, dest: Holder, want: List[bytes]) -> str:
    """s6's transferdump (libs6's getdump from *source*, setdump into *dest*), then what *dest* holds."""
    p = subprocess.run([os.path.join(bindir, "s6-fdholder-transferdump"), "-t", "30000", source.path,
                        dest.path], capture_output=True, timeout=60)
    if p.returncode:
        return p.stderr.decode().strip().split(": fatal: ", 1)[-1]
    return _getdump(dest, want)


def _s6_alone(line: S6Release, count: int) -> Dict[str, str]:
    """What s6 of *line* cannot do by itself (whoever the peer is), else "ok"."""
    if line == S6_2_11 and count > unixmessage.KERNEL_MAX_FDS:
        return {"daemon sends": "unable to get dump: Broken pipe", "client sends": "unable to set dump: "
                "Invalid argument"}
    return {"daemon sends": "ok", "client sends": "ok"}


@pytest.mark.parametrize("ids", IDS)
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("column", ["installed", "prefix"])
def test_dumps_cross_between_our_side_and_s6s(holders: Callable[[str], Start], column: str, count: int,
                                              ids: str) -> None:
    bindir = _bindir(column)
    line = s6_release_of(bindir)
    start = holders(bindir)
    entries = _entries(count, ids)
    want = sorted(e.id for e in entries)
    alone = _s6_alone(line, count)
    ours, theirs = start("ours", line), start("s6", line)
    got = {
        "our client → our daemon": _setdump(ours, entries),
        "our client → s6's daemon": _setdump(theirs, entries),
    }
    got["our daemon → our client"] = _getdump(ours, want)
    got["s6's daemon → our client"] = _getdump(theirs, want)
    # libs6's getdump then setdump: each way between the implementations, and ours to ours
    got["s6 transferdump: our daemon → s6's"] = _transferdump(bindir, ours, start("s6", line), want)
    got["s6 transferdump: s6's daemon → ours"] = _transferdump(bindir, theirs, start("ours", line), want)
    got["s6 transferdump: ours → ours"] = _transferdump(bindir, ours, start("ours", line), want)
    if got["s6 transferdump: s6's daemon → ours"] == S6_2_13_LARGE_DUMP and line == S6_2_12:
        got["s6 transferdump: s6's daemon → ours"] = alone["daemon sends"]  # s6's own (docstring)
    assert got == {
        "our client → our daemon": "ok",
        "our client → s6's daemon": "ok",
        "our daemon → our client": "ok",
        "s6's daemon → our client": alone["daemon sends"],
        # our daemon's getdump is read by libs6; then libs6 sends (its own limit)
        "s6 transferdump: our daemon → s6's": alone["client sends"],
        "s6 transferdump: s6's daemon → ours": alone["daemon sends"],
        "s6 transferdump: ours → ours": alone["client sends"],
    }, f"s6 {line.name} line ({bindir}), {count} descriptors, {ids} ids"


@pytest.mark.parametrize("count", [253, 254, 255, 256, 507])
@pytest.mark.parametrize("column", ["installed", "prefix"])
def test_our_daemon_on_the_other_line_fails_libs6_where_the_rules_differ(
        holders: Callable[[str], Start], column: str, count: int) -> None:
    """Why S6IPC_S6 matters for the daemon: run on the *other* line's rule, our getdump is refused
    by libs6 where the two rules announce different message counts (254, 255, 507–510: EPROTO)
    and, for a 2.12+ client, wherever a message holds more than 253 descriptors (ENOBUFS). Our own
    client reads either."""
    bindir = _bindir(column)
    line = s6_release_of(bindir)
    other = S6_2_12 if line == S6_2_11 else S6_2_11
    start = holders(bindir)
    entries = _entries(count, "short")
    want = sorted(e.id for e in entries)
    mismatched = start("ours", other)
    assert _setdump(mismatched, entries) == "ok"
    assert _getdump(mismatched, want) == "ok"
    got = _transferdump(bindir, mismatched, start("ours", line), want)
    if count <= unixmessage.KERNEL_MAX_FDS:
        expected = "ok"
    elif other.dump_messages(count) != line.dump_messages(count):  # the header is checked first
        expected = "unable to get dump: Protocol error"
    elif line == S6_2_12:  # then a message of 255 descriptors
        expected = "unable to get dump: No buffer space available"
    else:  # the getdump works; s6 2.11's own setdump then cannot send
        expected = "unable to set dump: Invalid argument"
    assert got == expected, f"s6 {line.name} line client, our daemon on {other.name}, {count} descriptors"
