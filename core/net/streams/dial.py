"""Opening mesh streams: :func:`dial_stream`, one connection per dial or a pooled one."""

from __future__ import annotations

import asyncio
from typing import Callable, Hashable

import structlog

from mesh.net.datagram import DatagramEndpoint, EndpointClosed, EndpointFactory, MaxDatagramFor
from mesh.net.quic_tls import QuicTLSOptions, configure_client
from mesh.net.stream_errors import DialTimeout, StreamAborted, StreamError
from mesh.net.stream_pool import StreamPool
from mesh.net.streams.connection import StreamConnection
from mesh.net.streams.protocol import HANDSHAKE_TIMEOUT, quic_configuration
from mesh.net.streams.quic_private import MeshQuicConnection
from mesh.net.streams.stream import MeshStream
from mesh.net.streams.tuning import DEFAULT_TUNING, StreamTuning

log = structlog.get_logger(__name__)


async def _client_reader(conn: StreamConnection, endpoint: DatagramEndpoint) -> None:
    node, service = conn._addr
    batch = conn._tuning.batch
    recvfrom = endpoint.recvfrom
    count = 0
    while True:  # until the endpoint closes; also serves the closing period
        try:
            data, from_node, from_service = await recvfrom()
        except EndpointClosed:
            conn._end(StreamAborted("endpoint closed"))
            return
        if from_service != service or from_node != node:
            continue
        conn.datagram_received(data)
        count += 1
        if count >= batch:
            count = 0
            await asyncio.sleep(0)


async def dial_stream(open_endpoint: EndpointFactory, node: str, service: str, *,
                      local_node: str, max_datagram_for: MaxDatagramFor,
                      tls: QuicTLSOptions | None = None, timeout: float = HANDSHAKE_TIMEOUT,
                      tuning: StreamTuning = DEFAULT_TUNING,
                      on_connection: Callable[[StreamConnection], None] | None = None,
                      pool: StreamPool | None = None, pool_tls: Hashable = "",
                      ) -> MeshStream:
    """Open a mesh stream to ``node:service``.

    Without ``pool``: one QUIC connection per dial over a fresh endpoint from
    ``open_endpoint()``, closed with the stream (Receptor's way).  With ``pool``: a stream on
    a multiplexed connection the pool holds for (node, service, ``pool_tls``) if there is
    one, else a new connection that offers ``mesh-mux/1`` and joins the pool if the
    listener picked it.  ``pool_tls`` names the TLS client ``tls`` came from.

    ``tls`` None is Receptor's insecure mode (the server must present the
    netceptor-insecure-common-name certificate).  ``on_connection`` is called with each new
    :class:`StreamConnection` before the first datagram is sent, so the node can route
    unreachable notifications to :meth:`StreamConnection.abort`.

    Raises :class:`DialTimeout` when the handshake does not finish within ``timeout``
    seconds and :class:`DialError` for other failures (its text is the problem, e.g.
    "service unknown" or "insecure connection to secure service").
    """
    if node == "localhost":
        node = local_node
    if pool is None:
        conn = await _dial_connection(open_endpoint, node, service, local_node=local_node,
                                      max_datagram_for=max_datagram_for, tls=tls,
                                      timeout=timeout, tuning=tuning,
                                      on_connection=on_connection, mux=False)
        return conn._open_client_stream()
    key = (node, service, pool_tls)
    if not pool.plain(key):
        await pool.wait_dialing(key, timeout)
        pooled = pool.connection(key)
        if pooled is not None:
            return pooled.open_stream()
    finished = pool.dialing(key)
    conn = None
    try:
        conn = await _dial_connection(open_endpoint, node, service, local_node=local_node,
                                      max_datagram_for=max_datagram_for, tls=tls,
                                      timeout=timeout, tuning=tuning,
                                      on_connection=on_connection, mux=True)
        return conn._open_client_stream()
    finally:
        finished(conn)


async def _dial_connection(open_endpoint: EndpointFactory, node: str, service: str, *,
                           local_node: str, max_datagram_for: MaxDatagramFor,
                           tls: QuicTLSOptions | None, timeout: float, tuning: StreamTuning,
                           on_connection: Callable[[StreamConnection], None] | None,
                           mux: bool) -> StreamConnection:
    """Handshake a new client connection over its own endpoint (see :func:`dial_stream`)."""
    config = quic_configuration(True, tuning, mux=mux)
    configure_client(config, tls, local_node=local_node)
    endpoint = open_endpoint()
    try:
        conn = StreamConnection(MeshQuicConnection(configuration=config, tuning=tuning),
                                endpoint=endpoint, remote_node=node, remote_service=service,
                                max_datagram_for=max_datagram_for, tls=tls, tuning=tuning)
    except BaseException:
        endpoint.close()
        raise
    reader = asyncio.get_running_loop().create_task(
        _client_reader(conn, endpoint), name=f"stream-dial-{node}:{service}")

    def ended(_: StreamConnection) -> None:
        endpoint.close()
        if reader is not asyncio.current_task():
            reader.cancel()

    conn.on_ended = ended
    if on_connection is not None:
        on_connection(conn)
    log.debug("stream.dial", peer=node, service=service, local_service=endpoint.service)
    try:
        conn._quic.connect(conn._addr, now=conn._loop.time())
        conn._flush()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(conn._established)
        except TimeoutError:
            raise DialTimeout(f"timeout dialing {node}:{service} after {timeout:g} s") from None
    except BaseException as exc:
        established = conn._established
        if not established.done():
            established.cancel()
        elif not established.cancelled():
            established.exception()  # retrieved: we raise it (or something else) here
        conn._end(exc if isinstance(exc, StreamError) else StreamAborted("dial cancelled"))
        raise
    return conn
