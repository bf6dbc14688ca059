"""metrics-http: answer one HTTP/1.x ``GET /metrics`` on stdin/stdout (a UCSPI program).

``s6ipc tcpserver 127.0.0.1 9101 s6ipc metrics-http`` is a Prometheus exporter for every s6ipc
daemon on the host (docs/metrics.md). The request is bounded in size and time
(:mod:`s6ipc.daemon.httpexport`); the body is what ``s6ipc metrics`` prints
(:mod:`s6ipc.daemon.metrics`), in the format the client asked for.
"""

from __future__ import annotations

import os
import time

from ..base.errors import S6ipcError, SystemFailure
from ..base.messages import Reporter
from ..base.options import Command, parse_uint, setting
from ..daemon.httpexport import BadRequest, answer, parse, read_head, response, scrape_budget, write_all
from ..daemon.metrics import TOP_DEFAULT, scrape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -n top ] [ -t timeout ] [ -T scrapetimeout ] [ pid|name ... ]"
COMMAND = Command({"n": setting("top", parse_uint), "t": setting("timeout", parse_uint),
                   "T": setting("scrape_timeout", parse_uint)})


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, Any] = {}
    targets = [t for t in COMMAND.parse(args, o) if t]
    deadline = time.monotonic() + (o.get("timeout") or 5000) / 1000
    scrape_timeout = (o.get("scrape_timeout") or 5000) / 1000
    top = o.get("top", TOP_DEFAULT)
    plain = "text/plain; charset=utf-8"
    try:
        request = parse(read_head(0, deadline))
    except BadRequest as e:
        if not e.status:
            os._exit(0)
        _say(deadline, response(e.status, f"{e}\n".encode(), plain))
        raise
    failures: List[SystemFailure] = []

    def body(openmetrics: bool) -> bytes:
        text = scrape(targets, top=top, openmetrics=openmetrics, timeout=scrape_timeout, failures=failures)
        return text.encode("utf-8", "surrogateescape")

    scrape_timeout = scrape_budget(request, scrape_timeout)
    try:
        _, data = answer(request, body)
    except S6ipcError as e:
        _say(deadline + scrape_timeout, response(503, f"{e}\n".encode(), plain))
        raise
    for failure in failures:
        reporter.warn(f"{failure}: left out")
    write_all(1, data, deadline + scrape_timeout)
    os._exit(0)


def _say(deadline: float, data: bytes) -> None:
    """Best effort: the client that sent garbage may be gone already."""
    try:
        write_all(1, data, deadline + 1)
    except S6ipcError:
        pass
