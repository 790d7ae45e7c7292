"""A 100-node mesh converges, through bench/mesh100_bench.py's checks.

``run`` starts 100 node processes (a binary tree with cross links) and raises
MeshCheckFailed (an AssertionError) naming the nodes that lack others unless, within a
generous deadline, ``status`` on every one of the 100 nodes lists all 100 nodes and routes to
the 99 others.  Convergence time and memory are reported, not asserted.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from mesh.testing import Mesh

BENCH = runpy.run_path(str(Path(__file__).parent.parent / "bench" / "mesh100_bench.py"),
                       run_name="mesh100_bench")


@pytest.mark.slow
def test_hundred_nodes_all_listed_everywhere(mesh: Mesh) -> None:
    print(BENCH["report"](BENCH["run"](mesh, nodes=100, timeout=600)))
