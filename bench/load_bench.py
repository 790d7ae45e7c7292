"""Load on one executor: many short local units, 20 at a time, then `work list` speed.

Runs N units of `true` on one node (20 concurrent submissions over the control socket), waits
for each to finish and releases it, and reports throughput, the node's memory (RSS) before,
at peak and after, and how long `work list` takes with N finished units on disk.

    .venv/bin/python bench/load_bench.py [--units 1000] [--parallel 20]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mesh.testing import Mesh, NodeProcess, wait_until


def rss_mib(node: NodeProcess) -> float:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_unit(path: str, release: bool) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(120)
        sock.connect(path)
        f = sock.makefile("rwb")
        f.readline()
        f.write(b'{"command":"work","subcommand":"submit","node":"localhost","worktype":"true"}\n')
        f.flush()
        f.readline()
        sock.shutdown(socket.SHUT_WR)
        unit_id = json.loads(f.readline())["unitid"]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(120)
        sock.connect(path)
        f = sock.makefile("rwb")
        f.readline()
        f.write(f"work results {unit_id} 0\n".encode())
        f.flush()
        while f.read(65536):
            pass
    if release:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            f = sock.makefile("rwb")
            f.readline()
            f.write(f"work status {unit_id}\n".encode())
            f.flush()
            assert json.loads(f.readline())["State"] == 2
            f.write(f"work release {unit_id}\n".encode())
            f.flush()
            f.readline()
    return unit_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=20)
    args = parser.parse_args()
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-load-")))
    try:
        node = mesh.add("executor01", listen=False, sections=[
            {"work-command": {"worktype": "true", "command": "true"}}])
        node.log_level = "warning"
        mesh.start()
        path = str(node.socket)
        start_rss = rss_mib(node)
        peak = start_rss
        start = time.perf_counter()
        with ThreadPoolExecutor(args.parallel) as pool:
            for i, _ in enumerate(pool.map(lambda _: run_unit(path, True), range(args.units))):
                if i % 50 == 0:
                    peak = max(peak, rss_mib(node))
        elapsed = time.perf_counter() - start
        assert node.control("work list") == {}
        end_rss = rss_mib(node)
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda _: run_unit(path, False), range(args.units)))
        wait_until(lambda: len(node.control("work list")) == args.units, timeout=120)
        t = time.perf_counter()
        for _ in range(5):
            node.control("work list")
        list_ms = (time.perf_counter() - t) / 5 * 1000
        print(f"\n{args.units} units of `true`, {args.parallel} at a time, on one node")
        print(f"{'measure':<38} | value")
        print(f"{'-' * 38}-+-{'-' * 12}")
        print(f"{'wall time (submit+follow+release)':<38} | {elapsed:.1f} s")
        print(f"{'units per second':<38} | {args.units / elapsed:.1f}")
        print(f"{'node RSS at start / peak / after':<38} | {start_rss:.0f} / {peak:.0f} / "
              f"{end_rss:.0f} MiB")
        print(f"{'work list with ' + str(args.units) + ' units on disk':<38} | {list_ms:.0f} ms")
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    main()
