"""The distributions' metadata: a name of our own on PyPI, SPDX licences, plugins that depend on it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

import mesh

ROOT = Path(__file__).resolve().parent.parent
PYPROJECTS = [ROOT / "pyproject.toml", *sorted(ROOT.glob("contrib/*/pyproject.toml"))]


def project(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_the_kernel_is_not_distributed_as_mesh() -> None:
    """``pip install mesh`` installs an unrelated project from 2012."""
    kernel = project(ROOT / "pyproject.toml")["project"]
    assert kernel["name"] == mesh.DISTRIBUTION != "mesh"
    assert kernel["scripts"]["mesh"] == "mesh.cli:main"  # the command keeps its name
    assert importlib.metadata.distribution(mesh.DISTRIBUTION).version == mesh.__version__


@pytest.mark.parametrize("path", PYPROJECTS, ids=lambda p: p.parent.name)
def test_licence_is_an_spdx_string(path: Path) -> None:
    """A ``license = {text = ...}`` table makes setuptools print a deprecation banner at every
    install (three times in ``make demo``); PEP 639's SPDX string needs setuptools 77."""
    data = project(path)
    assert isinstance(data["project"].get("license"), str), f"{path}: license = \"SPDX-ID\""
    assert "setuptools>=77" in data["build-system"]["requires"]


@pytest.mark.parametrize("path", PYPROJECTS[1:], ids=lambda p: p.parent.name)
def test_contrib_plugins_depend_on_the_kernel_distribution(path: Path) -> None:
    deps = project(path)["project"]["dependencies"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in deps}
    assert mesh.DISTRIBUTION in names and "mesh" not in names
