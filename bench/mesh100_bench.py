"""A 100-node mesh on one machine: convergence time and memory per node.

Node i > 0 dials node (i-1)//2 (a binary tree, depth 7) and every tenth node also dials a
random earlier node, so there are alternative paths.  The mesh has converged when `status` on
every node lists all the nodes (in KnownConnectionCosts) and routes to all the others.
Reports the time from the last node being ready to that, and the RSS per node.  Exits 1
naming the nodes that miss others when it does not converge.

With ``--route-auth off|prefer|require`` every link is TLS (one CA, a node-ID certificate per
node, made as ``mesh cert`` makes them) and every node has that ``route-auth`` mode, so
``require`` against ``off`` measures what signing and checking routing updates costs.

    .venv/bin/python bench/mesh100_bench.py [--nodes 100] [--timeout 600] [--route-auth MODE]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench_main import run_bench
from mesh.testing import Mesh, NodeProcess, wait_until


class MeshCheckFailed(AssertionError):
    """Some node's status does not list every node of the mesh."""


@dataclass
class Mesh100Result:
    nodes: int
    links: int
    #: From starting the first process to every control socket answering, in seconds.
    start_s: float
    #: From the last node being ready to every node's status listing all nodes, in seconds.
    converged_s: float
    #: Nodes whose status was checked to list all nodes (every node).
    checked: int
    #: RSS of each node process after convergence, in MiB.
    rss_mib: list[float]
    #: The route-auth mode of every node (TLS links), or None for plain TCP links.
    route_auth: str | None = None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(mesh: Mesh, nodes: int, seed: int = 7) -> int:
    """Add the tree-plus-cross-links topology to ``mesh``; returns the number of links."""
    rng = random.Random(seed)
    names = [f"n{i:03d}" for i in range(nodes)]
    for name in names:
        mesh.add(name).log_level = "warning"
    links = 0
    for i in range(1, nodes):
        mesh.link(names[i], names[(i - 1) // 2])
        links += 1
        if i % 10 == 0 and i > 2:
            other = rng.randrange(0, i - 1)
            if other != (i - 1) // 2:
                mesh.link(names[i], names[other])
                links += 1
    return links


def secure(mesh: Mesh, mode: str) -> None:
    """Make every link of ``mesh`` TLS with node-ID certificates from one CA, and give every
    node ``route-auth`` ``mode``."""
    from mesh_builtin import certs

    pki = mesh.workdir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = certs.make_ca("mesh100 bench CA")
    ca = str(pki / "ca.crt")
    certs.write_cert(ca, ca_cert)
    for name, node in mesh.nodes.items():
        key = certs.generate_key()
        req = certs.make_request(name, key, ip_addresses=["127.0.0.1"], node_ids=[name])
        cert, key_path = str(pki / f"{name}.crt"), str(pki / f"{name}.key")
        certs.write_key(key_path, key)
        certs.write_cert(cert, certs.sign_request(req, ca_cert, ca_key))
        for section in node.sections:
            for kind, tls in (("tcp-listener", "srv"), ("tcp-peer", "cli")):
                if kind in section:
                    section[kind]["tls"] = tls
        node.sections += [
            {"tls-server": {"name": "srv", "cert": cert, "key": key_path,
                            "requireclientcert": True, "clientcas": ca}},
            {"tls-client": {"name": "cli", "cert": cert, "key": key_path, "rootcas": ca}},
            {"route-auth": {"mode": mode, "tls": "srv"}}]


def missing(node: NodeProcess, everyone: set[str]) -> str:
    """What ``node``'s status lacks of ``everyone`` ("" when nothing)."""
    status = node.status()
    unknown = everyone - set(status["KnownConnectionCosts"])
    unrouted = everyone - {node.name} - set(status["RoutingTable"])
    return ", ".join(f"{what} {sorted(names)[:5]}{'...' if len(names) > 5 else ''}"
                     for what, names in (("unknown", unknown), ("no route to", unrouted))
                     if names)


def run(mesh: Mesh, nodes: int = 100, timeout: float = 600.0,
        route_auth: str | None = None) -> Mesh100Result:
    """Start a ``nodes``-node mesh in ``mesh`` and wait until every node's status lists every
    node; raises MeshCheckFailed if that does not happen within ``timeout`` seconds.
    ``route_auth``: TLS links and that route-auth mode on every node (see :func:`secure`)."""
    links = build(mesh, nodes)
    if route_auth is not None:
        secure(mesh, route_auth)
    everyone = set(mesh.nodes)
    started = time.perf_counter()
    try:
        for node in mesh.nodes.values():
            node.start(wait=False)
        for node in mesh.nodes.values():
            node.wait_ready(timeout=timeout)
        ready = time.perf_counter()
        try:
            wait_until(lambda: not any(missing(n, everyone) for n in mesh.nodes.values()),
                       timeout=timeout, interval=0.5,
                       what="every node's status listing all nodes")
        except TimeoutError as exc:
            lacking = {n.name: missing(n, everyone) for n in mesh.nodes.values()}
            lacking = {name: what for name, what in lacking.items() if what}
            raise MeshCheckFailed(f"{exc}: {len(lacking)} nodes lack others, e.g. "
                                  f"{dict(list(lacking.items())[:3])}") from None
        converged = time.perf_counter() - ready
        rss = [rss_mib(n.proc.pid) for n in mesh.nodes.values() if n.proc]
        return Mesh100Result(nodes, links, ready - started, converged, len(everyone), rss,
                             route_auth)
    finally:
        mesh.stop()  # SIGTERM to all at once, then reap


def report(r: Mesh100Result) -> str:
    """The result as a table."""
    rows = [("start of all processes until all ready", f"{r.start_s:.1f} s"),
            ("convergence after the last node was ready", f"{r.converged_s:.1f} s"),
            (f"nodes whose status lists all {r.nodes}", r.checked),
            ("RSS per node median / max",
             f"{statistics.median(r.rss_mib):.0f} / {max(r.rss_mib):.0f} MiB"),
            ("RSS all nodes", f"{sum(r.rss_mib) / 1024:.1f} GiB")]
    links = "plain TCP links" if r.route_auth is None else \
        f"TLS links, route-auth {r.route_auth}"
    return "\n".join([f"\n{r.nodes}-node mesh ({r.links} links: binary tree + cross links), "
                      f"one process per node, {links}",
                      f"{'measure':<44} | value", f"{'-' * 44}-+-{'-' * 14}",
                      *(f"{label:<44} | {value}" for label, value in rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for start and for convergence")
    parser.add_argument("--route-auth", choices=("off", "prefer", "require"), default=None,
                        help="TLS links with node-ID certificates and this route-auth mode")
    args = parser.parse_args(argv)
    run_bench("mesh-100-", lambda mesh: run(mesh, args.nodes, args.timeout, args.route_auth),
              report,
              (MeshCheckFailed, TimeoutError))


if __name__ == "__main__":
    main()
