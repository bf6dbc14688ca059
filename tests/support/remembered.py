"""Sweeps that remember: the examples a hostile sweep failed on once, replayed at every run.

A process-level sweep (tests/hostile/test_fuzz_hostile.py) draws only a few random examples per
program and run (each one is a process, and CI has a time budget), so a failure it finds once may
never be drawn again. Each failing example is therefore written down, in
``tests/hostile/remembered/SWEEP.json`` (commit that file with the fix), and every run replays
every example written there before drawing new ones.

An example is a JSON object; bytes are stored as ``{"latin1": "…"}``. Values that differ from run to
run (the scratch directory, the ports of the area fixture) are stored as ``{NAME}`` placeholders
(:func:`symbolic`) and filled in again at replay (:func:`concrete`).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Iterator, List, Mapping

DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hostile", "remembered")


def _encode(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"latin1": obj.decode("latin-1")}  # JSON keeps any str, lone surrogates included
    if isinstance(obj, (list, tuple)):
        return [_encode(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"latin1"}:
            return obj["latin1"].encode("latin-1")
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(x) for x in obj]
    return obj


def _path(sweep: str) -> str:
    return os.path.join(DIRECTORY, f"{sweep}.json")


def _load(sweep: str) -> Dict[str, List[Any]]:
    try:
        with open(_path(sweep)) as f:
            data: Dict[str, List[Any]] = json.load(f)
    except FileNotFoundError:
        return {}
    return data


def examples(sweep: str, key: str) -> List[Dict[str, Any]]:
    """Every example kept for *key* (a program name) of *sweep*, decoded."""
    return [_decode(e) for e in _load(sweep).get(key, [])]


def remember(sweep: str, key: str, example: Mapping[str, Any]) -> None:
    """Keep *example* for *key* of *sweep* (once)."""
    data = _load(sweep)
    encoded = _encode(dict(example))
    kept = data.setdefault(key, [])
    if encoded not in kept:
        kept.append(encoded)
        os.makedirs(DIRECTORY, exist_ok=True)
        with open(_path(sweep), "w") as f:
            json.dump(dict(sorted(data.items())), f, indent=1, sort_keys=True)
            f.write("\n")


@contextlib.contextmanager
def on_failure(sweep: str, key: str, example: Mapping[str, Any]) -> Iterator[None]:
    """Run the block; if it fails, keep *example* before the failure goes on."""
    try:
        yield
    except BaseException:
        remember(sweep, key, example)
        raise


def symbolic(words: List[str], values: Mapping[str, str]) -> List[str]:
    """*words* with each of *values* (a directory: anywhere in a word; anything else: a whole
    word) replaced by its ``{NAME}`` placeholder, longest values first."""
    out = []
    for word in words:
        for name, value in sorted(values.items(), key=lambda item: -len(item[1])):
            if value.startswith("/") and value in word:
                word = word.replace(value, "{" + name + "}")
            elif word == value:
                word = "{" + name + "}"
        out.append(word)
    return out


def concrete(words: List[str], values: Mapping[str, str]) -> List[str]:
    """The inverse of :func:`symbolic`."""
    out = []
    for word in words:
        for name, value in values.items():
            word = word.replace("{" + name + "}", value)
        out.append(word)
    return out
