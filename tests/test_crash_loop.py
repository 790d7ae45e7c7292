"""Crash safety under SIGKILL, through bench/crash_loop.py's checks.

A node is killed at random moments of bursts of unit submissions (payloads in flight,
commands running, results streamed) and restarted, 15 times.  ``run`` raises
CrashCheckFailed (an AssertionError) naming the unit if, right after a kill, a status file is
missing, truncated or has an unknown state, or if after the restart a unit does not end
Succeeded with its command's exact output or Failed by the restart, or if ``work list``
disagrees with the disk.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from mesh.testing import Mesh

BENCH = runpy.run_path(str(Path(__file__).parent.parent / "bench" / "crash_loop.py"),
                       run_name="crash_loop")


@pytest.mark.slow
def test_every_unit_consistent_after_sigkill_rounds(mesh: Mesh) -> None:
    result = BENCH["run"](mesh, rounds=15, seed=3)
    print(BENCH["report"](result))
    # Not vacuous: units were created, and some ran to the end across the kills.
    assert result.units > 0 and result.outcomes["Succeeded: exit status 0"] > 0, result
