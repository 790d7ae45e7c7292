"""Shared fixtures: real node processes on loopback, cleaned up by pid.

Tests never see the plugins installed in the environment beyond mesh's own: for the whole
session ``MESH_LOAD_PLUGINS=mesh`` (see :func:`pytest_configure`), so every process a test
starts (a node through ``mesh.testing``, a raw ``mesh node``, a ``mesh`` CLI call) and every
plugin manager made in this process loads mesh's own plugins only.  A test that needs another
one names it: ``NodeProcess(plugins=...)``, ``Mesh.add(plugins=...)``,
``mesh_cluster(plugins=...)``, or ``MESH_LOAD_PLUGINS`` in the environment it passes;
``plugins=None`` loads every installed plugin.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import Mesh, plugin_selection

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


def pytest_configure(config: pytest.Config) -> None:
    """Select mesh's own plugins (``MESH_LOAD_PLUGINS=mesh``) until the session ends, whatever
    the developer's environment says."""
    patch = pytest.MonkeyPatch()
    for name, value in plugin_selection(()).items():
        patch.setenv(name, value)
    config.add_cleanup(patch.undo)


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
