"""Stream throughput over the 3-node line controller01 - relayer01 - executor01.

A 100 MB stream goes from a TCP client on the controller's side, through a `tcp-server`
proxy (controller01) → mesh QUIC stream across relayer01 → `tcp-client` proxy (executor01)
→ a TCP sink, once with Receptor's 1200-byte QUIC datagrams (`node.streamdatagram: 1200`)
and once with the size our nodes negotiate (60000).  Prints a table of MB/s.

    .venv/bin/python bench/stream_throughput.py [--mb 100] [--runs 1]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

from mesh.testing import Mesh, free_port, wait_until


class Sink:
    """A TCP server that counts bytes and records when ``total`` arrived."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.warmed = threading.Event()
        self.received = 0
        self.finished_at = 0.0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        buf = bytearray(1 << 20)
        with self.sock.accept()[0] as warm_up:  # the first stream: drained, not counted
            while warm_up.recv_into(buf):
                pass
        self.warmed.set()
        conn, _ = self.sock.accept()
        with conn:
            while self.received < self.total:
                n = conn.recv_into(buf)
                if not n:
                    break
                self.received += n
        self.finished_at = time.perf_counter()
        self.done.set()


def run_once(datagram: int, megabytes: int) -> float:
    total = megabytes * 1_000_000
    sink = Sink(total)
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-bench-")))
    proxy_port = free_port()
    node_extra = {"streamdatagram": datagram}
    try:
        mesh.add("controller01", sections=[{"tcp-server": {
            "port": proxy_port, "bindaddr": "127.0.0.1", "remotenode": "executor01",
            "remoteservice": "sink"}}])
        mesh.add("relayer01")
        mesh.add("executor01", sections=[{"tcp-client": {
            "service": "sink", "address": f"127.0.0.1:{sink.port}"}}])
        for node in mesh.nodes.values():
            node.node_extra = node_extra  # type: ignore[attr-defined]
            node.log_level = "info"  # type: ignore[attr-defined]
        mesh.link("relayer01", "controller01")
        mesh.link("executor01", "relayer01")
        mesh.start()
        mesh.wait_converged()
        wait_until(lambda: any(ad["Service"] == "sink" for ad in
                               mesh.nodes["controller01"].status()["Advertisements"]),
                   timeout=30, what="sink advert")
        payload = memoryview(bytes(range(256)) * 4096)  # 1 MiB of every byte value
        # A first stream loads the QUIC stack in both end nodes (a node imports it on its
        # first stream); the figure is the steady state, so that is not timed here.
        with socket.create_connection(("127.0.0.1", proxy_port)) as warm_up:
            warm_up.sendall(payload)
        if not sink.warmed.wait(60):
            raise TimeoutError("the warm-up stream did not arrive")
        with socket.create_connection(("127.0.0.1", proxy_port)) as client:
            start = time.perf_counter()
            sent = 0
            while sent < total:
                chunk = payload[:min(len(payload), total - sent)]
                client.sendall(chunk)
                sent += len(chunk)
            if not sink.done.wait(300):
                raise TimeoutError(f"sink got {sink.received} of {total} bytes")
        if sink.received != total:
            raise RuntimeError(f"sink got {sink.received} of {total} bytes")
        return total / (sink.finished_at - start) / 1e6
    finally:
        mesh.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100, help="megabytes per stream")
    parser.add_argument("--runs", type=int, default=1, help="runs per datagram size")
    args = parser.parse_args()
    rows = []
    for datagram in (1200, 60000):
        rates = [run_once(datagram, args.mb) for _ in range(args.runs)]
        rows.append((datagram, max(rates), sum(rates) / len(rates)))
    print(f"\n{args.mb} MB stream, 3-node line, tcp-server → mesh → tcp-client")
    print(f"{'QUIC datagram':>14} | {'best MB/s':>9} | {'mean MB/s':>9}")
    print(f"{'-' * 14}-+-{'-' * 9}-+-{'-' * 9}")
    for datagram, best, mean in rows:
        print(f"{datagram:>14} | {best:>9.1f} | {mean:>9.1f}")


if __name__ == "__main__":
    main()
