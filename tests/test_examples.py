"""The demos in examples/: every run.py runs to completion, and the configs hold together.

Each run.py starts real node processes; a run that hangs gets SIGTERM (the script then stops its
nodes) and, if that is not enough, SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo_topologies import DEMO04_LINKS
from mesh.config.loader import parse_config
from mesh.plugins import make_plugin_manager

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMOS = ("01-simple-mesh", "02-work-payloads", "03-failure-cases", "04-large-mesh")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def run_example(name: str, *args: str, timeout: float = 180) -> str:
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / name / "run.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"{name}/run.py did not finish in {timeout} s:\n{out[-5000:]}")
    assert proc.returncode == 0, f"{name}/run.py exited with {proc.returncode}:\n{out[-8000:]}"
    return out


def assert_in_order(out: str, *needles: str) -> None:
    position = 0
    for needle in needles:
        found = out.find(needle, position)
        assert found >= 0, f"{needle!r} missing (after position {position}):\n{out[-6000:]}"
        position = found + len(needle)


def test_01_simple_mesh() -> None:
    out = run_example("01-simple-mesh")
    assert_in_order(out, "[controller01]$ mesh status", "Route", "executor01   relayer01",
                    "[controller01]$ mesh ping executor01", "Reply from executor01",
                    "traceroute executor01", "1: relayer01", "2: executor01",
                    "gather-hostname", "Unit ID:", "mesh work results",
                    "--rm --follow gather-hostname", "--rm --follow cat-files",
                    "/etc/hostname:1:", "hello from controller01",
                    "--rm --follow echo-sleep", "\n12 ", "=== Summary ===")
    assert "NOT AS EXPECTED" not in out
    assert re.search(r"01-simple-mesh: 3 nodes, \d+ commands, (\d+) of \1 checks", out)
    assert out.rstrip().endswith("OK")


def test_02_work_payloads() -> None:
    out = run_example("02-work-payloads")
    assert_in_order(out, "--payload greeting.txt", "hello from a file on controller01",
                    "--payload - ", "these lines were piped into mesh",
                    "--payload blob.bin", "sha256", "[controller01]$ mesh work list",
                    '"StateName": "Succeeded"', "mesh work release --all", ", released)",
                    "=== Summary ===")
    assert "NOT AS EXPECTED" not in out
    assert re.search(r"02-work-payloads: 3 nodes, \d+ commands, (\d+) of \1 checks", out)
    assert out.rstrip().endswith("OK")


@pytest.mark.slow
def test_03_failure_cases() -> None:
    out = run_example("03-failure-cases", timeout=300)
    assert_in_order(out, "case 1", "release --all removes both directories",
                    "case 2", "kill -9 relayer01", "executor01 via relayer02",
                    "case 3", "kill -9 relayer02", "unreachable", "start relayer02 again",
                    "case 4", "kill -9 controller01", "start controller01 again",
                    "case 5", "kill -9 executor01", "release pending",
                    "start executor01 again", "=== Summary ===")
    assert out.count("-> as expected") >= 15
    assert "NOT AS EXPECTED" not in out
    assert re.search(r"03-failure-cases: 4 nodes, \d+ commands, (\d+) of \1 checks", out)
    assert out.rstrip().endswith("OK")


def test_04_large_mesh(tmp_path: Path) -> None:
    out = run_example("04-large-mesh", "--output-dir", str(tmp_path), timeout=240)
    assert_in_order(out, "[west-controller01]$ mesh status", "east-executor01",
                    "traceroute east-executor01", "gather-hostname",
                    "[west-controller01]$ mesh status --graph > mesh.dot", "graph mesh {",
                    "=== Summary ===")
    assert "NOT AS EXPECTED" not in out
    assert re.search(r"04-large-mesh: 10 nodes, \d+ commands, (\d+) of \1 checks", out)
    dot = (tmp_path / "mesh.dot").read_text()
    assert dot.startswith("graph mesh {") and dot.count(" -- ") == len(DEMO04_LINKS)
    assert (tmp_path / "mesh.mmd").read_text().startswith("flowchart LR")
    assert ((tmp_path / "mesh.svg").exists() or "dot` is not installed" in out)


# -- the configs, without running anything ----------------------------------------------------

def render(text: str) -> str:
    return PLACEHOLDER.sub(lambda m: "/tmp/run" if m.group(1) == "rundir" else "2222", text)


def normalized(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A config with what differs between loopback and containers taken out."""
    out = []
    for item in sections:
        (name, body), = item.items()
        if isinstance(body, dict):
            body = {k: v for k, v in body.items()
                    if k not in ("bindaddr", "port", "address", "filename", "datadir")}
        out.append({name: body})
    return out


@pytest.fixture(scope="module")
def specs() -> Any:
    return make_plugin_manager().section_specs()


@pytest.mark.parametrize("demo", DEMOS)
def test_configs_and_compose_files_agree(demo: str, specs: Any) -> None:
    folder = EXAMPLES / demo
    local = {p.stem: p for p in (folder / "configs").glob("*.yml")}
    container = {p.stem: p for p in (folder / "compose").glob("*.yml")}
    assert local and set(local) == set(container)
    for name in local:
        local_text = local[name].read_text()
        container_text = container[name].read_text()
        parse_config(render(local_text), specs, source=str(local[name]))
        parse_config(container_text, specs, source=str(container[name]))
        assert "127.0.0.1" not in container_text and "${" not in container_text
        local_items = yaml.safe_load(render(local_text))
        container_items = yaml.safe_load(container_text)
        assert normalized(local_items) == normalized(container_items), name
        assert local_items[0]["node"]["id"] == name
        for item in container_items:
            if "tcp-peer" in item:
                host = item["tcp-peer"]["address"].rpartition(":")[0]
                assert host in container, f"{name} dials {host}, which is no service"

    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == set(local) | {"install"}
    for name in local:
        service = services[name]
        assert service["image"] == "python:3.11-slim"
        assert service["hostname"] == name
        assert service["command"] == ["mesh", "node", "-c", f"/etc/mesh/{name}.yml"]
        assert "./compose:/etc/mesh:ro" in service["volumes"]
        assert service["depends_on"]["install"]["condition"] == "service_completed_successfully"
    assert "../..:/src:ro" in services["install"]["volumes"]


def test_demo04_configs_are_the_demo04_topology() -> None:
    links = set()
    for path in (EXAMPLES / "04-large-mesh" / "configs").glob("*.yml"):
        for match in re.finditer(r"address: 127\.0\.0\.1:\$\{port:([^}]+)\}", path.read_text()):
            links.add((path.stem, match.group(1)))
    assert links == set(DEMO04_LINKS)
