"""Admission control beyond s6: per-source rate limits, per-prefix (per-gid) concurrency, and
aggregated refusal lines, for the spawning servers' loop (:class:`s6ipc.serve.loop.Server`).

s6 limits only concurrency, per uid or per exact address (``-C``). A spawning server pays a
process per connection, so a source that connects in a loop costs a fork+exec each time; this
module closes such connections before anything is spawned (``-A``, docs/access-control.md,
"Floods and rate limits"), and serves the source again as soon as its bucket has refilled.

Some facts this module relies on:

* **A token bucket is one number.** With rate *r* and burst *b*, the generic cell rate algorithm
  keeps per source only the time at which its bucket is full again (``due``): a connection is let
  in when ``due - now <= (b - 1) / r``, and then ``due = max(due, now) + 1 / r``. A refused
  connection changes nothing, so a flooder gets exactly its rate and no more. A bucket whose
  ``due`` has passed is full: dropping it changes nothing, which is how idle sources expire
  (:meth:`RateTable.expire`, once a second from the loop's timer).
* **Memory is bounded** by the ``sources=`` cap of each table (default :data:`DEFAULT_SOURCES`):
  while a table is full, every source it does not know is charged to one shared bucket,
  :data:`UNTRACKED` (logged as ``ip (untracked)``, ``uid (untracked)``), so a flood of spoofed or
  rotating sources costs one bucket's memory and gets one source's rate; known sources keep their
  own buckets, and new sources get their own again as soon as idle buckets expire.
* **The monotonic clock is the machine's** (CLOCK_MONOTONIC survives ``execve``), but the state
  handed to the next image of an in-place upgrade carries each bucket as a *debt* (tokens used),
  not as a time: the new image's limits apply to the carried debts, whatever they became.
* **TCP sources** are addresses, IPv4-mapped IPv6 ones (``::ffff:a.b.c.d`` of a dual-stack socket)
  counted as the IPv4 address they stand for; their group is their prefix (``prefix4=24``,
  ``prefix6=64`` by default). **IPC sources** are uids, their group the gid (with ``-P`` every
  client is the same unknown peer, so one bucket serves all).
* **Refusal lines are aggregated**: the first refusal of a source logs at once, the next ones at
  most once a second with the count since the previous line; a source's episode ends after a
  second without refusals. The lines live beside s6's ``deny`` lines (and, as those, at every
  verbosity); without ``-A`` nothing here runs.
"""

from __future__ import annotations

import _socket
import errno
import os

from ..base.errors import BadInput, SystemFailure
from ..base.log import Log
from ..base.options import scan_magnitude
from ..base.typeshim import Protocol
from ..sockets.inet import V4MAPPED_PREFIX, ip4_fmt, ip6_fmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

__all__ = [
    "DEFAULT_SOURCES", "UNTRACKED", "TICK", "Limits", "parse_limits", "RateTable", "Sources",
    "AddressSources", "UidSources", "Admission",
]

#: How many sources (and, apart, groups) a server tracks at most by default (``sources=``).
DEFAULT_SOURCES = 10000
_MAX_SOURCES = 1000000
#: The key of the bucket shared by the sources a full table does not track.
UNTRACKED = "(untracked)"
#: The source and group of every client of an IPC server without credentials (``-P``).
_UNKNOWN = "?"
#: Seconds between two refusal lines about the same source.
_LINE_INTERVAL = 1.0
#: How often the loop's timer calls :meth:`Admission.tick` (a due line waits at most that long),
#: and how often full buckets are dropped.
TICK = 0.25
_EXPIRY = 1.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_FILE = 65536

#: Per kind of server, the item names of ``-A`` and what each sets: the group's names say what a
#: group is (a prefix of addresses, a gid).
_TCP_NAMES = {"rate": "rate", "burst": "burst", "prefixrate": "group_rate",
              "prefixburst": "group_burst", "prefixconn": "group_conn", "prefix4": "prefix4",
              "prefix6": "prefix6", "sources": "sources"}
_IPC_NAMES = {"rate": "rate", "burst": "burst", "gidrate": "group_rate", "gidburst": "group_burst",
              "gidconn": "group_conn", "sources": "sources"}


class Limits:
    """What ``-A`` says, parsed (:func:`parse_limits`). Rates are per second (0: no limit); a burst
    of 0 means "as many as the rate per second, at least 1"."""

    __slots__ = ("tcp", "rate", "rate_text", "burst", "group_rate", "group_rate_text", "group_burst",
                 "group_conn", "prefix4", "prefix6", "sources")

    def __init__(self, tcp: bool) -> None:
        self.tcp = tcp
        self.rate = self.group_rate = 0.0
        self.rate_text = self.group_rate_text = ""
        self.burst = self.group_burst = self.group_conn = 0
        self.prefix4, self.prefix6 = 24, 64
        self.sources = DEFAULT_SOURCES

    def describe(self) -> Dict[str, Any]:
        """The limits as the live view shows them (item names as on the command line)."""
        group = "prefix" if self.tcp else "gid"
        shown: Dict[str, Any] = {
            "rate": self.rate_text or None, "burst": self.burst or None,
            group + "rate": self.group_rate_text or None, group + "burst": self.group_burst or None,
            group + "conn": self.group_conn or None, "sources": self.sources,
        }
        if self.tcp:
            shown.update(prefix4=self.prefix4, prefix6=self.prefix6)
        return shown


def _bad(item: str, why: str) -> BadInput:
    return BadInput(f"invalid admission limit {item!r}: {why}")


def _number(text: str) -> Optional[float]:
    """A decimal number ``D[.D]`` (no sign, no exponent, at most 32 characters), or None."""
    whole, _, frac = text.partition(".")
    if len(text) > 32 or not (whole.isdigit() and whole.isascii()):
        return None
    if frac and not (frac.isdigit() and frac.isascii()):
        return None
    if "." in text and not frac:
        return None
    return float(text)


def _rate(item: str, text: str) -> Tuple[float, str]:
    """``N``, ``N/s``, ``N/m`` or ``N/h`` (N decimal, above 0): per second, and the text to show."""
    count, slash, unit = text.partition("/")
    per = _UNITS.get(unit) if slash else 1.0
    value = _number(count)
    if per is None or value is None:
        raise _bad(item, "a rate is N, N/s, N/m or N/h")
    if value <= 0:
        raise _bad(item, "a rate is above 0 (leave it out for no limit)")
    return value / per, text if slash else text + "/s"


def _whole(item: str, text: str, low: int, high: int) -> int:
    try:
        value = scan_magnitude(text, 10, high)
    except ValueError:
        value = None
    if value is None or value < low:
        raise _bad(item, f"expected a whole number from {low} to {high}")
    return value


def _items(spec: str) -> List[str]:
    """The ``name=value`` items of one ``-A``: inline (comma-separated) or, for ``@PATH``, the file's
    (separated by commas, blanks or newlines; ``#`` starts a comment)."""
    if not spec.startswith("@"):
        return [item for item in spec.split(",") if item]
    path = spec[1:]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, _MAX_FILE + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise SystemFailure(f"read admission limits from {path}", e.errno or errno.EIO) from None
    if len(data) > _MAX_FILE:
        raise BadInput(f"invalid admission limits in {path}: longer than {_MAX_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"invalid admission limits in {path}: not UTF-8") from None
    words: List[str] = []
    for line in text.splitlines():
        words += line.split("#", 1)[0].replace(",", " ").split()
    return words


def parse_limits(specs: Sequence[str], tcp: bool) -> Optional[Limits]:
    """The limits the ``-A`` values *specs* set, in order (a later item wins), for a TCP server or
    (not *tcp*) an IPC one; None when there are none. Raises :class:`BadInput` (exit 100) for an
    item that does not parse, :class:`SystemFailure` for an ``@PATH`` that cannot be read."""
    if not specs:
        return None
    names = _TCP_NAMES if tcp else _IPC_NAMES
    given: Dict[str, Tuple[str, str]] = {}
    for spec in specs:
        for item in _items(spec):
            name, equals, value = item.partition("=")
            field = names.get(name)
            if field is None or not equals:
                raise _bad(item, "known names are " + ", ".join(f"{n}=" for n in names))
            given[field] = (item, value)
    limits = Limits(tcp)
    for field, (item, value) in given.items():
        if field in ("rate", "group_rate"):
            per_second, text = _rate(item, value)
            setattr(limits, field, per_second)
            setattr(limits, field + "_text", text)
        elif field in ("burst", "group_burst", "group_conn"):
            setattr(limits, field, _whole(item, value, 1, 1000000))
        elif field == "sources":
            limits.sources = _whole(item, value, 1, _MAX_SOURCES)
        else:
            setattr(limits, field, _whole(item, value, 0, 32 if field == "prefix4" else 128))
    for rate, burst in ((limits.rate, "burst"), (limits.group_rate, "group_burst")):
        if burst in given and not rate:
            item = given[burst][0]
            raise _bad(item, f"a burst needs a rate ({item.partition('=')[0].replace('burst', 'rate')}=)")
        if rate and burst not in given:
            setattr(limits, burst, max(1, int(rate)))
    if not (limits.rate or limits.group_rate or limits.group_conn):
        raise BadInput(f"invalid admission limits {','.join(specs)!r}: no rate and no conn limit")
    return limits


class RateTable:
    """Token buckets (rate, burst) by key, at most *cap* of them, one number each (the time the
    bucket is full again: see the module docstring)."""

    __slots__ = ("interval", "tolerance", "burst", "cap", "due")

    def __init__(self, rate: float, burst: int, cap: int) -> None:
        self.interval = 1.0 / rate
        self.burst = burst
        # a hair above (burst - 1) intervals, so that sums of floats never refuse the last token
        self.tolerance = (burst - 1 + 1e-6) * self.interval
        self.cap = cap
        self.due: Dict[Hashable, float] = {}

    def take(self, key: Hashable, now: float) -> Tuple[Hashable, bool]:
        """Take a token for *key* at *now*: ``(the key charged, allowed)`` — the key charged is
        :data:`UNTRACKED` for a key the full table does not know."""
        due = self.due
        full = due.get(key)
        if full is None:
            if len(due) >= self.cap:
                key = UNTRACKED
                full = due.get(key, now)
            else:
                full = now
        if full < now:
            full = now
        if full - now > self.tolerance:
            return key, False
        due[key] = full + self.interval
        return key, True

    def expire(self, now: float) -> None:
        """Forget the buckets that are full again (a full bucket is the same as none)."""
        due = self.due
        for key in [key for key, full in due.items() if full <= now]:
            del due[key]

    def debts(self, now: float, text: Callable[[Hashable], str]) -> Dict[str, float]:
        """The tokens each bucket has used, by *text* of its key (what the next image restores)."""
        interval = self.interval
        return {text(key): round((full - now) / interval, 6) for key, full in self.due.items() if full > now}

    def restore(self, debts: Dict[str, Any], now: float, key_of: Callable[[str], Optional[Hashable]]) -> None:
        """Take over *debts* (:meth:`debts` of another image, maybe with other limits): a debt
        is capped at this table's burst; keys *key_of* cannot read (None) are dropped."""
        for text, debt in debts.items():
            if not isinstance(debt, (int, float)) or isinstance(debt, bool) or not debt >= 0:
                raise ValueError(f"{debt!r} is not a bucket's debt")
            key = key_of(text)
            if key is not None and len(self.due) < self.cap:
                self.due[key] = now + min(float(debt), self.burst) * self.interval


class Sources(Protocol):
    """What a server counts a connection against: its source and its source's group."""

    @property
    def units(self) -> Tuple[str, str]:
        """How a source and a group are named in lines and the live view (``ip``/``prefix``)."""
        ...

    def source(self, peer: Any) -> Hashable: ...

    def group(self, peer: Any) -> Hashable: ...

    def source_text(self, key: Hashable) -> str: ...

    def group_text(self, key: Hashable) -> str: ...

    def source_key(self, text: str) -> Optional[Hashable]:
        """The key :meth:`source_text` wrote (None: not one of this server's). Raises ValueError."""
        ...

    def group_key(self, text: str) -> Optional[Hashable]:
        """The key :meth:`group_text` wrote, None when it is not a group of these limits (another
        prefix length). Raises ValueError."""
        ...


class AddressSources:
    """TCP: a source is an address (IPv4-mapped counted as IPv4), a group its prefix."""

    units = ("ip", "prefix")

    def __init__(self, prefix4: int, prefix6: int) -> None:
        self.prefix4, self.prefix6 = prefix4, prefix6
        self._shift4, self._shift6 = 32 - prefix4, 128 - prefix6

    def source(self, peer: Any) -> Hashable:
        ip: bytes = peer.ip
        if len(ip) == 16 and ip[:12] == V4MAPPED_PREFIX:
            return ip4_fmt(ip[12:])
        return peer.key  # type: ignore[no-any-return]

    def group(self, peer: Any) -> Hashable:
        ip: bytes = peer.ip
        if len(ip) == 4:
            return (4, int.from_bytes(ip, "big") >> self._shift4)
        if ip[:12] == V4MAPPED_PREFIX:
            return (4, int.from_bytes(ip[12:], "big") >> self._shift4)
        return (6, int.from_bytes(ip, "big") >> self._shift6)

    def source_text(self, key: Hashable) -> str:
        return str(key)

    def group_text(self, key: Hashable) -> str:
        if key == UNTRACKED:
            return UNTRACKED
        family: int
        value: int
        family, value = key  # type: ignore[misc]
        if family == 4:
            return f"{ip4_fmt((value << self._shift4).to_bytes(4, 'big'))}/{self.prefix4}"
        return f"{ip6_fmt((value << self._shift6).to_bytes(16, 'big'))}/{self.prefix6}"

    def source_key(self, text: str) -> Optional[Hashable]:
        if text == UNTRACKED:
            return None
        try:
            _socket.inet_pton(_socket.AF_INET6 if ":" in text else _socket.AF_INET, text)
        except OSError:
            raise ValueError(f"{text!r} is not an address") from None
        return text

    def group_key(self, text: str) -> Optional[Hashable]:
        if text == UNTRACKED:
            return None
        address, _, length = text.partition("/")
        v6 = ":" in address
        try:
            packed = _socket.inet_pton(_socket.AF_INET6 if v6 else _socket.AF_INET, address)
        except OSError:
            raise ValueError(f"{text!r} is not a prefix") from None
        if length != str(self.prefix6 if v6 else self.prefix4):
            return None  # a prefix of other limits: its bucket is not carried
        return (6, int.from_bytes(packed, "big") >> self._shift6) if v6 else \
            (4, int.from_bytes(packed, "big") >> self._shift4)


class UidSources:
    """IPC: a source is a uid, a group the gid; without *lookup* (``-P``) every client is the same
    unknown source, ``uid ?`` in gid ``?``."""

    units = ("uid", "gid")

    def __init__(self, lookup: bool = True) -> None:
        self.lookup = lookup

    def source(self, peer: Any) -> Hashable:
        return peer.uid if self.lookup else _UNKNOWN

    def group(self, peer: Any) -> Hashable:
        return peer.gid if self.lookup else _UNKNOWN

    def source_text(self, key: Hashable) -> str:
        return str(key)

    group_text = source_text

    def source_key(self, text: str) -> Optional[Hashable]:
        if text in (UNTRACKED, _UNKNOWN):
            return None if self.lookup or text == UNTRACKED else _UNKNOWN
        number = scan_magnitude(text, 10, 0xFFFFFFFF) if text.isdigit() and text.isascii() else None
        if number is None:
            raise ValueError(f"{text!r} is not a uid or gid")
        return number if self.lookup else None

    group_key = source_key


#: The kinds of refusal lines: a source over its rate, a group over its rate, a group at its
#: concurrency limit; each with the refusal reason it counts as (the live view's counters).
_RATE, _GROUP_RATE, _GROUP_CONN = "rate", "grouprate", "groupconn"
_REASON = {_RATE: "rate", _GROUP_RATE: "rate", _GROUP_CONN: "prefix"}


class Admission:
    """The ``-A`` limits of one server: :meth:`admit` per connection, :meth:`spawned` and
    :meth:`ended` around each child, :meth:`tick` from the loop's timer. *log* receives the
    refusal lines, *monotonic* is the server's clock."""

    def __init__(self, limits: Limits, sources: Sources, log: Log, monotonic: Callable[[], float]) -> None:
        self.limits = limits
        self.sources = sources
        self.log = log
        self.monotonic = monotonic
        self.rates = RateTable(limits.rate, limits.burst, limits.sources) if limits.rate else None
        self.group_rates = (RateTable(limits.group_rate, limits.group_burst, limits.sources)
                            if limits.group_rate else None)
        #: Live children per group (only with a concurrency limit per group).
        self.live: Dict[Hashable, int] = {}
        #: The sources in a refusal episode: ``(kind, key)`` → [refused since the last line, its time].
        self.episodes: Dict[Tuple[str, Hashable], List[float]] = {}
        self._expired = monotonic()

    # -- per connection -------------------------------------------------------------------
    def admit(self, peer: Any) -> Optional[str]:
        """None when *peer*'s connection may go on, else the refusal reason (``rate``, ``prefix``)
        — the refusal is then logged (aggregated)."""
        now = self.monotonic()
        sources = self.sources
        if self.rates is not None:
            key, allowed = self.rates.take(sources.source(peer), now)
            if not allowed:
                return self._refused(_RATE, key, now)
        limit = self.limits.group_conn
        if self.group_rates is not None or limit:
            group = sources.group(peer)
            if self.group_rates is not None:
                key, allowed = self.group_rates.take(group, now)
                if not allowed:
                    return self._refused(_GROUP_RATE, key, now)
            if limit and self.live.get(group, 0) >= limit:
                return self._refused(_GROUP_CONN, group, now)
        return None

    def spawned(self, peer: Any) -> None:
        """A child now serves *peer* (counted against its group's concurrency)."""
        if self.limits.group_conn:
            group = self.sources.group(peer)
            self.live[group] = self.live.get(group, 0) + 1

    def ended(self, peer: Any) -> None:
        """The child serving *peer* was reaped."""
        if self.limits.group_conn:
            group = self.sources.group(peer)
            left = self.live.get(group, 0) - 1
            if left > 0:
                self.live[group] = left
            else:
                self.live.pop(group, None)

    # -- the refusal lines ----------------------------------------------------------------
    def _refused(self, kind: str, key: Hashable, now: float) -> str:
        episode = self.episodes.get((kind, key))
        if episode is None:
            self.episodes[(kind, key)] = [0, now]
            self._line(kind, key, 1, None)
        else:
            episode[0] += 1
            if now - episode[1] >= _LINE_INTERVAL:
                self._line(kind, key, int(episode[0]), now - episode[1])
                episode[0], episode[1] = 0, now
        return _REASON[kind]

    def _line(self, kind: str, key: Hashable, count: int, seconds: Optional[float]) -> None:
        limits = self.limits
        unit, group_unit = self.sources.units
        if kind == _RATE:
            who = f"{unit} {self.sources.source_text(key)}"
            what = f"rate {limits.rate_text} burst {limits.burst}"
        elif kind == _GROUP_RATE:
            who = f"{group_unit} {self.sources.group_text(key)}"
            what = f"rate {limits.group_rate_text} burst {limits.group_burst}"
        else:
            who, what = f"{group_unit} {self.sources.group_text(key)}", f"{limits.group_conn} connections"
        tail = "" if seconds is None else f" in {seconds:.1f} s"
        self.log.info(f"deny {who} over {what}: {count} refused{tail}")

    def tick(self) -> None:
        """From the loop's timer, every :data:`TICK` seconds: the lines of the episodes due, the end
        of the episodes without refusals; once a second, the expiry of full buckets."""
        now = self.monotonic()
        for (kind, key), episode in list(self.episodes.items()):
            if now - episode[1] >= _LINE_INTERVAL:
                if episode[0]:
                    self._line(kind, key, int(episode[0]), now - episode[1])
                    episode[0], episode[1] = 0, now
                else:
                    del self.episodes[(kind, key)]
        if now - self._expired >= _EXPIRY:
            self._expired = now
            for table in (self.rates, self.group_rates):
                if table is not None:
                    table.expire(now)

    # -- what it shows and hands over -----------------------------------------------------
    def _text(self, kind: str, key: Hashable) -> str:
        """How the key of an episode of *kind* is written (a source's, or a group's)."""
        return self.sources.source_text(key) if kind == _RATE else self.sources.group_text(key)

    def describe(self) -> Dict[str, Any]:
        """The live view's ``admission`` object: the limits, how many sources and groups are
        tracked, which are being refused now."""
        unit, group_unit = self.sources.units
        limited = sorted({f"{unit if kind == _RATE else group_unit} {self._text(kind, key)}"
                          for kind, key in self.episodes})
        return {
            "limits": self.limits.describe(),
            "tracked": {"sources": len(self.rates.due) if self.rates is not None else 0,
                        "groups": len(self.group_rates.due) if self.group_rates is not None else 0},
            "limited": limited,
        }

    def to_state(self) -> Dict[str, Any]:
        """The buckets as debts, and the counts not yet logged (for the next image)."""
        now = self.monotonic()
        sources = self.sources
        state: Dict[str, Any] = {
            "sources": self.rates.debts(now, sources.source_text) if self.rates is not None else {},
            "groups": self.group_rates.debts(now, sources.group_text) if self.group_rates is not None else {},
            "unlogged": [[kind, self._text(kind, key), int(ep[0])]
                         for (kind, key), ep in self.episodes.items() if ep[0]],
        }
        return state

    def restore(self, state: Dict[str, Any]) -> None:
        """Take over what :meth:`to_state` of the previous image wrote, with this image's limits.
        Raises ValueError, KeyError or TypeError for a malformed state."""
        now = self.monotonic()
        sources = self.sources
        sources_debts, groups_debts = dict(state["sources"]), dict(state["groups"])
        if self.rates is not None:
            self.rates.restore(sources_debts, now, sources.source_key)
        if self.group_rates is not None:
            self.group_rates.restore(groups_debts, now, sources.group_key)
        for kind, text, count in list(state["unlogged"]):
            if kind not in _REASON or isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{[kind, text, count]!r} is not a count of refusals")
            key = sources.source_key(str(text)) if kind == _RATE else sources.group_key(str(text))
            if key is not None:
                self.episodes[(kind, key)] = [count, now]
