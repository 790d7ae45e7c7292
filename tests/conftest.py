"""Shared fixtures: real node processes on loopback, cleaned up by pid."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import Mesh

# Tests never see plugins installed in the environment beyond our own distribution: a node that
# mesh.testing starts loads mesh's own plugins only (MESH_LOAD_PLUGINS=mesh) unless the test names
# the ones it wants (NodeProcess.plugins, Mesh.add(plugins=...), mesh_cluster(plugins=...)).
os.environ.setdefault("MESH_LOG_FORMAT", "json")
# The demos' topologies (examples/demo_topologies.py) and the bench scripts' shared main
# (bench/bench_main.py) import as the scripts themselves import them: as top-level modules.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "bench")]
# The plugin index of this run (and of the node processes it starts) lives in a scratch
# directory, not in the user's ~/.cache: every run starts by building it.
if "MESH_CACHE_DIR" not in os.environ:
    os.environ["MESH_CACHE_DIR"] = tempfile.mkdtemp(prefix="mesh-cache-")
    atexit.register(shutil.rmtree, os.environ["MESH_CACHE_DIR"], True)


@pytest.fixture
def mesh_dir() -> Iterator[Path]:
    # Short paths: Unix socket paths are limited to 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="mesh-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)  # the tests that start nodes stopped them already


@pytest.fixture
def mesh(mesh_dir: Path) -> Iterator[Mesh]:
    cluster = Mesh(mesh_dir)
    try:
        yield cluster
    finally:
        cluster.cleanup()
