"""Receptor's conventions for mesh streams: timeouts, error codes, datagram sizes, and the
aioquic :class:`~aioquic.quic.configuration.QuicConfiguration` built from them."""

from __future__ import annotations

from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.packet import QuicErrorCode

from mesh.net.quic_tls import ALPN, MUX_ALPN
from mesh.net.streams.tuning import StreamTuning

HANDSHAKE_TIMEOUT = 15.0
IDLE_TIMEOUT = 30.0
KEEPALIVE_PERIOD = 15.0
ACCEPT_TIMEOUT = 60.0
#: Application error codes Receptor uses on mesh streams.
ERROR_NORMAL = 0
NORMAL_CLOSE_REASON = "normal close"
#: Every QUIC connection starts with this datagram size (mandatory for Initial packets).
HANDSHAKE_DATAGRAM = SMALLEST_MAX_DATAGRAM_SIZE
#: Our own connection IDs; short-header packets carry them at bytes 1..8.
CID_LENGTH = 8
#: Closing period bounds and how often CONNECTION_CLOSE is repeated within it.
MAX_CLOSING_PERIOD = 3.0
MAX_CLOSE_RESENDS = 8
#: Application error code for a stream whose reader stopped (Receptor's cancelled reads).
ERROR_READ_CANCELLED = 499
#: CONNECTION_CLOSE code for a refused certificate (TLS alert 42, "bad certificate").
TLS_BAD_CERTIFICATE = QuicErrorCode.CRYPTO_ERROR + 42


def quic_configuration(is_client: bool, tuning: StreamTuning, *,
                       mux: bool = True) -> QuicConfiguration:
    """A client offers ``mesh-mux/1`` only when ``mux``; a server always accepts it."""
    return QuicConfiguration(
        alpn_protocols=[MUX_ALPN, ALPN] if mux else [ALPN],
        is_client=is_client,
        idle_timeout=IDLE_TIMEOUT,
        max_datagram_size=HANDSHAKE_DATAGRAM,
        max_data=tuning.connection_window,
        max_stream_data=tuning.stream_window,
        connection_id_length=CID_LENGTH,
    )
