"""Meshes of node processes: nodes declared with their links, started together, converged.

:class:`Mesh` is a set of :class:`~mesh.testing.processes.NodeProcess` in one scratch directory;
:func:`build_cluster` makes one of ``n`` nodes in a named topology (the ``mesh_cluster`` fixture of
:mod:`mesh.pytest_plugin` uses it).
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any, Callable, Iterable

from mesh.testing.polling import wait_until
from mesh.testing.ports import free_port
from mesh.testing.processes import NodeProcess


class Mesh:
    """A set of node processes in one scratch directory; links are declared per node."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: dict[str, NodeProcess] = {}
        self.ports: dict[str, int] = {}

    def add(self, name: str, *, listen: bool = True, sections: Iterable[dict] = (),
            env: dict[str, str] | None = None, plugins: Iterable[str] | None = (),
            node_class: type[NodeProcess] = NodeProcess) -> NodeProcess:
        """A node named ``name`` (not started yet).

        :param listen: give it a ``tcp-listener`` on a free port (:attr:`ports`).
        :param plugins: installed plugins it loads besides mesh's own
            (:attr:`NodeProcess.plugins`); ``None`` loads every installed plugin.
        :param node_class: a subclass of :class:`NodeProcess` that runs the node another way
            (its :meth:`~NodeProcess.argv`).
        """
        node = node_class(name, self.workdir / name, list(sections), dict(env or {}),
                          plugins=None if plugins is None else tuple(plugins))
        if listen:
            self.ports[name] = free_port()
            node.sections.insert(0, {"tcp-listener": {"port": self.ports[name],
                                                      "bindaddr": "127.0.0.1"}})
        self.nodes[name] = node
        return node

    def link(self, dialer: str, listener: str, cost: float = 1.0) -> None:
        """``dialer`` gets a tcp-peer to ``listener``'s listener with ``cost``."""
        peer: dict[str, Any] = {"address": f"127.0.0.1:{self.ports[listener]}"}
        if cost != 1.0:
            peer["cost"] = cost
            for section in self.nodes[listener].sections:
                if "tcp-listener" in section:
                    section["tcp-listener"].setdefault("nodecost", {})[dialer] = cost
        self.nodes[dialer].sections.append({"tcp-peer": peer})

    def start(self) -> "Mesh":
        for node in self.nodes.values():
            node.start(wait=False)
        for node in self.nodes.values():
            node.wait_ready()
        return self

    def wait_converged(self, timeout: float = 60.0) -> None:
        """Every node has a route to every other node."""
        names = set(self.nodes)

        def converged() -> bool:
            return all(set(n.routes()) >= names - {n.name}
                       for n in self.nodes.values() if n.alive)

        try:
            wait_until(converged, timeout=timeout, what="mesh convergence")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {self._convergence_report(names)}") from None

    def _convergence_report(self, names: set[str]) -> str:
        """Which nodes lack which routes, and their link events (for a failed wait)."""
        lines = []
        for node in self.nodes.values():
            try:
                missing = sorted(names - {node.name} - set(node.routes())) if node.alive \
                    else ["(not running)"]
            except Exception as exc:  # an unreachable control socket says something too
                missing = [f"(status failed: {exc})"]
            if missing:
                events = [f"{e.get('event')} {e.get('peer', '')} {e.get('reason', '')}".strip()
                          for e in node.log_events()
                          if e.get("event") in ("connection_established", "connection_lost",
                                                "link_rejected", "backend_dial_failed")]
                lines.append(f"{node.name} lacks {missing}; links: {events[-12:]}")
        return " | ".join(lines) or "every node has every route now"

    def wait_until_work_types(self, viewer: str, node: str, work_types: list[str],
                              timeout: float = 60.0) -> None:
        """``viewer`` sees ``node`` advertise all of ``work_types``."""

        def advertised() -> bool:
            for ad in self.nodes[viewer].status()["Advertisements"]:
                if ad["NodeID"] == node and ad.get("WorkCommands"):
                    names = {c["WorkType"] for c in ad["WorkCommands"]}
                    if set(work_types) <= names:
                        return True
            return False

        wait_until(advertised, timeout=timeout, what=f"{node}'s work types on {viewer}")

    def stop(self) -> None:
        """SIGTERM every node at once, then wait for each (one by one, every exit would be
        noticed and re-routed around by all the nodes still running)."""
        for node in self.nodes.values():
            node.signal(signal.SIGTERM)
        for node in self.nodes.values():
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


#: Topologies :func:`build_cluster` knows: each maps node names to (dialer, listener) links.
TOPOLOGIES: dict[str, Callable[[list[str]], list[tuple[str, str]]]] = {
    # every node dials the one before it: node1 - node2 - node3
    "line": lambda names: list(zip(names[1:], names)),
    # every node dials the first one
    "star": lambda names: [(name, names[0]) for name in names[1:]],
    # every node dials every node before it
    "full": lambda names: [(b, a) for i, a in enumerate(names) for b in names[i + 1:]],
}


def build_cluster(workdir: Path, n: int = 3, topology: str = "line", *,
                  names: Iterable[str] | None = None,
                  sections: dict[str, Iterable[dict[str, Any]]] | None = None,
                  env: dict[str, dict[str, str]] | None = None,
                  plugins: Iterable[str] | None = ()) -> Mesh:
    """A :class:`Mesh` of ``n`` nodes linked as ``topology`` (not started yet).

    :param names: node IDs (default ``node1`` ... ``nodeN``).
    :param sections: extra config sections per node ID, e.g.
        ``{"node2": [{"work-echo": {"worktype": "echo"}}]}``.
    :param env: extra environment variables per node ID.
    :param plugins: distributions or entry points the nodes load besides mesh's own
        (``MESH_LOAD_PLUGINS``), e.g. ``["mesh-plugin-echo"]``; ``None`` loads every installed
        plugin.  The default loads none: tests do not see ambient plugins.
    :raises ValueError: an unknown topology, a wrong number of names, or sections or env for a
        node that is not in the cluster.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; use one of {', '.join(TOPOLOGIES)}")
    node_names = list(names) if names is not None else [f"node{i}" for i in range(1, n + 1)]
    if names is not None and len(node_names) != n:
        raise ValueError(f"{len(node_names)} names given for {n} nodes")
    for what, given in (("sections", sections), ("env", env)):
        unknown = sorted(set(given or {}) - set(node_names))
        if unknown:
            raise ValueError(f"{what} for unknown nodes {unknown}; nodes are {node_names}")
    links = TOPOLOGIES[topology](node_names)
    listeners = {listener for _, listener in links}
    selected = None if plugins is None else tuple(plugins)
    cluster = Mesh(workdir)
    for name in node_names:
        cluster.add(name, listen=name in listeners, sections=(sections or {}).get(name, ()),
                    env=(env or {}).get(name), plugins=selected)
    for dialer, listener in links:
        cluster.link(dialer, listener)
    return cluster


def wait_services(cluster: Mesh, service: str = "control", timeout: float = 60.0) -> None:
    """Every node sees every other node advertise ``service`` (remote work needs ``control``)."""
    names = set(cluster.nodes)

    def advertised() -> bool:
        for node in cluster.nodes.values():
            seen = {ad["NodeID"] for ad in node.status()["Advertisements"]
                    if ad.get("Service") == service}
            if not seen >= names - {node.name}:
                return False
        return True

    wait_until(advertised, timeout=timeout, what=f"every node's {service!r} advertisement")
