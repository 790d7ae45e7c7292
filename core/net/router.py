"""Pure link-state routing: known connections, update acceptance rules and Dijkstra.

This object does no I/O and reads no clock: callers pass ``now`` in.  It implements
Receptor's rules (reference §2.3, §2.7) plus bounded expiry of nodes that became
unreachable, which Receptor never forgets, and caps on known nodes, connections and
remembered update IDs (:mod:`mesh.net.control_limits`).  Updates that carry our own node ID
are classified for :mod:`mesh.net.duplicate_watch`, which decides what they prove.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import Enum

from mesh.net.control_limits import ControlCaps

SEEN_UPDATE_TTL = 3600.0
#: At the node cap, at most this many nodes are forgotten to make room between two sweeps
#: (a flood of invented nodes then churns nothing; nodes that join a full mesh are few).
EVICTIONS_PER_SWEEP = 100


class UpdateVerdict(Enum):
    """What the caller must do with a routing update after :meth:`Router.apply_update`."""

    IGNORE = "ignore"              # echo, duplicate, stale: drop, do not re-flood
    FORGED_OWN = "forged-own"      # our ID and epoch, a sequence we never sent: outbid it
    OLDER_SELF = "older-self"      # our ID, an older epoch: evidence we may be the duplicate
    CONFLICT = "conflict"          # a newer node uses our ID: flood with SuspectedDuplicate
    ACCEPT = "accept"              # apply done; re-flood
    LIMIT = "limit"                # over a control-plane cap (see ``limit``): drop


@dataclass
class NodeRecord:
    """What we remember about a node whose routing updates we accepted."""

    epoch: int
    sequence: int
    last_update: float
    max_datagram: int | None = None
    #: False while the node has no route: an update with another epoch (a restarted process,
    #: whose epoch may be smaller) replaces the record then, but one with the same epoch and
    #: an older sequence never does (it is a late copy from the same process).
    reachable: bool = True
    #: The newest epoch the node's older instance (this record's) settled against: while
    #: the record is reachable, updates with an epoch above the record's up to this one are
    #: that settled duplicate's (or a forger's repeating it) and are ignored.
    settled_above: int = 0


@dataclass
class UpdateResult:
    verdict: UpdateVerdict
    new_node: bool = False
    connections_changed: bool = False
    conflict_epoch: int = 0
    #: OLDER_SELF or CONFLICT whose SuspectedDuplicate is our epoch: we are accused of being
    #: the duplicate (an accusation alone proves nothing, see mesh.net.duplicate_watch).
    accused: bool = False
    #: ACCEPT of a SuspectedDuplicate update that gave a node's record back to the older one.
    settled: bool = False
    #: LIMIT: which cap the update would exceed.
    limit: str = ""
    #: ACCEPT of a new node at the node cap: the node forgotten to make room, and the link
    #: that had brought it ('' when it was unreachable).
    evicted: str = ""
    evicted_from: str = ""
    #: ACCEPT that changed nothing here (a SuspectedDuplicate update about a record we do not
    #: hold): forwarded, but never stored as the node's update in the database new links get.
    applied: bool = True


@dataclass
class Router:
    """Routing state of one node."""

    node_id: str
    caps: ControlCaps = field(default_factory=ControlCaps)
    known: dict[str, dict[str, float]] = field(default_factory=dict)
    records: dict[str, NodeRecord] = field(default_factory=dict)
    table: dict[str, str] = field(default_factory=dict)
    #: The full route to each destination: [first hop, ..., destination].
    paths: dict[str, list[str]] = field(default_factory=dict)
    seen_updates: dict[str, float] = field(default_factory=dict)
    unreachable_since: dict[str, float] = field(default_factory=dict)
    #: Edges in ``known`` of other nodes (recounted at every sweep, kept up by updates).
    edge_count: int = 0
    #: A settle update gives a record back only when the record's epoch is exactly the one it
    #: names (Receptor's rule), not whenever it is at least that one.  Set with route-auth:
    #: forged newer epochs are dropped there, and a replayed signed settle of a process that
    #: has restarted since must not roll its record back.
    exact_settle: bool = False
    #: The link (neighbour) that brought each node's first accepted update, and the nodes
    #: each link brought (oldest first): at the node cap the link that brought the most gives
    #: way to a new node from another link (see :meth:`_room_for`).
    introduced_by: dict[str, str] = field(default_factory=dict)
    introduced: dict[str, dict[str, None]] = field(default_factory=dict)
    #: Nodes that may still be forgotten to make room before the next sweep.
    evictions_left: int = EVICTIONS_PER_SWEEP

    def __post_init__(self) -> None:
        self.known.setdefault(self.node_id, {})

    def admits_node(self, node: str) -> bool:
        """True if ``node`` is known or there is room for one more node (``maxnodes``)."""
        return node in self.known or len(self.known) < self.caps.max_nodes

    def _room_for(self, via: str) -> tuple[str, str] | None:
        """At the node cap, the node to forget for a new one brought by link ``via`` and the
        link that brought it; None: no room.

        First a node that was unreachable at the last sweep; else the newest node of the link
        that brought the most, if it brought more than a fair share of ``maxnodes`` (divided by
        the links that brought nodes) and ``via`` less (so invented nodes that one peer keeps
        reachable cannot lock out nodes joining through other links, and cannot push out
        more than a share of theirs)."""
        if self.evictions_left <= 0:
            return None
        neighbours = self.known[self.node_id]  # (their records make our links usable)
        for node in list(self.unreachable_since):
            if node in self.table:
                del self.unreachable_since[node]  # reachable again: the sweep would drop it
            elif node not in neighbours:
                return node, ""
        if not self.introduced:
            return None
        top = max(self.introduced, key=lambda peer: len(self.introduced[peer]))
        share = self.caps.max_nodes // len(self.introduced.keys() | {via})
        if top == via or len(self.introduced[top]) <= share or \
                len(self.introduced.get(via, ())) >= share:
            return None
        for node in reversed(self.introduced[top]):
            if node not in neighbours:
                return node, top
        return None

    def _forget(self, node: str) -> None:
        """Drop everything known about ``node`` (other nodes' edges to it stay: an edge
        counts only when both ends list it)."""
        self.edge_count -= len(self.known.pop(node, ()))
        self.records.pop(node, None)
        self.unreachable_since.pop(node, None)
        peer = self.introduced_by.pop(node, None)
        if peer is not None:
            nodes = self.introduced[peer]
            del nodes[node]
            if not nodes:
                del self.introduced[peer]

    def _set_connections(self, node: str, connections: dict[str, float]) -> None:
        self.edge_count += len(connections) - len(self.known.get(node, ()))
        self.known[node] = dict(connections)

    # -- direct links ------------------------------------------------------------------

    def add_link(self, peer: str, cost: float) -> None:
        """Insert the edges self→peer and peer→self (a link was accepted)."""
        self.known[self.node_id][peer] = cost
        self.known.setdefault(peer, {})[self.node_id] = cost

    def remove_link(self, peer: str) -> None:
        """Remove both edges self↔peer (a link ended)."""
        self.known[self.node_id].pop(peer, None)
        peer_edges = self.known.get(peer)
        if peer_edges is not None:
            peer_edges.pop(self.node_id, None)

    def connections(self) -> dict[str, float]:
        """Our own direct links and their costs, as sent in our routing updates."""
        return dict(self.known[self.node_id])

    # -- updates from the mesh ---------------------------------------------------------

    def precheck(self, *, node_id: str, update_id: str, epoch: int, sequence: int,
                 connections: dict[str, float], suspected_duplicate: int, via: str = "",
                 ) -> UpdateResult | None:
        """The IGNORE or LIMIT :meth:`apply_update` gives a routing update of another node,
        found without changing anything (None: it would be applied).  Cheap: run it before a
        costlier check (a signature) so that copies, stale updates and floods skip that."""
        if update_id in self.seen_updates:
            return UpdateResult(UpdateVerdict.IGNORE)
        record = self.records.get(node_id)
        if suspected_duplicate:
            if epoch >= suspected_duplicate:
                # Only an older instance settles a conflict: this one would raise the record's
                # epoch above the real node's, whose updates would then be ignored.
                return UpdateResult(UpdateVerdict.IGNORE)
        elif record is not None and (
                (epoch < record.epoch and record.reachable)
                or (epoch == record.epoch and sequence <= record.sequence)
                or (record.reachable and record.epoch < epoch <= record.settled_above
                    and via != node_id)):
            # (a node speaking for itself on its own link is alive with that epoch: an older
            # instance's settle, perhaps forged, does not silence it at its neighbours)
            return UpdateResult(UpdateVerdict.IGNORE)
        if record is None and not self.admits_node(node_id) and self._room_for(via) is None:
            return UpdateResult(UpdateVerdict.LIMIT, limit="routing update of a new node")
        if self.edge_count + len(connections) - len(self.known.get(node_id, ())) > \
                self.caps.max_edges:
            return UpdateResult(UpdateVerdict.LIMIT, limit="routing update over the connections limit")
        return None

    def apply_update(self, *, node_id: str, update_id: str, epoch: int, sequence: int,
                     connections: dict[str, float], suspected_duplicate: int,
                     own_epoch: int, own_sequence: int, now: float, via: str = "",
                     max_datagram: int | None = None) -> UpdateResult:
        """Apply a routing update that arrived on the link to ``via`` (reference §2.3 step 3).

        ``own_epoch`` and ``own_sequence`` are those of our latest routing update."""
        if not node_id:
            return UpdateResult(UpdateVerdict.IGNORE)
        if node_id == self.node_id:
            if epoch == own_epoch:
                # Our own update coming back, or, with a sequence we never sent, a forgery
                # (only this process has this epoch).
                return UpdateResult(UpdateVerdict.FORGED_OWN if sequence > own_sequence
                                    else UpdateVerdict.IGNORE)
            accused = suspected_duplicate == own_epoch
            if epoch > own_epoch:
                return UpdateResult(UpdateVerdict.CONFLICT, conflict_epoch=epoch, accused=accused)
            return UpdateResult(UpdateVerdict.OLDER_SELF, accused=accused)
        early = self.precheck(node_id=node_id, update_id=update_id, epoch=epoch,
                              sequence=sequence, connections=connections,
                              suspected_duplicate=suspected_duplicate, via=via)
        if early is not None:
            return early
        record = self.records.get(node_id)
        self.seen_updates[update_id] = now
        if len(self.seen_updates) > self.caps.max_seen:
            del self.seen_updates[next(iter(self.seen_updates))]  # the oldest
        if suspected_duplicate:
            if record is None or record.epoch < suspected_duplicate or \
                    (self.exact_settle and record.epoch != suspected_duplicate):
                return UpdateResult(UpdateVerdict.ACCEPT, applied=False)
            # The older node settles the conflict: its record again, whichever newer epoch
            # holds it (Receptor requires the very epoch named, so ever newer forged epochs
            # kept a record hijacked).  Receptor applies no connections here; we take the
            # survivor's own (the duplicate's linger in ``known`` otherwise, and compute()
            # needs both ends to list an edge).
            record.epoch, record.sequence = epoch, sequence
            record.settled_above = max(record.settled_above, suspected_duplicate)
            changed = self.known.get(node_id) != connections
            self._set_connections(node_id, connections)
            return UpdateResult(UpdateVerdict.ACCEPT, connections_changed=changed, settled=True)
        evicted = self._room_for(via) if record is None and not self.admits_node(node_id) \
            else None
        new_node = record is None
        if evicted is not None:
            self._forget(evicted[0])
            self.evictions_left -= 1
        if new_node and via and node_id not in self.introduced_by:
            self.introduced_by[node_id] = via
            self.introduced.setdefault(via, {})[node_id] = None
        self.records[node_id] = NodeRecord(
            epoch, sequence, now, max_datagram,
            settled_above=record.settled_above if record and record.epoch == epoch else 0)
        changed = self.known.get(node_id) != connections or node_id not in self.known
        if changed:
            # Receptor also deletes every other node's edge to node_id that this update does
            # not list.  We keep each node's own word instead and use an edge only when both
            # ends list it (see compute): deleting made an old update that arrived late (in a
            # new neighbour's database) erase a live edge until its owner flooded again.
            self._set_connections(node_id, connections)
        result = UpdateResult(UpdateVerdict.ACCEPT, new_node=new_node, connections_changed=changed)
        if evicted is not None:
            result.evicted, result.evicted_from = evicted
        return result

    def sweep(self, now: float, node_expiry: float) -> list[str]:
        """Forget old update IDs, and nodes that have been unreachable for ``node_expiry`` s.

        :return: the node IDs that were forgotten.
        """
        self.evictions_left = EVICTIONS_PER_SWEEP
        for uid, seen in list(self.seen_updates.items()):
            if now - seen > SEEN_UPDATE_TTL:
                del self.seen_updates[uid]
        forgotten = []
        for node in list(self.known):
            if node == self.node_id or node in self.table:
                self.unreachable_since.pop(node, None)
                continue
            since = self.unreachable_since.setdefault(node, now)
            if now - since >= node_expiry:
                forgotten.append(node)
        for node in forgotten:
            self._forget(node)
            for edges in self.known.values():
                edges.pop(node, None)
        self.edge_count = sum(len(edges) for node, edges in self.known.items()
                              if node != self.node_id)
        return forgotten

    def confirmed_connections(self) -> dict[str, dict[str, float]]:
        """Each known node's links, without those the other end no longer reports (our own
        links all count): what Receptor's ``status`` shows as known connections."""
        known = self.known
        return {node: {peer: cost for peer, cost in edges.items()
                       if node == self.node_id or peer not in known or node in known[peer]}
                for node, edges in known.items()}

    # -- route computation -------------------------------------------------------------

    def compute(self) -> dict[str, str]:
        """Recompute the routing table (destination → next hop) with Dijkstra."""
        cost: dict[str, float] = {self.node_id: 0.0}
        first_hop: dict[str, str] = {}
        previous: dict[str, str] = {}
        queue: list[tuple[float, str]] = [(0.0, self.node_id)]
        done: set[str] = set()
        while queue:
            dist, node = heapq.heappop(queue)
            if node in done:
                continue
            done.add(node)
            for neighbor, edge in self.known.get(node, {}).items():
                back = self.known.get(neighbor)
                if back is None:
                    continue  # only nodes with their own entry are destinations
                if node != self.node_id and node not in back:
                    continue  # a link both ends report (our own links count at once)
                candidate = dist + edge
                if candidate < cost.get(neighbor, float("inf")):
                    cost[neighbor] = candidate
                    first_hop[neighbor] = neighbor if node == self.node_id else first_hop[node]
                    previous[neighbor] = node
                    heapq.heappush(queue, (candidate, neighbor))
        self.table = {dest: hop for dest, hop in first_hop.items() if dest != self.node_id}
        self.paths = {}
        for dest in self.table:
            path = [dest]
            while previous.get(path[-1], self.node_id) != self.node_id:
                path.append(previous[path[-1]])
            self.paths[dest] = path[::-1]
        return self.table
