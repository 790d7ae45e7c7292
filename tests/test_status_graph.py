"""`mesh status --graph`: the DOT and Mermaid renderings of a status reply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from mesh.control.graph import to_dot, to_mermaid, topology
from mesh.testing import Mesh, wait_until


def ad(node: str, *work: str, secure: tuple[str, ...] = ()) -> dict[str, Any]:
    commands = [{"WorkType": w, "Secure": False} for w in work]
    commands += [{"WorkType": w, "Secure": True} for w in secure]
    return {"NodeID": node, "Service": "control", "ConnType": 1, "Tags": None,
            "Time": "2026-11-28T00:00:00Z", "WorkCommands": commands or None}


DIAMOND: dict[str, Any] = {
    "NodeID": "controller01",
    "KnownConnectionCosts": {
        "controller01": {"relayer01": 1, "relayer02": 2},
        "relayer01": {"controller01": 1, "executor01": 1},
        "relayer02": {"controller01": 2, "executor01": 1},
        "executor01": {"relayer01": 1, "relayer02": 1},
    },
    "Advertisements": [ad("controller01"), ad("relayer01"), ad("relayer02"),
                       ad("executor01", "echo-reply", "echo-sleep")],
}

DIAMOND_DOT = """\
graph mesh {
    // mesh topology as seen by controller01
    rankdir=LR;
    node [shape=box, style=rounded, fontname="Helvetica"];
    edge [fontname="Helvetica"];
    "controller01" [label="controller01\\n(local)", style="rounded,filled", fillcolor="#dbe8f7", color="#1f4e8c", penwidth=3];
    "executor01" [label="executor01\\nwork: echo-reply, echo-sleep", style="rounded,filled", fillcolor="#fff3cd"];
    "relayer01";
    "relayer02";
    "controller01" -- "relayer01" [label="1"];
    "controller01" -- "relayer02" [label="2"];
    "executor01" -- "relayer01" [label="1"];
    "executor01" -- "relayer02" [label="1"];
}
"""

DIAMOND_MERMAID = """\
flowchart LR
    %% mesh topology as seen by controller01
    controller01["controller01<br/>(local)"]
    executor01["executor01<br/>work: echo-reply, echo-sleep"]
    relayer01["relayer01"]
    relayer02["relayer02"]
    controller01 ---|"1"| relayer01
    controller01 ---|"2"| relayer02
    executor01 ---|"1"| relayer01
    executor01 ---|"1"| relayer02
    classDef local fill:#dbe8f7,stroke:#1f4e8c,stroke-width:3px
    classDef work fill:#fff3cd
    class executor01 work
    class controller01 local
"""

# beta and gamma disagree on their cost; delta reports a link to alpha that alpha does not
# (yet) know; the local node runs a signed-only work type; costs arrive as floats.
ODD: dict[str, Any] = {
    "NodeID": "alpha",
    "KnownConnectionCosts": {
        "alpha": {"beta": 1.0},
        "beta": {"alpha": 1.0, "gamma": 2.5},
        "gamma": {"beta": 4.0},
        "delta": {"alpha": 3.0},
    },
    "Advertisements": [ad("alpha", "run", secure=("signed-run",)), ad("alpha")],
}

ODD_DOT = """\
graph mesh {
    // mesh topology as seen by alpha
    rankdir=LR;
    node [shape=box, style=rounded, fontname="Helvetica"];
    edge [fontname="Helvetica"];
    "alpha" [label="alpha\\n(local)\\nwork: run, signed-run (signed)", style="rounded,filled", fillcolor="#fff3cd", color="#1f4e8c", penwidth=3];
    "beta";
    "delta";
    "gamma";
    "alpha" -- "beta" [label="1"];
    "alpha" -- "delta" [label="3", style=dashed];
    "beta" -- "gamma" [label="beta→gamma: 2.5\\ngamma→beta: 4", color="#c0392b", fontcolor="#c0392b"];
}
"""

ODD_MERMAID = """\
flowchart LR
    %% mesh topology as seen by alpha
    alpha["alpha<br/>(local)<br/>work: run, signed-run (signed)"]
    beta["beta"]
    delta["delta"]
    gamma["gamma"]
    alpha ---|"1"| beta
    alpha -.-|"3"| delta
    beta ---|"beta→gamma: 2.5<br/>gamma→beta: 4"| gamma
    classDef local fill:#dbe8f7,stroke:#1f4e8c,stroke-width:3px
    classDef work fill:#fff3cd
    class alpha work
    class alpha local
    linkStyle 2 stroke:#c0392b,color:#c0392b
"""


def test_diamond_dot() -> None:
    assert to_dot(DIAMOND) == DIAMOND_DOT


def test_diamond_mermaid() -> None:
    assert to_mermaid(DIAMOND) == DIAMOND_MERMAID


def test_disagreeing_and_one_sided_edges_dot() -> None:
    assert to_dot(ODD) == ODD_DOT


def test_disagreeing_and_one_sided_edges_mermaid() -> None:
    assert to_mermaid(ODD) == ODD_MERMAID


def test_each_pair_once() -> None:
    topo = topology(DIAMOND)
    assert [(e.a, e.b) for e in topo.edges] == [
        ("controller01", "relayer01"), ("controller01", "relayer02"),
        ("executor01", "relayer01"), ("executor01", "relayer02")]


def test_a_node_alone() -> None:
    status = {"NodeID": "solo", "KnownConnectionCosts": {}, "Advertisements": None}
    assert to_dot(status) == """\
graph mesh {
    // mesh topology as seen by solo
    rankdir=LR;
    node [shape=box, style=rounded, fontname="Helvetica"];
    edge [fontname="Helvetica"];
    "solo" [label="solo\\n(local)", style="rounded,filled", fillcolor="#dbe8f7", color="#1f4e8c", penwidth=3];
}
"""
    assert to_mermaid(status) == """\
flowchart LR
    %% mesh topology as seen by solo
    solo["solo<br/>(local)"]
    classDef local fill:#dbe8f7,stroke:#1f4e8c,stroke-width:3px
    class solo local
"""


def test_mermaid_ids_are_safe_and_unique() -> None:
    # Node IDs may hold letters, digits and `_ . @ -`; Mermaid IDs may not, and `end`
    # is a Mermaid keyword.
    status = {"NodeID": "west-relayer01", "KnownConnectionCosts": {
        "west-relayer01": {"west_relayer01": 1, "end": 1, "9lives": 1, "ops@site.a": 1}}}
    assert to_mermaid(status) == """\
flowchart LR
    %% mesh topology as seen by west-relayer01
    n_9lives["9lives"]
    end_["end"]
    ops_site_a["ops@site.a"]
    west_relayer01["west-relayer01<br/>(local)"]
    west_relayer01_2["west_relayer01"]
    n_9lives -.-|"1"| west_relayer01
    end_ -.-|"1"| west_relayer01
    ops_site_a -.-|"1"| west_relayer01
    west_relayer01 -.-|"1"| west_relayer01_2
    classDef local fill:#dbe8f7,stroke:#1f4e8c,stroke-width:3px
    class west_relayer01 local
"""


LINE_DOT = """\
graph mesh {
    // mesh topology as seen by alpha
    rankdir=LR;
    node [shape=box, style=rounded, fontname="Helvetica"];
    edge [fontname="Helvetica"];
    "alpha" [label="alpha\\n(local)", style="rounded,filled", fillcolor="#dbe8f7", color="#1f4e8c", penwidth=3];
    "beta";
    "gamma" [label="gamma\\nwork: echo", style="rounded,filled", fillcolor="#fff3cd"];
    "alpha" -- "beta" [label="1"];
    "beta" -- "gamma" [label="2"];
}
"""

LINE_MERMAID = """\
flowchart LR
    %% mesh topology as seen by alpha
    alpha["alpha<br/>(local)"]
    beta["beta"]
    gamma["gamma<br/>work: echo"]
    alpha ---|"1"| beta
    beta ---|"2"| gamma
    classDef local fill:#dbe8f7,stroke:#1f4e8c,stroke-width:3px
    classDef work fill:#fff3cd
    class gamma work
    class alpha local
"""


def test_status_graph_of_a_real_line(mesh: Mesh) -> None:
    """alpha - beta - gamma (cost 2), gamma runs `echo`: the CLI prints the exact graph."""
    mesh.add("alpha")
    mesh.add("beta")
    mesh.add("gamma", listen=False,
             sections=[{"work-command": {"worktype": "echo", "command": "cat"}}])
    mesh.link("beta", "alpha")
    mesh.link("gamma", "beta", cost=2.0)
    mesh.start()
    mesh.wait_converged()
    mesh.wait_until_work_types("alpha", "gamma", ["echo"])
    alpha = mesh.nodes["alpha"]
    wait_until(lambda: alpha.status()["KnownConnectionCosts"] == {
        "alpha": {"beta": 1}, "beta": {"alpha": 1, "gamma": 2}, "gamma": {"beta": 2}},
        timeout=30, what="complete known connections on alpha")

    def graph(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "mesh", "status", "--socket",
                                 str(alpha.socket), "--graph", *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert graph() == LINE_DOT
    assert graph("--format", "dot") == LINE_DOT
    assert graph("--format", "mermaid") == LINE_MERMAID


def test_format_needs_graph() -> None:
    result = subprocess.run([sys.executable, "-m", "mesh", "status", "--socket", "/nonexistent",
                             "--format", "mermaid"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--format only applies to --graph" in result.stderr
    result = subprocess.run([sys.executable, "-m", "mesh", "status", "--socket", "/nonexistent",
                             "--graph", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "either --json or --graph" in result.stderr


def test_docs_show_the_real_output() -> None:
    """docs/cli.md quotes the line's graphs; keep them identical to what the CLI prints."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    assert "$ mesh status --graph\n" + LINE_DOT in docs
    assert "$ mesh status --graph --format mermaid\n" + LINE_MERMAID in docs
