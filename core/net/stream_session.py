"""A :class:`~mesh.net.backend.Session` over an asyncio byte stream with Receptor framing.

Used by the tcp backend (plain or TLS) and by any backend whose transport is a byte stream.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from mesh.net.backend import Session, SessionClosed
from mesh.net.framing import FrameDecoder, FrameError, encode_frame
from mesh.net.inbox import Inbox

#: Pause reading from the socket while this many messages wait for the link loop.
MAX_QUEUED = 256
#: Above this many buffered outgoing bytes the link is congested (droppable data is dropped).
CONGESTED_BYTES = 8 * 1024 * 1024


class FramedSession(asyncio.Protocol, Session):
    """Protocol object: 2-byte little-endian length frames, one mesh message each."""

    def __init__(self, label: str, *, tls_identity: Callable[[bytes], list[str]] | None = None,
                 ) -> None:
        self.label = label
        #: Given with TLS: maps the peer's DER certificate to its node-ID SANs.
        self.tls_identity = tls_identity
        self.max_message = 65535
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder()
        self._inbox: Inbox[bytes] = Inbox(lambda: SessionClosed(self.label))
        self._closed = False
        self._paused = False
        self.connected: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=CONGESTED_BYTES)
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        messages = self._decoder.feed(data)
        if not messages:
            return
        self.messages_in += len(messages)
        self._inbox.extend(messages)
        if len(self._inbox) > MAX_QUEUED and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if not self.connected.done():
            self.connected.set_exception(SessionClosed(str(exc or "connection lost")))
        self._inbox.close()

    # -- Session -----------------------------------------------------------------------

    def send(self, message: bytes) -> None:
        if self._closed or self.transport is None or self.transport.is_closing():
            raise SessionClosed(self.label)
        try:
            frame = encode_frame(message)
            self.transport.write(frame)
            self.messages_out += 1
            self.bytes_out += len(frame)
        except FrameError:
            raise SessionClosed(f"{self.label}: message of {len(message)} bytes is too large "
                                f"for a framed link") from None

    async def recv(self) -> bytes:
        message = await self._inbox.get()
        if self._paused and len(self._inbox) < MAX_QUEUED // 2 and self.transport:
            self._paused = False
            self.transport.resume_reading()
        return message

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.close()
        self._closed = True
        self._inbox.close()

    def peer_node_ids(self) -> list[str] | None:
        if self.tls_identity is None or self.transport is None:
            return None
        ssl_object = self.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return self.tls_identity(der) if der else []

    def congested(self) -> bool:
        return self.transport is not None and \
            self.transport.get_write_buffer_size() > CONGESTED_BYTES
