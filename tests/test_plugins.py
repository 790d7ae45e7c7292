"""The plugin kernel: entry-point discovery, env-var control, registries, validation, `mesh plugins`.

Entry points are real: the project is installed editable, so ``mesh_builtin.tcp`` arrives through the
``mesh.plugins`` group.  Third-party distributions are real too: a ``*.dist-info`` directory on a
``sys.path`` entry is all ``importlib.metadata`` needs, so tests build tiny ones in ``tmp_path``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pluggy
import pytest
import structlog
from structlog.testing import capture_logs

import mesh
import mesh_builtin.tcp
from mesh import hookimpl
from mesh.config.schema import SectionSpec
from mesh.testing import Mesh
from mesh.plugins import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    DuplicateRegistration,
    InvalidPlugin,
    PluginError,
    make_plugin_manager,
)

PLUGIN_ENV = ("MESH_LOAD_PLUGINS", "MESH_DISABLE_PLUGINS", "MESH_TRACE_PLUGINS",
              "MESH_STRICT_PLUGINS")
KERNEL_SECTIONS = {"node", "log-level", "local-only", "control-service", "unit-lifecycle",
                   "work-limits"}
KERNEL_COMMANDS = {"status", "ping", "traceroute", "connect", "reload", "stats"}
TCP_SECTIONS = {"tcp-listener", "tcp-peer"}


@pytest.fixture(autouse=True)
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the discovery variables the developer may have set."""
    for name in PLUGIN_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Captured structlog events, whatever logging an earlier test configured."""
    saved = structlog.get_config()
    structlog.reset_defaults()  # drop any level filter an earlier test installed
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


# -- tiny third-party distributions ------------------------------------------------------


@dataclass
class FakeDist:
    root: Path
    name: str
    version: str
    modules: dict[str, str] = field(default_factory=dict)


def make_dist(root: Path, name: str, version: str, entry_points: dict[str, str],
              modules: dict[str, str]) -> FakeDist:
    """Write ``<name>-<version>.dist-info`` (METADATA, entry_points.txt) and modules into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)
    return FakeDist(root, name, version, modules)


def unique(prefix: str) -> str:
    """A module name no other test (or earlier import) has used."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


BROKEN_SOURCE = 'raise ImportError("mesh_plugin_broken needs libfoo")\n'

HELLO_SOURCE = '''
from dataclasses import dataclass, field

from mesh import hookimpl
from mesh.config.schema import SectionSpec


@dataclass
class HelloConfig:
    greeting: str = field(default="hello", metadata={"doc": "What to say."})


async def hello_command(ctx, request):
    return {"Hello": ctx.node.node_id}


@hookimpl
def mesh_register_config_sections(register):
    register(SectionSpec("hello", HelloConfig, singleton=True, bare="greeting", doc="Greeting."))


@hookimpl
def mesh_register_control_commands(register):
    register("hello", hello_command)
'''


@pytest.fixture
def broken_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDist:
    module = unique("mesh_plugin_broken")
    dist = make_dist(tmp_path / "site", "mesh-plugin-broken", "1.2.3", {"broken": module},
                     {module: BROKEN_SOURCE})
    monkeypatch.syspath_prepend(str(dist.root))
    return dist


@pytest.fixture
def hello_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    module = unique("mesh_plugin_hello")
    dist = make_dist(tmp_path / "site", "mesh-plugin-hello", "0.3.0", {"hello": module},
                     {module: HELLO_SOURCE})
    monkeypatch.syspath_prepend(str(dist.root))
    yield dist
    sys.modules.pop(module, None)


# -- discovery ---------------------------------------------------------------------------


def test_tcp_is_declared_in_the_entry_point_group() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert eps["tcp"].value == "mesh_builtin.tcp"
    assert eps["tcp"].dist is not None and eps["tcp"].dist.name == mesh.DISTRIBUTION


def test_default_manager_loads_kernel_and_tcp() -> None:
    host = make_plugin_manager()

    assert host.pm.get_plugin("tcp") is mesh_builtin.tcp
    tcp = host.infos["tcp"]
    assert (tcp.distribution, tcp.version) == (mesh.DISTRIBUTION, mesh.__version__)
    assert tcp.hooks == ["mesh_register_backends"]

    assert TCP_SECTIONS <= set(host.backends)
    assert host.backends["tcp-listener"].factory is mesh_builtin.tcp.TcpListener
    assert host.backends["tcp-peer"].factory is mesh_builtin.tcp.TcpPeer
    assert {host.backends[name].owner for name in TCP_SECTIONS} == {"tcp"}

    specs = host.section_specs()
    assert KERNEL_SECTIONS | TCP_SECTIONS <= set(specs)
    assert {specs[name].owner for name in KERNEL_SECTIONS} == {"mesh.node_sections"}
    assert specs["tcp-peer"].owner == "tcp"

    assert KERNEL_COMMANDS <= set(host.control_commands)
    assert {host.control_commands[c].owner for c in KERNEL_COMMANDS} == {
        "mesh.control.builtin_commands"}
    assert set(DEFAULT_PLUGINS) <= set(host.infos)


def test_disable_tcp_removes_its_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_DISABLE_PLUGINS", "tcp")
    host = make_plugin_manager()
    assert "tcp" not in host.infos
    assert not TCP_SECTIONS & set(host.section_specs())
    assert not TCP_SECTIONS & set(host.backends)
    assert KERNEL_SECTIONS <= set(host.section_specs())


def test_disable_by_distribution_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_DISABLE_PLUGINS", "other, mesh")
    host = make_plugin_manager()
    assert "tcp" not in host.infos
    # kernel defaults cannot be disabled; plugins of other installed distributions (contrib/)
    # stay loaded
    ours = {name for name, info in host.infos.items() if info.distribution == mesh.DISTRIBUTION}
    assert ours == set(DEFAULT_PLUGINS)


def test_empty_allow_list_loads_no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_LOAD_PLUGINS", "")
    host = make_plugin_manager()
    assert set(host.infos) == set(DEFAULT_PLUGINS)
    assert KERNEL_SECTIONS == set(host.section_specs())
    assert KERNEL_COMMANDS <= set(host.control_commands)
    assert not host.backends


@pytest.mark.parametrize("allow", ["tcp", "mesh", "meshceptor", " tcp ,unrelated"])
def test_allow_list_loads_named_plugins(monkeypatch: pytest.MonkeyPatch, allow: str) -> None:
    monkeypatch.setenv("MESH_LOAD_PLUGINS", allow)
    host = make_plugin_manager()
    assert "tcp" in host.infos
    assert TCP_SECTIONS <= set(host.backends)


def test_allow_list_excludes_others(monkeypatch: pytest.MonkeyPatch, hello_dist: FakeDist) -> None:
    monkeypatch.setenv("MESH_LOAD_PLUGINS", "hello")
    host = make_plugin_manager()
    assert "hello" in host.infos
    assert "tcp" not in host.infos


def test_third_party_distribution_is_loaded(hello_dist: FakeDist) -> None:
    host = make_plugin_manager()
    info = host.infos["hello"]
    assert (info.distribution, info.version) == ("mesh-plugin-hello", "0.3.0")
    assert info.hooks == ["mesh_register_config_sections", "mesh_register_control_commands"]
    assert info.registered == {"config section": ["hello"], "control command": ["hello"]}
    assert host.section_specs()["hello"].owner == "hello"


def test_entry_points_off_ignores_installed_plugins(hello_dist: FakeDist) -> None:
    host = make_plugin_manager(entry_points=False)
    assert set(host.infos) == set(DEFAULT_PLUGINS)


# -- duplicate names ---------------------------------------------------------------------


@dataclass
class WidgetConfig:
    size: int = field(default=1, metadata={"doc": "Widget size."})


class WidgetSections:
    """A plugin object registering one config section."""

    def __init__(self, name: str = "widget") -> None:
        self.name = name

    @hookimpl
    def mesh_register_config_sections(self, register: Any) -> None:
        register(SectionSpec(self.name, WidgetConfig))


class WidgetBackend:
    @hookimpl
    def mesh_register_backends(self, register: Any) -> None:
        register(SectionSpec("widget", WidgetConfig), object)


class Commands:
    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def mesh_register_control_commands(self, register: Any) -> None:
        for name in self.names:
            register(name, self.handler)

    async def handler(self, ctx: Any, request: Any) -> Any:
        return {}


def test_duplicate_section_names_both_plugins() -> None:
    with pytest.raises(DuplicateRegistration) as err:
        make_plugin_manager(entry_points=False,
                            extra=[("first-widgets", WidgetSections()),
                                   ("second-widgets", WidgetSections())])
    message = str(err.value)
    assert "'widget'" in message
    assert "first-widgets" in message and "second-widgets" in message
    assert "MESH_DISABLE_PLUGINS" in message


def test_backend_section_clashes_with_plain_section() -> None:
    with pytest.raises(DuplicateRegistration, match="widget-sections.*widget-backend"):
        make_plugin_manager(entry_points=False,
                            extra=[("widget-sections", WidgetSections()),
                                   ("widget-backend", WidgetBackend())])


def test_duplicate_of_kernel_section_names_kernel_plugin() -> None:
    with pytest.raises(DuplicateRegistration) as err:
        make_plugin_manager(entry_points=False, extra=[("my-node", WidgetSections("node"))])
    assert "mesh.node_sections (meshceptor " in str(err.value)
    assert "my-node" in str(err.value)


def test_duplicate_of_builtin_backend() -> None:
    with pytest.raises(DuplicateRegistration, match="tcp-listener"):
        make_plugin_manager(entry_points=False,
                            extra=[("tcp", mesh_builtin.tcp),
                                   ("fasttcp", WidgetSections("tcp-listener"))])


def test_duplicate_control_command_ignores_case() -> None:
    with pytest.raises(DuplicateRegistration) as err:
        make_plugin_manager(entry_points=False, extra=[("shadow", Commands("Status"))])
    assert "'status'" in str(err.value)
    assert "mesh.control.builtin_commands" in str(err.value) and "shadow" in str(err.value)


def test_duplicate_entry_point_names_both_distributions(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for dist_name, version in (("mesh-plugin-a", "1.0"), ("mesh-plugin-b", "2.0")):
        module = unique("mesh_plugin_dup")
        dist = make_dist(tmp_path / dist_name, dist_name, version, {"dup": module},
                         {module: ""})
        monkeypatch.syspath_prepend(str(dist.root))
    with pytest.raises(DuplicateRegistration) as err:
        make_plugin_manager()
    message = str(err.value)
    assert "plugin 'dup'" in message
    assert "mesh-plugin-a 1.0" in message and "mesh-plugin-b 2.0" in message


# -- validation --------------------------------------------------------------------------


class UnknownHook:
    @hookimpl
    def mesh_register_nothing(self) -> None:
        pass


class UnknownArgument:
    @hookimpl
    def mesh_link_up(self, node: Any, peer: str, cost: float, colour: str) -> None:
        pass


def test_unknown_hook_fails_check_pending() -> None:
    with pytest.raises(pluggy.PluginValidationError) as err:
        make_plugin_manager(entry_points=False, extra=[("typo", UnknownHook())])
    assert isinstance(err.value, InvalidPlugin) and isinstance(err.value, PluginError)
    assert "mesh_register_nothing" in str(err.value)
    assert "'typo'" in str(err.value)


def test_unknown_argument_fails_registration() -> None:
    with pytest.raises(pluggy.PluginValidationError) as err:
        make_plugin_manager(entry_points=False, extra=[("colourful", UnknownArgument())])
    assert isinstance(err.value, PluginError)
    assert "colour" in str(err.value) and "'colourful'" in str(err.value)


def test_subset_of_arguments_is_accepted() -> None:
    seen: list[tuple[str, float]] = []

    class LinkWatcher:
        @hookimpl
        def mesh_link_up(self, peer: str, cost: float) -> None:
            seen.append((peer, cost))

    host = make_plugin_manager(entry_points=False, extra=[("watcher", LinkWatcher())])
    host.link_up(object(), "beta", 2.5)
    assert seen == [("beta", 2.5)]


# -- broken plugins ----------------------------------------------------------------------


def test_broken_entry_point_is_logged_and_skipped(broken_dist: FakeDist,
                                                  logs: list[dict[str, Any]]) -> None:
    host = make_plugin_manager()
    assert "broken" not in host.infos
    assert "tcp" in host.infos  # the others still load
    failures = [e for e in logs if e["event"] == "plugin_load_failed"]
    assert len(failures) == 1
    failure = failures[0]
    assert failure["log_level"] == "error"
    assert failure["plugin"] == "broken"
    assert failure["distribution"] == "mesh-plugin-broken"
    assert failure["version"] == "1.2.3"
    assert "needs libfoo" in failure["error"]


def test_broken_entry_point_fails_in_strict_mode(broken_dist: FakeDist,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as err:
        make_plugin_manager()
    message = str(err.value)
    assert "'broken'" in message and "mesh-plugin-broken 1.2.3" in message
    assert "needs libfoo" in message


def test_strict_mode_zero_means_off(broken_dist: FakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_STRICT_PLUGINS", "0")
    assert "broken" not in make_plugin_manager().infos


def test_disabled_plugin_is_never_imported(broken_dist: FakeDist,
                                           monkeypatch: pytest.MonkeyPatch,
                                           logs: list[dict[str, Any]]) -> None:
    monkeypatch.setenv("MESH_STRICT_PLUGINS", "1")
    monkeypatch.setenv("MESH_DISABLE_PLUGINS", "mesh-plugin-broken")
    host = make_plugin_manager()
    assert "broken" not in host.infos
    assert not [e for e in logs if e["event"] == "plugin_load_failed"]


# -- tracing -----------------------------------------------------------------------------


def test_trace_logs_hook_calls(monkeypatch: pytest.MonkeyPatch,
                               logs: list[dict[str, Any]]) -> None:
    monkeypatch.setenv("MESH_TRACE_PLUGINS", "1")
    host = make_plugin_manager(entry_points=False)
    calls = [e for e in logs if e["event"] == "hook_call"]
    by_hook = {e["hook"]: e for e in calls}
    assert by_hook["mesh_register_config_sections"]["plugins"] == ["mesh.node_sections"]
    assert "register" in by_hook["mesh_register_config_sections"]["kwargs"]
    assert "mesh_register_control_commands" in by_hook
    assert any(e["event"] == "hook_result" for e in logs)

    logs.clear()
    host.link_down(object(), "gamma", "idle timeout")
    call = next(e for e in logs if e["event"] == "hook_call")
    assert call["hook"] == "mesh_link_down"
    assert call["kwargs"]["peer"] == "'gamma'"
    assert call["kwargs"]["reason"] == "'idle timeout'"


def test_no_trace_by_default(logs: list[dict[str, Any]]) -> None:
    make_plugin_manager(entry_points=False).node_started(object())
    assert not [e for e in logs if e["event"] in ("hook_call", "hook_result")]


# -- the `mesh plugins` command ----------------------------------------------------------


def run_mesh(*args: str, cwd: Path, env: dict[str, str] | None = None,
             pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    full_env.update(env or {})
    if pythonpath is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "mesh", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_plugins_json(tmp_path: Path) -> None:
    result = run_mesh("plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)
    assert isinstance(plugins, list)
    for entry in plugins:
        assert set(entry) == {"name", "distribution", "version", "hooks", "registered"}
    by_name = {entry["name"]: entry for entry in plugins}
    assert set(DEFAULT_PLUGINS) | {"tcp"} <= set(by_name)

    tcp = by_name["tcp"]
    assert tcp["distribution"] == mesh.DISTRIBUTION
    assert tcp["version"] == mesh.__version__
    assert tcp["hooks"] == ["mesh_register_backends"]
    assert tcp["registered"]["backend"] == ["tcp-listener", "tcp-peer"]
    assert tcp["registered"]["config section"] == ["tcp-listener", "tcp-peer"]

    assert by_name["mesh.cli_commands"]["registered"]["cli command"] == [
        "control", "node", "ping", "plugins", "status", "traceroute"]
    assert set(by_name["mesh.control.builtin_commands"]["registered"]["control command"]) == (
        KERNEL_COMMANDS)


def test_plugins_human(tmp_path: Path) -> None:
    result = run_mesh("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"tcp  ({mesh.DISTRIBUTION} {mesh.__version__})" in result.stdout
    assert "  hooks: mesh_register_backends" in result.stdout
    assert "  backend: tcp-listener, tcp-peer" in result.stdout
    assert "mesh.node_sections  (mesh" in result.stdout


def test_plugins_human_says_which_section_names_work_types(tmp_path: Path) -> None:
    result = run_mesh("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # a config's `worktype: foo` is the key of an entry of the work-type plugin's section
    for section in ("work-command", "work-container"):
        assert (f"  config section: {section}\n"
                f"  work types: named by the worktype key of each {section} entry\n"
                in result.stdout)
    assert "  work type: work-command" not in result.stdout


def test_plugins_json_honours_disable(tmp_path: Path) -> None:
    result = run_mesh("plugins", "--json", cwd=tmp_path, env={"MESH_DISABLE_PLUGINS": "tcp"})
    assert result.returncode == 0, result.stderr
    assert "tcp" not in {entry["name"] for entry in json.loads(result.stdout)}


def test_plugins_json_shows_third_party(tmp_path: Path, hello_dist: FakeDist) -> None:
    result = run_mesh("plugins", "--json", cwd=tmp_path, pythonpath=hello_dist.root)
    assert result.returncode == 0, result.stderr
    hello = {entry["name"]: entry for entry in json.loads(result.stdout)}["hello"]
    assert hello == {
        "name": "hello",
        "distribution": "mesh-plugin-hello",
        "version": "0.3.0",
        "hooks": ["mesh_register_config_sections", "mesh_register_control_commands"],
        "registered": {"config section": ["hello"], "control command": ["hello"]},
    }


def test_cli_strict_mode_reports_broken_plugin(tmp_path: Path, broken_dist: FakeDist) -> None:
    result = run_mesh("plugins", cwd=tmp_path, pythonpath=broken_dist.root,
                      env={"MESH_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert result.stderr.startswith("mesh: plugin 'broken' (mesh-plugin-broken 1.2.3)")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.fixture
def typo_dist(tmp_path: Path) -> FakeDist:
    """An installed plugin whose hook name is misspelt (the hook is mesh_register_work_types)."""
    module = unique("mesh_plugin_typo")
    return make_dist(tmp_path / "site", "mesh-plugin-typo", "0.1", {"typo": module},
                     {module: TYPO_SOURCE})


TYPO_SOURCE = """
from mesh import hookimpl


@hookimpl
def mesh_register_worktypes(register):
    pass
"""


def node_config(directory: Path, *sections: str) -> Path:
    """A node config (list form) with a control socket in ``directory`` and ``sections``."""
    config = directory / "node.yml"
    config.write_text(f"- node:\n    id: plug\n    datadir: {directory / 'data'}\n"
                      f"- control-service:\n    filename: {directory / 'node.sock'}\n"
                      + "".join(sections))
    return config


def test_plugins_lists_invalid_plugin_with_the_hook_it_meant(tmp_path: Path,
                                                           typo_dist: FakeDist) -> None:
    result = run_mesh("plugins", cwd=tmp_path, pythonpath=typo_dist.root)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    listed = result.stdout.split("typo  (mesh-plugin-typo 0.1)\n")[1].split("\n")
    assert listed[0] == "  hooks: mesh_register_worktypes"
    assert listed[1].startswith("  problem: unknown hook 'mesh_register_worktypes', "
                                "did you mean 'mesh_register_work_types'? ")
    assert "MESH_DISABLE_PLUGINS=typo" in listed[1]
    assert "tcp  (" in result.stdout  # the other plugins are still listed

    as_json = run_mesh("plugins", "--json", cwd=tmp_path, pythonpath=typo_dist.root)
    assert as_json.returncode == 0, as_json.stderr
    typo = {entry["name"]: entry for entry in json.loads(as_json.stdout)}["typo"]
    assert typo["hooks"] == ["mesh_register_worktypes"]
    assert "did you mean 'mesh_register_work_types'?" in typo["problem"]


def test_plugins_lists_plugin_with_an_argument_its_hook_lacks(tmp_path: Path) -> None:
    module = unique("mesh_plugin_colourful")
    dist = make_dist(tmp_path / "site", "mesh-plugin-colourful", "0.2", {"colourful": module}, {
        module: "from mesh import hookimpl\n\n\n@hookimpl\ndef mesh_link_up(peer, colour):\n"
                "    pass\n"})
    result = run_mesh("plugins", "--json", cwd=tmp_path, pythonpath=dist.root)
    assert result.returncode == 0, result.stderr
    colourful = {entry["name"]: entry for entry in json.loads(result.stdout)}["colourful"]
    assert "colour" in colourful["problem"] and "\n" not in colourful["problem"]
    assert colourful["problem"].endswith("MESH_DISABLE_PLUGINS=colourful")


def test_plugins_does_not_store_the_index_with_an_invalid_plugin(tmp_path: Path,
                                                                 typo_dist: FakeDist) -> None:
    cache = tmp_path / "cache"
    result = run_mesh("plugins", cwd=tmp_path, pythonpath=typo_dist.root,
                      env={"MESH_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    assert not list(cache.glob("plugins-*.marshal"))  # retried (and reported) next time


def test_strict_mode_refuses_invalid_plugin_without_traceback(tmp_path: Path,
                                                              typo_dist: FakeDist) -> None:
    result = run_mesh("plugins", cwd=tmp_path, pythonpath=typo_dist.root,
                      env={"MESH_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert result.stderr.startswith("mesh: plugin 'typo' (mesh-plugin-typo 0.1): unknown hook "
                                    "'mesh_register_worktypes'")
    assert "Traceback" not in result.stderr


def test_node_refuses_invalid_plugin_in_one_line(mesh: Mesh, typo_dist: FakeDist) -> None:
    mesh_dir = mesh.workdir  # short (a socket path) and removed afterwards
    config = node_config(mesh_dir)
    result = run_mesh("node", "-c", str(config), cwd=mesh_dir, pythonpath=typo_dist.root)
    assert result.returncode == 1  # EXIT_START
    assert result.stderr.splitlines() == [result.stderr.strip()]
    line = result.stderr.strip()
    assert line.startswith("mesh: plugin 'typo' (mesh-plugin-typo 0.1): unknown hook "
                           "'mesh_register_worktypes', did you mean 'mesh_register_work_types'?")
    assert "MESH_DISABLE_PLUGINS=typo" in line
    assert not (mesh_dir / "node.sock").exists()


def test_commands_that_do_not_need_an_invalid_plugin_still_work(mesh: Mesh, tmp_path: Path,
                                                                typo_dist: FakeDist) -> None:
    # the fix the node's message names: disabling the plugin lets the node start
    node = mesh.add("steady", listen=False, env={
        "PYTHONPATH": str(typo_dist.root), "MESH_DISABLE_PLUGINS": "typo"})
    mesh.start()
    status = run_mesh("status", "--socket", str(node.socket), cwd=tmp_path,
                      pythonpath=typo_dist.root)
    assert status.returncode == 0, status.stderr
    assert "steady" in status.stdout
    assert status.stderr.startswith("mesh: warning: plugin 'typo' (mesh-plugin-typo 0.1): ")
    assert "Traceback" not in status.stderr

    usage = run_mesh("--help", cwd=tmp_path, pythonpath=typo_dist.root)
    assert usage.returncode == 0, usage.stderr
    assert "status" in usage.stdout and "plugins" in usage.stdout


SHA256_SOURCE = """
from dataclasses import dataclass, field

from mesh import hookimpl
from mesh.config.schema import SectionSpec


@dataclass
class Sha256Config:
    worktype: str = field(metadata={"doc": "Work type name."})


@hookimpl
def mesh_register_config_sections(register):
    register(SectionSpec("work-sha256", Sha256Config, doc="Hash the payload."))
"""


@pytest.mark.parametrize("env, why", [
    ({"MESH_DISABLE_PLUGINS": "sha256"}, "which is disabled (MESH_DISABLE_PLUGINS); take it "
                                         "out of MESH_DISABLE_PLUGINS"),
    ({"MESH_DISABLE_PLUGINS": "mesh-plugin-sha256"}, "which is disabled (MESH_DISABLE_PLUGINS)"),
    ({"MESH_LOAD_PLUGINS": "tcp"}, "which MESH_LOAD_PLUGINS does not list; add it to "
                                   "MESH_LOAD_PLUGINS"),
])
@pytest.mark.parametrize("form", ["list", "version 2"])
def test_section_of_a_disabled_plugin_names_the_plugin(mesh: Mesh, env: dict[str, str],
                                                       why: str, form: str) -> None:
    mesh_dir = mesh.workdir
    module = unique("mesh_plugin_sha256")
    dist = make_dist(mesh_dir / "site", "mesh-plugin-sha256", "1.0", {"sha256": module},
                     {module: SHA256_SOURCE})
    if form == "list":
        config, name = node_config(mesh_dir, "- work-sha256:\n    worktype: hash\n"), "work-sha256"
    else:
        config, name = mesh_dir / "v2.yml", "work-sha256s"
        config.write_text("version: 2\nnode:\n  id: plug\nwork-sha256s:\n  - worktype: hash\n")
    result = run_mesh("node", "-c", str(config), cwd=mesh_dir, pythonpath=dist.root, env=env)
    assert result.returncode == 2, result.stderr  # EXIT_CONFIG
    line = result.stderr.strip()
    assert line.startswith(f"mesh: {config}: section '{name}' belongs to plugin 'sha256' "
                           f"(mesh-plugin-sha256 1.0), {why}"), line
    assert line.endswith(", or remove the section")
    assert "did you mean" not in line


def test_a_misspelt_section_still_gets_a_suggestion(mesh: Mesh) -> None:
    mesh_dir = mesh.workdir
    config = node_config(mesh_dir, "- work-comand:\n    worktype: x\n    command: 'true'\n")
    result = run_mesh("node", "-c", str(config), cwd=mesh_dir,
                      env={"MESH_DISABLE_PLUGINS": "container"})
    assert result.returncode == 2
    assert "unknown section 'work-comand'; did you mean 'work-command'?" in result.stderr


def test_plugins_json_stdout_stays_json_with_broken_plugin(tmp_path: Path,
                                                           broken_dist: FakeDist) -> None:
    result = run_mesh("plugins", "--json", cwd=tmp_path, pythonpath=broken_dist.root,
                      env={"MESH_TRACE_PLUGINS": "1"})
    assert result.returncode == 0, result.stderr
    broken = {entry["name"]: entry for entry in json.loads(result.stdout)}["broken"]
    assert broken["problem"] == "failed to import: mesh_plugin_broken needs libfoo"
    assert "plugin_load_failed" in result.stderr
