#!/usr/bin/env python3
"""Demo 04, a large mesh: ten nodes, two controllers, five relays, three executors.

Checks the configs against the topology in ``demo_topologies.DEMO04_LINKS``, starts the ten
nodes, shows ``status`` and a traceroute on west-controller01, runs gather-hostname on
east-executor01 from west-controller01 (two relays away on either of two paths), and draws
the mesh: ``mesh status --graph > mesh.dot`` (and ``--format mermaid > mesh.mmd``), rendered to
``mesh.svg`` when Graphviz's ``dot`` is installed. The drawings go to ``--output-dir``
(default: ``examples/04-large-mesh/out/``).

    .venv/bin/python examples/04-large-mesh/run.py [--keep] [--output-dir DIR]
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo_topologies import DEMO04_LINKS  # noqa: E402
from example_mesh import Demo  # noqa: E402

VIEWER = "west-controller01"
TARGET = "east-executor01"


def body(demo: Demo) -> None:
    mesh = demo.mesh
    assert mesh is not None and demo.args is not None
    out_dir = Path(demo.args.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    demo.step("the configs describe the Demo 04 topology")
    links = mesh.links()
    expected = set(DEMO04_LINKS)
    demo.expect("tcp-peer links in configs/ match demo_topologies.DEMO04_LINKS",
                f"{len(expected)} links", f"{len(links & expected)} of them"
                + (f"; missing {sorted(expected - links)}" if expected - links else "")
                + (f"; extra {sorted(links - expected)}" if links - expected else ""),
                links == expected)
    for dialer, listener in sorted(DEMO04_LINKS):
        print(f"  {dialer:<16} dials {listener}")

    demo.start()
    mesh.wait_converged(timeout=60)
    want = {}
    for dialer, listener in DEMO04_LINKS:
        want.setdefault(dialer, {})[listener] = 1
        want.setdefault(listener, {})[dialer] = 1
    took = demo.within(lambda: mesh.node(VIEWER).status()["KnownConnectionCosts"] == want, 30)
    known = mesh.node(VIEWER).status()["KnownConnectionCosts"]
    pairs = {tuple(sorted((a, b))) for a, peers in known.items() for b in peers}
    demo.expect(f"{VIEWER} knows every connection", f"{len(want)} nodes, {len(DEMO04_LINKS)} "
                "links", f"{len(known)} nodes, {len(pairs)} links"
                + (f" (after {took:.1f} s)" if took is not None else "; not all of them"),
                took is not None)
    mesh.wait_until_work_types(VIEWER, TARGET, ["gather-hostname"], timeout=30)

    demo.step(f"the mesh as {VIEWER} sees it")
    demo.sh(VIEWER, "mesh", "status")
    out = demo.sh(VIEWER, "receptorctl", "traceroute", TARGET).stdout.decode()
    hops = [line.split()[1] for line in out.splitlines() if line[:1].isdigit()]
    shortest = [VIEWER, "west-relayer02", "east-relayer02", TARGET]
    demo.expect("the shortest path: three hops (the other path, through west-relayer01 and "
                "controller01, takes four)", ", ".join(shortest), ", ".join(hops),
                hops == shortest)

    demo.step(f"work from {VIEWER} to {TARGET}")
    out = demo.sh(VIEWER, "mesh", "work", "submit", "--node", TARGET, "--no-payload",
                  "--rm", "--follow", "gather-hostname").stdout.decode()
    demo.expect(f"{TARGET}'s host name (this machine)", socket.gethostname(), out.strip(),
                out.strip() == socket.gethostname())

    demo.step(f"the mesh as a graph (files in {out_dir})")
    dot = demo.sh(VIEWER, "mesh", "status", "--graph", stdout_to="mesh.dot",
                  cwd=out_dir).stdout.decode()
    print(dot, end="")
    lines = [line.strip() for line in dot.splitlines()]
    edges = sum(" -- " in line for line in lines)
    nodes = sum(line.startswith('"') and " -- " not in line for line in lines)
    local = f'"{VIEWER}" [label="{VIEWER}\\n(local)"' in dot
    demo.expect("mesh.dot draws every node and link once",
                f"{len(want)} nodes, {len(DEMO04_LINKS)} edges, {VIEWER} marked (local)",
                f"{nodes} nodes, {edges} edges, {VIEWER} {'marked' if local else 'NOT marked'}"
                " (local)", (nodes, edges, local) == (len(want), len(DEMO04_LINKS), True))
    demo.sh(VIEWER, "mesh", "status", "--graph", "--format", "mermaid", stdout_to="mesh.mmd",
            cwd=out_dir)
    if shutil.which("dot"):
        demo.sh(VIEWER, "dot", "-Tsvg", "mesh.dot", "-o", "mesh.svg", cwd=out_dir)
        svg = out_dir / "mesh.svg"
        demo.expect("Graphviz renders it", "mesh.svg", f"{svg.name}, {svg.stat().st_size} bytes"
                    if svg.exists() else "no mesh.svg", svg.exists())
    else:
        print("\n(Graphviz `dot` is not installed: skipping mesh.svg; install graphviz and run "
              "`dot -Tsvg mesh.dot -o mesh.svg`, or paste mesh.mmd into a Mermaid viewer)")
    print(f"\nwrote {', '.join(sorted(p.name for p in out_dir.glob('mesh.*')))} in {out_dir}")


if __name__ == "__main__":
    demo = Demo(__file__, "Demo 04: a large mesh",
                "Ten `mesh node -c configs/<node>.yml` processes on 127.0.0.1: controller01 and "
                "west-controller01, five relays, three executors. Commands run on "
                "west-controller01's control socket.")
    demo.parser.add_argument("--output-dir", default=str(Path(__file__).resolve().parent / "out"),
                             help="where mesh.dot, mesh.mmd and mesh.svg go")
    sys.exit(demo.run(body))
