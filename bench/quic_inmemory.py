"""Throughput of mesh streams (QUIC over datagrams) without the rest of the node.

A dialer sends ``--mb`` megabytes to a listener, which counts them and replies after EOF.
Two transports below the stream layer:

* ``1proc``: an in-memory endpoint pair, both ends on one event loop (one CPU).
* ``2proc``: dialer and listener in separate processes joined by a socketpair carrying
  length-prefixed datagrams -- closer to two mesh nodes, each its own process.

Usage: ``python bench/quic_inmemory.py [--mb 100] [--sizes 1200,60000] [--modes 1proc,2proc]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import resource
import socket
import struct
import time

import structlog

from mesh.net.datagram import DatagramQueue
from mesh.net.streams import DEFAULT_TUNING, StreamTuning, dial_stream, listen_stream

CHUNK = 256 * 1024
_LEN = struct.Struct(">I")
#: (datagram size, dialer CPU s, listener CPU s) per 100 MB, filled by 2proc runs.
CPU_REPORT: list[tuple[int, float, float]] = []


class MemoryEndpoint(DatagramQueue):
    """One side of an in-memory endpoint pair."""

    def __init__(self, node_id: str, service: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.service = service
        self.peer: MemoryEndpoint | None = None

    def sendto(self, data: bytes, node: str, service: str) -> None:
        peer = self.peer
        if peer is not None and not peer.closed:
            peer._push(data, self.node_id, self.service)


class SocketEndpoint(DatagramQueue, asyncio.Protocol):
    """A datagram endpoint over a stream socket to one fixed peer (length-prefixed frames)."""

    def __init__(self, node_id: str, service: str, peer: tuple[str, str]) -> None:
        super().__init__()
        self.node_id = node_id
        self.service = service
        self.peer = peer
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        datagrams, peer = [], self.peer
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if end - pos - 4 < size:
                break
            datagrams.append((bytes(buf[pos + 4:pos + 4 + size]), peer[0], peer[1]))
            pos += 4 + size
        del buf[:pos]
        if datagrams:
            self._inbox.extend(datagrams)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def sendto(self, data: bytes, node: str, service: str) -> None:
        if self._transport is not None and not self.closed:
            self._transport.writelines((_LEN.pack(len(data)), data))


async def _serve_one(listener) -> None:
    stream = await listener.accept()
    received = 0
    while True:
        data = await stream.read(1 << 20)
        if not data:
            break
        received += len(data)
    stream.write(str(received).encode())
    stream.write_eof()
    await stream.close()


async def _send(open_endpoint, node: str, size: int, total: int,
                tuning: StreamTuning) -> float:
    payload = bytes(range(256)) * (CHUNK // 256)
    start = time.perf_counter()
    stream = await dial_stream(open_endpoint, node, "bench", local_node="a",
                               max_datagram_for=lambda _: size, tuning=tuning)
    sent = 0
    while sent < total:
        stream.write(payload)
        sent += len(payload)
        await stream.drain()
    stream.write_eof()
    reply = await stream.read()
    elapsed = time.perf_counter() - start
    if int(reply) != sent:
        raise SystemExit(f"listener received {reply!r} bytes, sent {sent}")
    await stream.close()
    return sent / elapsed / 1e6


async def run_1proc(size: int, total: int, tuning: StreamTuning) -> float:
    server_ep = MemoryEndpoint("b", "bench")
    listener = listen_stream(server_ep, max_datagram_for=lambda _: size, tuning=tuning)

    def open_endpoint() -> MemoryEndpoint:
        ep = MemoryEndpoint("a", "dialer")
        ep.peer, server_ep.peer = server_ep, ep
        return ep

    server = asyncio.create_task(_serve_one(listener))
    rate = await _send(open_endpoint, "b", size, total, tuning)
    await server
    listener.close()
    return rate


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _listener_process(sock: socket.socket, size: int, tuning: StreamTuning, ready) -> None:
    _quiet()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, ep = await loop.connect_accepted_socket(
            lambda: SocketEndpoint("b", "bench", ("a", "dialer")), sock)
        listener = listen_stream(ep, max_datagram_for=lambda _: size, tuning=tuning)
        ready.set()  # the clock starts once the listener (and its RSA key) exists
        await _serve_one(listener)
        listener.close()

    asyncio.run(main())


async def run_2proc(size: int, total: int, tuning: StreamTuning) -> float:
    ours, theirs = socket.socketpair()
    for s in (ours, theirs):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_listener_process, args=(theirs, size, tuning, ready))
    proc.start()
    theirs.close()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ready.wait, 30)
    _, ep = await loop.connect_accepted_socket(
        lambda: SocketEndpoint("a", "dialer", ("b", "bench")), ours)
    cpu_start = time.process_time()
    children_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        rate = await _send(lambda: ep, "b", size, total, tuning)
    finally:
        await loop.run_in_executor(None, proc.join, 30)
        ep.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds per 100 MB moved, sender and receiver (receiver includes its startup).
    scale = 100e6 / total
    CPU_REPORT.append((size, (time.process_time() - cpu_start) * scale,
                       (children.ru_utime + children.ru_stime - children_start.ru_utime
                        - children_start.ru_stime) * scale))
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="megabytes per transfer")
    parser.add_argument("--sizes", default="1200,60000", help="datagram sizes")
    parser.add_argument("--modes", default="1proc,2proc", help="1proc and/or 2proc")
    parser.add_argument("--pacing", action="store_true", help="enable aioquic pacing")
    args = parser.parse_args()
    _quiet()
    tuning = StreamTuning(**{**DEFAULT_TUNING.__dict__, "pacing": args.pacing})
    total = args.mb * 1_000_000
    modes = args.modes.split(",")
    print(f"{args.mb} MB per transfer; MB/s (1 MB = 10^6 bytes)")
    print(f"{'datagram':>9} " + " ".join(f"{m:>8}" for m in modes))
    for size in (int(s) for s in args.sizes.split(",")):
        rates = []
        for mode in modes:
            runner = run_1proc if mode == "1proc" else run_2proc
            rates.append(asyncio.run(runner(size, total, tuning)))
        print(f"{size:>9} " + " ".join(f"{r:>8.1f}" for r in rates), flush=True)
    for size, sender, receiver in CPU_REPORT:
        print(f"2proc CPU per 100 MB at {size}: dialer {sender:.2f} s, listener {receiver:.2f} s")


if __name__ == "__main__":
    main()
