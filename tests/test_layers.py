"""The kernel's layers only point down: no module of ``core/`` imports one that imports it back.

Every ``import`` of every module under ``core/`` (``mesh``) counts: at the top, inside a function
(a lazy import) and under ``if TYPE_CHECKING:`` (a type checker follows it).  The node builds the
control services and the work manager and hands each the narrow interface it uses (a protocol:
:class:`~mesh.control.server.ControlHost`, :class:`~mesh.work.workceptor.WorkHost`,
:class:`~mesh.work.remote_host.WorkManager`, ...); the checks below keep it so, and check that
the objects handed over really have what those protocols name.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable, Protocol

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"
#: Cycles that exist outside the layers this file is about; each is excluded from
#: :func:`test_no_import_cycle` by its exact set of modules (a larger cycle still fails).
KNOWN_CYCLES = [
    # The stream and its connection refer to each other's type (``TYPE_CHECKING`` only).
    {"mesh.net.streams.connection", "mesh.net.streams.stream"},
    # ``mesh.plugins`` builds ``mesh --help`` for the plugin index with the click group,
    # which is built from the plugin host (a lazy import inside ``_root_help``).
    {"mesh.cli_group", "mesh.plugins"},
]


def core_modules() -> dict[str, Path]:
    """Every module of ``core/`` by import name."""
    modules = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = list(path.relative_to(CORE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(["mesh", *parts])] = path
    return modules


def imported(tree: ast.AST, module: str, is_package: bool,
             modules: Iterable[str]) -> dict[str, int]:
    """The ``mesh`` modules ``tree`` imports anywhere, each with its first line: ``from a.b
    import c`` counts as ``a.b.c`` when that is a module, else as ``a.b``."""
    known = set(modules)

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module if is_package else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [owner(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known
                       else owner(base) for alias in node.names]
        for target in targets:
            if target is not None and target != module and target.split(".")[0] == "mesh":
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """Each core module's imports of other core modules (see :func:`imported`)."""
    modules = core_modules()
    return {name: imported(ast.parse(path.read_text(), str(path)), name,
                           path.name == "__init__.py", modules)
            for name, path in modules.items()}


def cycles(graph: dict[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(graph: dict[str, dict[str, int]], importers: str, forbidden: str) -> list[str]:
    """``module line N: imports target`` for each module named ``importers*`` that imports a
    module named ``forbidden`` (or one inside it)."""
    return [f"{module} line {line}: imports {target}"
            for module, targets in sorted(graph.items()) if module.startswith(importers)
            for target, line in sorted(targets.items())
            if target == forbidden or target.startswith(forbidden + ".")]


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


# -- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["mesh.control.", "mesh.work."])
def test_control_and_work_never_import_the_node(graph: dict[str, dict[str, int]],
                                                layer: str) -> None:
    found = violations(graph, layer, "mesh.node")
    assert not found, found


def test_remote_work_never_imports_the_work_manager(graph: dict[str, dict[str, int]]) -> None:
    found = violations(graph, "mesh.work.remote", "mesh.work.workceptor")
    assert not found, found


def test_endpoint_never_imports_netceptor(graph: dict[str, dict[str, int]]) -> None:
    found = violations(graph, "mesh.net.endpoint", "mesh.net.netceptor")
    assert not found, found


def test_no_import_cycle(graph: dict[str, dict[str, int]]) -> None:
    found = [sorted(cycle) for cycle in cycles(graph) if cycle not in KNOWN_CYCLES]
    assert not found, f"import cycles among core modules: {found}"


def test_the_checks_find_what_they_look_for() -> None:
    modules = ["mesh.node", "mesh.work", "mesh.work.remote", "mesh.work.workceptor"]
    tree = ast.parse("from typing import TYPE_CHECKING\n"
                     "from mesh.work import remote\n"
                     "if TYPE_CHECKING:\n"
                     "    from mesh.node import Node\n"
                     "def later():\n"
                     "    import mesh.work.workceptor.thing\n"
                     "    from . import remote\n"
                     "    from .workceptor import Workceptor\n")
    assert imported(tree, "mesh.work.sample", False, modules) == {
        "mesh.work.remote": 2, "mesh.node": 4, "mesh.work.workceptor": 6}
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {"e": 1}, "e": {"d": 1},
             "f": {"a": 1}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d", "e"]]
    assert violations(graph, "c", "d") == ["c line 1: imports d"]


# -- the interfaces are met --------------------------------------------------------------------


def members(protocol: type) -> set[str]:
    """The names a protocol (and the protocols it extends) declares."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls in (Protocol, object) or not getattr(cls, "_is_protocol", False):
            continue
        names |= {name for name in [*vars(cls), *vars(cls).get("__annotations__", {})]
                  if not name.startswith("_")}
    return names


@pytest.fixture
def node(tmp_path: Path, mesh_plugin_manager: Any) -> Any:
    """A node built in-process (not started)."""
    from mesh.config.loader import parse_config
    from mesh.node import Node

    config = parse_config(f"- node:\n    id: layers\n    datadir: {tmp_path}\n",
                          mesh_plugin_manager.section_specs(), source="layers.yml")
    return Node(config, mesh_plugin_manager)


def test_the_node_has_what_each_subsystem_uses(node: Any) -> None:
    from mesh.control.server import ControlHost
    from mesh.plugin_types import HookNode, PluginNode
    from mesh.work.remote_follow import FollowedWork
    from mesh.work.remote_host import WorkManager
    from mesh.work.workceptor import WorkHost
    from mesh.work.worktype import UnitNode

    for protocol, obj in [(ControlHost, node), (WorkHost, node), (PluginNode, node),
                          (HookNode, node), (UnitNode, node), (WorkManager, node.work),
                          (FollowedWork, node.work.remote)]:
        names = members(protocol)
        assert names and not {name for name in names if not hasattr(obj, name)}, protocol
    assert members(ControlHost) >= {"node_id", "listen_stream", "tls_config", "plugins", "work"}
    assert hasattr(node.plugins.control_command("status"), "factory")
