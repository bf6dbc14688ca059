"""The fd holder's store: held descriptors by id, in s6's slot order, expiring at their limits.

Some facts about s6-fdholderd's store (2.11.3.2; skalibs' ``genset`` and ``avltreen``) that this
module reproduces:

* **Slot order is what list and getdump show.** A new entry takes the most recently freed slot,
  else the lowest never used one (``genset``'s free stack), so after deleting the first of two
  entries and storing two more the order is ``new1 second new2``.
* **Limits are unique.** A store whose limit another entry has already is bumped by one
  nanosecond until it is not (the avltree of limits holds each once); a setdump restores limits as
  they are.
* **Storing an id that is held replaces it**: the old descriptor is closed.
* **Expiry** closes every entry whose TAI limit is not in the future, earliest limit first.

A held descriptor is a :class:`~s6ipc.base.unixmessage.HeldFd`: a reply still waiting in a client's
outbox keeps it open after the entry is gone, so a reply never carries a reused descriptor number.
"""

from __future__ import annotations

import heapq

from ..base.typeshim import dataclass
from ..base.unixmessage import HeldFd
from . import tai

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and dataclasses stay off fdholderd's start path (names for mypy only)
    from typing import Any, Dict, Iterator, List, Optional, Tuple

__all__ = ["Entry", "FdStore"]


@dataclass(eq=False)
class Entry:
    """One held descriptor: its slot, id and limit; *alive* until the store forgets it (compared
    by identity: the heap of limits may still hold an entry that was removed)."""

    slot: int
    id: bytes
    limit: tai.Tain
    held: HeldFd
    alive: bool = True

    def __repr__(self) -> str:
        return (f"Entry(slot={self.slot}, id={self.id!r}, limit={self.limit!r}, fd={self.held.fd}, "
                f"alive={self.alive})")


class FdStore:
    """Held descriptors by id, in s6's slot order (a new entry takes the most recently freed
    slot, else the lowest never used one), with a heap of limits for expiry."""

    def __init__(self) -> None:
        self._slots: List[Optional[Entry]] = []
        self._free: List[int] = []
        self._by_id: Dict[bytes, Entry] = {}
        self._limits: Dict[tai.Tain, int] = {}
        self._heap: List[Tuple[tai.Tain, int, Entry]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, ident: bytes) -> Optional[Entry]:
        return self._by_id.get(ident)

    def entries(self) -> Iterator[Entry]:
        """Entries in slot order (s6's list and getdump order)."""
        return (e for e in self._slots if e is not None)

    def add(self, ident: bytes, limit: tai.Tain, fd: int, unique_limit: bool) -> Entry:
        """Hold *fd* (ownership passes to the store). With *unique_limit* (store), bump the limit
        by 1 ns until no other entry has it, as s6 does; an existing *ident* is replaced."""
        if unique_limit:
            while limit in self._limits:
                limit = limit.add_nano()
        slot = self._free.pop() if self._free else len(self._slots)
        if slot == len(self._slots):
            self._slots.append(None)
        entry = Entry(slot, ident, limit, HeldFd(fd))
        old = self._by_id.get(ident)
        if old is not None:
            self.remove(old)
        self._slots[slot] = entry
        self._by_id[ident] = entry
        self._limits[limit] = self._limits.get(limit, 0) + 1
        self._seq += 1
        heapq.heappush(self._heap, (limit, self._seq, entry))
        return entry

    def remove(self, entry: Entry) -> None:
        """Forget *entry* and drop the store's reference to its descriptor."""
        if not entry.alive:
            return
        entry.alive = False
        self._slots[entry.slot] = None
        self._free.append(entry.slot)
        del self._by_id[entry.id]
        left = self._limits[entry.limit] - 1
        if left:
            self._limits[entry.limit] = left
        else:
            del self._limits[entry.limit]
        entry.held.release()

    def next_limit(self) -> Optional[tai.Tain]:
        while self._heap and not self._heap[0][2].alive:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def expire(self, now: tai.Tain) -> int:
        """Close and forget every entry whose limit is not in the future; return how many."""
        count = 0
        while True:
            limit = self.next_limit()
            if limit is None or limit > now:
                return count
            self.remove(heapq.heappop(self._heap)[2])
            count += 1

    def close_all(self) -> None:
        for entry in list(self.entries()):
            self.remove(entry)

    def to_state(self) -> Dict[str, Any]:
        """The store as JSON data for an in-place upgrade: every slot in order (None when free),
        each entry's id (hex), limit (label, nano) and descriptor number; the free-slot stack."""
        slots = [None if e is None else {"id": e.id.hex(), "limit": [e.limit.sec, e.limit.nano],
                                         "fd": e.held.fd} for e in self._slots]
        return {"slots": slots, "free": list(self._free)}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> FdStore:
        """The store :meth:`to_state` described, holding the same descriptor numbers (which must
        be open). Raises ValueError (or KeyError/TypeError) when *state* is not such a description."""
        store = cls()
        free = [int(s) for s in state["free"]]
        for slot, item in enumerate(state["slots"]):
            if item is None:
                store._slots.append(None)
                continue
            sec, nano = (int(x) for x in item["limit"])
            entry = Entry(slot, bytes.fromhex(item["id"]), tai.Tain(sec, nano), HeldFd(int(item["fd"])))
            if entry.id in store._by_id:
                raise ValueError(f"id {entry.id!r} held twice")
            store._slots.append(entry)
            store._by_id[entry.id] = entry
            store._limits[entry.limit] = store._limits.get(entry.limit, 0) + 1
            store._seq += 1
            heapq.heappush(store._heap, (entry.limit, store._seq, entry))
        if sorted(free) != [i for i, e in enumerate(store._slots) if e is None]:
            raise ValueError("free slots do not match the empty ones")
        store._free = free
        return store
