"""Bounds on what peers can make a node remember and process: the control plane.

Receptor remembers every node, advert and node name it ever hears of, and handles every
routing update and advert a peer sends, so one peer announcing invented nodes grows a node
without end.  Here everything is bounded by one setting, ``node: maxnodes`` (the caps below
are multiples of it), and each link has a budget of control messages.  A message beyond a
limit is dropped, and the drops are logged at most once per peer, kind and interval.

Pure: no I/O, no clock (callers pass ``now``, a ``time.monotonic()`` value).
"""

from __future__ import annotations

from collections import UserDict
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

#: Default of ``node: maxnodes``: far above real meshes (hundreds of nodes).
DEFAULT_MAX_NODES = 10000
#: Connections of all known nodes together, per allowed node (a hub-and-spoke mesh lists about
#: 2 per node, a full mesh of 30 nodes 29).
EDGES_PER_NODE = 32
#: Remembered routing-update IDs (flood de-duplication, kept up to an hour), per allowed node.
#: The oldest are forgotten first; a late copy then still fails the sequence check.
SEEN_PER_NODE = 16
#: Services one node may advertise (Receptor nodes advertise 1-3).
ADS_PER_NODE = 32
#: Adverts of all nodes together, per allowed node.
ADS_TOTAL_PER_NODE = 4
#: Entries of the node-hash → name table, per allowed node (known nodes, links, dials).
NAMES_PER_NODE = 2
#: Per-link budget of routing updates and adverts: a burst of this many per allowed node (a new
#: link gets the whole database at once: one update and a few adverts per node) ...
BUDGET_BURST_PER_NODE = 8
#: ... refilled at this many per allowed node and second (a Go mesh at the cap floods every
#: update every 10 s and every advert every 60 s: about 0.2 per node and second) ...
BUDGET_RATE_PER_NODE = 0.5
#: ... and never slower than this.
MIN_BUDGET_RATE = 50.0
#: Per link and origin node, a budget of routing updates (a node, Go or mesh, floods at most one
#: per 100 ms: its flood timer coalesces the changes of its links and new nodes it hears) ...
ORIGIN_UPDATE_BURST = 60.0
ORIGIN_UPDATE_RATE = 12.0
#: ... and of adverts (a node sends all of its adverts at once, a Go node every 60 s), so that a
#: peer flooding one node's messages is stopped at the first hop, not passed on to the mesh.
ORIGIN_AD_BURST = 2.0 * ADS_PER_NODE
ORIGIN_AD_RATE = 2.0
#: Origin budgets tracked at once, per allowed node (beyond: not tracked; the link budget holds).
#: They are made only for messages that passed every other check (a signature too).
ORIGIN_BUCKETS_PER_NODE = 4
#: At most one ``control_plane_limit`` line per peer and kind of drop in this many seconds.
LIMIT_LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class ControlCaps:
    """Every control-plane limit, derived from ``maxnodes``."""

    max_nodes: int = DEFAULT_MAX_NODES

    @property
    def max_edges(self) -> int:
        return EDGES_PER_NODE * self.max_nodes

    @property
    def max_seen(self) -> int:
        return SEEN_PER_NODE * self.max_nodes

    @property
    def max_ads(self) -> int:
        return ADS_TOTAL_PER_NODE * self.max_nodes

    @property
    def max_names(self) -> int:
        return NAMES_PER_NODE * self.max_nodes

    @property
    def burst(self) -> float:
        return float(BUDGET_BURST_PER_NODE * self.max_nodes)

    @property
    def rate(self) -> float:
        return max(MIN_BUDGET_RATE, BUDGET_RATE_PER_NODE * self.max_nodes)


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; :meth:`take` spends one."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        self.refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class _Drops:
    count: int = 0
    logged_at: float | None = None


@dataclass
class ControlLimits:
    """Per-link budgets and the bookkeeping of drops (what to log, and totals for metrics)."""

    caps: ControlCaps = field(default_factory=ControlCaps)
    #: Drops since the node started, by kind (``routing update``, ``new node``, ...).
    totals: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _origins: dict[tuple[str, str, str], TokenBucket] = field(default_factory=dict)
    _drops: dict[tuple[str, str], _Drops] = field(default_factory=dict)

    def within_budget(self, peer: str, now: float) -> bool:
        """Spend one control message of ``peer``'s link budget; False when it is spent.

        The bucket outlives the link (a peer cannot refill it by reconnecting) until it is
        full again (see :meth:`flush`)."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket(self.caps.rate, self.caps.burst,
                                                       self.caps.burst, now)
        return bucket.take(now)

    def origin_within_budget(self, peer: str, origin: str, kind: str, now: float) -> bool:
        """Spend one message (``kind`` "update" or "ad") of ``origin``'s budget on ``peer``'s
        link; False when it is spent.  Copies of one flood arrive once per link, so each link
        has its own: a peer flooding one node's messages cannot starve that node's own."""
        key = (peer, origin, kind)
        bucket = self._origins.get(key)
        if bucket is None:
            if len(self._origins) >= ORIGIN_BUCKETS_PER_NODE * self.caps.max_nodes:
                return True
            burst, rate = ((ORIGIN_UPDATE_BURST, ORIGIN_UPDATE_RATE) if kind == "update"
                           else (ORIGIN_AD_BURST, ORIGIN_AD_RATE))
            bucket = self._origins[key] = TokenBucket(rate, burst, burst, now)
        return bucket.take(now)

    def note_drop(self, peer: str, what: str, now: float) -> int:
        """Count one dropped message; returns how many to log now (0: not yet)."""
        self.totals[what] = self.totals.get(what, 0) + 1
        drops = self._drops.setdefault((peer, what), _Drops())
        drops.count += 1
        if drops.logged_at is not None and now - drops.logged_at < LIMIT_LOG_INTERVAL:
            return 0
        count, drops.count, drops.logged_at = drops.count, 0, now
        return count

    def flush(self, now: float) -> list[tuple[str, str, int]]:
        """(peer, what, count) of drops not logged yet whose interval has passed; forgets
        quiet peers and full buckets (so memory stays bounded by the active links)."""
        due = []
        for key, drops in list(self._drops.items()):
            if drops.logged_at is not None and now - drops.logged_at < LIMIT_LOG_INTERVAL:
                continue
            if drops.count:
                due.append((*key, drops.count))
                drops.count, drops.logged_at = 0, now
            else:
                del self._drops[key]
        for buckets in (self._buckets, self._origins):
            for key, bucket in list(buckets.items()):
                bucket.refill(now)
                if bucket.tokens >= bucket.burst:
                    del buckets[key]
        return due


class AdTable(UserDict[tuple[str, str], Any]):
    """Adverts from other nodes, (node, service) → entry, that counts adverts per node.

    Every change goes through ``__setitem__``/``__delitem__`` (UserDict), so the counts hold
    whatever dict method the caller uses."""

    def __init__(self, caps: ControlCaps) -> None:
        self.caps = caps
        self.per_node: dict[str, int] = {}
        super().__init__()

    def __setitem__(self, key: tuple[str, str], value: Any) -> None:
        if key not in self.data:
            self.per_node[key[0]] = self.per_node.get(key[0], 0) + 1
        self.data[key] = value

    def __delitem__(self, key: tuple[str, str]) -> None:
        del self.data[key]
        left = self.per_node[key[0]] - 1
        if left:
            self.per_node[key[0]] = left
        else:
            del self.per_node[key[0]]

    def refuses(self, key: tuple[str, str], *, node_admitted: bool) -> str:
        """Why a new advert ``key`` may not be stored ('' if it may); ``node_admitted``: the
        router knows the node or has room for it."""
        if key in self.data:
            return ""
        if not node_admitted:
            return "advertisement of a new node"
        if self.per_node.get(key[0], 0) >= ADS_PER_NODE:
            return "advertisement over the per-node limit"
        if len(self.data) >= self.caps.max_ads:
            return "advertisement over the total limit"
        return ""


class AdTombstones:
    """Withdrawn adverts, (node, service) → time of the cancel, so that a replayed older advert
    (or cancel) of a withdrawn service is dropped instead of bringing the service back.

    Bounded like :class:`AdTable`: at most ``ADS_PER_NODE`` per node and ``caps.max_ads`` in
    all; beyond either, the oldest (of that node, or of all) is forgotten first."""

    def __init__(self, caps: ControlCaps) -> None:
        self.caps = caps
        #: node → service → (time_ns of the cancel, received at), oldest first.
        self._nodes: dict[str, dict[str, tuple[int, float]]] = {}
        #: Every (node, service), oldest first.
        self._order: dict[tuple[str, str], None] = {}

    def __len__(self) -> int:
        return len(self._order)

    def covers(self, key: tuple[str, str], time_ns: int) -> bool:
        """True if ``key`` was withdrawn at ``time_ns`` or later (a message of that time is a
        replay or a flooded copy)."""
        held = self._nodes.get(key[0], {}).get(key[1])
        return held is not None and held[0] >= time_ns

    def add(self, key: tuple[str, str], time_ns: int, now: float) -> None:
        """Remember that ``key`` was withdrawn at ``time_ns`` (received at ``now``)."""
        self.discard(key)
        services = self._nodes.get(key[0], {})
        if len(services) >= ADS_PER_NODE:
            self.discard((key[0], next(iter(services))))
        if len(self._order) >= self.caps.max_ads:
            self.discard(next(iter(self._order)))
        self._nodes.setdefault(key[0], {})[key[1]] = (time_ns, now)
        self._order[key] = None

    def discard(self, key: tuple[str, str]) -> None:
        """Forget the tombstone of ``key`` (the service is advertised again), if any."""
        services = self._nodes.get(key[0])
        if services is None or services.pop(key[1], None) is None:
            return
        if not services:
            del self._nodes[key[0]]
        del self._order[key]

    def sweep(self, now: float, max_age: float, forgotten: Collection[str] = ()) -> None:
        """Forget tombstones received more than ``max_age`` seconds before ``now`` and those
        of the ``forgotten`` nodes."""
        for node in forgotten:
            for service in list(self._nodes.get(node, ())):
                self.discard((node, service))
        for node, service in list(self._order):  # oldest first
            if now - self._nodes[node][service][1] <= max_age:
                break
            self.discard((node, service))


def pruned_names(names: dict[int, str], keep: Callable[[str], bool]) -> dict[int, str]:
    """The hash → name table without the names ``keep`` refuses (nodes forgotten since)."""
    return {hashed: name for hashed, name in names.items() if keep(name)}
