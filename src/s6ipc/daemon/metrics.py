"""Metrics: the live views of running daemons as OpenMetrics (or Prometheus text) exposition.

Some facts about the two exposition formats that this module relies on:

* **OpenMetrics 1.0** (``application/openmetrics-text; version=1.0.0``): a family's ``# TYPE``,
  ``# UNIT`` and ``# HELP`` name the family (``s6ipc_connections_accepted``), a counter's samples
  end in ``_total``, an info family's in ``_info``, a unit is the name's last word
  (``…_seconds``), and the text ends with ``# EOF``. Prometheus asks for it first when it scrapes.
* **The Prometheus text format 0.0.4** (``text/plain; version=0.0.4``) is what ``promtool check
  metrics`` and node_exporter's textfile collector read: ``# HELP``/``# TYPE`` name the sample
  (``…_total``), there is no ``info`` type (a gauge of 1), no ``# UNIT``, no ``# EOF``. The same
  families, written the other way (:func:`exposition`'s *openmetrics*).
* **Every family's samples are contiguous**, whatever the daemon: families are built over all the
  documents at once.
* **Label values are any UTF-8**, escaped ``\\``, ``"`` and newline; peers and names are bytes from
  elsewhere, so each is escaped, never trusted.
* **Cardinality** is the cost: a series per uid or per IP address is bounded to the *top* largest
  and one ``other`` series holding the rest.

What that means for us: one function from documents (:func:`s6ipc.daemon.liveview.documents`) to
text; the counters are the live view's (carried across upgrades, never lower), the lifecycle's
upgrade facts (``upgrades``, ``upgrade_failures``, ``last_upgrade``) are exported when present.
"""

from __future__ import annotations

from ..base.errors import SystemFailure
from .liveview import documents, lookup

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

    Labels = Tuple[Tuple[str, str], ...]

__all__ = ["OPENMETRICS", "PROMETHEUS_TEXT", "TOP_DEFAULT", "Family", "families", "exposition", "escape",
           "scrape"]

#: The content types of the two formats (the HTTP ``Content-Type``).
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: Per-peer series kept per daemon before the rest is summed under ``other``.
TOP_DEFAULT = 10


def escape(value: str) -> str:
    """A label value as both formats write it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Family:
    """One metric family: *name* (without ``_total``/``_info``), *kind* (``counter``, ``gauge``,
    ``info``), *help*, *unit* (the last word of the name, or ""), and its samples."""

    def __init__(self, name: str, kind: str, help: str, unit: str = "") -> None:
        self.name, self.kind, self.help, self.unit = name, kind, help, unit
        self.samples: List[Tuple[Labels, float]] = []

    def add(self, labels: Labels, value: float) -> None:
        self.samples.append((labels, value))

    def sample_name(self) -> str:
        return self.name + {"counter": "_total", "info": "_info"}.get(self.kind, "")

    def lines(self, openmetrics: bool) -> List[str]:
        sample = self.sample_name()
        if openmetrics:
            head = [f"# TYPE {self.name} {self.kind}"]
            if self.unit:
                head.append(f"# UNIT {self.name} {self.unit}")
            head.append(f"# HELP {self.name} {_help(self.help)}")
        else:
            kind = "gauge" if self.kind == "info" else self.kind
            head = [f"# HELP {sample} {_help(self.help)}", f"# TYPE {sample} {kind}"]
        body = []
        for labels, value in self.samples:
            text = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
            body.append(f"{sample}{{{text}}} {_number(value)}")
        return head + body


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    return repr(float(value))


def _count(value: Any) -> Optional[int]:
    """A count from a document (untrusted: a non-negative integer, or None)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _seconds(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _top(per_peer: Any, top: int) -> List[Tuple[str, int]]:
    """The *top* largest ``{peer: count}`` entries, then ``other`` with the rest (if any)."""
    if not isinstance(per_peer, dict):
        return []
    counted = sorted(((str(k), v) for k, v in per_peer.items() if _count(v) is not None),
                     key=lambda kv: (-kv[1], kv[0]))
    kept = counted[:top]
    rest = sum(v for _, v in counted[top:])
    if len(counted) > top:
        kept.append(("other", rest))
    return kept


class _Families:
    """The families of a scrape, in order, created when first given a sample."""

    def __init__(self) -> None:
        self.by_name: Dict[str, Family] = {}

    def add(self, name: str, kind: str, help: str, labels: Labels, value: Optional[float],
            unit: str = "") -> None:
        if value is None:
            return
        family = self.by_name.get(name)
        if family is None:
            family = self.by_name[name] = Family(name, kind, help, unit)
        family.add(labels, value)

    def each(self, name: str, help: str, labels: Labels, label: str, counts: Any) -> None:
        """One counter sample per entry of *counts* ({value of *label*: count}), when it is a mapping."""
        if isinstance(counts, dict):
            for key, n in sorted(counts.items()):
                self.add(name, "counter", help, labels + ((label, str(key)),), _count(n))


_REFUSED_HELP = ("Connections accepted and closed without a handler since the daemon started, by reason "
                 "(maxconn, localmaxconn, access, spawn, rate, prefix).")


def families(documents: Iterable[Dict[str, Any]], top: int = TOP_DEFAULT) -> List[Family]:
    """The metric families of *documents* (live views), each sample labelled ``program``, ``pid``
    and ``name`` (the daemon's ``S6IPC_NAME``, "" when unset)."""
    out = _Families()
    for d in documents:
        base: Labels = (("program", str(d.get("program", ""))), ("pid", str(d.get("pid", ""))),
                        ("name", str(d.get("name") or "")))
        out.add("s6ipc_daemon", "info", "The daemon and the s6ipc version its current image runs.",
                base + (("version", str(d.get("version", ""))),), 1)
        out.add("s6ipc_start_time_seconds", "gauge", "When the process started (Unix time; kept across "
                "in-place upgrades, new on a restart).", base, _seconds(d.get("started")), "seconds")
        out.add("s6ipc_generation", "gauge", "In-place upgrades since the process started (0: first image).",
                base, _count(d.get("generation")))
        out.add("s6ipc_upgrades", "counter", "Successful in-place upgrades since the process started.",
                base, _count(d.get("upgrades")))
        out.add("s6ipc_upgrade_failures", "counter", "In-place upgrades refused or failed since the process "
                "started.", base, _count(d.get("upgrade_failures")))
        last = d.get("last_upgrade")
        pause = _seconds(last.get("pause_ms")) if isinstance(last, dict) else None
        out.add("s6ipc_last_upgrade_pause_seconds", "gauge", "How long the last in-place upgrade stopped "
                "accepting.", base, None if pause is None else pause / 1000, "seconds")
        started = _seconds(last.get("exec_ms")) if isinstance(last, dict) else None
        out.add("s6ipc_last_upgrade_exec_seconds", "gauge", "How long the new image of the last in-place "
                "upgrade took to start (a stand-in served meanwhile).", base,
                None if started is None else started / 1000, "seconds")
        counters = d.get("counters")
        counters = counters if isinstance(counters, dict) else {}
        connections = d.get("connections")
        limits = d.get("limits")
        if isinstance(connections, dict):  # the spawning servers
            out.add("s6ipc_connections", "gauge", "Connections served now (handlers alive).", base,
                    _count(connections.get("total")))
            unit = connections.get("unit")
            if unit in ("uid", "ip"):
                for peer, n in _top(connections.get("per_peer"), top):
                    out.add(f"s6ipc_connections_by_{unit}", "gauge", f"Connections served now per client "
                            f"{unit}: the {top} largest, the rest summed as {unit}=\"other\".",
                            base + ((unit, peer),), n)
        elif isinstance(d.get("clients"), list):  # fdholderd
            out.add("s6ipc_connections", "gauge", "Connections served now (handlers alive).", base,
                    len(d["clients"]))
        if isinstance(limits, dict):
            out.add("s6ipc_connections_max", "gauge", "The -c limit: connections served at once.", base,
                    _count(limits.get("maxconn")))
        out.add("s6ipc_connections_accepted", "counter", "Connections accepted since the process started "
                "(across in-place upgrades).", base, _count(counters.get("accepted")))
        out.each("s6ipc_connections_refused", _REFUSED_HELP, base, "reason", counters.get("refused"))
        out.add("s6ipc_handlers_spawned", "counter", "Handlers started since the process started.", base,
                _count(counters.get("spawned")))
        out.each("s6ipc_handler_exits", "Handlers ended since the process started, by outcome (ok: exit 0, "
                 "failed: another code, signaled).", base, "outcome", counters.get("exits"))
        out.add("s6ipc_fdholder_descriptors_held", "gauge", "Descriptors the fd holder holds now.", base,
                _count(counters.get("held")))
        out.each("s6ipc_fdholder_requests", "Requests to the fd holder since the process started, by "
                 "operation.", base, "operation", counters.get("requests"))
    return list(out.by_name.values())


def exposition(found: Iterable[Family], openmetrics: bool = True) -> str:
    """The text of *found*: OpenMetrics (ends with ``# EOF``), or the Prometheus text format."""
    lines: List[str] = []
    for family in found:
        lines.extend(family.lines(openmetrics))
    if openmetrics:
        lines.append("# EOF")
    return "".join(line + "\n" for line in lines)


def scrape(targets: Sequence[str] = (), *, top: int = TOP_DEFAULT, openmetrics: bool = True,
           timeout: float = 5.0, failures: Optional[List[SystemFailure]] = None) -> str:
    """The exposition of the daemons *targets* name (pids or program names: each must name one,
    as ``s6ipc status`` says), or of every verified daemon this caller may read when there is
    none; a daemon of a listing whose answer cannot be read is left out and its failure appended
    to *failures* (one broken daemon does not blank the others). Raises what
    :func:`s6ipc.daemon.liveview.lookup` raises for a target."""
    if targets:
        found: Dict[int, Dict[str, Any]] = {}
        for target in targets:
            for document in lookup(target, timeout=timeout, failures=failures):
                found.setdefault(document["pid"], document)
        chosen = [found[pid] for pid in sorted(found)]
    else:
        chosen = documents(timeout=timeout, failures=failures)
    return exposition(families(chosen, top), openmetrics)
