"""The datagram endpoint contract between the node and the stream (QUIC) layer.

The node implements :class:`DatagramEndpoint` (Receptor's PacketConn bound to one service);
:mod:`mesh.net.streams` only codes against this protocol, so tests and benchmarks can put
an in-memory fake below the stream layer.
"""

from __future__ import annotations

from typing import Callable, Protocol

from mesh.net.inbox import Inbox


class EndpointClosed(Exception):
    """The endpoint was closed; raised by :meth:`DatagramEndpoint.recvfrom` (and ``sendto``)."""


class DatagramEndpoint(Protocol):
    """One bound (node, service) address that sends and receives mesh datagrams."""

    node_id: str  # local node ID
    service: str  # local service name this endpoint is bound to

    async def recvfrom(self) -> tuple[bytes, str, str]:
        """Next datagram as (payload, from_node, from_service); raises EndpointClosed when closed."""
        ...

    def sendto(self, data: bytes, node: str, service: str) -> None:
        """Send one datagram, fire-and-forget (may silently drop under congestion)."""
        ...

    def close(self) -> None: ...


class DatagramQueue:
    """The receiving half of an endpoint: received datagrams wait in an :class:`Inbox`
    until :meth:`recvfrom` takes them.

    Shared by the node's endpoint and the in-memory endpoints of tests and benchmarks.
    """

    service: str

    def __init__(self) -> None:
        self._inbox: Inbox[tuple[bytes, str, str]] = Inbox(
            lambda: EndpointClosed(self.service))

    @property
    def closed(self) -> bool:
        return self._inbox.closed

    def _push(self, data: bytes, from_node: str, from_service: str) -> None:
        self._inbox.put((data, from_node, from_service))

    def close_queue(self) -> None:
        """Mark closed; a reader waiting in :meth:`recvfrom` gets EndpointClosed."""
        self._inbox.close()

    def close(self) -> None:
        """Close the endpoint (subclasses that unbind somewhere also call :meth:`close_queue`)."""
        self.close_queue()

    async def recvfrom(self) -> tuple[bytes, str, str]:
        """Next datagram as (payload, from_node, from_service)."""
        return await self._inbox.get()

    async def wait_readable(self) -> None:
        """Return once a datagram is waiting or the endpoint is closed (taking nothing)."""
        await self._inbox.wait()


#: ``max_datagram_for(node)``: the QUIC datagram size negotiated with a remote node
#: (1200 for Go Receptor peers, up to ~60000 between nodes of this project).
MaxDatagramFor = Callable[[str], int]

#: ``open_endpoint()``: binds a fresh ephemeral-service endpoint (one per dial).
EndpointFactory = Callable[[], DatagramEndpoint]

__all__ = ["DatagramEndpoint", "DatagramQueue", "EndpointClosed", "EndpointFactory", "MaxDatagramFor"]
