"""metrics: live-view documents to OpenMetrics and Prometheus text; untrusted values, escaping,
bounded per-peer series, every family contiguous."""

from __future__ import annotations

from typing import Any, Dict

from s6ipc.daemon import metrics

SERVER: Dict[str, Any] = {
    "program": "ipcserverd",
    "pid": 42,
    "name": 'we"b\\\n',
    "version": "0.3",
    "generation": 2,
    "uptime": 5.0,
    "started": 1700000000.25,
    "upgrades": 2,
    "upgrade_failures": 1,
    "last_upgrade": {"result": "ok", "reason": None, "pause_ms": 12.5, "exec_ms": 31.25,
                     "at": 1700000100.0},
    "limits": {"maxconn": 40, "localmaxconn": 10},
    "connections": {
        "total": 14,
        "unit": "uid",
        "peers": 13,
        "per_peer": {str(1000 + n): 1 for n in range(12)} | {"0": 2},
    },
    "counters": {
        "accepted": 100,
        "refused": {"access": 3, "spawn": 1},
        "spawned": 96,
        "exits": {"ok": 80, "failed": 2, "signaled": 0},
    },
}
HOLDER: Dict[str, Any] = {
    "program": "fdholderd",
    "pid": 7,
    "version": "0.3",
    "generation": 0,
    "started": 1700000000.0,
    "clients": [{"uid": 0}],
    "limits": {"maxconn": 16, "maxfds": 1000},
    "counters": {"held": 3, "requests": {"store": 3, "list": 9}},
}


def test_openmetrics_text() -> None:
    text = metrics.exposition(metrics.families([SERVER, HOLDER], top=3))
    lines = text.splitlines()
    assert lines[-1] == "# EOF" and text.endswith("# EOF\n")
    base = 'program="ipcserverd",pid="42",name="we\\"b\\\\\\n"'
    assert f"s6ipc_connections_accepted_total{{{base}}} 100" in lines
    assert f's6ipc_connections_refused_total{{{base},reason="access"}} 3' in lines
    assert f's6ipc_handler_exits_total{{{base},outcome="failed"}} 2' in lines
    assert (
        f"s6ipc_upgrades_total{{{base}}} 2" in lines and f"s6ipc_upgrade_failures_total{{{base}}} 1" in lines
    )
    assert f"s6ipc_last_upgrade_pause_seconds{{{base}}} 0.0125" in lines
    assert f"s6ipc_last_upgrade_exec_seconds{{{base}}} 0.03125" in lines
    assert f"s6ipc_start_time_seconds{{{base}}} 1700000000.25" in lines
    assert "# UNIT s6ipc_start_time_seconds seconds" in lines
    assert "# TYPE s6ipc_connections_accepted counter" in lines and "# TYPE s6ipc_daemon info" in lines
    by_uid = [line for line in lines if line.startswith("s6ipc_connections_by_uid{")]
    assert by_uid == [
        f's6ipc_connections_by_uid{{{base},uid="0"}} 2',
        f's6ipc_connections_by_uid{{{base},uid="1000"}} 1',
        f's6ipc_connections_by_uid{{{base},uid="1001"}} 1',
        f's6ipc_connections_by_uid{{{base},uid="other"}} 10',
    ], "top 3, then the rest"
    holder = 'program="fdholderd",pid="7",name=""'
    assert f"s6ipc_fdholder_descriptors_held{{{holder}}} 3" in lines
    assert f's6ipc_fdholder_requests_total{{{holder},operation="list"}} 9' in lines
    assert f"s6ipc_connections{{{holder}}} 1" in lines
    # every family once, its samples together
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(names) == len(set(names))
    current = None
    seen = set()
    for line in lines:
        if line.startswith("# TYPE"):
            current = line.split()[2]
            seen.add(current)
        elif not line.startswith("#"):
            assert current is not None and line.startswith(current)


def test_prometheus_text_has_no_openmetrics_only_lines() -> None:
    text = metrics.exposition(metrics.families([SERVER]), openmetrics=False)
    assert "# EOF" not in text and "# UNIT" not in text and " info" not in text
    assert "# TYPE s6ipc_connections_accepted_total counter" in text
    assert "# TYPE s6ipc_daemon_info gauge" in text


def test_values_from_a_lying_document_are_left_out() -> None:
    liar = {
        "program": "x",
        "pid": 1,
        "generation": -3,
        "started": "yesterday",
        "upgrades": True,
        "connections": {"total": 1.5, "unit": "mac", "per_peer": {"a": 1}},
        "counters": {"accepted": "many", "refused": {"access": -1, "spawn": 2}, "exits": []},
    }
    lines = metrics.exposition(metrics.families([liar])).splitlines()
    samples = [line for line in lines if not line.startswith("#")]
    assert samples == [
        's6ipc_daemon_info{program="x",pid="1",name="",version=""} 1',
        's6ipc_connections_refused_total{program="x",pid="1",name="",reason="spawn"} 2',
    ]


def test_nothing_running_is_an_empty_exposition() -> None:
    assert metrics.exposition([], openmetrics=False) == ""
    assert metrics.exposition([]) == "# EOF\n"
