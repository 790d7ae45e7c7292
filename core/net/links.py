"""Links: the link protocol on the sessions backends hand the node, from handshake to close.

:meth:`LinkLayer.run_session` runs one session: the handshake (routing updates both ways,
then accept or reject the neighbour), the link loop (reject and keepalive messages are the
link's own; data and control messages go to the :class:`LinkOwner`, the node's
:class:`~mesh.net.netceptor.Netceptor`), and the tear-down.  Liveness between runs of the
node's maintenance timer: :meth:`LinkLayer.deadlines` says when a link next needs attention,
:meth:`LinkLayer.tend` gives it (keepalives on links we were quiet on, idle timeouts, the
routing database again on lossy links).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Iterable, Protocol

import structlog

from mesh.net import messages as m
from mesh.net.backend import LinkOptions, Session, SessionClosed

log = structlog.get_logger(__name__)

#: Receptor floods every node's routing update every 10 s; a link to a Go peer still hears
#: from us that often (a link idle for 21 s is closed), but with the update it already has.
ROUTE_UPDATE_INTERVAL = 10.0
#: A link that may lose messages (UDP) gets the database again this often, so an update it
#: dropped is repaired without a refresh of the whole mesh.
LOSSY_LINK_RESYNC = 30.0
HANDSHAKE_RESEND = 1.0
HANDSHAKE_SENDS = 11
DEFAULT_IDLE_TIMEOUT = 21.0
#: Between two mesh nodes (never to Go peers): a keepalive message type and its timing, so a
#: silently dead neighbour (SIGSTOP, pulled cable) is noticed in 2 s, not 21 s.  Traffic
#: counts as liveness: a link we sent nothing on for KEEPALIVE_AFTER seconds gets a keepalive,
#: so a live neighbour is heard from at least every 1.2 s; links due within KEEPALIVE_BATCH
#: of each other get theirs at the same wake-up, so an idle node wakes about once a second.
#: The timeout leaves 0.8 s more for a neighbour's event loop or the network to fall behind
#: before a live link is called dead (tests/test_cpu_hog.py: none is, with both cores
#: saturated).
MSG_KEEPALIVE = 0x04
KEEPALIVE_MESSAGE = bytes([MSG_KEEPALIVE])
KEEPALIVE_AFTER = 1.2
KEEPALIVE_BATCH = 0.2
MESH_LINK_TIMEOUT = 2.0
#: A peer's keepalive period is negotiated (``MeshKeepalive`` in its routing updates): the
#: link times out after that period plus this margin (MESH_LINK_TIMEOUT with ours) ...
KEEPALIVE_MARGIN = MESH_LINK_TIMEOUT - KEEPALIVE_AFTER
#: ... or, on a link that may lose messages (UDP), after this many periods (two keepalives
#: may be lost) ...
LOSSY_KEEPALIVES = 3
#: ... and after this long with a mesh peer of an earlier version that does not say (it
#: sends a keepalive on a link silent for a whole 1.25 s tick).
LEGACY_MESH_LINK_TIMEOUT = 4.0
#: A link found past its timeout is closed only if it is still silent this much later, after
#: the event loop has read what was waiting: a node that was itself starved or stopped finds
#: its links "silent" only because it has not read them yet.
TIMEOUT_CONFIRM = 0.2
#: A peer announcing a longer period than this is held to it (a link is never kept alive on
#: faith for longer than Go's 21 s idle timeout allows).
MAX_KEEPALIVE = 10.0


@dataclass
class Link:
    """An established link to a neighbour."""

    peer: str
    session: Session
    cost: float
    last_recv: float
    listed_us: bool = False
    close_reason: str = ""
    #: A new link gets every advert we know (not only ours) with the next advert round.
    needs_ads: bool = True
    #: The neighbour is a mesh node (it sent MeshMaxDatagram): keepalives are on.
    mesh_peer: bool = False
    #: When we last sent anything on it (time.monotonic()).
    last_sent: float = 0.0
    #: The neighbour's keepalive period (seconds) if it told us (MeshKeepalive).
    peer_keepalive: float | None = None
    #: When the maintenance timer first found the link past its timeout (see TIMEOUT_CONFIRM).
    overdue_at: float | None = None
    #: When it last got our routing database (see LOSSY_LINK_RESYNC).
    synced_at: float = 0.0

    def send(self, message: bytes | bytearray) -> None:
        """Queue ``message`` for the neighbour (raises SessionClosed once closed)."""
        self.session.send(message)
        self.last_sent = time.monotonic()


def link_timeout(link: Link, idle_timeout: float) -> float:
    """How long ``link`` may be silent before it is closed: ``idle_timeout`` with a Go peer,
    else after the keepalive period the mesh peer announced (see KEEPALIVE_MARGIN)."""
    if not link.mesh_peer:
        return idle_timeout
    period = link.peer_keepalive
    if period is None:
        return LEGACY_MESH_LINK_TIMEOUT
    if not link.session.reliable:
        return LOSSY_KEEPALIVES * period
    return period + KEEPALIVE_MARGIN


def quiet_limit(link: Link) -> float:
    """How long we may send nothing on ``link`` before it gets a keepalive."""
    return KEEPALIVE_AFTER if link.mesh_peer else ROUTE_UPDATE_INTERVAL


class LinkOwner(Protocol):
    """What the link layer needs from the node it serves (a Netceptor)."""

    node_id: str

    def routing_update(self) -> bytes:
        """A fresh routing update of this node (each handshake send gets one)."""
        ...

    def latest_update(self) -> bytes:
        """This node's latest flooded routing update (what a peer that knows no keepalives
        gets when we were quiet on its link)."""
        ...

    def database(self) -> Iterable[bytes]:
        """Every routing update the node holds, as it forwards them."""
        ...

    def link_up(self, link: Link) -> None:
        """``link`` was accepted (it is in :attr:`LinkLayer.links` already)."""
        ...

    def link_down(self, link: Link, reason: str) -> None:
        """``link`` ended for ``reason`` (it is no longer in :attr:`LinkLayer.links`)."""
        ...

    def receive(self, link: Link, msg: bytes) -> None:
        """A message from ``link``'s neighbour that is not the link's own (data, routing
        update, advert, or of a type we do not know)."""
        ...


class LinkLayer:
    """The node's links: one per neighbour, by node ID."""

    def __init__(self, owner: LinkOwner, *, idle_timeout: float,
                 counters: dict[str, int]) -> None:
        self.owner = owner
        self.idle_timeout = idle_timeout
        #: The node's counters (this layer counts ``keepalives_sent``).
        self.counters = counters
        self.links: dict[str, Link] = {}
        #: Set when the link to a neighbour ends (see :meth:`wait_link_down`).
        self._down_events: dict[str, asyncio.Event] = {}

    # -- one session -------------------------------------------------------------------

    async def run_session(self, session: Session, options: LinkOptions) -> str:
        """Run the link protocol on a new session until it ends; returns why it ended."""
        try:
            link = await self._handshake(session, options)
        except SessionClosed as exc:
            session.close()
            reason = str(exc) or "closed during handshake"
            log.debug("handshake_failed", node_id=self.owner.node_id, peer=session.peer_name,
                      reason=reason)
            return reason
        if link is None:
            session.close()
            return "rejected"
        try:
            await self._link_loop(link)
        except SessionClosed:
            pass
        finally:
            session.close()
            self._remove(link)
        return link.close_reason or "closed"

    async def wait_link_down(self, peer: str) -> None:
        """Return once there is no link to ``peer``."""
        while peer in self.links:
            await self._down_events.setdefault(peer, asyncio.Event()).wait()

    async def _handshake(self, session: Session, options: LinkOptions) -> Link | None:
        node_id = self.owner.node_id
        loop = asyncio.get_running_loop()
        for _ in range(HANDSHAKE_SENDS):
            session.send(self.owner.routing_update())
            deadline = loop.time() + HANDSHAKE_RESEND
            while (remaining := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        msg = await session.recv()
                except asyncio.TimeoutError:
                    break
                if not msg:
                    continue
                if msg[0] == m.MSG_REJECT:
                    log.warning("link_rejected_by_peer", node_id=node_id, peer=session.label)
                    return None
                if msg[0] != m.MSG_ROUTING_UPDATE:
                    continue
                try:
                    update = m.decode_routing_update(msg[1:])
                except m.MessageError as exc:
                    log.warning("bad_handshake", node_id=node_id, peer=session.label,
                                error=str(exc))
                    continue
                link = self._accept(session, options, update.forwarding_node)
                if link is not None:
                    link.mesh_peer = update.max_datagram is not None
                    if update.keepalive_ms:
                        link.peer_keepalive = min(update.keepalive_ms / 1000, MAX_KEEPALIVE)
                return link
        log.warning("handshake_timeout", node_id=node_id, peer=session.label)
        return None

    def _reject(self, session: Session, peer: str, reason: str, level: str = "warning") -> None:
        getattr(log, level)("link_rejected", node_id=self.owner.node_id, peer=peer,
                            reason=reason, address=session.label)
        try:
            session.send(m.REJECT_MESSAGE)
        except SessionClosed:
            pass

    def _accept(self, session: Session, options: LinkOptions, peer: str) -> Link | None:
        if not peer:
            self._reject(session, peer, "peer sent no node ID")
            return None
        if peer == self.owner.node_id:
            self._reject(session, peer, "tried to connect using our own node ID")
            return None
        if options.allowedpeers and peer not in options.allowedpeers:
            self._reject(session, peer, "peer not in allowedpeers")
            return None
        if peer in self.links:
            # symmetric peer configs: the dialer waits for the other link to end (redial_loop)
            session.redundant_with = peer
            self._reject(session, peer, f"already connected to {peer}", level="info")
            return None
        # a TLS plugin that refuses the certificate logs why: give its event the peer too
        with structlog.contextvars.bound_contextvars(peer=peer):
            cert_ids = session.peer_node_ids()
        if cert_ids is not None and peer not in cert_ids:
            log.error("tls_node_id_mismatch", node_id=self.owner.node_id, peer=peer,
                      certificate_node_ids=cert_ids, address=session.label,
                      detail=f"peer declares node ID {peer!r} but its TLS certificate is for "
                             f"{', '.join(map(repr, cert_ids)) or 'no node ID'}")
            self._reject(session, peer, "TLS certificate does not match the declared node ID")
            return None
        cost = options.cost_for(peer)
        link = Link(peer, session, cost, time.monotonic())
        link.last_sent = link.last_recv
        session.peer_node = peer
        self.links[peer] = link
        log.info("connection_established", node_id=self.owner.node_id, peer=peer, cost=cost,
                 address=session.label)
        self.owner.link_up(link)
        return link

    def _remove(self, link: Link) -> None:
        if self.links.get(link.peer) is not link:
            return
        del self.links[link.peer]
        down = self._down_events.pop(link.peer, None)
        if down is not None:
            down.set()
        reason = link.close_reason or "closed"
        log.info("connection_lost", node_id=self.owner.node_id, peer=link.peer, reason=reason)
        self.owner.link_down(link, reason)

    async def _link_loop(self, link: Link) -> None:
        session, receive = link.session, self.owner.receive  # looked up once: the data path
        while True:
            msg = await session.recv()
            link.last_recv = time.monotonic()
            if not msg:
                continue
            kind = msg[0]
            if kind == m.MSG_REJECT:
                link.close_reason = "remote node rejected the connection"
                return
            if kind != MSG_KEEPALIVE:
                receive(link, msg)

    def tear_down(self, link: Link, reason: str) -> None:
        """Reject and close ``link`` (a neighbour that broke the link protocol)."""
        self._reject(link.session, link.peer, reason)
        link.close_reason = reason
        link.session.close()

    def close_all(self, reason: str) -> None:
        """Close every link; their sessions' tasks remove them."""
        for link in list(self.links.values()):
            link.close_reason = reason
            link.session.close()

    # -- sending -----------------------------------------------------------------------

    def broadcast(self, msg: bytes, exclude: Link | None = None) -> None:
        """Send ``msg`` on every link but ``exclude`` (a closed one is skipped)."""
        for link in list(self.links.values()):
            if link is exclude:
                continue
            try:
                link.send(msg)
            except SessionClosed:
                pass

    def send_database(self, link: Link) -> None:
        """Send ``link`` every routing update we hold (those it has seen it drops unread)."""
        link.synced_at = time.monotonic()
        for raw in list(self.owner.database()):
            try:
                link.send(raw)
            except SessionClosed:
                break

    # -- liveness ----------------------------------------------------------------------

    def deadlines(self) -> list[float]:
        """When each link next needs :meth:`tend` (``time.monotonic()`` values): its
        timeout (or the confirmation of one), its keepalive, the resync of a lossy link."""
        due: list[float] = []
        for link in self.links.values():
            if link.close_reason:
                continue
            due.append(link.last_recv + link_timeout(link, self.idle_timeout)
                       if link.overdue_at is None else link.overdue_at + TIMEOUT_CONFIRM)
            due.append(link.last_sent + quiet_limit(link))
            if not link.session.reliable:
                due.append(link.synced_at + LOSSY_LINK_RESYNC)
        return due

    def tend(self, now: float) -> None:
        """Close the links silent past their timeout, send keepalives on those we were quiet
        on and the database again on lossy ones that are due."""
        for link in list(self.links.values()):
            if link.close_reason:
                continue  # closing already; its link task removes it
            limit = link_timeout(link, self.idle_timeout)
            if now - link.last_recv < limit:
                link.overdue_at = None
            elif link.overdue_at is None:
                # Maybe it is us who fell behind (a starved or stopped process): let the
                # loop read what is waiting on the link before calling it dead.
                link.overdue_at = now
            elif now - link.overdue_at >= TIMEOUT_CONFIRM:
                link.close_reason = f"idle timeout ({limit:g}s without traffic)"
                link.session.close()
                continue
            if now - link.last_sent >= quiet_limit(link) - KEEPALIVE_BATCH:
                self._keep_alive(link)
            if not link.session.reliable and now - link.synced_at >= LOSSY_LINK_RESYNC:
                self.send_database(link)

    def _keep_alive(self, link: Link) -> None:
        """Make sure ``link`` hears from us: a mesh peer gets a keepalive; a Go peer, which
        knows no keepalives, gets our routing update again (one it has seen already: it
        proves the link, it floods nothing)."""
        try:
            if link.mesh_peer:
                link.send(KEEPALIVE_MESSAGE)
                self.counters["keepalives_sent"] += 1
            else:
                link.send(self.owner.latest_update())
        except SessionClosed:
            link.last_sent = time.monotonic()  # not due again at once: its task ends it
