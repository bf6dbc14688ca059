"""A FIFO without a writer in a rule's env/ or as its exec file: skalibs 2.13's openreadnclose
opens it blocking, so s6 makes the *connection* wait for the value — it does not fail open (run
with the variable unset, or run prog instead of the exec rule). Ours waits the same way, in the
connection's own process: the daemon never opens such a file (it hands that connection to the
access program, or — fdholderd — refuses the client)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time

import pytest

from tests.support.access import make_rules, needs_s6, start
from tests.support.fdholder import ALL_RIGHTS, Holder, Impls, make_links
from tests.support.fdholder import make_rules as holder_rules
from tests.support.processes import S6IPC, proc_children, run, theirs, wait_until

UID = os.getuid()
WHO = ["fast", "program", "s6"]


def write_later(path: str, data: bytes, delay: float = 0.5) -> threading.Thread:
    def go() -> None:
        time.sleep(delay)
        with open(path, "wb") as f:  # blocks until the reader opened it
            f.write(data)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@needs_s6
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("where", ["env", "exec"])
def test_fifo_rule_makes_the_connection_wait(sockdir: str, who: str, where: str) -> None:
    rules = os.path.join(sockdir, f"rules-{who}-{where}")
    make_rules(rules, {f"uid/{UID}": {"allow": True, "env": {"PLAIN": b"yes\n"}}})
    fifo = os.path.join(rules, f"uid/{UID}", "env/F" if where == "env" else "exec")
    os.mkfifo(fifo)
    path = os.path.join(sockdir, f"{who}.sock")
    server = start(who, path, [], ["-i", rules], ["/usr/bin/env"])
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(path)
            assert not select.select([client], [], [], 0.4)[0], "answered before the FIFO had a writer"
            assert server.proc.poll() is None
            wait_until(lambda: len(proc_children(server.proc.pid)) == 1)  # one connection waits
            writer = write_later(fifo, b"from the fifo\n" if where == "env" else b"echo exec rule ran\n", 0)
            got = read_all(client)
            writer.join(5)
        if where == "env":
            assert b"\nF=from the fifo\n" in got and b"\nPLAIN=yes\n" in got, (who, got)
        else:
            assert got == b"exec rule ran\n", (who, got)   # the exec rule, not prog
        assert server.proc.poll() is None
    finally:
        server.stop()


@needs_s6
def test_accessrules_cdb_from_fs_waits_like_s6s(tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = {}
    tools = (("ours", [S6IPC, "accessrules-cdb-from-fs"]), ("s6", theirs("accessrules-cdb-from-fs")))
    for impl, argv in tools:
        rules = tmp_path / impl
        make_rules(str(rules), {f"uid/{UID}": {"allow": True, "env": {"A": b"a\n"}},
                                "uid/7": {"allow": True}})
        fifo = str(rules / f"uid/{UID}" / "env" / "F")
        os.mkfifo(fifo)
        fifo_exec = str(rules / "uid/7" / "exec")
        os.mkfifo(fifo_exec)
        cdb = str(tmp_path / f"{impl}.cdb")
        proc = subprocess.Popen([*argv, cdb, str(rules)], stderr=subprocess.PIPE)
        time.sleep(0.4)
        assert proc.poll() is None, "did not wait for the FIFO's writer"
        writers = [write_later(fifo, b"fifo value\n", 0), write_later(fifo_exec, b"echo hi\n", 0)]
        try:
            assert proc.wait(10) == 0, proc.stderr.read()  # type: ignore[union-attr]
        finally:
            proc.kill()
        for w in writers:
            w.join(5)
        dump = tmp_path / f"{impl}-tree"
        assert run([S6IPC, "accessrules-fs-from-cdb", str(dump), cdb]).returncode == 0
        results[impl] = sorted((str(p.relative_to(dump)), p.read_bytes() if p.is_file() else b"")
                               for p in dump.rglob("*"))
    assert results["ours"] == results["s6"]
    assert (f"uid/{UID}/env/F", b"fifo value\n") in results["ours"]


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_links(str(tmp_path_factory.mktemp("links")))


def test_fdholderd_refuses_a_fifo_rule_and_keeps_serving(links: str, sockdir: str) -> None:
    """s6-fdholderd would block — every client — until the FIFO had a writer. Ours never opens
    it: that client is refused with a warning, and the daemon serves on."""
    rules = holder_rules(sockdir, {f"uid/{UID}": ALL_RIGHTS})
    fifo = os.path.join(rules, f"uid/{UID}", "env", "S6_FDHOLDER_LIST")
    os.unlink(fifo)
    os.mkfifo(fifo)
    p = Impls("ours", links)
    h = Holder(p("fdholder-daemon"), os.path.join(sockdir, "h"), ["-i", rules])
    try:
        started = time.monotonic()
        refused = run(p("fdholder-list") + [h.path], timeout=10)
        assert refused.returncode == 1 and time.monotonic() - started < 5
        os.unlink(fifo)
        with open(fifo, "w") as f:
            f.write("\n")
        assert run(p("fdholder-list") + [h.path]).returncode == 0
        assert "Resource temporarily unavailable" in h.log()
        assert h.alive()
    finally:
        h.stop()
