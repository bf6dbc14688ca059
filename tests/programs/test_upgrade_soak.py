"""The suite's short version of the upgrade soak (bench/upgrades.py ``soak``, issue 18 point 9):
consecutive in-place upgrades under a steady rate of new connections, each a byte-exact exchange
with ``cat``, plus long-lived connections that echo after every upgrade — on AF_UNIX (ipcserverd)
and TCP on 127.0.0.1 (tcpserver4d): nothing refused, reset or truncated, the PID kept. The same
code as the bench (imported from bench/upgrades.py), fewer upgrades and a lower rate (≤ 60 s)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "bench", "upgrades.py")


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_upgrades", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_a_short_soak(family: str) -> None:
    result = _bench().run_soak(family, upgrades=12, rate=200, long_lived=10, gap=0.05)
    assert result["generation"] == 12 and result["pid_kept"], result
    counts = {k: result[k] for k in ("refused", "reset", "truncated", "other")}
    assert counts == {"refused": 0, "reset": 0, "truncated": 0, "other": 0}, result["examples"]
    assert result["long_lived_broken"] == [] and result["warnings"] == []
    assert result["connections"] > 200, result  # the load ran through the upgrades
    # each connection counted once, whichever image or stand-in accepted it
    assert result["accepted"] == result["spawned"] == result["made"], result
