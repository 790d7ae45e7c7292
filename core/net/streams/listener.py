"""Accepting mesh streams: :class:`StreamListener` and :func:`listen_stream`."""

from __future__ import annotations

import asyncio
from collections import deque

import structlog
from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from mesh.net.datagram import DatagramEndpoint, EndpointClosed, MaxDatagramFor
from mesh.net.quic_tls import QuicTLSOptions, configure_server
from mesh.net.stream_errors import ListenerClosed
from mesh.net.streams.connection import StreamConnection
from mesh.net.streams.protocol import CID_LENGTH, HANDSHAKE_TIMEOUT, quic_configuration
from mesh.net.streams.quic_private import MeshQuicConnection
from mesh.net.streams.stream import MeshStream
from mesh.net.streams.tuning import DEFAULT_TUNING, StreamTuning
from mesh.net.streams.waiters import resolve

log = structlog.get_logger(__name__)


class StreamListener:
    """Accepts mesh stream connections arriving on one datagram endpoint.

    Reads the endpoint itself and demultiplexes datagrams by QUIC connection ID and by
    remote (node, service).  ``accept()`` returns each stream once its 0x00 byte arrived.
    """

    def __init__(self, endpoint: DatagramEndpoint, *, max_datagram_for: MaxDatagramFor,
                 tls: QuicTLSOptions | None = None,
                 tuning: StreamTuning = DEFAULT_TUNING) -> None:
        self._loop = asyncio.get_running_loop()
        self.endpoint = endpoint
        self._max_datagram_for = max_datagram_for
        self._tls = tls
        self._tuning = tuning
        self._config = quic_configuration(False, tuning)
        configure_server(self._config, tls)
        self._by_cid: dict[bytes, StreamConnection] = {}
        self._by_addr: dict[tuple[str, str], StreamConnection] = {}
        self._cids: dict[StreamConnection, set[bytes]] = {}
        self._accepted: deque[MeshStream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._task = self._loop.create_task(self._run(),
                                            name=f"stream-listener-{endpoint.service}")

    @property
    def connections(self) -> list[StreamConnection]:
        """Live connections (accepted or still handshaking)."""
        return list(self._cids)

    async def accept(self) -> MeshStream:
        """The next incoming stream; raises :class:`ListenerClosed` once closed."""
        while not self._accepted:
            if self._closed:
                raise ListenerClosed(f"listener on service {self.endpoint.service} is closed")
            waiter = self._loop.create_future()
            self._accept_waiter = waiter
            try:
                await waiter
            finally:
                self._accept_waiter = None
        return self._accepted.popleft()

    def close(self) -> None:
        """Stop listening: fail open connections (error 500 "listener closed"), close the
        endpoint.  Close accepted streams first for a clean shutdown."""
        if self._closed:
            return
        self._closed = True
        for conn in list(self._cids):
            conn.abort("listener closed")
        while self._accepted:
            self._accepted.popleft()._closed = True
        self.endpoint.close()
        self._task.cancel()
        if self._accept_waiter is not None:
            resolve(self._accept_waiter)
        log.debug("stream.listener_closed", service=self.endpoint.service)

    async def _run(self) -> None:
        recvfrom = self.endpoint.recvfrom
        batch = self._tuning.batch
        count = 0
        while True:
            try:
                data, node, service = await recvfrom()
            except EndpointClosed:
                break
            self._datagram(data, node, service)
            count += 1
            if count >= batch:
                count = 0
                await asyncio.sleep(0)  # let the batch's flushes run
        if not self._closed:
            self.close()

    def _datagram(self, data: bytes, node: str, service: str) -> None:
        if not data:
            return
        addr = (node, service)
        if not data[0] & 0x80:  # short header: destination CID is ours, fixed length
            conn = self._by_cid.get(data[1:1 + CID_LENGTH]) or self._by_addr.get(addr)
            if conn is not None:
                conn.datagram_received(data, addr)
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION
                and header.version is not None
                and header.version not in self._config.supported_versions):
            self._send(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=self._config.supported_versions), addr)
            return
        conn = self._by_cid.get(header.destination_cid)
        if (conn is None and header.packet_type == QuicPacketType.INITIAL
                and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE and not self._closed):
            conn = self._new_connection(header.destination_cid, addr)
        if conn is None:
            conn = self._by_addr.get(addr)
        if conn is not None:
            conn.datagram_received(data, addr)

    def _send(self, data: bytes, addr: tuple[str, str]) -> None:
        try:
            self.endpoint.sendto(data, addr[0], addr[1])
        except Exception:  # fire-and-forget, like a UDP socket
            pass

    def _new_connection(self, odcid: bytes, addr: tuple[str, str]) -> StreamConnection:
        quic = MeshQuicConnection(
            configuration=self._config, tuning=self._tuning,
            original_destination_connection_id=odcid,
            request_client_cert=self._tls is not None and self._tls.require_client_cert)
        conn = StreamConnection(quic, endpoint=self.endpoint, remote_node=addr[0],
                                remote_service=addr[1], max_datagram_for=self._max_datagram_for,
                                tls=self._tls, tuning=self._tuning)
        conn.on_ended = self._connection_ended
        conn.on_stream = self._stream_ready
        conn.on_cid = self._cid_changed
        self._cids[conn] = set()
        self._cid_changed(conn, odcid, True)
        self._cid_changed(conn, quic.host_cid, True)
        self._by_addr[addr] = conn
        conn._deadline = self._loop.call_later(HANDSHAKE_TIMEOUT, conn._handshake_expired)
        log.debug("stream.incoming", peer=addr[0], service=addr[1])
        return conn

    def _cid_changed(self, conn: StreamConnection, cid: bytes, issued: bool) -> None:
        cids = self._cids.get(conn)
        if cids is None:
            return
        if issued:
            cids.add(cid)
            self._by_cid[cid] = conn
        else:
            cids.discard(cid)
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]

    def _connection_ended(self, conn: StreamConnection) -> None:
        for cid in self._cids.pop(conn, ()):
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        if self._by_addr.get(conn._addr) is conn:
            del self._by_addr[conn._addr]

    def _stream_ready(self, stream: MeshStream) -> None:
        if self._closed:
            stream.abort("listener closed")
            return
        self._accepted.append(stream)
        if self._accept_waiter is not None:
            resolve(self._accept_waiter)


def listen_stream(endpoint: DatagramEndpoint, *, max_datagram_for: MaxDatagramFor,
                  tls: QuicTLSOptions | None = None,
                  tuning: StreamTuning = DEFAULT_TUNING) -> StreamListener:
    """Serve mesh streams on ``endpoint`` (must be called from a running event loop).

    Without ``tls`` the listener presents Receptor's insecure certificate (ConnType 1);
    with ``tls`` its certfile/keyfile (ConnType 2).  The listener owns the endpoint from now
    on: it reads it and closes it in :meth:`StreamListener.close`.
    """
    return StreamListener(endpoint, max_datagram_for=max_datagram_for, tls=tls, tuning=tuning)
