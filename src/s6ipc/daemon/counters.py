"""Counters carried across in-place upgrades: read back from a handed-over state, never lower.

Some facts about the counters' readers that this module serves:

* **Prometheus** treats any decrease of a counter as a reset (``rate()``, ``increase()`` and
  ``resets()`` say so): a daemon upgraded in place keeps its PID and its start time, so its
  counters must go on from where the previous image left them, key by key.
* **A state is data from another image** (possibly another version): a count that is not a
  non-negative integer is refused (the new image then does not take the state over), and a key
  this version does not know is kept as it came, so that a downgrade loses no series.

What that means for us: every daemon's part reads its counters through :func:`read_counts`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable

__all__ = ["read_counts"]


def read_counts(raw: Any, keys: Iterable[str]) -> Dict[str, int]:
    """{key: count} from a state's *raw* mapping: every key of *keys* (0 when absent), and any other
    key it holds (kept as it came). Raises ValueError for a count that is not a non-negative
    integer, TypeError when *raw* is not a mapping."""
    counts = dict.fromkeys(keys, 0)
    for key, value in dict(raw).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"counter {key!r} is {value!r}")
        counts[str(key)] = value
    return counts
