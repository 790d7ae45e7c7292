"""Performance knobs of mesh stream connections (:class:`StreamTuning`)."""

from __future__ import annotations

from dataclasses import dataclass

#: A multiplexed connection's receive window is this many times StreamTuning's
#: connection_window: its streams share it, and a few slow readers must not stall the rest.
MUX_WINDOW_FACTOR = 4


@dataclass(frozen=True)
class StreamTuning:
    """Performance knobs of a mesh stream connection (defaults suit mesh links).

    ``stream_window``/``connection_window``: receive credit granted beyond what the
    application has read (bounds memory used by a slow reader).
    ``send_buffer``: ``drain()`` waits while more than this is unacknowledged.
    ``initial_window_packets``: congestion window after the handshake, in datagrams.
    ``pacing``: let aioquic pace packets (off: mesh links are reliable byte streams).
    ``batch``: datagrams processed before yielding so replies get flushed.
    """

    stream_window: int = 8 << 20
    connection_window: int = 16 << 20
    send_buffer: int = 8 << 20
    initial_window_packets: int = 64
    pacing: bool = False
    batch: int = 32


DEFAULT_TUNING = StreamTuning()
