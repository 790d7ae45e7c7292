"""The mesh core: routing-update flooding, forwarding and delivery of data messages.

Receptor calls this layer Netceptor.  Backends hand it sessions (:meth:`run_session`), which
its :class:`~mesh.net.links.LinkLayer` runs; services bind
:class:`~mesh.net.endpoint.Endpoint` objects (:meth:`listen`), which
:class:`~mesh.net.adverts.Adverts` advertises; the pure :class:`~mesh.net.router.Router`
decides routes.  :meth:`stats` is the read-only view for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
import struct
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

import structlog

from mesh.net import messages as m
from mesh.net.adverts import AD_INTERVAL, Adverts
from mesh.net.backend import LinkOptions, Session, SessionClosed
from mesh.net.control_drops import ControlDrops
from mesh.net.control_limits import DEFAULT_MAX_NODES, ControlCaps, ControlLimits, pruned_names
from mesh.net.duplicate_watch import ALARM as DUPLICATE_ALARM, DuplicateWatch
from mesh.net.endpoint import Endpoint, RouteError
from mesh.net.firewall import Firewall, Verdict
from mesh.net.highwayhash import node_hash
from mesh.net.links import DEFAULT_IDLE_TIMEOUT, KEEPALIVE_AFTER, Link, LinkLayer
from mesh.net.router import Router, UpdateResult, UpdateVerdict
from mesh.tasks import DueTimer, cancel_and_wait

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.net.stats import NetStats

log = structlog.get_logger(__name__)

#: At most this many node names per kind of change in a ``routing_table_recalculated`` event.
ROUTE_LOG_NAMES = 10

#: How often a mesh node floods a fresh routing update when nothing changed: changes are
#: flooded at once, a new link gets every update we hold (the link-state database) and
#: keepalives prove that links are alive, so this is only a safety net.  Every node's refresh
#: reaches every node, so it is most of what a big mesh does at rest.
MESH_ROUTE_REFRESH = 120.0
#: A forged update of ours with a sequence from here on is answered with a new epoch, not a
#: higher sequence (sequences are Go uint64s: a forger could take the top one).
SEQUENCE_CEILING = 2 ** 63
#: Seconds between two log lines about forged updates of this node.
RECLAIM_LOG_INTERVAL = 10.0
#: A node unreachable this long is forgotten (Receptor keeps it forever).
NODE_EXPIRY = 60.0
#: Datagram size for QUIC with peers that do not negotiate (Go Receptor).
GO_DATAGRAM = 1200
#: Datagram size we offer to nodes of this project (fits a 65535-byte frame with headers).
OUR_DATAGRAM = 60000
RESERVED_SERVICES = ("ping", "unreach")
#: How often unreachable nodes, stale adverts and old update IDs are forgotten.
SWEEP_INTERVAL = 5.0

_HASHES = struct.Struct(">QQ")
_ALNUM = string.ascii_letters + string.digits


def random_id(length: int = 8) -> str:
    return "".join(random.choices(_ALNUM, k=length))


class ServiceInUse(Exception):
    """The service name is reserved or already bound."""


class Netceptor:
    """One node's presence on the mesh."""

    def __init__(self, node_id: str, *, firewall: Firewall | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, node_expiry: float = NODE_EXPIRY,
                 max_datagram: int = OUR_DATAGRAM, max_nodes: int = DEFAULT_MAX_NODES,
                 on_link_up: Callable[[str, float], None] | None = None,
                 on_link_down: Callable[[str, str], None] | None = None,
                 on_duplicate: Callable[[str], None] | None = None,
                 on_routes_changed: Callable[[], None] | None = None) -> None:
        self.node_id = node_id
        self.my_hash = node_hash(node_id)
        self.firewall = firewall or Firewall()
        self.node_expiry = node_expiry
        self.max_datagram = max_datagram
        # Receptor uses seconds × 2^24 + 24 random bits, so a node restarted within the same
        # second gets a smaller epoch half the time and its updates are ignored; a finer
        # clock keeps restarts ordered and stays comparable with Go's epochs.
        self.epoch = int(time.time() * (1 << 24))
        self.sequence = 0
        #: When a forged update of ours was last logged (see _reclaim).
        self._reclaimed_at = -RECLAIM_LOG_INTERVAL
        #: Our latest flooded routing update.
        self._own_update = b""
        #: The latest routing update of every node we route to, as we forward it: the
        #: link-state database a new neighbour gets at once.
        self._updates: dict[str, bytes] = {}
        #: Caps on what peers make us remember, and per-link budgets (``node: maxnodes``).
        self.limits = ControlLimits(ControlCaps(max_nodes))
        self.drops = ControlDrops(node_id, self.limits)
        self.router = Router(node_id, self.limits.caps)
        #: Updates with our node ID from other processes: alarms, evidence, settling.
        self.duplicates = DuplicateWatch(node_id, self.epoch)
        self.counters = {"routing_updates_sent": 0, "routing_updates_received": 0,
                         "data_forwarded": 0, "data_dropped": 0, "keepalives_sent": 0,
                         "duplicate_id_suspicions": 0}
        self.link_layer = LinkLayer(self, idle_timeout=idle_timeout, counters=self.counters)
        #: Set at the next routing update we take from a node (see :meth:`wait_heard_from`).
        self._heard_events: dict[str, asyncio.Event] = {}
        self.route_by_hash: dict[int, Link] = {}
        self.names: dict[int, str] = {self.my_hash: node_id}
        #: The bound datagram services, by service name.
        self.endpoints: dict[str, Endpoint] = {}
        self.adverts = Adverts(node_id, self.limits, self.router, self.link_layer, self.drops)
        #: Nodes the router forgot at the node cap since the last sweep (their adverts go then).
        self._evicted: set[str] = set()
        self._route_auth: Any = None
        self.on_link_up = on_link_up
        self.on_link_down = on_link_down
        self.on_duplicate = on_duplicate
        #: Called after every recomputation of the routing table.
        self.on_routes_changed = on_routes_changed
        self._flood = DueTimer()
        #: When to repeat our "you are the duplicate" update (see mesh.net.duplicate_watch).
        self._settle = DueTimer()
        self._recompute = DueTimer()
        #: The link maintenance timer (keepalives, idle timeouts, sweeps).
        self._maintain = DueTimer()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def links(self) -> dict[str, Link]:
        """The established links, by neighbour (do not change it: the link layer's)."""
        return self.link_layer.links

    @property
    def work_commands(self) -> Callable[[], list[m.WorkCommand] | None]:
        """The work commands this node's control-service advert lists."""
        return self.adverts.work_commands

    @work_commands.setter
    def work_commands(self, work_commands: Callable[[], list[m.WorkCommand] | None]) -> None:
        self.adverts.work_commands = work_commands

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the timers (flooding, recomputation, adverts, idle checks, expiry)."""
        self._flood = DueTimer()
        self._recompute = DueTimer()
        self.adverts.timer = DueTimer()
        self._maintain = DueTimer()
        self._settle = DueTimer()
        self._tasks = [
            asyncio.create_task(self._run_schedule(self._settle, 24 * 3600.0,
                                                   self._settle_duplicates), name="settle"),
            asyncio.create_task(self._run_schedule(self._flood, MESH_ROUTE_REFRESH,
                                                   self._flood_update), name="flood"),
            asyncio.create_task(self._run_schedule(self._recompute, 24 * 3600.0,
                                                   self._recompute_routes), name="recompute"),
            asyncio.create_task(self._run_schedule(self.adverts.timer, AD_INTERVAL,
                                                   self.adverts.send_round), name="adverts"),
            asyncio.create_task(self._maintenance(), name="maintenance"),
        ]

    async def stop(self) -> None:
        self.link_layer.close_all("node stopping")
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _run_schedule(self, schedule: DueTimer, period: float,
                            action: Callable[[], None]) -> None:
        schedule.request(period)
        while True:
            await schedule.wait()
            try:
                action()
            except Exception:  # a bug here must not stop the timer
                log.exception("scheduled_action_failed", node_id=self.node_id)
            schedule.request(period)

    @property
    def route_auth(self) -> Any:
        """Signs our routing updates and adverts, checks others' (mesh_route_authenticator);
        None: nothing is signed or checked."""
        return self._route_auth

    @route_auth.setter
    def route_auth(self, authenticator: Any) -> None:
        self._route_auth = authenticator
        self.adverts.route_auth = authenticator
        self.router.exact_settle = authenticator is not None

    def _sweep_pending(self) -> bool:
        return len(self.router.known) > 1 or bool(self.router.seen_updates or self._evicted) \
            or self.adverts.pending()

    async def _maintenance(self) -> None:
        """One timer for every link (see :meth:`LinkLayer.tend`: keepalives, idle timeouts,
        the routing database again on lossy links) and the sweep of forgotten nodes.

        It sleeps until the next of those is due, and without a timer while there are no
        links and nothing to forget.
        """
        next_sweep: float | None = None
        while True:
            now = time.monotonic()
            due = self.link_layer.deadlines()
            if self._sweep_pending():
                next_sweep = next_sweep or now + SWEEP_INTERVAL
                due.append(next_sweep)
            else:
                next_sweep = None
            if due:
                self._maintain.request(max(0.0, min(due) - now))
            await self._maintain.wait()
            now = time.monotonic()
            self.link_layer.tend(now)
            if next_sweep is not None and now >= next_sweep:
                next_sweep = None
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        forgotten = self.router.sweep(now, self.node_expiry)
        for node in forgotten:
            log.info("node_expired", node_id=self.node_id, peer=node)
            self._updates.pop(node, None)
        gone = set(forgotten).union(node for node in self._evicted
                                    if node not in self.router.known)
        self._evicted.clear()
        self.adverts.sweep(now, gone)
        if forgotten:
            self._recompute.request(0.0)
        self.drops.flush(now)

    # -- the link layer's owner (mesh.net.links.LinkOwner) -----------------------------

    def routing_update(self, suspected_duplicate: int = 0) -> bytes:
        """A fresh routing update of this node (the next sequence), signed with route-auth."""
        self.sequence += 1
        update = m.RoutingUpdate(
            node_id=self.node_id, update_id=random_id(), update_epoch=self.epoch,
            update_sequence=self.sequence, connections=self.router.connections(),
            forwarding_node=self.node_id, suspected_duplicate=suspected_duplicate,
            max_datagram=self.advertised_datagram(),
            keepalive_ms=round(KEEPALIVE_AFTER * 1000))
        if self.route_auth is not None:
            self.route_auth.sign_update(update)
        return m.encode_routing_update(update)

    def latest_update(self) -> bytes:
        """Our latest flooded routing update (a fresh one before the first flood)."""
        return self._own_update or self.routing_update()

    def database(self) -> Iterable[bytes]:
        """The routing update of every node we route to, as we forward it."""
        return self._updates.values()

    def link_up(self, link: Link) -> None:
        """A new link (called by the link layer): its neighbour gets our database at once,
        and our next flood, routes and adverts follow soon."""
        self._learn_name(link.peer)
        # a neighbour that reconnects may be a restarted process: accept its new epoch (its
        # last update stays in the database new links get until a newer one replaces it: its
        # newest may have reached us by another path already, and the copy on this link is
        # then one we have seen)
        self.router.records.pop(link.peer, None)
        self.router.add_link(link.peer, link.cost)
        self._maintain.request(0.0)  # a node that had no links starts ticking again
        self.link_layer.send_database(link)  # what we know, at once (OSPF's database exchange)
        self._flood.request(0.1)
        self._recompute.request(0.1)
        self.adverts.soon()
        if self.on_link_up:
            self.on_link_up(link.peer, link.cost)

    def link_down(self, link: Link, reason: str) -> None:
        """A link ended (called by the link layer)."""
        self.router.remove_link(link.peer)
        self.route_by_hash = {h: l for h, l in self.route_by_hash.items() if l is not link}
        self._flood.request(0.1)
        self._recompute.request(0.0)
        if self.on_link_down:
            self.on_link_down(link.peer, reason)

    def receive(self, link: Link, msg: bytes) -> None:
        """A data or control message from ``link``'s neighbour (called by the link layer)."""
        kind = msg[0]
        if kind == m.MSG_DATA:
            self._route(msg, from_link=link)
        elif kind in (m.MSG_ROUTING_UPDATE, m.MSG_SERVICE_ADVERTISEMENT):
            try:
                if kind == m.MSG_ROUTING_UPDATE:
                    self._handle_routing_update(link, msg)
                else:
                    self.adverts.take(link, msg)
            except Exception as exc:  # one bad message must never end the link
                self.drops.dropped(link.peer, f"control message that raised "
                                              f"{type(exc).__name__}")
                log.debug("control_message_failed", node_id=self.node_id, peer=link.peer,
                          error=str(exc), exc_info=True)
        else:
            log.debug("unknown_message_type", node_id=self.node_id, peer=link.peer, type=kind)

    # -- links (mesh.net.backend.LinkHost) ---------------------------------------------

    async def run_session(self, session: Session, options: LinkOptions) -> str:
        """Run the link protocol on a new session until it ends; returns why it ended."""
        return await self.link_layer.run_session(session, options)

    async def wait_link_down(self, peer: str) -> None:
        """Return once this node has no link to ``peer``."""
        await self.link_layer.wait_link_down(peer)

    async def wait_heard_from(self, peer: str) -> None:
        """Return at the next fresh routing update from ``peer`` that we take (a dialer whose
        link to ``peer`` ended learns that it is back, through another neighbour)."""
        # (an event left by a cancelled waiter is one per former neighbour: kept, not counted)
        await self._heard_events.setdefault(peer, asyncio.Event()).wait()

    # -- routing updates ---------------------------------------------------------------

    def _learn_name(self, node: str, hashed: int | None = None) -> None:
        """Remember which node ID a 64-bit node hash stands for (data headers carry only
        hashes).  Receptor keeps the first name silently; a collision is logged here."""
        hashed = node_hash(node) if hashed is None else hashed
        if hashed not in self.names and len(self.names) >= self.limits.caps.max_names:
            self.names = pruned_names(self.names, self._name_in_use)
            if len(self.names) >= self.limits.caps.max_names:
                return
        known = self.names.setdefault(hashed, node)
        if known != node:
            log.error("node_hash_collision", node_id=self.node_id, peer=node, known=known,
                      detail=f"node IDs {known!r} and {node!r} have the same 64-bit hash; "
                             f"traffic for {node!r} goes to {known!r}: rename one")

    def _name_in_use(self, node: str) -> bool:
        return node == self.node_id or node in self.router.known or node in self.links

    def _handle_routing_update(self, link: Link, msg: bytes) -> None:
        if not self.limits.within_budget(link.peer, time.monotonic()):
            self.drops.dropped(link.peer, "routing update over the link budget")
            return
        seen = m.peek_routing_update(msg[1:])
        if seen is not None and seen[0] not in (link.peer, self.node_id) and \
                seen[1] in self.router.seen_updates:
            self.counters["routing_updates_received"] += 1
            return  # another copy of a flood we took already (one arrives per link)
        try:
            update = m.decode_routing_update(msg[1:])
        except m.MessageError as exc:
            self.drops.malformed(link.peer, "bad_routing_update", str(exc))
            return
        if not all(cost > 0 for cost in update.connections.values()):
            # Real nodes only have costs > 0; Dijkstra is wrong with negative edges, so a
            # hostile peer could otherwise steal even routes to our direct neighbours.
            self.drops.malformed(link.peer, "bad_routing_update",
                                 "connection costs must be greater than 0")
            return
        if update.node_id not in (self.node_id, link.peer):
            # what the router would drop anyway is dropped before the costlier checks (not a
            # neighbour's own update: the link checks below come first, as in Receptor)
            early = self.router.precheck(
                node_id=update.node_id, update_id=update.update_id, epoch=update.update_epoch,
                sequence=update.update_sequence, connections=update.connections,
                suspected_duplicate=update.suspected_duplicate, via=link.peer)
            if early is not None:
                self.counters["routing_updates_received"] += 1
                if early.verdict is UpdateVerdict.LIMIT:
                    self.drops.dropped(link.peer, early.limit)
                return
        if self.route_auth is not None and not self.route_auth.accept_update(update, link.peer):
            return
        if not self.limits.origin_within_budget(link.peer, update.node_id, "update",
                                                time.monotonic()):
            self.drops.dropped(link.peer, "routing updates of one node over the link budget")
            return
        self.counters["routing_updates_received"] += 1
        if update.forwarding_node != link.peer:
            self.link_layer.tear_down(link, "remote node ID changed unexpectedly")
            return
        if update.node_id == link.peer:
            their_cost = update.connections.get(self.node_id)
            if their_cost is None:
                if link.listed_us:
                    self.link_layer.tear_down(link, "remote node no longer lists us")
                return
            link.listed_us = True
            if their_cost != link.cost:
                self.link_layer.tear_down(link, f"we disagree about the connection cost "
                                                f"(ours {link.cost}, theirs {their_cost})")
                return
        result = self.router.apply_update(
            node_id=update.node_id, update_id=update.update_id, epoch=update.update_epoch,
            sequence=update.update_sequence, connections=update.connections,
            suspected_duplicate=update.suspected_duplicate, own_epoch=self.epoch,
            own_sequence=self.sequence, now=time.monotonic(), via=link.peer,
            max_datagram=update.max_datagram)
        if result.verdict is UpdateVerdict.IGNORE:
            return
        if result.verdict is UpdateVerdict.FORGED_OWN:
            self._reclaim(link.peer, update.update_sequence)
            return
        if result.verdict is UpdateVerdict.LIMIT:
            self.drops.dropped(link.peer, result.limit)
            return
        if result.verdict in (UpdateVerdict.OLDER_SELF, UpdateVerdict.CONFLICT):
            self._own_id_update(link, update, result)
            return
        if result.evicted:
            self._evict(result.evicted, result.evicted_from)
        heard = self._heard_events.pop(update.node_id, None)
        if heard is not None:
            heard.set()
        if result.new_node:
            # (Receptor floods its own update here, so the new node hears from everyone; a
            # mesh node gives every new neighbour its database instead, see link_up.)
            self._learn_name(update.node_id)
        if result.connections_changed:
            self._recompute.request(0.1)
        if result.settled:
            # a node ID conflict is being settled: what the impostor's updates made us (and
            # others) forget about the real node comes back with everyone's fresh update
            self._flood.request(0.1)
        try:
            out = m.reforward_routing_update(msg, link.peer, self.node_id)
        except m.MessageError:
            return
        if result.applied:
            self._updates[update.node_id] = out
        self.link_layer.broadcast(out, exclude=link)

    def _own_id_update(self, link: Link, update: m.RoutingUpdate, result: UpdateResult) -> None:
        """An update with our node ID from another process: an accusation raises an alarm; only
        evidence of an older live instance stops us (see mesh.net.duplicate_watch)."""
        now = time.monotonic()
        if result.accused:
            self.counters["duplicate_id_suspicions"] += 1
            accusation = self.duplicates.accused(peer=link.peer, epoch=update.update_epoch,
                                                 now=now)
            self._flood.request(max(0.1, accusation.reassert_in))  # others restore us
            if accusation.reassert:
                log.error("duplicate_node_id_suspected", node_id=self.node_id, peer=link.peer,
                          other_epoch=update.update_epoch,
                          suspicions=self.counters["duplicate_id_suspicions"],
                          detail="a routing update says another node uses this node ID; "
                                 "still running unless that node proves it was first")
        if result.verdict is UpdateVerdict.CONFLICT:
            if self.duplicates.heard_newer(peer=link.peer, epoch=result.conflict_epoch,
                                           sequence=update.update_sequence, now=now):
                log.error("duplicate_node_id_detected", node_id=self.node_id, peer=link.peer,
                          other_epoch=result.conflict_epoch,
                          detail="a newer node uses our node ID; telling it to stop")
            self._settle.request(0.0)
        elif self.duplicates.heard_older(peer=link.peer, epoch=update.update_epoch,
                                         sequence=update.update_sequence, now=now,
                                         accuses_us=result.accused):
            log.error("duplicate_node_id", node_id=self.node_id, peer=link.peer,
                      other_epoch=update.update_epoch,
                      detail=self.duplicates.stop_message(update.update_epoch))
            if self.on_duplicate:
                self.on_duplicate(self.node_id)

    def _reclaim(self, peer: str, sequence: int) -> None:
        """An update with our node ID, our epoch and a sequence we never sent: forged (only
        this process has this epoch), to make others believe our links are other than they
        are.  Outbid it as OSPF does with a stale copy of its own LSA: our next update gets a
        higher sequence, flooded at once (without route-auth, nothing else can tell a forged
        update of ours from a real one)."""
        now = time.monotonic()
        if sequence >= SEQUENCE_CEILING:
            # Outbidding would soon run out of numbers (a forger can send the top one): take
            # the next epoch instead, which every node prefers to the old one.  Only the next:
            # an instance started after this process (epochs are clock readings) stays newer,
            # so a genuine duplicate is still settled the same way.  Updates with our earlier
            # epochs can never count as another instance of this node.
            self.epoch += 1
            self.sequence = 0
            self.duplicates.renew(self.epoch)
            how = "taking a new epoch"
        else:
            self.sequence = sequence  # the next update is sequence + 1
            how = "flooding a newer one"
        if now - self._reclaimed_at >= RECLAIM_LOG_INTERVAL:
            self._reclaimed_at = now
            log.warning("routing_update_forged", node_id=self.node_id, peer=peer,
                        sequence=sequence, detail=f"a routing update of this node that it did "
                        f"not send (turn on route-auth to drop them): {how}")
        self._flood.request(0.1)

    def _settle_duplicates(self) -> None:
        """Tell newer nodes with our ID, again, that we were first (rate-limited)."""
        now = time.monotonic()
        epoch = self.duplicates.settle_due(now)
        if epoch and self.links:
            self.link_layer.broadcast(self.routing_update(epoch))
        delay = self.duplicates.next_settle_in(now)
        if delay is not None:
            self._settle.request(delay)

    def alarms(self) -> dict[str, str | None]:
        """Each alarm this layer can raise: its reason while raised, else None."""
        return {DUPLICATE_ALARM: self.duplicates.alarm(time.monotonic())}

    def _evict(self, node: str, link_peer: str) -> None:
        """The router forgot ``node`` to make room at the node cap (see Router._room_for)."""
        self._updates.pop(node, None)
        self._evicted.add(node)  # its adverts go at the next sweep
        self._recompute.request(0.1)
        if link_peer:
            self.drops.dropped(link_peer, "node forgotten for a node joining through another link")

    # -- timers' actions ---------------------------------------------------------------

    def _flood_update(self) -> None:
        if self.links:
            self.counters["routing_updates_sent"] += 1
            self._own_update = self.routing_update()
            self.link_layer.broadcast(self._own_update)

    def _recompute_routes(self) -> None:
        previous = self.router.table
        table = self.router.compute()
        for node, record in self.router.records.items():
            # unreachable: whatever epoch it comes back with is accepted, but not a late copy
            # of an older update from the same process (floods overtake each other)
            record.reachable = node in table
        self.route_by_hash = {}
        for dest, hop in table.items():
            link = self.links.get(hop)
            if link is not None:
                self.route_by_hash[node_hash(dest)] = link
        if table != previous and log.is_enabled_for(logging.INFO):
            self._log_route_changes(previous, table)
        if self.on_routes_changed:
            self.on_routes_changed()

    def _log_route_changes(self, previous: dict[str, str], table: dict[str, str]) -> None:
        """What a change of the routing table changed, at INFO; the whole topology only at
        DEBUG (a 300-node mesh's is a 300-entry map, which every node would render at every
        change while the mesh starts)."""
        fields: dict[str, object] = {"routes": len(table), "known_nodes": len(self.router.known)}
        changes = (("added", table.keys() - previous.keys()),
                   ("removed", previous.keys() - table.keys()),
                   ("rerouted", {d for d in table.keys() & previous.keys()
                                 if table[d] != previous[d]}))
        for name, nodes in changes:
            if nodes:
                shown = sorted(nodes)[:ROUTE_LOG_NAMES]
                more = len(nodes) - len(shown)
                fields[name] = shown + [f"and {more} more"] if more else shown
        if log.is_enabled_for(logging.DEBUG):
            fields["known_connections"] = {
                node: {peer: round(cost, 2) for peer, cost in sorted(edges.items())}
                for node, edges in sorted(self.router.confirmed_connections().items())}
            fields["routing_table"] = dict(sorted(table.items()))
        log.info("routing_table_recalculated", node_id=self.node_id, **fields)

    # -- services ----------------------------------------------------------------------

    def listen(self, service: str = "", *, advertise: bool = False, conn_type: int = 0,
               tags: dict[str, str] | None = None, hops: int = m.MAX_FORWARDING_HOPS,
               ) -> Endpoint:
        """Bind a datagram service (an empty name picks a free ephemeral one)."""
        if not service:
            service = random_id()
            while service in self.endpoints:
                service = random_id()
        if len(service.encode()) > m.MAX_SERVICE_NAME:
            raise ServiceInUse(f"service name too long: {service!r} (at most 8 bytes)")
        if service in RESERVED_SERVICES or service in self.endpoints:
            raise ServiceInUse(f"service {service} is already listening")
        endpoint = Endpoint(self, service, hops=hops)
        self.endpoints[service] = endpoint
        if advertise:
            self.adverts.add(service, conn_type, tags)
        return endpoint

    def release_service(self, service: str, endpoint: Endpoint) -> None:
        """Unbind ``endpoint`` (closed) from ``service``; its advert is withdrawn."""
        if self.endpoints.get(service) is endpoint:
            del self.endpoints[service]
        self.adverts.withdraw(service)

    def advertised_datagram(self) -> int:
        """The datagram size we offer: our setting, lowered by links that prefer smaller
        datagrams (e.g. UDP links, where large datagrams fragment)."""
        preferred = [link.session.preferred_datagram for link in self.links.values()
                     if link.session.preferred_datagram]
        return min([self.max_datagram, *preferred])

    def max_datagram_for(self, node: str) -> int:
        """QUIC datagram size to use with ``node``: large only if it negotiated it, and no
        larger than what every mesh node on the current route (and our first hop) accepts."""
        if node in (self.node_id, "localhost"):
            return self.max_datagram
        record = self.router.records.get(node)
        path = self.router.paths.get(node)
        if record is None or not record.max_datagram or not path:
            return GO_DATAGRAM
        sizes = [self.max_datagram]
        first_hop = self.links.get(path[0])
        if first_hop is not None and first_hop.session.preferred_datagram:
            sizes.append(first_hop.session.preferred_datagram)
        for hop in path:
            hop_record = self.router.records.get(hop)
            if hop_record is not None and hop_record.max_datagram:
                sizes.append(hop_record.max_datagram)
        return max(GO_DATAGRAM, min(sizes))

    # -- data path ---------------------------------------------------------------------

    def send_datagram(self, data: bytes, node: str, service: str, *, from_service: str,
                      hops: int = m.MAX_FORWARDING_HOPS) -> None:
        """Originate one data message; raises RouteError with Receptor's problem text."""
        if node.lower() == "localhost":
            node = self.node_id
        to_hash = node_hash(node)
        self._learn_name(node, to_hash)
        try:
            msg = m.encode_data(hops, self.my_hash, to_hash, from_service, service, data)
        except m.MessageError as exc:
            raise RouteError(str(exc)) from None
        self._route(msg, from_link=None)

    def _name(self, node_hash_value: int) -> str:
        return self.names.get(node_hash_value, "")

    def _route(self, msg: bytes | bytearray, *, from_link: Link | None) -> None:
        local = from_link is None
        if len(msg) < m.HEADER_LEN:
            log.warning("data_too_short", node_id=self.node_id,
                        peer=from_link.peer if from_link else None, size=len(msg))
            return
        hops = msg[1]
        from_hash, to_hash = _HASHES.unpack_from(msg, 4)
        if self.firewall:
            verdict = self.firewall.check(self._name(from_hash), self._name(to_hash),
                                          _service(msg, 20), _service(msg, 28))
            if verdict is not Verdict.ACCEPT:
                if verdict is Verdict.REJECT:
                    self._unreachable(msg, "blocked by firewall")
                if local:
                    raise RouteError("blocked by firewall")
                return
        if to_hash == self.my_hash:
            self._deliver(msg, local)
            return
        if hops <= 0:
            self._unreachable(msg, "message expired")
            return
        link = self.route_by_hash.get(to_hash)
        if link is None:
            if local:
                raise RouteError("no route to node")
            self.counters["data_dropped"] += 1
            return
        if not local and link.session.congested():
            self.counters["data_dropped"] += 1
            return
        out = bytearray(msg)
        out[1] = hops - 1
        try:
            link.session.send(out)
            link.last_sent = time.monotonic()
        except SessionClosed:
            if local:
                raise RouteError("no connection to next hop") from None
            return
        if not local:
            self.counters["data_forwarded"] += 1

    def _deliver(self, msg: bytes | bytearray, local: bool) -> None:
        from_hash = _HASHES.unpack_from(msg, 4)[0]
        from_node = self.names.get(from_hash)
        if from_node is None:
            log.warning("hash_not_found", node_id=self.node_id, hash=hex(from_hash))
            return
        from_service, to_service = _service(msg, 20), _service(msg, 28)
        data = bytes(msg[m.HEADER_LEN:])
        if to_service == "ping":
            try:
                self.send_datagram(b"", from_node, from_service, from_service="ping")
            except RouteError:
                pass
            return
        if to_service == "unreach":
            try:
                notice = m.decode_unreachable(data)
            except m.MessageError:
                return
            if notice.from_node == self.node_id:
                endpoint = self.endpoints.get(notice.from_service)
                if endpoint is not None:
                    endpoint.deliver_unreachable(notice, from_node)
            return
        endpoint = self.endpoints.get(to_service)
        if endpoint is None:
            if local:
                raise RouteError("service unknown")
            self._unreachable(msg, "service unknown")
            return
        endpoint.deliver(data, from_node, from_service)

    def _unreachable(self, msg: bytes | bytearray, problem: str) -> None:
        from_service = _service(msg, 20)
        if from_service == "unreach":
            return
        from_hash, to_hash = _HASHES.unpack_from(msg, 4)
        from_node = self._name(from_hash)
        if not from_node:
            return
        notice = m.Unreachable(from_node=from_node, to_node=self._name(to_hash),
                               from_service=from_service, to_service=_service(msg, 28),
                               problem=problem)
        try:
            self.send_datagram(m.encode_unreachable(notice), from_node, "unreach",
                               from_service="unreach")
        except RouteError:
            pass

    # -- status ------------------------------------------------------------------------

    def advertisements(self) -> list[m.ServiceAdvertisement]:
        """Every advert we know, ours (stamped now) first."""
        return self.adverts.advertisements()

    def stats(self) -> NetStats:
        """A read-only view of the links, routes, counters and dropped control messages."""
        # imported when first asked (a metrics scrape): its frozen dataclasses cost ~2 ms to
        # build, which every node start would pay otherwise
        from mesh.net.stats import LinkStats, NetStats, route_auth_drops

        return NetStats(
            links=tuple(LinkStats.of(link) for link in self.links.values()),
            routes=len(self.router.table), known_nodes=len(self.router.known),
            control_plane_drops=dict(self.limits.totals),
            route_auth_drops=route_auth_drops(self.route_auth),
            routing_updates_sent=self.counters["routing_updates_sent"],
            routing_updates_received=self.counters["routing_updates_received"],
            data_forwarded=self.counters["data_forwarded"],
            data_dropped=self.counters["data_dropped"],
            keepalives_sent=self.counters["keepalives_sent"],
            duplicate_id_suspicions=self.counters["duplicate_id_suspicions"])


def _service(msg: bytes | bytearray, offset: int) -> str:
    return bytes(msg[offset:offset + 8]).rstrip(b"\0").decode("utf-8", "replace")
