"""Installing a plugin distribution adds its work type; uninstalling it removes it.  No kernel change.

The install and uninstall happen in a throwaway virtualenv in ``tmp_path``, never in the venv that
runs the tests.  So that the throwaway venv needs no network and no copy of mesh's dependencies,
it sees the main venv's site-packages through a *view*: a directory of symlinks to every entry
of it except the files of plugin distributions (``mesh-plugin-*`` installed there by ``make``).
The view lies outside the throwaway venv, so its pip never uninstalls anything through it.

pip installs a wheel built here from the plugin's ``pyproject.toml`` with the standard library
(:func:`build_wheel`): building it with setuptools offline would need the ``wheel`` package in the
main venv (setuptools < 70.1), and ``python -m build`` needs the network.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

import mesh.testing.processes
from mesh.testing import NodeProcess

ROOT = Path(__file__).resolve().parent.parent
ECHO_SRC = ROOT / "contrib" / "mesh-plugin-echo"
MAIN_SITE = Path(sysconfig.get_paths()["purelib"])
ECHO_SECTION = {"work-echo": {"worktype": "echo", "prefix": "> "}}


def plugin_entries(site: Path) -> set[str]:
    """Top-level names in ``site`` that belong to plugin distributions (not to mesh itself)."""
    owned: set[str] = set()
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = (dist.metadata["Name"] or "").lower()
        if name == "meshceptor" or not any(ep.group == "mesh.plugins" for ep in dist.entry_points):
            continue
        for file in dist.files or []:
            top = file.parts[0]
            if top not in ("__pycache__", ".."):
                owned.add(top)
    return owned


def build_wheel(source: Path, out: Path) -> Path:
    """A pure-Python wheel of the project in ``source``: its packages, metadata and entry points."""
    pyproject = tomllib.loads((source / "pyproject.toml").read_text())
    project = pyproject["project"]
    name, version = project["name"], project["version"]
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in pyproject["tool"]["setuptools"]["packages"]:
        for path in sorted((source / package.replace(".", "/")).glob("*.py")):
            files[path.relative_to(source).as_posix()] = path.read_bytes()
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                f"Summary: {project.get('description', '')}",
                *(f"Requires-Dist: {dep}" for dep in project.get("dependencies", []))]
    files[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: mesh-tests\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/entry_points.txt"] = "".join(
        f"[{group}]\n" + "".join(f"{ep} = {target}\n" for ep, target in eps.items()) + "\n"
        for group, eps in project.get("entry-points", {}).items()).encode()
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = out / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def run(args: list[str], *, timeout: float = 120, check: bool = True,
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("PIP_", "MESH_"))}
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                            env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


class Venv:
    """A virtualenv whose Python imports mesh and its dependencies from the main venv's view."""

    def __init__(self, root: Path) -> None:
        self.root = root
        view = root / "main-site-view"
        view.mkdir(parents=True)
        hidden = plugin_entries(MAIN_SITE)
        for entry in MAIN_SITE.iterdir():
            if entry.name not in hidden:
                (view / entry.name).symlink_to(entry)
        self.dir = root / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", str(self.dir)])
        self.python = str(self.dir / "bin" / "python")
        site = Path(run([self.python, "-c", "import sysconfig; "
                                            "print(sysconfig.get_paths()['purelib'])"]
                        ).stdout.strip())
        self.site = site
        # A .pth line starting with "import" runs at start-up: add the view as a site dir, so
        # its own .pth files (mesh's editable install) are processed too.
        (site / "zz_main_site_view.pth").write_text(f"import site; site.addsitedir({str(view)!r})\n")

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([self.python, "-m", "pip", *args])

    def plugins(self) -> dict[str, dict[str, Any]]:
        out = run([self.python, "-m", "mesh", "plugins", "--json"]).stdout
        return {p["name"]: p for p in json.loads(out)}

    def dist_path(self, name: str) -> Path | None:
        code = ("import importlib.metadata as m, sys\n"
                "try: print(m.distribution(sys.argv[1])._path)\n"
                "except m.PackageNotFoundError: pass\n")
        out = run([self.python, "-c", code, name]).stdout.strip()
        return Path(out) if out else None


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    return Venv(tmp_path)


@pytest.fixture
def node_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mesh-"))  # short: Unix socket paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


def main_venv_has_echo() -> bool:
    try:
        importlib.metadata.distribution("mesh-plugin-echo")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def test_install_then_uninstall_echo(venv: Venv, tmp_path: Path, node_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    before = main_venv_has_echo()
    # The throwaway venv starts with mesh and its builtins, and no plugin distribution.
    plugins = venv.plugins()
    assert plugins["tcp"]["distribution"] == "meshceptor"
    assert "echo" not in plugins
    assert venv.dist_path("mesh-plugin-echo") is None

    # pip install, offline: meshceptor (the only dependency) is there already
    wheel = build_wheel(ECHO_SRC, tmp_path)
    venv.pip("install", "--quiet", "--no-index", "--no-deps", str(wheel))
    installed = venv.dist_path("mesh-plugin-echo")
    assert installed is not None and installed.parent == venv.site

    echo = venv.plugins()["echo"]
    assert (echo["distribution"], echo["version"]) == ("mesh-plugin-echo", "0.1.0")
    assert echo["hooks"] == ["mesh_register_work_types"]
    assert echo["registered"] == {"config section": ["work-echo"], "work type": ["work-echo"]}

    # A node started from the throwaway venv advertises the new work type.
    monkeypatch.setattr(mesh.testing.processes, "MESH_BIN", [venv.python, "-m", "mesh"])
    node = NodeProcess("solo", node_dir / "solo", [ECHO_SECTION], log_level="info",
                       plugins=("mesh-plugin-echo",))
    try:
        node.start()
        ads = [ad for ad in node.status()["Advertisements"] if ad["NodeID"] == "solo"]
        assert ads and ads[0]["WorkCommands"] == [{"WorkType": "echo", "Secure": False}]
        assert node.control("work list") == {}
    finally:
        node.stop()

    # pip uninstall: gone from `mesh plugins`, and its section is unknown again.
    venv.pip("uninstall", "--yes", "mesh-plugin-echo")
    assert venv.dist_path("mesh-plugin-echo") is None
    assert "echo" not in venv.plugins()
    result = run([venv.python, "-m", "mesh", "node", "-c", str(node.config_path)],
                 timeout=30, check=False)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unknown section 'work-echo'" in lines[0]

    assert main_venv_has_echo() == before, "the test changed the main venv's installed set"
