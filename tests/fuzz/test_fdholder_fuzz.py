"""Fuzzing the fd-holder protocol: the parser alone (hypothesis), then live daemons.

* Parser: arbitrary byte streams, cut anywhere, with arbitrary descriptor counts, go through the
  decoder and the request parser; the only failure allowed is ProtocolError, descriptors are never
  lost track of, and well-formed requests survive encoding and decoding.
* Live, differential: the same few hundred random and mutated messages are sent, one connection
  each, to our fdholderd and to s6-fdholderd started in the same state; after each case a second
  connection's request serves as a barrier, then whatever the case's connection received (bytes,
  number of descriptors) must be identical for both daemons. State-changing requests (store,
  delete, retrieve -D, setdump) are in the mix, so the final lists must agree too.
* Live, ours only: thousands more cases with random splits and descriptor counts, checking that
  the daemon survives, serves a bystander, keeps the held descriptors intact and leaks nothing.

Each test prints how many cases it ran.
"""

from __future__ import annotations

import array
import itertools
import os
import random
import socket
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s6ipc import FdHolderClient, HeldDescriptor
from s6ipc.base import unixmessage
from s6ipc.base.unixmessage import Decoder, ProtocolError, frame
from s6ipc.fdholder import protocol, tai
from tests.support.fdholder import ALL_RIGHTS, Holder, Raw, make_rules
from tests.support.processes import ours, proc_fds, theirs

FAR = tai.Tain(0x4000000000000000 + 8_000_000_000, 123)
RUNS: Dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print("\nfdholder fuzz cases run: " + ", ".join(f"{k}: {v}" for k, v in RUNS.items()))


def count(name: str, n: int = 1) -> None:
    RUNS[name] = RUNS.get(name, 0) + n


# -- the parser ------------------------------------------------------------------------------------
IDS = st.binary(min_size=0, max_size=20)


@st.composite
def requests(draw: st.DrawFn) -> Tuple[bytes, int]:
    """A well-formed request (payload, descriptor count)."""
    kind = draw(st.sampled_from("SDRL?!"))
    ident = draw(IDS.filter(lambda i: b"\0" not in i and i))
    limit = tai.Tain(draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**32 - 1)))
    if kind == "S":
        return protocol.encode_store(limit, ident), 1
    if kind == "D":
        return protocol.encode_delete(ident), 0
    if kind == "R":
        return protocol.encode_retrieve(ident, draw(st.booleans())), 0
    if kind == "!":
        return protocol.encode_setdump(draw(st.integers(0, 2**32 - 1))), 0
    return kind.encode(), 0


def mutate(data: bytes, rnd: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.randrange(6)
        if op == 0 and data:
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif op == 1 and data:
            del data[rnd.randrange(len(data)):]
        elif op == 2:
            data += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif op == 3 and len(data) >= 6:  # the length field
            data[0:4] = rnd.choice([0, 1, len(data), len(data) - 6 + 1, 2**28, 2**32 - 1]).to_bytes(4, "big")
        elif op == 4 and len(data) >= 6:  # the descriptor count field
            data[4:6] = rnd.choice([0, 1, 2, 253, 255, 256, 65535]).to_bytes(2, "big")
        elif op == 5 and len(data) > 6:  # the opcode
            data[6] = rnd.choice(b"SDRL?!.XZ\0")
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6),
       fd_counts=st.lists(st.integers(0, 4), max_size=6), dumping=st.integers(0, 300))
def test_parser_random_streams(stream: bytes, cuts: List[int], fd_counts: List[int], dumping: int) -> None:
    count("parser: random streams")
    check_stream(stream, cuts, fd_counts, dumping)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=st.lists(requests(), min_size=1, max_size=4), seed=st.integers(0, 2**32),
       cuts=st.lists(st.integers(0, 400), max_size=4), dumping=st.integers(0, 3))
def test_parser_mutated_requests(reqs: List[Tuple[bytes, int]], seed: int, cuts: List[int],
                                 dumping: int) -> None:
    count("parser: mutated requests")
    rnd = random.Random(seed)
    stream = b"".join(mutate(frame(p, n), rnd) if rnd.random() < 0.7 else frame(p, n)
                      for p, n in reqs)
    check_stream(stream, cuts, [n for _, n in reqs], dumping)


def check_stream(stream: bytes, cuts: List[int], fd_counts: List[int], dumping: int) -> None:
    """Feed *stream* in pieces (descriptors with some pieces); only ProtocolError may come out and
    every descriptor ends up either in a message or closed by discard()."""
    r, w = os.pipe()
    try:
        before = len(os.listdir("/proc/self/fd"))
        decoder = Decoder(protocol.MAX_REQUEST)
        points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
        pieces = [stream[a:b] for a, b in zip(points, points[1:])] or [b""]
        got: List[int] = []
        try:
            for i, piece in enumerate(pieces):
                k = fd_counts[i] if i < len(fd_counts) else 0
                decoder.feed(piece, [os.dup(r) for _ in range(k)])
                while (m := decoder.next_message()) is not None:
                    got.extend(m.fds)
                    try:
                        request = protocol.parse_request(m.payload, m.nfds, dumping)
                    except ProtocolError:
                        continue
                    assert isinstance(request, (protocol.Store, protocol.Delete, protocol.Retrieve,
                                                protocol.List_, protocol.GetDump, protocol.SetDump,
                                                protocol.SetDumpData))
        except ProtocolError:
            pass
        decoder.discard()
        unixmessage.close_fds(got)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(r)
        os.close(w)


@settings(max_examples=300, deadline=None)
@given(req=requests())
def test_parser_round_trip(req: Tuple[bytes, int]) -> None:
    count("parser: round trips")
    payload, nfds = req
    d = Decoder()
    d.feed(frame(payload, nfds), [-1] * nfds)
    m = d.next_message()
    assert m is not None and m.payload == payload and m.nfds == nfds
    request = protocol.parse_request(payload, nfds, 0)
    if isinstance(request, protocol.Store):
        assert protocol.encode_store(request.limit, request.id) == payload
    elif isinstance(request, protocol.Retrieve):
        assert protocol.encode_retrieve(request.id, request.delete) == payload
    elif isinstance(request, protocol.Delete):
        assert protocol.encode_delete(request.id) == payload
    elif isinstance(request, protocol.SetDump):
        assert protocol.encode_setdump(request.count) == payload


# -- live daemons ------------------------------------------------------------------------------------
Case = List[Tuple[bytes, int]]  # sendmsg calls: (bytes, number of descriptors attached)
ID_POOL = [b"a", b"b", b"pub", b"unix:/x", b"\xe9t\xe9", b"q" * 255]


_unique = itertools.count(1000)


def far(rnd: random.Random) -> tai.Tain:
    """A limit far in the future, never twice the same: s6-fdholderd 2.11.3.2 corrupts its tree of
    limits when setdump gives two descriptors the same one (it then spins: see
    test_s6_spins_after_equal_setdump_limits), which would end any comparison."""
    return tai.Tain(FAR.sec, next(_unique) * 16)


def valid_message(rnd: random.Random) -> Tuple[bytes, int]:
    kind = rnd.choice("SSSDDRRRLL?!.X")
    ident = rnd.choice(ID_POOL)
    if kind == "S":
        return frame(protocol.encode_store(far(rnd), ident), 1), 1
    if kind == "D":
        return frame(protocol.encode_delete(ident)), 0
    if kind == "R":
        return frame(protocol.encode_retrieve(ident, rnd.random() < 0.3)), 0
    if kind == "!":
        return frame(protocol.encode_setdump(rnd.choice([0, 1, 2, 100]))), 0
    if kind == ".":
        entries = [protocol.DumpEntry(far(rnd), rnd.choice(ID_POOL)) for _ in range(rnd.randint(1, 2))]
        return frame(b"." + protocol.encode_entries(entries), len(entries)), len(entries)
    return frame(kind.encode()), 0


def make_case(rnd: random.Random, splits: bool) -> Case:
    roll = rnd.random()
    if roll < 0.1:
        return [(os.urandom(rnd.randint(1, 40)), 0)]
    if roll < 0.2:  # a setdump conversation, maybe broken
        n = rnd.randint(1, 3)
        case = [(frame(protocol.encode_setdump(n)), 0)]
        for _ in range(rnd.randint(0, n)):
            entries = [protocol.DumpEntry(FAR, rnd.choice(ID_POOL))]
            data, k = frame(b"." + protocol.encode_entries(entries), 1), 1
            case.append((mutate(data, rnd) if rnd.random() < 0.3 else data, k))
        return case
    messages = [valid_message(rnd) for _ in range(rnd.randint(1, 3))]
    case = []
    for data, k in messages:
        if rnd.random() < 0.5:
            data = mutate(data, rnd)
            if rnd.random() < 0.3:
                k = rnd.choice([0, 1, 2, 3])
        case.append((data, k))
    if splits and rnd.random() < 0.3:
        data = b"".join(d for d, _ in case)
        k = sum(k for _, k in case)
        cut = rnd.randint(1, max(1, len(data) - 1))
        case = [(data[:cut], k), (data[cut:], 0)]
    return case


def mutate_payload(payload: bytes, rnd: random.Random) -> bytes:
    """Change a payload's bytes (opcode, id length, id, flags, counts), keeping it a payload."""
    data = bytearray(payload)
    for _ in range(rnd.randint(1, 2)):
        op = rnd.randrange(4)
        if op == 0 and data:
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif op == 1 and data:
            del data[rnd.randrange(len(data)):]
        elif op == 2:
            data += bytes(rnd.choice([0, 1, 255, rnd.randrange(256)]) for _ in range(rnd.randint(1, 3)))
        elif op == 3 and data:
            data[0] = rnd.choice(b"SDRL?!.XZ\0")
    return bytes(data)


def framed_case(rnd: random.Random) -> Case:
    """One write of whole messages, the descriptors attached matching the headers (s6-fdholderd's
    reading of a stream cut elsewhere is itself timing-dependent: see docs/fdholderd.md)."""
    messages = []
    if rnd.random() < 0.15:
        n = rnd.randint(1, 3)
        messages.append((protocol.encode_setdump(n), 0))
        for _ in range(rnd.randint(0, n)):
            entry = protocol.DumpEntry(far(rnd), rnd.choice(ID_POOL))
            messages.append((b"." + protocol.encode_entries([entry]), 1))
    for _ in range(rnd.randint(1, 3)):
        data, k = valid_message(rnd)
        messages.append((data[unixmessage.HEADER_SIZE:], k))
    out = b""
    total = 0
    for payload, k in messages:
        if rnd.random() < 0.4:
            payload = mutate_payload(payload, rnd)
        if rnd.random() < 0.1:
            k = rnd.choice([0, 1, 2])
        out += frame(payload, k)
        total += k
    return [(out, total)]


def far_limits_only(case: Case) -> bool:
    """Whether every limit a store or setdump entry in *case* could carry is far in the future (a
    limit near now would expire at a daemon-dependent moment and make the comparison racy)."""
    soon = tai.now().add_ms(86_400_000)
    stream = b"".join(d for d, _ in case)
    d = Decoder()
    d.feed(stream)
    try:
        while (m := d.next_message()) is not None:
            if m.payload[:1] == b"S" and len(m.payload) >= 13 and tai.unpack(m.payload[1:13]) < soon:
                return False
            if m.payload[:1] == b"." and len(m.payload) >= 13 and tai.unpack(m.payload[1:13]) < soon:
                return False
    except ProtocolError:
        pass
    return True


def rights(fds: List[int]) -> List[Tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []


def play(path: str, case: Case, fd: int, barrier_timeout: float = 5.0) -> Tuple[bytes, int]:
    """Send *case* on its own connection; after a barrier (another client's request answered),
    return what the case's connection received: (bytes, number of descriptors)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        for data, k in case:
            try:
                s.sendmsg([data], rights([fd] * k))
            except OSError:
                break
        barrier = Raw(path, timeout=barrier_timeout)
        barrier.send(b"D\x07barrier\0")
        assert barrier.reply() == (b"\x02", [])
        barrier.close()
        time.sleep(0.002)
        s.setblocking(False)
        received = b""
        nfds = 0
        while True:
            try:
                data, anc, _, _ = s.recvmsg(1 << 20, unixmessage.CMSG_SPACE_MAX)
            except (BlockingIOError, ConnectionResetError):
                break
            for _, _, cdata in anc:
                got = array.array("i", cdata[: len(cdata) - len(cdata) % 4])
                nfds += len(got)
                unixmessage.close_fds(list(got))
            if not data:
                break
            received += data
        return received, nfds
    finally:
        s.close()


def start_holder(sockdir: str, daemon: List[str], name: str, same_limit: bool = False) -> Holder:
    """A daemon (-n 20) holding held0..2 (with distinct limits unless *same_limit*)."""
    rules = make_rules(os.path.join(sockdir, "rules-" + name), {"uid/0": ALL_RIGHTS})
    h = Holder(daemon, os.path.join(sockdir, name), ["-n", "20", "-i", rules])
    with FdHolderClient(h.path, timeout=5) as holder:
        holder.setdump([HeldDescriptor(0, b"held%d" % i, FAR if same_limit else tai.Tain(FAR.sec, i))
                        for i in range(3)])
    return h


def test_live_differential_fuzz(sockdir: str) -> None:
    rnd = random.Random(20240603)
    cases = []
    while len(cases) < 400:
        case = framed_case(rnd)
        if far_limits_only(case):
            cases.append(case)
    r, w = os.pipe()
    holders = [start_holder(sockdir, ours("fdholder-daemon"), "ours"),
               start_holder(sockdir, theirs("fdholder-daemon"), "s6")]
    try:
        differences = []
        for i, case in enumerate(cases):
            results = [play(h.path, case, w) for h in holders]
            if results[0] != results[1]:
                differences.append((i, case, results))
            count("live differential (ours vs s6-fdholderd)")
        assert differences == []
        lists = []
        for h in holders:
            assert h.alive()
            with FdHolderClient(h.path, timeout=5) as holder:
                lists.append(holder.list())
        assert lists[0] == lists[1]
    finally:
        for h in holders:
            h.stop()
        os.close(r)
        os.close(w)


def test_live_fuzz_ours(sockdir: str) -> None:
    rnd = random.Random(7)
    r, w = os.pipe()
    h = start_holder(sockdir, ours("fdholder-daemon"), "ours")
    try:
        with FdHolderClient(h.path, timeout=5) as holder:
            dump = holder.getdump()
            precious = {d.id: os.fstat(d.fd).st_ino for d in dump}
            unixmessage.close_fds([d.fd for d in dump])
        bystander = Raw(h.path)
        baseline: Optional[int] = None
        for i in range(3000):
            case = make_case(rnd, splits=True)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(h.path)
            for data, k in case:
                try:
                    s.sendmsg([data], rights([w] * k))
                except OSError:
                    break
            s.close()  # mid-conversation, mid-message: the daemon must cope
            count("live ours (random/mutated/split, then hang up)")
            if i % 100 == 99:
                bystander.send(b"L")
                reply = bystander.reply()
                assert reply is not None and reply[0][:1] == b"\0"
                with FdHolderClient(h.path, timeout=5) as holder:
                    held = holder.getdump()
                    now = {d.id: os.fstat(d.fd).st_ino for d in held}
                    unixmessage.close_fds([d.fd for d in held])
                assert {k: now.get(k) for k in precious} == precious  # the cases never name these
                time.sleep(0.02)
                fds = len(proc_fds(h.pid))
                held_count = len(now)
                if baseline is None:
                    baseline = fds - held_count
                assert fds - held_count <= baseline + 2  # connections in flight at most
        assert h.alive()
        bystander.close()
    finally:
        h.stop()
        os.close(r)
        os.close(w)


# Found by the differential fuzz (then minimised): setdumps giving several descriptors the same
# limit, a few stores and deletes, and s6-fdholderd 2.11.3.2 spins at 100% CPU, serving no one.
_T = FAR.pack()
_Q = b"q" * 255
SPIN_SEQUENCE: List[Case] = [
    [(frame(b"S" + _T + b"\xff" + _Q + b"\0", 1) + frame(b"S" + _T[:10], 1), 2)],
    [(frame(b"!\0\0\0\x02") + frame(b"." + _T + b"\x03\xe9t\xe9\0", 1)
      + frame(b"L") + frame(b"." + _T + b"\x03\xe9t\xe9\0" + _T + b"\xff" + _Q + b"\0", 2)
      + frame(b"L"), 3)],
    [(frame(b"!\0\0\0\x01") + frame(b"." + _T + b"\x01a\0", 1)
      + frame(b"." + _T + b"\x03\xe9t\xe9\0", 1), 2)],
    [(frame(b"S" + _T + b"\x03pub\0", 1) + frame(b"Z\x01\x01"), 1)],
    [(frame(b"!\0\0\0\x02") + frame(b"." + _T + b"\x01a\0" + _T + b"\x01b\0", 2)
      + frame(b"L\0\xff"), 2)],
    [(frame(b"D\x03\xe9t\xe9\0"), 0)],
    [(frame(b"S" + _T + b"\x03\xe9t\xe9\0", 1) + frame(b"R\0\x03pub\0")
      + frame(b"R\0\x01D\0"), 1)],
]


@pytest.mark.parametrize("daemon", ["ours", "s6"])
def test_s6_spins_after_equal_setdump_limits(sockdir: str, daemon: str) -> None:
    """The sequence leaves s6-fdholderd looping forever (a documented difference); ours answers."""
    r, w = os.pipe()
    argv = ours("fdholder-daemon") if daemon == "ours" else theirs("fdholder-daemon")
    h = start_holder(sockdir, argv, daemon, same_limit=True)
    try:
        for case in SPIN_SEQUENCE[:-1]:
            play(h.path, case, w)
        if daemon == "ours":
            play(h.path, SPIN_SEQUENCE[-1], w)
            with FdHolderClient(h.path, timeout=5) as holder:
                assert b"\xe9t\xe9" in holder.list()
        else:
            with pytest.raises(socket.timeout):
                play(h.path, SPIN_SEQUENCE[-1], w, barrier_timeout=1)
            with open(f"/proc/{h.pid}/stat") as f:
                assert f.read().split()[2] == "R"  # running, in no system call: a busy loop
            h.proc.kill()                          # SIGTERM would never be read
    finally:
        h.stop()
        os.close(r)
        os.close(w)
