"""Plugins use the public API only: no plugin borrows another module's private names.

Every module of ``plugins_builtin/`` (``mesh_builtin``) and of the contrib distributions is checked:
it imports no ``_name`` from a mesh module (its own package's relative imports aside), reads no
``module._name`` of a mesh module it imported, and none of its classes overrides a ``_method`` of
a class from another mesh module.  A plugin that needs such a name has found a missing piece of
API (see docs/plugin-guide.md).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Names that the standard library's class machinery puts in every subclass.
MACHINERY = {"_abc_impl", "_is_protocol", "_is_runtime_protocol"}


def plugin_modules() -> Iterator[tuple[Path, str]]:
    """(file, import name) of every plugin module."""
    for path in sorted((ROOT / "plugins_builtin").glob("*.py")):
        if path.stem != "__init__":
            yield path, f"mesh_builtin.{path.stem}"
    for dist in sorted((ROOT / "contrib").glob("mesh-plugin-*")):
        for path in sorted(dist.glob("mesh_plugin_*/**/*.py")):
            parts = list(path.relative_to(dist).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield path, ".".join(parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def is_mesh(module: str | None) -> bool:
    top = (module or "").split(".")[0]
    return top in ("mesh", "mesh_builtin") or top.startswith("mesh_plugin_")


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):
        return False  # a name inside a module, not a submodule


def borrowed_names(path: Path) -> list[str]:
    """``_names`` that the file imports from, or reads on, another mesh module."""
    tree = ast.parse(path.read_text(), str(path))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and is_mesh(node.module):
            found += [f"line {node.lineno}: from {node.module} import {alias.name}"
                      for alias in node.names if is_private(alias.name)]
            modules |= {alias.asname or alias.name for alias in node.names
                        if is_module(f"{node.module}.{alias.name}")}
        elif isinstance(node, ast.Import):
            modules |= {alias.asname or alias.name.split(".")[0] for alias in node.names
                        if is_mesh(alias.name)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and is_private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def private_overrides(module_name: str) -> list[str]:
    """``Class._name`` of the module that override a ``_name`` of another mesh module's class."""
    module = importlib.import_module(module_name)
    found = []
    for cls in vars(module).values():
        if not inspect.isclass(cls) or cls.__module__ != module_name:
            continue
        for name in vars(cls):
            if not is_private(name) or name in MACHINERY:
                continue
            found += [f"{cls.__name__}.{name} overrides {base.__module__}.{base.__qualname__}"
                      for base in cls.__mro__[1:]
                      if base.__module__ != module_name and is_mesh(base.__module__)
                      and name in vars(base)]
    return found


@pytest.mark.parametrize(("path", "module"), list(plugin_modules()),
                         ids=[module for _, module in plugin_modules()])
def test_plugin_uses_no_private_name_of_another_module(path: Path, module: str) -> None:
    assert not borrowed_names(path), f"{path.relative_to(ROOT)} borrows private names"
    assert not private_overrides(module), f"{module} overrides private methods"


def test_the_checks_find_what_they_look_for(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from mesh.work.worktype import _AlreadyFinal, UnitHandle\n"
                      "from mesh_builtin import runner_processes\n"
                      "import mesh.work.worktype as wt\n"
                      "runner_processes._proc_stat(1)\n"
                      "wt._AlreadyFinal\n")
    assert sorted(line.split(":")[0] for line in borrowed_names(sample)) == ["line 1", "line 4",
                                                                             "line 5"]
    (tmp_path / "sample_override.py").write_text(
        "from mesh_builtin.detached_runner import DetachedRunner\n"
        "class Mine(DetachedRunner):\n"
        "    def _watch(self, unit, pid, proc): pass\n"
        "    def _mine(self): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert private_overrides("sample_override") == [
        "Mine._watch overrides mesh_builtin.detached_runner.DetachedRunner"]
