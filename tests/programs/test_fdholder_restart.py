"""Zero-downtime restarts through the fd holder, under load (units/fdholder-restart).

The listening socket lives in our fd holder; the service is ``fdholder-retrieve HOLDER ID
ipcserverd -1 -- cat PAYLOAD`` (the unit's ``server`` script). While client threads open short
connections back to back and check every reply byte for byte, the service is restarted 20 times
the way s6-supervise does it on ``s6-svc -r``: SIGTERM, wait for the exit, start the next instance.
Between the two, no process accepts: clients queue in the backlog of the socket, which the holder
keeps open. Target: 0 refused connections, 0 truncated replies — with our ipcserverd and with s6's
C s6-ipcserverd retrieved from our holder. The control run restarts a server that binds its own
socket at each start (no holder): there, clients are refused, which shows the harness can tell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from s6ipc.access.rules import check, rules_from_dir
from s6ipc.fdholder.rights import rights_from_modifs
from tests.support.processes import S6IPC
from tests.support.restart_load import PAYLOAD, UNIT, Load, free_port, start_ready, stop, unit_env

RESTARTS = 20

@pytest.mark.parametrize("ipcserverd", ["ours", "s6", "tcp"])
def test_restarts_under_load_refuse_nobody(rundir: str, ipcserverd: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``tcp``: a TCP listener (``tcp:127.0.0.1:PORT``) held, tcpserverd restarted on it."""
    if ipcserverd == "s6" and not os.access("/usr/bin/s6-ipcserverd", os.X_OK):
        pytest.skip("Debian's s6 is not installed (/usr/bin/s6-ipcserverd)")
    port = free_port() if ipcserverd == "tcp" else None
    env = unit_env(rundir, "/usr/bin/s6-ipcserverd" if ipcserverd == "s6" else None, port)
    log = os.path.join(rundir, "log")
    payload = os.path.join(rundir, "payload")
    with open(payload, "wb") as f:
        f.write(PAYLOAD)
    holder = start_ready([os.path.join(UNIT, "holder")], env, log)
    server = None
    load = None
    try:
        subprocess.run([os.path.join(UNIT, "park")], env=env, check=True, timeout=20)
        server_argv = [os.path.join(UNIT, "server"), "/bin/cat", payload]
        server = start_ready(server_argv, env, log)
        load = Load(os.path.join(rundir, "app.sock") if port is None else ("127.0.0.1", port), PAYLOAD)
        load.start()
        time.sleep(0.2)
        gaps = []
        started = time.monotonic()
        for _ in range(RESTARTS):
            before = load.total
            while load.total == before:  # at least one connection served by every instance
                time.sleep(0.005)
            t0 = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert server.wait(10) == 0
            t_exit = time.monotonic()
            server = start_ready(server_argv, env, log)
            gaps.append((t0, t_exit, time.monotonic()))
        elapsed = time.monotonic() - started
        time.sleep(0.2)
        counts = load.stop()
        starts = list(load.starts)
        load = None
    finally:
        if load is not None:
            load.stop()
        stop(server)
        held = stop(holder)
    # connections made between an exit and the next readiness: they waited in the held socket's backlog
    waited = sum(1 for t in starts if any(exited <= t <= ready for _, exited, ready in gaps))
    spans = [ready - term for term, _, ready in gaps]
    total = sum(counts.values())
    with capsys.disabled():
        what = f"tcpserverd, tcp:127.0.0.1:{port}" if port else f"{ipcserverd} ipcserverd"
        print(f"\nzero-downtime restarts ({what}, socket held by our fdholderd): "
              f"{RESTARTS} restarts in {elapsed:.1f} s, {total} connections, {counts['refused']} refused, "
              f"{counts['truncated']} truncated, {counts['error']} other errors; {waited} connections made "
              f"between an old server's exit and the new one's readiness; TERM-to-ready per restart "
              f"{min(spans) * 1000:.0f}-{max(spans) * 1000:.0f} ms")
    assert counts["refused"] == 0, counts
    assert counts["truncated"] == 0
    assert counts["error"] == 0
    assert counts["ok"] >= 2 * RESTARTS
    assert waited >= RESTARTS // 2  # the gaps were really crossed by clients
    assert held == 1  # the holder still held the socket when stopped


def test_control_without_a_holder_clients_are_refused(rundir: str) -> None:
    """The same harness against a server that binds its socket at each start: refusals are seen."""
    path = os.path.join(rundir, "app.sock")
    payload = os.path.join(rundir, "payload")
    with open(payload, "wb") as f:
        f.write(PAYLOAD)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    log = os.path.join(rundir, "log")
    argv = [S6IPC, "ipcserver", "-1", path, "/bin/cat", payload]
    server = start_ready(argv, env, log)
    load = Load(path, PAYLOAD)
    load.start()
    try:
        for _ in range(3):
            time.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            server.wait(10)
            time.sleep(0.05)
            server = start_ready(argv, env, log)
        time.sleep(0.1)
    finally:
        counts = load.stop()
        stop(server)
    assert counts["refused"] + counts["error"] > 0, counts


def test_demo_script_runs(rundir: str) -> None:
    """units/fdholder-restart/demo: the recipe unsupervised, in shell, with two restarts."""
    p = subprocess.run([os.path.join(UNIT, "demo"), "2", "/bin/echo", "hi"], env=unit_env(rundir),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith("holder ") and lines[-1].startswith("restart 2: server ")


def _systemd_guide_rules(directory: str) -> str:
    """The rules docs/systemd.md writes for units/systemd/s6ipc-fdholder.service, written under
    *directory* by its own commands (``/etc/s6ipc`` replaced)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "systemd.md")) as f:
        lines = [line for line in f.read().splitlines() if "/etc/s6ipc/fdholder-rules" in line
                 and not line.startswith(("cp ", "ExecStart"))]
    assert len(lines) == 3, lines
    script = "\n".join(lines).replace("/etc/s6ipc", directory)
    subprocess.run(["sh", "-ec", script], check=True, timeout=10)
    return os.path.join(directory, "fdholder-rules")


@pytest.mark.parametrize("holder", ["units/fdholder-restart", "units/s6/s6ipc-fdholder", "docs/systemd.md"])
def test_the_shipped_holder_rules_allow_what_the_guides_park(holder: str, tmp_path: object) -> None:
    """The TCP guide parks ``tcp:127.0.0.1:8080``; the socket-activation guide ``unix:`` paths under
    /run/s6ipc-demo: each holder the guides point to lets root store and retrieve both."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if holder == "docs/systemd.md":
        rules = _systemd_guide_rules(str(tmp_path))
    else:
        rules = os.path.join(root, holder, "rules")
    decision = check(rules_from_dir(rules), 0, 0, euid=1, egid=1)
    rights = rights_from_modifs(decision.modif_strings())
    for ident in (b"tcp:127.0.0.1:8080", b"unix:/run/s6ipc-demo/gunicorn.sock"):
        assert rights.store.search(ident) and rights.retrieve.search(ident), (holder, ident)
    assert rights.list
