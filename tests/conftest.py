"""Shared fixtures: real node processes on loopback, cleaned up by pid."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import Mesh

# Tests never see plugins installed in the environment beyond our own distribution.
os.environ.setdefault("MESH_LOG_FORMAT", "json")


@pytest.fixture
def mesh_dir() -> Iterator[Path]:
    # Short paths: Unix socket paths are limited to 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="mesh-"))
    yield path


@pytest.fixture
def mesh(mesh_dir: Path) -> Iterator[Mesh]:
    cluster = Mesh(mesh_dir)
    try:
        yield cluster
    finally:
        cluster.cleanup()
