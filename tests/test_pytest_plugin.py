"""mesh.pytest_plugin: the fixtures plugin authors get through mesh's ``pytest11`` entry point."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

import mesh.pytest_plugin
from mesh import hookimpl
from mesh.config.schema import SectionSpec
from mesh.plugins import DEFAULT_PLUGINS, DuplicateRegistration, PluginHost
from mesh.testing import Mesh, WatchedUnit, build_cluster
from mesh.work.states import UnitState
from mesh.work.unitstore import UnitStore
from mesh.work.worktype import UnitHandle, WorkError, WorkType

pytest_plugins = ["pytester"]


def test_entry_point_loads_the_plugin(pytestconfig: pytest.Config) -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert eps.get("mesh") == "mesh.pytest_plugin"
    assert pytestconfig.pluginmanager.get_plugin("mesh") is mesh.pytest_plugin


def test_loading_the_plugin_is_cheap() -> None:
    probe = ("import sys; before = set(sys.modules); import mesh.pytest_plugin; "
             "print(sorted(set(sys.modules) - before))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    loaded = set(json.loads(result.stdout.replace("'", '"')))
    heavy = {"yaml", "structlog", "aioquic", "cryptography", "filelock", "mesh.plugins",
             "mesh.testing", "mesh.node", "mesh.work.unitstore"}
    assert not loaded & heavy


# -- plugin managers -----------------------------------------------------------------------------


class Widget:
    """A plugin object that registers one config section."""

    def __init__(self, section: str = "widget") -> None:
        self.section = section

    @hookimpl
    def mesh_register_config_sections(self, register: Callable[..., None]) -> None:
        register(SectionSpec(self.section, WidgetConfig, doc="A widget."))


@dataclass
class WidgetConfig:
    size: int = 1


def test_mesh_plugin_manager_has_kernel_defaults_only(mesh_plugin_manager: PluginHost) -> None:
    assert set(mesh_plugin_manager.infos) == set(DEFAULT_PLUGINS)
    assert "node" in mesh_plugin_manager.sections
    assert "tcp-listener" not in mesh_plugin_manager.sections  # builtins are entry points too
    assert not mesh_plugin_manager.work_types


def test_register_plugin_adds_to_a_fresh_host(register_plugin: Callable[..., PluginHost],
                                              mesh_plugin_manager: PluginHost) -> None:
    first = register_plugin(Widget(), name="widget")
    assert "widget" in first.sections and first.sections["widget"].owner == "widget"
    second = register_plugin(Widget("gadget"), name="gadget")
    assert {"widget", "gadget"} <= set(second.sections)
    assert "gadget" not in first.sections  # hosts are built fresh, not mutated
    assert "widget" not in mesh_plugin_manager.sections


def test_register_plugin_failure_registers_nothing(
        register_plugin: Callable[..., PluginHost]) -> None:
    register_plugin(Widget(), name="widget")
    with pytest.raises(DuplicateRegistration, match="widget"):
        register_plugin(Widget(), name="widget-again")
    host = register_plugin(Widget("gadget"), name="gadget")
    assert set(host.infos) == set(DEFAULT_PLUGINS) | {"widget", "gadget"}


def test_register_plugin_default_name(register_plugin: Callable[..., PluginHost]) -> None:
    assert "Widget" in register_plugin(Widget()).infos


def test_register_plugin_is_undone_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from mesh import hookimpl

        HOSTS = []

        class Listener:
            @hookimpl
            def mesh_node_started(self, node):
                pass

        def test_register(register_plugin):
            HOSTS.append(register_plugin(Listener(), name="listener"))
            assert HOSTS[0].pm.get_plugin("listener") is not None

        def test_after():
            assert HOSTS[0].pm.get_plugin("listener") is None
    """)
    pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest").assert_outcomes(passed=2)


# -- unit store and unit handles ---------------------------------------------------------------


class Recorder(WorkType):
    """A work type that finishes at once (or never) and records its ExtraData."""

    def __init__(self, *, notify: bool = True) -> None:
        super().__init__("recorder")
        self.notify = notify

    def check_params(self, params: dict[str, str]) -> Any:
        if params.get("bad"):
            raise WorkError("bad param")
        return {"Params": params}

    async def start(self, unit: UnitHandle) -> None:
        unit.stdout_path.write_bytes(unit.stdin_path.read_bytes().upper())
        if self.notify:
            unit.update(lambda s: (setattr(s, "state", UnitState.SUCCEEDED),
                                   setattr(s, "detail", "done")))
        else:
            unit.store.update(unit.unit_id, lambda s: setattr(s, "state", UnitState.RUNNING))

    async def cancel(self, unit: UnitHandle) -> None:
        pass


def test_unit_store_is_temporary(unit_store: UnitStore, tmp_path: Path) -> None:
    assert unit_store.root == tmp_path / "units" / "testnode"
    assert unit_store.ids() == []


def test_unit_handle_creates_a_pending_unit(unit_handle: Callable[..., WatchedUnit],
                                            unit_store: UnitStore) -> None:
    wt = Recorder()
    unit = unit_handle(wt, stdin=b"abc", params={"x": "1"})
    assert unit_store.ids() == [unit.unit_id]
    status = unit.status()
    assert (status.state, status.work_type, status.extra_data) == (
        UnitState.PENDING, "recorder", {"Params": {"x": "1"}})
    assert unit.stdin_path.read_bytes() == b"abc" and unit.params == {"x": "1"}
    with pytest.raises(WorkError):
        unit_handle(wt, params={"bad": "yes"})
    assert unit_handle("plain").status().extra_data is None


def test_watched_unit_wakes_on_notify(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = Recorder()
    unit = unit_handle(wt, stdin=b"abc")

    async def main() -> None:
        await wt.start(unit)
        status = await unit.final(timeout=5)
        assert (status.state, status.detail) == (UnitState.SUCCEEDED, "done")

    asyncio.run(main())
    assert unit.stdout == b"ABC"
    assert [s.state for s in unit.seen] == [UnitState.SUCCEEDED]


def test_watched_unit_times_out_without_notify(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = Recorder(notify=False)
    unit = unit_handle(wt)

    async def main() -> None:
        await wt.start(unit)
        await unit.final(timeout=0.2)

    with pytest.raises(TimeoutError, match="call unit.notify"):
        asyncio.run(main())


# -- clusters of real nodes --------------------------------------------------------------------


@pytest.mark.parametrize(("topology", "links"), [
    ("line", [("b", "a"), ("c", "b")]),
    ("star", [("b", "a"), ("c", "a")]),
    ("full", [("b", "a"), ("c", "a"), ("c", "b")]),
])
def test_build_cluster_topologies(tmp_path: Path, topology: str,
                                  links: list[tuple[str, str]]) -> None:
    cluster = build_cluster(tmp_path, 3, topology, names=["a", "b", "c"],
                            sections={"c": [{"log-level": "info"}]})
    ports = {name: port for name, port in cluster.ports.items()}
    dialled = [(name, section["tcp-peer"]["address"]) for name, node in cluster.nodes.items()
               for section in node.sections if "tcp-peer" in section]
    assert dialled == [(d, f"127.0.0.1:{ports[l]}") for d, l in links]
    assert {"log-level": "info"} in cluster.nodes["c"].sections
    assert all(node.plugins == () for node in cluster.nodes.values())


def test_build_cluster_plugins_and_errors(tmp_path: Path) -> None:
    cluster = build_cluster(tmp_path, 2, plugins=["mesh-plugin-echo"])
    assert [n.plugins for n in cluster.nodes.values()] == [("mesh-plugin-echo",)] * 2
    assert [n.plugins for n in build_cluster(tmp_path, 2, plugins=None).nodes.values()] == [
        None, None]
    with pytest.raises(ValueError, match="unknown topology 'ring'"):
        build_cluster(tmp_path, 3, "ring")
    with pytest.raises(ValueError, match=r"sections for unknown nodes \['node9'\]"):
        build_cluster(tmp_path, 3, sections={"node9": []})
    with pytest.raises(ValueError, match="2 names given for 3 nodes"):
        build_cluster(tmp_path, 3, names=["a", "b"])


def test_mesh_cluster_starts_a_converged_line(mesh_cluster: Callable[..., Mesh]) -> None:
    cluster = mesh_cluster(3)
    assert sorted(cluster.nodes) == ["node1", "node2", "node3"]
    assert cluster.nodes["node1"].routes()["node3"] == "node2"
    for node in cluster.nodes.values():
        services = {(ad["NodeID"], ad["Service"]) for ad in node.status()["Advertisements"]}
        assert {(name, "control") for name in cluster.nodes} <= services


def test_mesh_cluster_stops_every_node_by_pid(pytester: pytest.Pytester, tmp_path: Path) -> None:
    record = tmp_path / "cluster.json"
    pytester.makepyfile(f"""
        import json

        def test_two_meshes(mesh_cluster):
            first = mesh_cluster(2, "star")
            second = mesh_cluster(1, names=["solo"])
            nodes = [*first.nodes.values(), *second.nodes.values()]
            with open({str(record)!r}, "w") as handle:
                json.dump({{"pids": [n.proc.pid for n in nodes],
                           "dirs": [str(first.workdir), str(second.workdir)]}}, handle)
            assert all(n.alive for n in nodes)
    """)
    pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest").assert_outcomes(passed=1)
    seen = json.loads(record.read_text())
    assert len(seen["pids"]) == 3
    for pid in seen["pids"]:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"node {pid} still runs"
    assert not any(os.path.exists(d) for d in seen["dirs"])


def _zombie(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return data[data.rfind(b")") + 2:].split()[0] in (b"Z", b"X")
