"""Pure-Python HighwayHash-64, bit-identical to Google's reference and minio/highwayhash ``New64``.

Receptor identifies nodes in data messages by the 64-bit HighwayHash of their node ID, keyed with
32 zero bytes (protocol §2.1).  Only the 64-bit finalisation is needed, so the 128/256-bit modular
reduction of the reference is not implemented.  Speed is modest; :func:`node_hash` caches results.
"""

from __future__ import annotations

import struct
from functools import lru_cache

__all__ = ["HighwayHashError", "highwayhash64", "node_hash"]

_M64 = 0xFFFF_FFFF_FFFF_FFFF
_M32 = 0xFFFF_FFFF

_INIT0 = (0xDBE6D5D5FE4CCE2F, 0xA4093822299F31D0, 0x13198A2E03707344, 0x243F6A8885A308D3)
_INIT1 = (0x3BD39E10CB0EF593, 0xC0ACF169B5F18A8C, 0xBE5466CF34E90C6C, 0x452821E638D01377)

_ZERO_KEY = bytes(32)
_LANES = struct.Struct("<4Q")


class HighwayHashError(ValueError):
    """Raised when the key is not exactly 32 bytes."""


def _rot32(x: int) -> int:
    """Swap the two 32-bit halves of a 64-bit word."""
    return ((x >> 32) | (x << 32)) & _M64


def _zipper(v1: int, v0: int) -> tuple[int, int]:
    """Return the (add1, add0) byte shuffle of the reference ``ZipperMergeAndAdd``."""
    add0 = (
        (((v0 & 0xFF000000) | (v1 & 0xFF00000000)) >> 24)
        | (((v0 & 0xFF0000000000) | (v1 & 0xFF000000000000)) >> 16)
        | (v0 & 0xFF0000)
        | ((v0 & 0xFF00) << 32)
        | ((v1 & 0xFF00000000000000) >> 8)
        | ((v0 << 56) & _M64)
    )
    add1 = (
        (((v1 & 0xFF000000) | (v0 & 0xFF00000000)) >> 24)
        | (v1 & 0xFF0000)
        | ((v1 & 0xFF0000000000) >> 16)
        | ((v1 & 0xFF00) << 24)
        | ((v0 & 0xFF000000000000) >> 8)
        | ((v1 & 0xFF) << 48)
        | (v0 & 0xFF00000000000000)
    )
    return add1, add0


class _State:
    """The four 256-bit state vectors of HighwayHash, as lists of four uint64 lanes."""

    __slots__ = ("v0", "v1", "mul0", "mul1")

    def __init__(self, key: bytes) -> None:
        k = _LANES.unpack(key)
        self.mul0 = list(_INIT0)
        self.mul1 = list(_INIT1)
        self.v0 = [_INIT0[i] ^ k[i] for i in range(4)]
        self.v1 = [_INIT1[i] ^ _rot32(k[i]) for i in range(4)]

    def update(self, lanes: tuple[int, ...] | list[int]) -> None:
        v0, v1, mul0, mul1 = self.v0, self.v1, self.mul0, self.mul1
        for i in range(4):
            v1[i] = (v1[i] + mul0[i] + lanes[i]) & _M64
            mul0[i] ^= (v1[i] & _M32) * (v0[i] >> 32)
            v0[i] = (v0[i] + mul1[i]) & _M64
            mul1[i] ^= (v0[i] & _M32) * (v1[i] >> 32)
        a1, a0 = _zipper(v1[1], v1[0])
        v0[1] = (v0[1] + a1) & _M64
        v0[0] = (v0[0] + a0) & _M64
        a1, a0 = _zipper(v1[3], v1[2])
        v0[3] = (v0[3] + a1) & _M64
        v0[2] = (v0[2] + a0) & _M64
        a1, a0 = _zipper(v0[1], v0[0])
        v1[1] = (v1[1] + a1) & _M64
        v1[0] = (v1[0] + a0) & _M64
        a1, a0 = _zipper(v0[3], v0[2])
        v1[3] = (v1[3] + a1) & _M64
        v1[2] = (v1[2] + a0) & _M64

    def update_remainder(self, rest: bytes) -> None:
        """Absorb the final 1..31 bytes (reference ``HighwayHashUpdateRemainder``)."""
        size = len(rest)
        size_mod4 = size & 3
        whole = size & ~3
        inc = (size << 32) + size
        for i in range(4):
            self.v0[i] = (self.v0[i] + inc) & _M64
            half0 = self.v1[i] & _M32
            half1 = self.v1[i] >> 32
            half0 = ((half0 << size) | (half0 >> (32 - size))) & _M32
            half1 = ((half1 << size) | (half1 >> (32 - size))) & _M32
            self.v1[i] = half0 | (half1 << 32)
        packet = bytearray(32)
        packet[:whole] = rest[:whole]
        if size & 16:
            # The last four bytes of the input (may overlap the whole words already copied).
            packet[28:32] = rest[size - 4 : size]
        elif size_mod4:
            tail = rest[whole:]
            packet[16] = tail[0]
            packet[17] = tail[size_mod4 >> 1]
            packet[18] = tail[size_mod4 - 1]
        self.update(_LANES.unpack(packet))

    def finalize64(self) -> int:
        for _ in range(4):
            v0 = self.v0
            self.update((_rot32(v0[2]), _rot32(v0[3]), _rot32(v0[0]), _rot32(v0[1])))
        return (self.v0[0] + self.v1[0] + self.mul0[0] + self.mul1[0]) & _M64


def highwayhash64(data: bytes, key: bytes = _ZERO_KEY) -> int:
    """Return the 64-bit HighwayHash of ``data`` under the 32-byte ``key``.

    Raises :class:`HighwayHashError` if ``key`` is not 32 bytes long.
    """
    if len(key) != 32:
        raise HighwayHashError(f"HighwayHash key must be 32 bytes, got {len(key)}")
    data = bytes(data)
    state = _State(bytes(key))
    full = len(data) & ~31
    for off in range(0, full, 32):
        state.update(_LANES.unpack_from(data, off))
    if len(data) & 31:
        state.update_remainder(data[full:])
    return state.finalize64()


@lru_cache(maxsize=4096)
def node_hash(node_id: str) -> int:
    """Return Receptor's 64-bit hash of a node ID (HighwayHash-64 of its UTF-8, zero key)."""
    return highwayhash64(node_id.encode("utf-8"))
