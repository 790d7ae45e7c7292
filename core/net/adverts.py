"""Service adverts: this node's own, and the other nodes' that it keeps and passes on.

Our adverts go to every link each :data:`AD_INTERVAL` (and soon after a service is bound or a
link comes up); a new link also gets every advert we hold, once.  An advert received is
checked (the link's budget, staleness, tombstones of withdrawn ones, the advert caps, route
authentication, the origin's budget) before it is kept and flooded on; Receptor keeps and
floods every advert.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection

from mesh.net import messages as m
from mesh.net.backend import SessionClosed
from mesh.net.control_drops import ControlDrops
from mesh.net.control_limits import AdTable, AdTombstones, ControlLimits
from mesh.net.links import Link, LinkLayer
from mesh.net.router import Router
from mesh.tasks import DueTimer

AD_INTERVAL = 60.0
#: An advert not refreshed this long is forgotten (Go re-sends every 60 s).
AD_EXPIRY = 3 * AD_INTERVAL + 10


@dataclass
class LocalAd:
    """A service of this node that it advertises."""

    conn_type: int
    tags: dict[str, str] | None


class Adverts:
    """The adverts one node sends, keeps and floods."""

    def __init__(self, node_id: str, limits: ControlLimits, router: Router,
                 link_layer: LinkLayer, drops: ControlDrops) -> None:
        self.node_id = node_id
        self.limits = limits
        #: Asked whether an advert's node may be remembered (the node cap).
        self.router = router
        self.link_layer = link_layer
        self.drops = drops
        #: Our advertised services, by name.
        self.local: dict[str, LocalAd] = {}
        #: Adverts from other nodes: (node, service) → (advert, received at, raw message).
        self.table: AdTable = AdTable(limits.caps)
        #: Adverts withdrawn by a cancel, so that a replay of an older one is dropped.
        self.tombstones: AdTombstones = AdTombstones(limits.caps)
        #: Signs our adverts and checks others' (the node's route authenticator), or None.
        self.route_auth: Any = None
        #: The work commands the control service's advert lists.
        self.work_commands: Callable[[], list[m.WorkCommand] | None] = lambda: None
        #: When the next round of adverts is due (see :meth:`send_round`).
        self.timer = DueTimer()

    # -- ours --------------------------------------------------------------------------

    def add(self, service: str, conn_type: int, tags: dict[str, str] | None) -> None:
        """Advertise ``service`` of this node, soon."""
        self.local[service] = LocalAd(conn_type, tags)
        self.soon()

    def withdraw(self, service: str) -> None:
        """Stop advertising ``service``: the links get a cancel at once."""
        ad = self.local.pop(service, None)
        if ad is not None and self.link_layer.links:
            self.link_layer.broadcast(self._encode(service, ad, cancel=True))

    def soon(self) -> None:
        """Send a round of adverts in half a second (a service bound, a link up)."""
        self.timer.request(0.5)

    def _make(self, service: str, ad: LocalAd, *, cancel: bool = False,
              ) -> m.ServiceAdvertisement:
        work = self.work_commands() if (ad.tags or {}).get("type") == "Control Service" else None
        return m.ServiceAdvertisement(
            node_id=self.node_id, service=service, time_ns=time.time_ns(),
            conn_type=ad.conn_type, tags=None if cancel else ad.tags,
            work_commands=work, cancel=cancel)

    def _encode(self, service: str, ad: LocalAd, *, cancel: bool = False) -> bytes:
        """One of our adverts as we send it (signed when route authentication is on)."""
        advert = self._make(service, ad, cancel=cancel)
        if self.route_auth is not None:
            self.route_auth.sign_advertisement(advert)
        return m.encode_service_advertisement(advert)

    def send_round(self) -> None:
        """Our adverts to every link, and every advert we hold to the links that are new."""
        links = self.link_layer.links
        if not links:
            return
        for service, ad in list(self.local.items()):
            self.link_layer.broadcast(self._encode(service, ad))
        foreign = [raw for _, _, raw in self.table.values()]
        for link in list(links.values()):
            if link.needs_ads:
                link.needs_ads = False
                for raw in foreign:
                    try:
                        link.send(raw)
                    except SessionClosed:
                        break

    # -- others' -----------------------------------------------------------------------

    def take(self, link: Link, msg: bytes) -> None:
        """An advert message received on ``link``: kept and flooded on, or dropped."""
        if not self.limits.within_budget(link.peer, time.monotonic()):
            self.drops.dropped(link.peer, "advertisement over the link budget")
            return
        try:
            ad = m.decode_service_advertisement(msg[1:])
        except m.MessageError as exc:
            self.drops.malformed(link.peer, "bad_advertisement", str(exc))
            return
        if ad.node_id == self.node_id:
            return
        # the cheap checks first: copies, stale adverts and floods never reach the signature
        key = (ad.node_id, ad.service)
        held = self.table.get(key)
        if held is not None and held[0].time_ns >= ad.time_ns:
            return
        if self.tombstones.covers(key, ad.time_ns):
            return  # withdrawn since: a replay, or a copy of the cancel flooded back to us
        admitted = self.router.admits_node(ad.node_id)
        if ad.cancel:
            refused = "" if held is not None or admitted else "advertisement of a new node"
        else:
            refused = self.table.refuses(key, node_admitted=admitted)
        if refused:
            self.drops.dropped(link.peer, refused)
            return
        if self.route_auth is not None and not self.route_auth.accept_advertisement(ad, link.peer):
            return
        if not self.limits.origin_within_budget(link.peer, ad.node_id, "ad", time.monotonic()):
            self.drops.dropped(link.peer, "advertisements of one node over the link budget")
            return
        if ad.cancel:
            self.table.pop(key, None)
            self.tombstones.add(key, ad.time_ns, time.monotonic())
        else:
            self.table[key] = (ad, time.monotonic(), bytes(msg))
            self.tombstones.discard(key)
        self.link_layer.broadcast(msg, exclude=link)

    def sweep(self, now: float, gone: Collection[str]) -> None:
        """Forget the adverts of the nodes ``gone`` and those not refreshed for AD_EXPIRY."""
        for key, (_, received, _) in list(self.table.items()):
            if key[0] in gone or now - received > AD_EXPIRY:
                del self.table[key]
        # (kept while their node is known: a replayed signed advert verifies at any age)
        self.tombstones.sweep(now, math.inf, gone)

    def pending(self) -> bool:
        """True while there are adverts or tombstones that a sweep may forget."""
        return bool(self.table or len(self.tombstones))

    # -- status ------------------------------------------------------------------------

    def advertisements(self) -> list[m.ServiceAdvertisement]:
        """Every advert we know, ours (stamped now) first."""
        ours = [self._make(service, ad) for service, ad in self.local.items()]
        return ours + [ad for ad, _, _ in self.table.values()]
