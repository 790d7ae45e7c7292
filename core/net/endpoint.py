"""A bound mesh datagram service: Receptor's PacketConn.

Delivery is buffered (a bounded queue, oldest kept, newest dropped when full) so a slow
reader never stalls the link that delivers to it — Receptor hands off unbuffered.
"""

from __future__ import annotations

from typing import Callable, Protocol

from mesh.net.datagram import DatagramQueue, EndpointClosed
from mesh.net.messages import MAX_FORWARDING_HOPS, Unreachable


class RouteError(Exception):
    """A locally originated message could not be sent; ``str()`` is Receptor's problem text."""

QUEUE_LIMIT = 4096


class EndpointHost(Protocol):
    """What an endpoint uses of the node's datagram layer (a
    :class:`~mesh.net.netceptor.Netceptor`)."""

    node_id: str

    def send_datagram(self, data: bytes, node: str, service: str, *, from_service: str,
                      hops: int) -> None:
        """Originate one data message; raises :class:`RouteError`."""
        ...

    def max_datagram_for(self, node: str) -> int:
        """The QUIC datagram size to use with ``node``."""
        ...

    def release_service(self, service: str, endpoint: Endpoint) -> None:
        """Unbind ``endpoint`` (closed) from ``service``."""
        ...


class Endpoint(DatagramQueue):
    """One (node, service) address that can send and receive mesh datagrams."""

    def __init__(self, netceptor: EndpointHost, service: str, *,
                 hops: int = MAX_FORWARDING_HOPS) -> None:
        super().__init__()
        self.netceptor = netceptor
        self.node_id = netceptor.node_id
        self.service = service
        self.hops = hops
        #: Called with each unreachable notification about traffic this endpoint sent.
        #: Called as ``handler(notice, reporting_node)``.
        self.unreachable_handler: Callable[[Unreachable, str], None] | None = None
        #: When set, datagrams are passed to it directly instead of being queued.
        self.datagram_handler: Callable[[bytes, str, str], None] | None = None
        self.dropped = 0

    # -- called by the netceptor -------------------------------------------------------

    def deliver(self, data: bytes, from_node: str, from_service: str) -> None:
        if self.closed:
            return
        if self.datagram_handler is not None:
            self.datagram_handler(data, from_node, from_service)
            return
        if len(self._inbox) >= QUEUE_LIMIT:
            self.dropped += 1
            return
        self._push(data, from_node, from_service)

    def deliver_unreachable(self, notice: Unreachable, reporter: str) -> None:
        if self.unreachable_handler is not None and not self.closed:
            self.unreachable_handler(notice, reporter)

    # -- DatagramEndpoint API ----------------------------------------------------------

    def sendto(self, data: bytes, node: str, service: str) -> None:
        """Send one datagram, fire-and-forget: like UDP, a datagram without a route is lost
        (callers that must know use :meth:`send_checked`)."""
        try:
            self.send_checked(data, node, service)
        except RouteError:
            self.dropped += 1

    def send_checked(self, data: bytes, node: str, service: str) -> None:
        """Send one datagram; routing errors raise :class:`RouteError`."""
        if self.closed:
            raise EndpointClosed(self.service)
        self.netceptor.send_datagram(data, node, service, from_service=self.service,
                                     hops=self.hops)

    def max_datagram_for(self, node: str) -> int:
        return self.netceptor.max_datagram_for(node)

    def close(self) -> None:
        if self.closed:
            return
        self.close_queue()
        self.netceptor.release_service(self.service, self)
