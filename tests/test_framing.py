"""Receptor stream framing: 2-byte little-endian length prefix."""

from __future__ import annotations

import random
import struct
import time

import pytest

from mesh.net.framing import MAX_FRAME_PAYLOAD, FrameDecoder, FrameError, encode_frame


def test_encode_layout() -> None:
    assert encode_frame(b"\x01abc") == b"\x04\x00\x01abc"
    big = bytes(300)
    assert encode_frame(big)[:2] == b"\x2c\x01"
    assert encode_frame(bytes(MAX_FRAME_PAYLOAD))[:2] == b"\xff\xff"


@pytest.mark.parametrize("payload", [b"", bytes(MAX_FRAME_PAYLOAD + 1)])
def test_encode_refuses(payload: bytes) -> None:
    with pytest.raises(FrameError):
        encode_frame(payload)


def test_frame_error_is_value_error() -> None:
    assert issubclass(FrameError, ValueError)


def test_decode_whole_and_multiple() -> None:
    d = FrameDecoder()
    assert d.feed(encode_frame(b"a") + encode_frame(b"bc")) == [b"a", b"bc"]
    assert d.buffered == 0


def test_decode_byte_by_byte() -> None:
    payloads = [b"x" * n for n in (1, 2, 255, 256, 1000)]
    stream = b"".join(encode_frame(p) for p in payloads)
    d = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += d.feed(stream[i : i + 1])
    assert out == payloads
    assert d.buffered == 0


def test_partial_length_prefix() -> None:
    d = FrameDecoder()
    assert d.feed(b"\x03") == []
    assert d.feed(b"\x00ab") == []
    assert d.buffered == 4
    assert d.feed(b"c\x01") == [b"abc"]
    assert d.feed(b"\x00z") == [b"z"]


def test_zero_length_frames_dropped_and_counted() -> None:
    d = FrameDecoder()
    assert d.feed(b"\x00\x00" + encode_frame(b"ok") + b"\x00\x00\x00") == [b"ok"]
    assert d.dropped_empty == 2
    assert d.feed(b"\x00") == []
    assert d.dropped_empty == 3


def test_max_size_frame() -> None:
    payload = bytes(random.Random(1).randbytes(MAX_FRAME_PAYLOAD))
    d = FrameDecoder()
    frame = encode_frame(payload)
    assert d.feed(frame[:70000 // 2]) == []
    assert d.feed(frame[70000 // 2 :]) == [payload]


def test_random_chunking_round_trip() -> None:
    rng = random.Random(42)
    payloads = [rng.randbytes(rng.choice([1, 7, 100, 4000, 65535])) for _ in range(200)]
    stream = b"".join(encode_frame(p) for p in payloads)
    d = FrameDecoder()
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        n = rng.randint(1, 70000)
        out += d.feed(stream[pos : pos + n])
        pos += n
    assert out == payloads
    assert d.buffered == 0


def test_large_throughput_is_linear() -> None:
    # 64 MiB of small frames fed in 64 KiB chunks must not degrade quadratically.
    frame = struct.pack("<H", 100) + bytes(100)
    chunk = frame * (65536 // len(frame)) + frame[:50]
    d = FrameDecoder()
    count = 0
    start = time.perf_counter()
    for _ in range(1024):
        count += len(d.feed(chunk))
    elapsed = time.perf_counter() - start
    assert count >= 1024 * (65536 // len(frame))
    assert elapsed < 20
