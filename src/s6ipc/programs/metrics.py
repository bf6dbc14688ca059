"""metrics: print the metrics of running s6ipc daemons as OpenMetrics (or Prometheus) text.

``s6ipc metrics`` reads the live view of every verified daemon the caller may read on this host
(``s6ipc metrics PID|NAME…``: those only) and prints its counters and gauges, labelled by
program, pid and ``S6IPC_NAME`` (docs/metrics.md). See :mod:`s6ipc.daemon.metrics`.
"""

from __future__ import annotations

import os

from ..base.errors import SystemFailure
from ..base.messages import Reporter, flush_stdio, write_stdout
from ..base.options import Command, flag, parse_uint, setting
from ..daemon.metrics import TOP_DEFAULT, scrape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -P ] [ -n top ] [ -t timeout ] [ pid|name ... ]"
COMMAND = Command({"P": flag("prometheus"), "n": setting("top", parse_uint),
                   "t": setting("timeout", parse_uint)})


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, Any] = {}
    targets = COMMAND.parse(args, o)
    timeout = o.get("timeout") or 5000
    failures: List[SystemFailure] = []
    text = scrape([t for t in targets if t], top=o.get("top", TOP_DEFAULT),
                  openmetrics=not o.get("prometheus"), timeout=timeout / 1000, failures=failures)
    for failure in failures:
        reporter.warn(f"{failure}: left out")
    write_stdout(text.encode("utf-8", "surrogateescape"))
    flush_stdio()
    os._exit(0)
