"""The raw-TCP reference of the work bench: an asyncio TCP chain on loopback.

    client (bench process) -> relay process -> relay process -> endpoint process

Three child processes of plain asyncio stream copying, nothing else: no framing, no
routing, no disk.  The endpoint stands where executor01 stands in the mesh (the relay next to
it where relayer01 stands, the one the client connects to where controller01 stands), so
bytes cross two relay processes between the executor side and the client, as they do in the
mesh.  It speaks one request line per connection:

* ``get N``: the endpoint sends N bytes and closes (the reference of a result stream);
* ``put``: the endpoint counts what the client sends until EOF and answers ``<count>\\n``
  (the reference of a payload, which the mesh acknowledges with ``Job Started``).

The client half (:func:`fetch`, :func:`push`) reads and writes bytes with :func:`drain` and
:class:`PayloadClock`, which the mesh clients of ``control_clients.py`` use as well, so both
sides of a ratio are read and written alike.

Run by :class:`RawChain`; by hand::

    .venv/bin/python bench/raw_chain.py endpoint
    .venv/bin/python bench/raw_chain.py relay PORT   # forwards to 127.0.0.1:PORT

Each prints the port it listens on, then serves until terminated.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
#: Bytes per read in the relays (StreamReader's default buffer limit) and per write of the
#: endpoint.
CHUNK = 64 * 1024
#: Bytes per read of a client draining a stream.
READ = 1 << 20
BLOCK = bytes(range(256)) * (CHUNK // 256)
USAGE = "usage: raw_chain.py endpoint | raw_chain.py relay UPSTREAM_PORT"


# -- the client half (bench process) ---------------------------------------------------------


def drain(reader: io.BufferedIOBase) -> int:
    """Read ``reader`` to EOF into nowhere; the byte count."""
    total = 0
    while chunk := reader.read1(READ):
        total += len(chunk)
    return total


class PayloadClock(io.FileIO):
    """A payload file that records when its first byte was read (``first``, perf_counter),
    i.e. when a client started sending it."""

    first: float | None = None

    def read(self, size: int = -1) -> bytes | None:  # type: ignore[override]
        if self.first is None:
            self.first = time.perf_counter()
        return super().read(size)


def fetch(port: int, size: int) -> float:
    """``get size`` through the chain; seconds from connect to the last byte."""
    start = time.perf_counter()
    with socket.create_connection((HOST, port)) as sock, sock.makefile("rb") as reader:
        sock.sendall(f"get {size}\n".encode())
        sock.shutdown(socket.SHUT_WR)
        got = drain(reader)
    elapsed = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"raw chain: got {got} of {size} bytes")
    return elapsed


def push(port: int, payload: Path) -> float:
    """``put`` the file through the chain; seconds from its first byte to the endpoint's
    count, which must equal the file's size."""
    with PayloadClock(payload) as clock, socket.create_connection((HOST, port)) as sock, \
            sock.makefile("rwb") as stream:
        stream.write(b"put\n")
        shutil.copyfileobj(clock, stream)
        stream.flush()
        sock.shutdown(socket.SHUT_WR)
        counted = int(stream.readline())
        elapsed = time.perf_counter() - (clock.first or 0.0)
    if counted != payload.stat().st_size:
        raise RuntimeError(f"raw chain: endpoint counted {counted} of "
                           f"{payload.stat().st_size} bytes")
    return elapsed


class RawChain:
    """The endpoint and two relay processes; :attr:`port` is where clients connect."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0

    def __enter__(self) -> RawChain:
        try:
            port = self._spawn("endpoint")
            port = self._spawn("relay", str(port))
            self.port = self._spawn("relay", str(port))
            fetch(self.port, CHUNK)  # warm-up: first connections, first copies
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, *args: str) -> int:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"raw chain {args[0]} did not start: {line!r}")
        return int(line)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


# -- the server half (child processes) -------------------------------------------------------


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except OSError:
        writer.close()


async def _relay(upstream_port: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(HOST, upstream_port)
    except OSError:
        writer.close()
        return
    try:
        await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
    finally:
        up_writer.close()
        writer.close()


async def _endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = (await reader.readline()).split()
        if request[:1] == [b"get"]:
            left = int(request[1])
            while left > 0:
                writer.write(BLOCK[:left])
                left -= len(BLOCK)
                await writer.drain()
        elif request == [b"put"]:
            counted = 0
            while data := await reader.read(CHUNK):
                counted += len(data)
            writer.write(f"{counted}\n".encode())
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _serve(role: str, args: list[str]) -> None:
    if role == "relay":
        upstream = int(args[0])
        server = await asyncio.start_server(lambda r, w: _relay(upstream, r, w), HOST, 0)
    else:
        server = await asyncio.start_server(_endpoint, HOST, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("endpoint", "relay") or (argv[0] == "relay") != \
            (len(argv) == 2):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(argv[0], argv[1:]))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
