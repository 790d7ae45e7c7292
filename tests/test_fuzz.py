"""The fuzzer (bench/fuzz_node.py) as slow tests.

* Random and mutated frames over a link and random and mutated commands over the control
  socket: the node keeps serving, keeps its routes, and still carries a remote job.
* The same with the control-plane attacks mixed in (forged duplicate accusations, forged
  older-instance updates, forged updates of other nodes, floods of invented node names): no
  input stops any node.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FUZZER = Path(__file__).resolve().parent.parent / "bench" / "fuzz_node.py"


def run_fuzzer(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str],
                                                      dict[str, Any]]:
    """Run the fuzzer; return the process and its report (its last line, ``JSON: {...}``)."""
    run = subprocess.run([sys.executable, str(FUZZER), *args],
                         capture_output=True, text=True, timeout=timeout)
    lines = [line for line in run.stdout.splitlines() if line.startswith("JSON: ")]
    assert lines, f"no report from the fuzzer:\n{run.stdout}\n{run.stderr[-3000:]}"
    return run, json.loads(lines[-1][len("JSON: "):])


@pytest.mark.slow
def test_fuzzed_node_keeps_serving() -> None:
    run, report = run_fuzzer("--seconds", "20", "--seed", "7", "--attacks", "none",
                             timeout=300)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-3000:]}"
    assert report["target_alive"] and report["remote_job_ok"]
    assert report["link_inputs"] > 100 and report["control_inputs"] > 100


@pytest.mark.slow
def test_control_plane_attacks_stop_no_node() -> None:
    run, report = run_fuzzer("--seconds", "60", "--seed", "11", "--attacks", "all",
                             timeout=900)
    table = run.stdout
    assert report["node_stops"] == 0, f"node-stopping inputs:\n{table}\n" \
        f"{json.dumps(report['stops'], indent=1)[:4000]}"
    for kind in ("forged-duplicate", "older-instance", "hijack", "name-flood"):
        assert report["inputs"][kind] > 0, f"no {kind} inputs were sent:\n{table}"
    assert {"target", "controller01", "executor01"} <= set(report["learned_nodes"]), \
        f"the fuzzer did not learn the real epochs from the link:\n{table}"
    assert all(report["final_checks"].values()), \
        f"a final check failed:\n{table}\n{run.stderr[-6000:]}"
    assert run.returncode == 0, f"{table}\n{run.stderr[-3000:]}"
