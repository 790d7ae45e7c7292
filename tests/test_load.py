"""Load on one executor, through bench/load_bench.py's checks.

1000 units of ``true``, 20 clients at a time: ``run`` raises LoadCheckFailed (an
AssertionError) unless every unit Succeeded and was released, no unit is left in ``work
list`` or on disk, the node's RSS after all were released is within 32 MiB of its RSS at the
start, and a second 1000 units all show as Succeeded in ``work list``.  Speed is reported,
not asserted (bench/load_bench.py is the benchmark).
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from mesh.testing import Mesh

BENCH = runpy.run_path(str(Path(__file__).parent.parent / "bench" / "load_bench.py"),
                       run_name="load_bench")


@pytest.mark.slow
def test_thousand_units_succeed_release_and_memory_returns(mesh: Mesh) -> None:
    print(BENCH["report"](BENCH["run"](mesh, units=1000, parallel=20)))
