"""The fuzzer (bench/fuzz_node.py) as a slow test: a node fed random and mutated frames over a
link and random and mutated commands over its control socket keeps serving, keeps its
routes, and still carries a remote job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZER = Path(__file__).resolve().parent.parent / "bench" / "fuzz_node.py"


@pytest.mark.slow
def test_fuzzed_node_keeps_serving() -> None:
    run = subprocess.run([sys.executable, str(FUZZER), "--seconds", "20", "--seed", "7"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-3000:]}"
    report = json.loads(run.stdout[run.stdout.index("{"):])
    print(report)
    assert report["target_alive"] and report["remote_job_ok"]
    assert report["link_inputs"] > 100 and report["control_inputs"] > 100
