"""Plugin manager: entry-point discovery, tracing, and the kernel's name-keyed registries.

Plugins are modules (or objects) with ``@hookimpl`` functions.  The kernel's own defaults
are listed in :data:`DEFAULT_PLUGINS` and always load; everything else, the builtins of
``mesh_builtin`` included, comes from the ``mesh.plugins`` entry-point group.

Environment variables:

* ``MESH_LOAD_PLUGINS``: comma-separated allow-list of entry-point or distribution names;
  when set, only those entry points load (an empty value loads none).
* ``MESH_DISABLE_PLUGINS``: comma-separated block-list of entry-point or distribution names.
* ``MESH_TRACE_PLUGINS=1``: log every hook call with its arguments and results.
* ``MESH_STRICT_PLUGINS=1``: a plugin that fails to import aborts instead of being skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import pluggy
import structlog

from mesh import __version__, hookspecs
from mesh.config.schema import SectionSpec

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "mesh.plugins"

#: Kernel modules that are plugins like any other but always load.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mesh.node_sections",
    "mesh.control.builtin_commands",
    "mesh.work.control_commands",
    "mesh.cli_commands",
    "mesh.work.cli_commands",
)


class PluginError(Exception):
    """A plugin could not be loaded or registered something invalid."""


class DuplicateRegistration(PluginError):
    """Two plugins registered the same name."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        super().__init__(
            f"{kind} {name!r} is registered by both {first} and {second}; "
            f"disable one of them with MESH_DISABLE_PLUGINS"
        )


class InvalidPlugin(PluginError, pluggy.PluginValidationError):
    """A plugin implements a hook that does not exist or with arguments the hook does not have."""

    def __init__(self, plugin: object, message: str) -> None:
        pluggy.PluginValidationError.__init__(self, plugin, message)


@dataclass
class PluginInfo:
    """What ``mesh plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": sorted(self.hooks),
            "registered": {k: sorted(v) for k, v in sorted(self.registered.items())},
        }


@dataclass(frozen=True)
class Registered:
    """One registered thing: its spec or name, its factory or handler, and its owner."""

    name: str
    owner: str
    spec: SectionSpec | None = None
    factory: Any = None


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _strict() -> bool:
    return os.environ.get("MESH_STRICT_PLUGINS", "") not in ("", "0")


class PluginHost:
    """Owns the pluggy manager and the registries built from its hooks."""

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
        self.pm = pm
        self.infos = infos
        self.sections: dict[str, Registered] = {}
        self.backends: dict[str, Registered] = {}
        self.work_types: dict[str, Registered] = {}
        self.services: dict[str, Registered] = {}
        self.signers: dict[str, Registered] = {}
        self.control_commands: dict[str, Registered] = {}
        self._collect()

    # -- construction ------------------------------------------------------------------

    def _each_plugin(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        """One caller per plugin implementing ``hook_name``, so registrations get an owner."""
        caller = getattr(self.pm.hook, hook_name)
        names = [impl.plugin_name for impl in caller.get_hookimpls()]
        out = []
        for name in names:
            others = [p for n, p in self.pm.list_name_plugin() if n != name and p is not None]
            out.append((name, self.pm.subset_hook_caller(hook_name, remove_plugins=others)))
        return out

    def _note(self, owner: str, kind: str, name: str) -> None:
        info = self.infos.get(owner)
        if info is not None:
            info.registered.setdefault(kind, []).append(name)

    def _label(self, owner: str) -> str:
        """``tcp (mesh 0.1.0)``: a plugin name with its distribution, for error messages."""
        info = self.infos.get(owner)
        return f"{owner} ({info.distribution} {info.version})" if info else owner

    def _add(self, table: dict[str, Registered], kind: str, item: Registered) -> None:
        existing = table.get(item.name)
        if existing is not None:
            raise DuplicateRegistration(kind, item.name, self._label(existing.owner),
                                        self._label(item.owner))
        table[item.name] = item
        self._note(item.owner, kind, item.name)

    def _add_section(self, owner: str, spec: SectionSpec) -> SectionSpec:
        spec = dataclasses.replace(spec, name=spec.name.lower(), owner=owner)
        self._add(self.sections, "config section", Registered(spec.name, owner, spec))
        return spec

    def _collect(self) -> None:
        for owner, call in self._each_plugin("mesh_register_config_sections"):
            call(register=lambda spec, _o=owner: self._add_section(_o, spec))

        for hook, table, kind in (
            ("mesh_register_backends", self.backends, "backend"),
            ("mesh_register_work_types", self.work_types, "work type"),
            ("mesh_register_services", self.services, "service"),
        ):
            for owner, call in self._each_plugin(hook):

                def register(spec: SectionSpec, factory: Any, _o: str = owner,
                             _t: dict = table, _k: str = kind) -> None:
                    spec = self._add_section(_o, spec)
                    self._add(_t, _k, Registered(spec.name, _o, spec, factory))

                call(register=register)

        for owner, call in self._each_plugin("mesh_register_signers"):

            def register_signer(name: str, signer: Any, verifier: Any, _o: str = owner) -> None:
                self._add(self.signers, "signer", Registered(name, _o, None, (signer, verifier)))

            call(register=register_signer)

        for owner, call in self._each_plugin("mesh_register_control_commands"):

            def register_command(name: str, handler: Any, _o: str = owner) -> None:
                self._add(self.control_commands, "control command",
                          Registered(name.lower(), _o, None, handler))

            call(register=register_command)

    # -- façade used by the kernel -----------------------------------------------------

    def section_specs(self) -> dict[str, SectionSpec]:
        """Every registered config section, by lower-case name."""
        return {name: reg.spec for name, reg in self.sections.items() if reg.spec}

    def register_cli(self, cli: Any) -> None:
        for owner, call in self._each_plugin("mesh_register_cli_commands"):
            before = set(cli.commands)
            call(cli=cli)
            for name in sorted(set(cli.commands) - before):
                self._note(owner, "cli command", name)

    def tls_config(self, node: Any, kind: str, name: str) -> Any:
        """The TLS configuration ``name`` of ``kind`` (server/client), or None if unknown."""
        return self.pm.hook.mesh_tls_config(node=node, kind=kind, name=name)

    def node_started(self, node: Any) -> None:
        self.pm.hook.mesh_node_started(node=node)

    def node_stopping(self, node: Any) -> None:
        self.pm.hook.mesh_node_stopping(node=node)

    def link_up(self, node: Any, peer: str, cost: float) -> None:
        self.pm.hook.mesh_link_up(node=node, peer=peer, cost=cost)

    def link_down(self, node: Any, peer: str, reason: str) -> None:
        self.pm.hook.mesh_link_down(node=node, peer=peer, reason=reason)

    def unit_state_changed(self, node: Any, unit_id: str, state: int, detail: str) -> None:
        self.pm.hook.mesh_unit_state_changed(node=node, unit_id=unit_id, state=state,
                                             detail=detail)

    def plugin_list(self) -> list[PluginInfo]:
        return [self.infos[name] for name in sorted(self.infos)]


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))


def _selected(ep: importlib.metadata.EntryPoint) -> bool:
    names = {ep.name}
    if ep.dist is not None:
        names.add(ep.dist.name)
    allow = _env_list("MESH_LOAD_PLUGINS")
    if allow is not None and not names & set(allow):
        return False
    block = _env_list("MESH_DISABLE_PLUGINS") or []
    return not names & set(block)


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, hook_impls: list, kwargs: dict) -> None:
        log.info("hook_call", hook=hook_name, plugins=[i.plugin_name for i in hook_impls],
                 kwargs={k: repr(v)[:120] for k, v in kwargs.items()})

    def after(outcome: Any, hook_name: str, hook_impls: list, kwargs: dict) -> None:
        log.info("hook_result", hook=hook_name, result=repr(outcome.get_result())[:200])

    pm.add_hookcall_monitoring(before, after)


def _register(pm: pluggy.PluginManager, plugin: object, name: str, where: str) -> None:
    """Register one plugin; a hookimpl whose arguments its hookspec lacks names the plugin."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise InvalidPlugin(plugin, f"plugin {name!r} ({where}): {exc}") from exc


def make_plugin_manager(*, entry_points: bool = True,
                        extra: list[tuple[str, object]] | None = None) -> PluginHost:
    """Build the plugin manager and registries.

    :param entry_points: load plugins from the ``mesh.plugins`` entry-point group (tests that
        must not see ambient plugins pass ``False``).
    :param extra: additional ``(name, plugin)`` pairs to register (used by tests).
    :raises PluginError: a plugin failed to import under ``MESH_STRICT_PLUGINS=1``
        (otherwise it is logged and skipped).
    :raises InvalidPlugin: a plugin implements an unknown hook or takes arguments its hook
        does not have (found by ``check_pending()``); also a ``pluggy.PluginValidationError``.
    :raises DuplicateRegistration: two entry points share a name, or two plugins register
        the same section, backend, work type, signer or control command.
    """
    pm = pluggy.PluginManager("mesh")
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}

    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        infos[module_name] = PluginInfo(module_name, "mesh", __version__)

    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not _selected(ep):
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if ep.name in infos:
                first = infos[ep.name]
                raise DuplicateRegistration("plugin", ep.name,
                                            f"{first.distribution} {first.version}",
                                            f"{dist} {version}")
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not stop the node
                if _strict():
                    raise PluginError(f"plugin {ep.name!r} ({dist} {version}) failed to load: "
                                      f"{exc}") from exc
                log.error("plugin_load_failed", plugin=ep.name, distribution=dist,
                          version=version, error=str(exc))
                continue
            _register(pm, plugin, ep.name, f"{dist} {version}")
            infos[ep.name] = PluginInfo(ep.name, dist, version)

    for name, plugin in extra or []:
        module = plugin if isinstance(plugin, ModuleType) else None
        info = PluginInfo(name, getattr(module, "__name__", "<object>"), "-")
        _register(pm, plugin, name, info.distribution)
        infos[name] = info

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        info = infos.get(name)
        where = f" ({info.distribution} {info.version})" if info else ""
        raise InvalidPlugin(exc.plugin, f"plugin {name!r}{where}: {exc}; mesh hooks are listed "
                                        f"in mesh.hookspecs") from exc
    if os.environ.get("MESH_TRACE_PLUGINS", "") not in ("", "0"):
        _enable_tracing(pm)
    for name, info in infos.items():
        plugin = pm.get_plugin(name)
        info.hooks = _hooks_of(pm, plugin) if plugin is not None else []
    return PluginHost(pm, infos)
