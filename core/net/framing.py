"""Receptor stream framing (protocol §1.1): a 2-byte little-endian length, then the payload.

Used by stream backends such as TCP.  :func:`encode_frame` builds one frame; :class:`FrameDecoder`
is a sans-I/O incremental decoder that turns arbitrary chunks of a byte stream back into payloads.
"""

from __future__ import annotations

import struct

__all__ = ["MAX_FRAME_PAYLOAD", "FrameDecoder", "FrameError", "encode_frame"]

#: Largest payload a 16-bit length prefix can describe.
MAX_FRAME_PAYLOAD = 0xFFFF

_LEN = struct.Struct("<H")
# Compact the receive buffer once this many consumed bytes sit at its front.
_COMPACT_AT = 1 << 16


class FrameError(ValueError):
    """Raised when a payload cannot be framed (empty, or longer than 65535 bytes)."""


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` prefixed with its 2-byte little-endian length.

    Raises :class:`FrameError` for an empty payload (the Go receiver crashes on it) or one longer
    than :data:`MAX_FRAME_PAYLOAD` (Go would silently wrap the length and corrupt the stream).
    """
    n = len(payload)
    if n == 0:
        raise FrameError("refusing to send an empty frame")
    if n > MAX_FRAME_PAYLOAD:
        raise FrameError(f"frame payload of {n} bytes exceeds the {MAX_FRAME_PAYLOAD}-byte limit")
    return _LEN.pack(n) + payload  # bytes + bytes/bytearray/memoryview: one copy


class FrameDecoder:
    """Incremental decoder for a framed byte stream.

    Feed it bytes as they arrive; it returns every payload completed so far.  Zero-length frames
    are valid on the wire but carry no message: they are dropped and counted in
    :attr:`dropped_empty`.  The decoder never raises on input.
    """

    __slots__ = ("_buf", "_pos", "dropped_empty")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        #: Number of zero-length frames seen and discarded.
        self.dropped_empty = 0

    @property
    def buffered(self) -> int:
        """Number of received bytes not yet returned as part of a payload."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` to the stream and return the payloads it completes, in order."""
        buf = self._buf
        buf += data
        pos = self._pos
        end = len(buf)
        out: list[bytes] = []
        while end - pos >= 2:
            (n,) = _LEN.unpack_from(buf, pos)
            if end - pos - 2 < n:
                break
            start = pos + 2
            pos = start + n
            if n == 0:
                self.dropped_empty += 1
            else:
                out.append(bytes(buf[start:pos]))
        if pos == end:
            buf.clear()
            pos = 0
        elif pos >= _COMPACT_AT:
            # Drop consumed bytes occasionally, so copying stays linear in the stream length.
            del buf[:pos]
            pos = 0
        self._pos = pos
        return out
