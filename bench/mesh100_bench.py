"""A 100-node mesh on one machine: convergence time and memory per node.

Node i > 0 dials node (i-1)//2 (a binary tree, depth 7) and every tenth node also dials a
random earlier node, so there are alternative paths.  Reports the time from the last process
start to every node routing to all the others, and the RSS per node.

    .venv/bin/python bench/mesh100_bench.py [--nodes 100]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from mesh.testing import Mesh, wait_until


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(7)
    names = [f"n{i:03d}" for i in range(args.nodes)]
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-100-")))
    try:
        for name in names:
            mesh.add(name).log_level = "warning"
        for i in range(1, args.nodes):
            mesh.link(names[i], names[(i - 1) // 2])
            if i % 10 == 0 and i > 2:
                other = rng.randrange(0, i - 1)
                if other != (i - 1) // 2:
                    mesh.link(names[i], names[other])
        for node in mesh.nodes.values():
            node.start(wait=False)
        for node in mesh.nodes.values():
            node.wait_ready(timeout=300)
        started = time.perf_counter()
        everyone = set(names)
        sample = [mesh.nodes[n] for n in (names[0], names[-1], *rng.sample(names, 5))]
        wait_until(lambda: all(len(n.routes()) == args.nodes - 1 for n in sample),
                   timeout=600, interval=0.5, what="sample converged")
        wait_until(lambda: all(set(n.routes()) | {n.name} == everyone
                               for n in mesh.nodes.values()), timeout=600, interval=1.0,
                   what="all converged")
        converged = time.perf_counter() - started
        status = mesh.nodes[names[-1]].status()
        rss = [rss_mib(n.proc.pid) for n in mesh.nodes.values() if n.proc]
        print(f"\n{args.nodes}-node mesh (binary tree + cross links), one process per node")
        print(f"{'measure':<44} | value")
        print(f"{'-' * 44}-+-{'-' * 14}")
        print(f"{'convergence after the last node was ready':<44} | {converged:.1f} s")
        print(f"{'nodes in status on ' + names[-1]:<44} | "
              f"{len(status['KnownConnectionCosts'])}")
        print(f"{'RSS per node median / max':<44} | {statistics.median(rss):.0f} / "
              f"{max(rss):.0f} MiB")
        print(f"{'RSS all nodes':<44} | {sum(rss) / 1024:.1f} GiB")
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    main()
