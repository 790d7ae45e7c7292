"""An in-memory stand-in for the node's datagram service, for stream-layer tests.

:class:`FakeNetwork` delivers datagrams between :class:`FakeEndpoint` objects addressed by
(node, service), optionally dropping (``loss``) or delaying/reordering (``reorder``) them
with a seeded RNG, and drops datagrams larger than ``max_size`` (quic-go truncates anything
above 1452 bytes).  It records the largest datagram it carried per sender.
"""

from __future__ import annotations

import asyncio
import random
import string
from typing import Callable

from mesh.net.datagram import DatagramQueue, EndpointClosed


class FakeEndpoint(DatagramQueue):
    """Implements :class:`mesh.net.datagram.DatagramEndpoint` on a :class:`FakeNetwork`."""

    def __init__(self, network: FakeNetwork, node_id: str, service: str) -> None:
        super().__init__()
        self.network = network
        self.node_id = node_id
        self.service = service
        self.sent = 0
        self.received = 0

    def _deliver(self, data: bytes, from_node: str, from_service: str) -> None:
        if not self.closed:
            self._push(data, from_node, from_service)

    async def recvfrom(self) -> tuple[bytes, str, str]:
        datagram = await super().recvfrom()
        self.received += 1
        return datagram

    def sendto(self, data: bytes, node: str, service: str) -> None:
        if self.closed:
            raise EndpointClosed(self.service)
        self.sent += 1
        self.network.send(bytes(data), self.node_id, self.service, node, service)

    def close(self) -> None:
        if self.closed:
            return
        self.close_queue()
        self.network.endpoints.pop((self.node_id, self.service), None)


class FakeNetwork:
    """A lossy, reordering in-memory datagram network (deterministic for a given seed)."""

    def __init__(self, *, loss: float = 0.0, reorder: float = 0.0, max_delay: float = 0.004,
                 max_size: int | None = None, seed: int = 1) -> None:
        self.loss = loss
        self.reorder = reorder
        self.max_delay = max_delay
        self.max_size = max_size
        self.rng = random.Random(seed)
        self.endpoints: dict[tuple[str, str], FakeEndpoint] = {}
        #: Called as ``hook(data, from_node, from_service, to_node, to_service)`` for
        #: datagrams to an address nobody is bound to (the node would send "unreachable").
        self.on_unknown: Callable[[bytes, str, str, str, str], None] | None = None
        self.largest: dict[str, int] = {}
        self.first_datagram: dict[tuple[str, str], int] = {}
        self.dropped = 0

    def endpoint(self, node: str, service: str | None = None) -> FakeEndpoint:
        """Bind (node, service); an omitted service gets an ephemeral 8-character name."""
        if service is None:
            service = "".join(self.rng.choices(string.ascii_letters, k=8))
        if (node, service) in self.endpoints:
            raise ValueError(f"service {service} is already listening on {node}")
        ep = FakeEndpoint(self, node, service)
        self.endpoints[(node, service)] = ep
        return ep

    def factory(self, node: str) -> Callable[[], FakeEndpoint]:
        """An ``open_endpoint`` callable for dials from ``node``."""
        return lambda: self.endpoint(node)

    def send(self, data: bytes, from_node: str, from_service: str, to_node: str,
             to_service: str) -> None:
        size = len(data)
        if size > self.largest.get(from_node, 0):
            self.largest[from_node] = size
        self.first_datagram.setdefault((from_node, from_service), size)
        if self.max_size is not None and size > self.max_size:
            self.dropped += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        if self.reorder and self.rng.random() < self.reorder:
            delay = self.rng.uniform(0, self.max_delay)
            asyncio.get_running_loop().call_later(
                delay, self._arrive, data, from_node, from_service, to_node, to_service)
            return
        self._arrive(data, from_node, from_service, to_node, to_service)

    def _arrive(self, data: bytes, from_node: str, from_service: str, to_node: str,
                to_service: str) -> None:
        ep = self.endpoints.get((to_node, to_service))
        if ep is None:
            if self.on_unknown is not None:
                self.on_unknown(data, from_node, from_service, to_node, to_service)
            return
        ep._deliver(data, from_node, from_service)
