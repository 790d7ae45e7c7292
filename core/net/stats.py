"""A read-only view of one node's mesh layer: :meth:`mesh.net.netceptor.Netceptor.stats`.

What the metrics and the ``stats`` command report, taken at one moment: later traffic does not
change a view already taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.net.links import Link


@dataclass(frozen=True)
class LinkStats:
    """One link: its neighbour, cost and traffic.  The traffic is what the backend counts
    (:class:`mesh.net.backend.Session`); 0 for a backend that does not count."""

    peer: str
    cost: float
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int

    @classmethod
    def of(cls, link: Link) -> LinkStats:
        session = link.session
        return cls(link.peer, link.cost, session.messages_in, session.messages_out,
                   session.bytes_in, session.bytes_out)


@dataclass(frozen=True)
class NetStats:
    """The node's links, routes, counters and dropped control messages."""

    #: One entry per established link, in the order the links came up.
    links: tuple[LinkStats, ...]
    #: Destinations in the routing table.
    routes: int
    #: Nodes in the known-connections graph (this node included).
    known_nodes: int
    #: Routing updates this node flooded (refreshes and changes, not the forwarded ones).
    routing_updates_sent: int
    #: Routing updates received (copies of a flood already taken included).
    routing_updates_received: int
    #: Data messages forwarded for other nodes.
    data_forwarded: int
    #: Data messages of other nodes dropped (no route, a congested link).
    data_dropped: int
    #: Keepalives sent on mesh links that carried nothing else for an interval.
    keepalives_sent: int
    #: Routing updates that said another node uses this node's ID.
    duplicate_id_suspicions: int
    #: Routing updates and adverts dropped by a control-plane limit or malformed, by kind
    #: (``ControlLimits.totals``).
    control_plane_drops: dict[str, int]
    #: Routing updates and adverts dropped by route authentication: kind → reason → count
    #: (empty while route-auth is off).
    route_auth_drops: dict[str, dict[str, int]]


def route_auth_drops(authenticator: Any) -> dict[str, dict[str, int]]:
    """kind → reason → drops of a route authenticator (a copy); empty without one, or when
    it (a plugin's) has no ``stats()`` with ``dropped_by``, which is optional."""
    stats = getattr(authenticator, "stats", None)
    dropped = stats().get("dropped_by", {}) if callable(stats) else {}
    return {kind: dict(reasons) for kind, reasons in dropped.items()}
