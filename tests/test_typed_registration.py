"""Typed registration: the hookspecs' protocol types, the ``abi`` check at registration, and the
explicit choice between several work signers (or verifiers)."""

from __future__ import annotations

import inspect
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest

from mesh import hookimpl, hookspecs, plugin_types
from mesh.config.errors import ConfigError
from mesh.config.loader import build_config, read_config
from mesh.config.schema import SectionSpec
from mesh.net.backend import BACKEND_ABI, Backend
from mesh.plugins import (DEFAULT_PLUGINS, IncompatiblePlugin, InvalidPlugin, PluginHost,
                          make_plugin_manager)
from mesh.testing import Mesh
from mesh.work.worktype import WORK_ABI, WorkType
from mesh_builtin import signing
from test_plugins import FakeDist, make_dist, node_config, run_mesh, unique
from test_signed_work import keypair

# -- the hookspecs are typed ---------------------------------------------------------------


TYPED = ("register", "node")


@pytest.mark.parametrize("name", sorted(
    name for name, fn in vars(hookspecs).items() if hasattr(fn, "mesh_spec")
    and set(TYPED) & set(inspect.signature(fn).parameters)))
def test_register_and_node_arguments_have_protocol_types(name: str) -> None:
    spec = getattr(hookspecs, name)
    hints = typing.get_type_hints(spec, localns={**vars(plugin_types), "click": click})
    for arg in set(TYPED) & set(inspect.signature(spec).parameters):
        assert getattr(hints[arg], "__module__", None) == "mesh.plugin_types", (arg, hints[arg])
        assert hints[arg] is getattr(plugin_types, hints[arg].__name__)


ROOT = Path(__file__).resolve().parent.parent


def own_plugins() -> list[str]:
    """The project's own plugin modules: the kernel's defaults, the builtins and contrib's."""
    builtins = [f"mesh_builtin.{path.stem}" for path in (ROOT / "plugins_builtin").glob("*.py")
                if path.stem != "__init__"]
    contrib = [path.parent.name for path in ROOT.glob("contrib/mesh-plugin-*/mesh_plugin_*/"
                                                      "__init__.py")]
    return [*DEFAULT_PLUGINS, *sorted(builtins), *sorted(contrib)]


@pytest.mark.parametrize("module_name", own_plugins())
def test_the_projects_own_hooks_use_the_hookspecs_types(module_name: str) -> None:
    """Every ``register`` and ``node`` argument of the project's own hook implementations is
    annotated with its hookspec's protocol, imported for type checkers only (so it costs the
    node nothing at run time)."""
    module = pytest.importorskip(module_name)
    impls = [fn for name, fn in vars(module).items()
             if hasattr(fn, "mesh_impl") and getattr(fn, "__module__", None) == module_name]
    for fn in impls:
        spec = typing.get_type_hints(getattr(hookspecs, fn.__name__),
                                     localns={**vars(plugin_types), "click": click})
        for arg, parameter in inspect.signature(fn).parameters.items():
            if arg not in TYPED:
                continue
            assert isinstance(parameter.annotation, str), f"{module_name}: postponed annotations"
            declared = eval(parameter.annotation, {**vars(plugin_types), **vars(module)})
            assert declared is spec[arg], (f"{module_name}.{fn.__name__}({arg}: "
                                           f"{parameter.annotation}); the hookspec has "
                                           f"{spec[arg].__name__}")
            assert parameter.annotation not in vars(module), (
                f"{module_name} imports {parameter.annotation} at run time; import it under "
                f"`if TYPE_CHECKING:`")


# -- abi -------------------------------------------------------------------------------------


@dataclass
class Settings:
    """A config section schema with nothing in it."""


class NewerWorkType(WorkType):
    abi = WORK_ABI + 1

    async def start(self, unit: Any) -> None: ...

    async def cancel(self, unit: Any) -> None: ...


class NewerBackend(Backend):
    abi = BACKEND_ABI + 1

    async def run(self, host: Any) -> None: ...


class CurrentWorkType(NewerWorkType):
    abi = WORK_ABI


class Registers:
    """A plugin that registers one section of its own and one backend or work type."""

    def __init__(self, hook: str, factory: Any) -> None:
        self.hook, self.factory = hook, factory

    @hookimpl
    def mesh_register_config_sections(self, register: Any) -> None:
        register(SectionSpec("future-settings", Settings, doc="Settings."))

    @hookimpl
    def mesh_register_backends(self, register: Any) -> None:
        if self.hook == "backend":
            register(SectionSpec("future-peer", Settings, doc="A peer."), self.factory)

    @hookimpl
    def mesh_register_work_types(self, register: Any) -> None:
        if self.hook == "work type":
            register(SectionSpec("work-future", Settings, doc="Work."), self.factory)


def make_work_type(config: Any, node: Any) -> WorkType:
    return CurrentWorkType("current")


@pytest.mark.parametrize("kind, factory, name, what, declared, current", [
    ("work type", NewerWorkType, "work-future", "work-type ABI", WORK_ABI + 1, WORK_ABI),
    ("backend", NewerBackend, "future-peer", "backend ABI", BACKEND_ABI + 1, BACKEND_ABI),
])
def test_only_a_factory_of_another_abi_is_refused(kind: str, factory: Any, name: str,
                                                  what: str, declared: int,
                                                  current: int) -> None:
    for fits in (CurrentWorkType, make_work_type):  # this abi, or none declared
        host = make_plugin_manager(entry_points=False,
                                   extra=[("current", Registers("work type", fits))])
        assert host.work_types["work-future"].factory is fits and not host.invalid

    with pytest.raises(IncompatiblePlugin) as err:
        make_plugin_manager(entry_points=False, extra=[("future", Registers(kind, factory))])
    assert isinstance(err.value, InvalidPlugin)
    message = str(err.value)
    assert message.startswith("plugin 'future' (<object> -): ")
    assert f"{kind} {name!r} is made for {what} {declared}" in message
    assert f"has {what} {current}" in message
    assert message.endswith("install a version of the plugin made for this mesh, or disable "
                            "the plugin with MESH_DISABLE_PLUGINS=future")


FUTURE_SOURCE = """
from dataclasses import dataclass

from mesh import hookimpl
from mesh.config.schema import SectionSpec
from mesh.work.worktype import WORK_ABI, WorkType


@dataclass
class Settings:
    pass


class FutureWorkType(WorkType):
    abi = WORK_ABI + 1


@hookimpl
def mesh_register_config_sections(register):
    register(SectionSpec("future-settings", Settings, doc="Settings."))


@hookimpl
def mesh_register_work_types(register):
    register(SectionSpec("work-future", Settings, doc="Work."), FutureWorkType)
"""


@pytest.fixture
def future_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDist:
    """An installed plugin whose work type is made for the next work-type ABI."""
    module = unique("mesh_plugin_future")
    dist = make_dist(tmp_path / "site", "mesh-plugin-future", "2.0", {"future": module},
                     {module: FUTURE_SOURCE})
    monkeypatch.syspath_prepend(str(dist.root))
    return dist


def test_an_installed_plugin_of_another_abi_is_skipped_with_what_it_registered(
        future_dist: FakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MESH_LOAD_PLUGINS", "MESH_DISABLE_PLUGINS", "MESH_STRICT_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    host = make_plugin_manager()
    assert "future" not in host.infos and "future" in host.invalid
    assert {"future-settings", "work-future"}.isdisjoint(host.sections)  # taken back
    assert "work-future" not in host.work_types
    assert "tcp" in host.infos  # the others load
    problem = host.invalid["future"].problem
    assert problem is not None and f"work-type ABI {WORK_ABI + 1}" in problem
    with pytest.raises(InvalidPlugin, match="plugin 'future' \\(mesh-plugin-future 2.0\\)"):
        host.load_for_node(["node"])

    monkeypatch.setenv("MESH_STRICT_PLUGINS", "1")
    with pytest.raises(IncompatiblePlugin, match="MESH_DISABLE_PLUGINS=future"):
        make_plugin_manager()


def test_mesh_plugins_lists_and_a_node_refuses_a_plugin_of_another_abi(
        mesh: Mesh, future_dist: FakeDist) -> None:
    workdir = mesh.workdir
    listed = run_mesh("plugins", "--json", cwd=workdir, pythonpath=future_dist.root)
    assert listed.returncode == 0, listed.stderr
    future = {entry["name"]: entry for entry in json.loads(listed.stdout)}["future"]
    assert future["registered"] == {}
    assert f"work type 'work-future' is made for work-type ABI {WORK_ABI + 1}" in \
        future["problem"]

    result = run_mesh("node", "-c", str(node_config(workdir)), cwd=workdir,
                      pythonpath=future_dist.root)
    assert result.returncode == 1, result.stderr  # EXIT_START
    line = result.stderr.strip()
    assert result.stderr.splitlines() == [line]
    assert line.startswith("mesh: plugin 'future' (mesh-plugin-future 2.0): work type "
                           "'work-future' is made for work-type ABI")
    assert line.endswith("MESH_DISABLE_PLUGINS=future")
    assert not (workdir / "node.sock").exists()


# -- choosing a signer -------------------------------------------------------------------------


class Token:
    """A signer and verifier that says who made it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.verify_unix_socket = True

    def sign(self, audience: str) -> str:
        return f"{self.name}:{audience}"

    def verify(self, token: str, audience: str) -> None:
        if token != f"{self.name}:{audience}":
            raise ValueError("bad token")


class TokenSigner:
    """A signer plugin whose signer and verifier every node gets."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def mesh_register_signers(self, register: Any) -> None:
        register(self.name, lambda node: Token(self.name), lambda node: Token(self.name))


def host_with(*names: str) -> PluginHost:
    return make_plugin_manager(entry_points=False, extra=[
        ("signing", signing), *((f"{name}-plugin", TokenSigner(name)) for name in names)])


@pytest.fixture
def node_with(tmp_path: Path) -> Any:
    """``node_with(host, config_text)``: what a signer factory and the choice read of a node,
    its config (read from ``node.yml``)."""
    def make(host: PluginHost, text: str = "") -> Any:
        path = tmp_path / "node.yml"
        path.write_text(text or "- node:\n    id: node1\n")
        return SimpleNamespace(config=build_config(read_config(str(path)), host.section_specs()),
                               node_id="node1")

    return make


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[Path, Path]:
    return keypair(tmp_path, "work")


def test_one_signer_needs_no_choice(rsa_keys: tuple[Path, Path], node_with: Any) -> None:
    private, public = rsa_keys
    host = host_with()
    signer, verifier = host.work_signing(node_with(
        host, f"- work-signing:\n    privatekey: {private}\n- work-verification: {public}\n"))
    assert isinstance(signer, signing.RS512Signer)
    assert isinstance(verifier, signing.RS512Verifier)
    assert host.work_signing(node_with(host)) == (None, None)

    host = host_with("alpha")  # the rs512 sections are not there: alpha is the only one
    signer, verifier = host.work_signing(node_with(host))
    assert signer.sign("x") == "alpha:x" and verifier.name == "alpha"


def test_two_signers_and_no_choice_name_both(node_with: Any, tmp_path: Path) -> None:
    host = host_with("beta", "alpha")
    with pytest.raises(ConfigError) as err:
        host.work_signing(node_with(host))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'node.yml'}: 2 work signers are set up: 'alpha' of "
                              f"alpha-plugin (")
    assert "'beta' of beta-plugin (" in message
    assert "name the one to use with 'signer: NAME' in the work-signing section" in message


def test_the_config_names_the_signer_and_the_verifier(rsa_keys: tuple[Path, Path],
                                                      node_with: Any) -> None:
    private, public = rsa_keys
    host = host_with("alpha", "beta")
    signer, verifier = host.work_signing(node_with(
        host, f"- work-signing:\n    privatekey: {private}\n    signer: beta\n"
              f"- work-verification:\n    publickey: {public}\n    verifier: rs512\n"))
    assert signer.sign("node2") == "beta:node2"
    assert isinstance(verifier, signing.RS512Verifier)

    with pytest.raises(ConfigError, match="2 work verifiers are set up: 'alpha' of "):
        host.work_signing(node_with(
            host, f"- work-signing:\n    privatekey: {private}\n    signer: rs512\n"))


def test_a_choice_that_is_not_set_up_is_a_config_error(rsa_keys: tuple[Path, Path],
                                                       node_with: Any, tmp_path: Path) -> None:
    private, _ = rsa_keys
    host = host_with("alpha")
    with pytest.raises(ConfigError) as err:
        host.work_signing(node_with(
            host, f"- work-signing:\n    privatekey: {private}\n    signer: gamma\n"))
    assert str(err.value).startswith(f"{tmp_path / 'node.yml'}: work-signing: key 'signer': no "
                                     f"signer 'gamma' is set up on this node; the registered "
                                     f"ones are 'alpha', 'rs512'")
