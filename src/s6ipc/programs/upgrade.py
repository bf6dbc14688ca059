"""upgrade: upgrade a running s6ipc daemon in place and say whether it happened (a verdict).

``s6ipc upgrade PID|NAME [-t timeout] [-j]`` sends SIGUSR2 to the daemon (ipcserverd, tcpserver4d,
tcpserver6d, tcpserverd, fdholderd) and returns when its new generation serves (exit 0, one line:
generation, version, pause, exec), when it refused (exit 1, its reason: the old generation serves on),
or when the time ran out (111). docs/upgrade.md; the library is :mod:`s6ipc.daemon.verdict`.
"""

from __future__ import annotations

import errno
import os

from ..base.errors import SystemFailure
from ..base.messages import Reporter, flush_stdio, write_stdout
from ..base.options import Command, UsageError, flag, parse_uint, scan_magnitude, setting
from ..daemon.liveview import PID_MAX, find_daemons
from ..daemon.verdict import Verdict, upgrade_daemon

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -j ] [ -t timeout ] pid|name"
COMMAND = Command({"j": flag("json"), "t": setting("timeout", parse_uint)})


def target_pid(target: str) -> int:
    """The pid *target* names: a pid, or the name of the one daemon of that program running here.
    Raises :class:`UsageError` (100) for a name that several daemons have; :class:`SystemFailure`
    (111) for none."""
    if target.isascii() and target.isdigit():
        pid = scan_magnitude(target, 10, PID_MAX)
        if pid is None:
            raise SystemFailure(f"find an s6ipc daemon as pid {target}", errno.ESRCH)
        return pid
    pids = sorted({pid for _, pid in find_daemons(program=target)})
    if not pids:
        raise SystemFailure(f"find a running {target} with a live view", errno.ESRCH)
    if len(pids) > 1:
        listed = " ".join(map(str, pids))
        raise UsageError(f"{len(pids)} daemons named {target} (pids {listed}): give one pid")
    return pids[0]


def line(document: Dict[str, Any]) -> str:
    """``pid 4242 (ipcserverd): generation 3, s6ipc 0.1.0, exec 31.2 ms, pause 1.4 ms`` (the exec
    when the daemon says it: not before this release; the pause stays last, where a script that
    read an earlier release's line finds it)."""
    last = document.get("last_upgrade") or {}
    pause, started = last.get("pause_ms"), last.get("exec_ms")
    shown = "unknown" if pause is None else f"{pause:.1f} ms"
    exec_part = "" if started is None else f"exec {started:.1f} ms, "
    get = document.get
    return (f"pid {get('pid')} ({get('program')}): generation {get('generation')}, "
            f"s6ipc {get('version')}, {exec_part}pause {shown}\n")


def _json(document: Dict[str, Any]) -> str:
    import json

    last = document.get("last_upgrade") or {}
    keys = ("pid", "program", "generation", "version", "upgrades", "upgrade_failures")
    summary = {key: document.get(key) for key in keys}
    summary.update(result=last.get("result"), reason=last.get("reason"), pause_ms=last.get("pause_ms"),
                   exec_ms=last.get("exec_ms"))
    return json.dumps(summary, separators=(",", ":")) + "\n"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, Any] = {}
    pid = target_pid(COMMAND.parse_one(args, o))
    as_json = o.get("json", False)
    milliseconds = o.get("timeout", 0)
    try:
        document = upgrade_daemon(pid, timeout=milliseconds / 1000 if milliseconds else None)
    except Verdict as e:
        if as_json:
            write_stdout(_json(e.document).encode("utf-8", "surrogateescape"))
            flush_stdio()
        reporter.fatal(str(e), e.exit_code)
    write_stdout((_json(document) if as_json else line(document)).encode("utf-8", "surrogateescape"))
    flush_stdio()
    os._exit(0)
