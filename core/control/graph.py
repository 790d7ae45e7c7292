"""The mesh topology of a ``status`` reply as a graph: Graphviz DOT or Mermaid.

Pure functions of the reply (no I/O), used by ``mesh status --graph``. The drawing:

* one box per node of ``KnownConnectionCosts`` (peers named only on the other side of a
  connection included), plus the reporting node itself; nodes are sorted by name;
* the reporting node (``NodeID``) is highlighted and labelled ``(local)``;
* nodes that advertise work types are filled and list them (``work: a, b``; secure, i.e.
  signed-only, types end in ``(signed)``);
* one undirected edge per connected pair, labelled with its cost. When the two ends report
  different costs the label shows both directions (``a→b: 1`` / ``b→a: 2``) and the edge is
  red; when only one end reports the connection (the other's advertisement has not arrived)
  the edge is dashed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

LOCAL_COLOR = "#1f4e8c"
LOCAL_FILL = "#dbe8f7"
WORK_FILL = "#fff3cd"
MISMATCH_COLOR = "#c0392b"

# Words Mermaid reads as keywords where a node ID is expected.
_MERMAID_KEYWORDS = {"end", "graph", "flowchart", "subgraph", "style", "class", "classdef",
                     "click", "linkstyle", "direction", "call", "href"}


@dataclass(frozen=True)
class Edge:
    """A connected pair ``a < b`` with the cost each end reports (None: not reported)."""

    a: str
    b: str
    cost_ab: float | None
    cost_ba: float | None

    @property
    def mismatch(self) -> bool:
        return (self.cost_ab is not None and self.cost_ba is not None
                and self.cost_ab != self.cost_ba)

    @property
    def one_sided(self) -> bool:
        return self.cost_ab is None or self.cost_ba is None

    def label_lines(self) -> list[str]:
        if self.mismatch:
            return [f"{self.a}→{self.b}: {_cost(self.cost_ab)}",
                    f"{self.b}→{self.a}: {_cost(self.cost_ba)}"]
        cost = self.cost_ab if self.cost_ab is not None else self.cost_ba
        return [_cost(cost)]


@dataclass(frozen=True)
class Topology:
    """What both renderings draw, extracted from a ``status`` reply."""

    local: str
    nodes: list[str]
    edges: list[Edge]
    work_types: dict[str, list[str]]

    def node_lines(self, name: str) -> list[str]:
        lines = [name]
        if name == self.local:
            lines.append("(local)")
        if self.work_types.get(name):
            lines.append("work: " + ", ".join(self.work_types[name]))
        return lines


def _cost(value: float | None) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def topology(status: dict[str, Any]) -> Topology:
    """Nodes, edges and advertised work types of a ``status`` reply."""
    local = str(status.get("NodeID") or "")
    costs: dict[str, dict[str, float]] = status.get("KnownConnectionCosts") or {}
    names = set(costs) | {peer for peers in costs.values() for peer in peers}
    if local:
        names.add(local)
    pairs = {tuple(sorted((node, peer))) for node, peers in costs.items() for peer in peers
             if peer != node}
    edges = [Edge(a, b, (costs.get(a) or {}).get(b), (costs.get(b) or {}).get(a))
             for a, b in sorted(pairs)]
    work_types: dict[str, list[str]] = {}
    for ad in status.get("Advertisements") or []:
        for command in ad.get("WorkCommands") or []:
            name = command["WorkType"] + (" (signed)" if command.get("Secure") else "")
            types = work_types.setdefault(ad["NodeID"], [])
            if name not in types:
                types.append(name)
    return Topology(local, sorted(names), edges, work_types)


# -- Graphviz DOT -----------------------------------------------------------------------------

def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(lines: list[str]) -> str:
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"')
                            for line in lines) + '"'


def to_dot(status: dict[str, Any]) -> str:
    """The topology of ``status`` as an undirected Graphviz graph (``dot -Tsvg`` renders it)."""
    topo = topology(status)
    out = ["graph mesh {",
           f"    // mesh topology as seen by {topo.local}",
           "    rankdir=LR;",
           '    node [shape=box, style=rounded, fontname="Helvetica"];',
           '    edge [fontname="Helvetica"];']
    for name in topo.nodes:
        attrs = []
        lines = topo.node_lines(name)
        if len(lines) > 1:
            attrs.append(f"label={_dot_label(lines)}")
        if name in topo.work_types:
            attrs.append('style="rounded,filled"')
            attrs.append(f'fillcolor="{WORK_FILL}"')
        elif name == topo.local:
            attrs.append('style="rounded,filled"')
            attrs.append(f'fillcolor="{LOCAL_FILL}"')
        if name == topo.local:
            attrs.append(f'color="{LOCAL_COLOR}"')
            attrs.append("penwidth=3")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        out.append(f"    {_dot_quote(name)}{suffix};")
    for edge in topo.edges:
        attrs = [f"label={_dot_label(edge.label_lines())}"]
        if edge.mismatch:
            attrs.append(f'color="{MISMATCH_COLOR}"')
            attrs.append(f'fontcolor="{MISMATCH_COLOR}"')
        if edge.one_sided:
            attrs.append("style=dashed")
        out.append(f"    {_dot_quote(edge.a)} -- {_dot_quote(edge.b)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


# -- Mermaid ----------------------------------------------------------------------------------

def _mermaid_ids(names: list[str]) -> dict[str, str]:
    """Mermaid-safe, unique, readable node IDs (``west-relayer01`` → ``west_relayer01``)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not base or not base[0].isalpha():
            base = "n_" + base
        if base.lower() in _MERMAID_KEYWORDS:
            base += "_"
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        ids[name] = candidate
    return ids


def _mermaid_text(lines: list[str]) -> str:
    return '"' + "<br/>".join(line.replace('"', "#quot;") for line in lines) + '"'


def to_mermaid(status: dict[str, Any]) -> str:
    """The topology of ``status`` as a Mermaid flowchart (paste it into a ```mermaid block)."""
    topo = topology(status)
    ids = _mermaid_ids(topo.nodes)
    out = ["flowchart LR", f"    %% mesh topology as seen by {topo.local}"]
    for name in topo.nodes:
        out.append(f"    {ids[name]}[{_mermaid_text(topo.node_lines(name))}]")
    mismatched = []
    for index, edge in enumerate(topo.edges):
        link = "-.-" if edge.one_sided else "---"
        out.append(f"    {ids[edge.a]} {link}|{_mermaid_text(edge.label_lines())}| "
                   f"{ids[edge.b]}")
        if edge.mismatch:
            mismatched.append(str(index))
    if topo.local:
        out.append(f"    classDef local fill:{LOCAL_FILL},stroke:{LOCAL_COLOR},"
                   "stroke-width:3px")
    if topo.work_types:
        out.append(f"    classDef work fill:{WORK_FILL}")
    workers = [ids[n] for n in topo.nodes if n in topo.work_types]
    if workers:
        out.append(f"    class {','.join(workers)} work")
    if topo.local:
        out.append(f"    class {ids[topo.local]} local")
    if mismatched:
        out.append(f"    linkStyle {','.join(mismatched)} stroke:{MISMATCH_COLOR},"
                   f"color:{MISMATCH_COLOR}")
    return "\n".join(out) + "\n"
