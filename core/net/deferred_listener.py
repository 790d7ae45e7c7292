"""A stream listener that loads the QUIC stack only when a client arrives.

Every node listens for mesh streams on its control service, but many nodes never receive one
(relays, nodes driven only through their Unix socket).  aioquic and cryptography are a large
part of a node's start-up time and memory, so the node binds the datagram endpoint at once (the
service is advertised and reachable) and builds the real
:class:`~mesh.net.streams.StreamListener` when the endpoint's first datagram arrives; that
datagram and those after it are then read by the real listener as usual.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from mesh.net.stream_errors import ListenerClosed

if TYPE_CHECKING:  # pragma: no cover
    from mesh.net.datagram import DatagramQueue
    from mesh.net.streams import MeshStream, StreamListener


class DeferredStreamListener:
    """Has :class:`~mesh.net.streams.StreamListener`'s ``accept``/``close``/``connections``;
    ``build()`` makes the real listener on the same endpoint."""

    def __init__(self, endpoint: DatagramQueue, build: Callable[[], StreamListener]) -> None:
        self.endpoint = endpoint
        self._build = build
        self.real: StreamListener | None = None
        self._closed = False
        self._started = asyncio.get_running_loop().create_task(
            self._start_on_first_datagram(), name=f"stream-listener-{endpoint.service}")

    async def _start_on_first_datagram(self) -> None:
        await self.endpoint.wait_readable()
        if not self._closed and not self.endpoint.closed:
            self.real = self._build()

    @property
    def connections(self) -> list[Any]:
        """Live connections (none before the first client)."""
        return self.real.connections if self.real is not None else []

    async def accept(self) -> MeshStream:
        """The next incoming stream; raises :class:`ListenerClosed` once closed."""
        if self.real is None:
            try:
                await asyncio.shield(self._started)
            except asyncio.CancelledError:
                if not self._closed:
                    raise
        if self.real is None:
            raise ListenerClosed(f"listener on service {self.endpoint.service} is closed")
        return await self.real.accept()

    def close(self) -> None:
        """Stop listening and close the endpoint."""
        if self._closed:
            return
        self._closed = True
        self._started.cancel()
        if self.real is not None:
            self.real.close()
        else:
            self.endpoint.close()
