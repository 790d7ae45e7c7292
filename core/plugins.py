"""Plugin manager: entry-point discovery, tracing, and the kernel's name-keyed registries.

Plugins are modules (or objects) with ``@hookimpl`` functions.  The kernel's own defaults
are listed in :data:`DEFAULT_PLUGINS` and always load; everything else, the builtins of
``mesh_builtin`` included, comes from the ``mesh.plugins`` entry-point group.

Environment variables:

* ``MESH_LOAD_PLUGINS``: comma-separated allow-list of entry-point or distribution names;
  when set, only those entry points load (an empty value loads none).
* ``MESH_DISABLE_PLUGINS``: comma-separated block-list of entry-point or distribution names.
* ``MESH_TRACE_PLUGINS=1``: log every hook call with its arguments and results.
* ``MESH_STRICT_PLUGINS=1``: a plugin that fails to import, or implements a hook that does not
  exist, aborts instead of being skipped.

A broken plugin never stops a command that does not need it: one that fails to import is logged
and skipped; one that implements an unknown hook (a misspelt name) or takes arguments its hook
does not have is skipped too, listed with the fix by ``mesh plugins``, and refused by a node
(:meth:`PluginHost.load_for_node`), which would otherwise run without what the plugin was
meant to add.

A backend or work type registered with an ``abi`` other than the kernel's
(:data:`mesh.net.backend.BACKEND_ABI`, :data:`mesh.work.worktype.WORK_ABI`) was made for another
version of mesh: its plugin is refused like an invalid one, with what it registered taken back.

Two ways to get a :class:`PluginHost`: :func:`make_plugin_manager` imports every plugin at
once (``mesh plugins``, the docs generator, tests); :func:`lazy_plugin_host` imports only what
is asked for and learns the rest from the plugin index (:mod:`mesh.plugin_index`): a ``mesh``
command imports the plugin that owns it, a node the plugins its config uses.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable

import pluggy

from mesh import DISTRIBUTION, __version__, hookspecs
from mesh.plugin_index import (BuildLock, CliCommandInfo, IndexedPlugin, PluginIndex, read_index,
                               write_index)


if TYPE_CHECKING:  # pragma: no cover - the CLI's client commands never load the schemas
    from mesh.config.loader import SectionSpecs
    from mesh.config.schema import SectionSpec
    from mesh.plugin_types import (CommandHandler, HookNode, RouteAuthenticator, Signer,
                                   SignerFactory, TLSConfig, Verifier, VerifierFactory)


def _log() -> Any:
    """This module's logger.  structlog (and with it asyncio) is imported only when there is
    something to say: a client command that loads one plugin never needs it."""
    from mesh.log import ensure_configured

    import structlog

    ensure_configured()
    return structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "mesh.plugins"

#: Kernel modules that are plugins like any other but always load.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mesh.node_sections",
    "mesh.control.builtin_commands",
    "mesh.work.control_commands",
    "mesh.cli_commands",
    "mesh.work.cli_commands",
)
#: The kernel plugins every node loads (the other defaults only add CLI commands).
NODE_PLUGINS: tuple[str, ...] = (
    "mesh.node_sections",
    "mesh.control.builtin_commands",
    "mesh.work.control_commands",
)
#: Hooks that only register named things.  A plugin that implements nothing else is imported
#: when one of its names is needed: a config section a node uses, a control command a client
#: sends, a CLI command that runs.  A plugin that owns config sections is imported only by
#: nodes whose config uses one of them; a plugin with no sections and another hook (a link or
#: unit observer, a signer, a TLS resolver) is imported by every node.
NAMED_REGISTRATION_HOOKS = frozenset({
    "mesh_register_config_sections", "mesh_register_backends", "mesh_register_work_types",
    "mesh_register_services", "mesh_register_control_commands", "mesh_register_cli_commands",
})
#: Where the contract version of a registry's factories is kept (module, constant, what it is
#: called), by registry kind: a factory with an ``abi`` attribute (a subclass of the kernel's
#: base class inherits it) must match.  Kinds not listed have no version.
ABI_VERSIONS: dict[str, tuple[str, str, str]] = {
    "backend": ("mesh.net.backend", "BACKEND_ABI", "backend ABI"),
    "work type": ("mesh.work.worktype", "WORK_ABI", "work-type ABI"),
}


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


class IncompatiblePlugin(InvalidPlugin):
    """A plugin registered a backend or work type made for another contract version (``abi``)
    than this mesh's."""


class _AbiMismatch(Exception):
    """Raised by a register callback to refuse the plugin calling it; the text is the problem."""


@dataclass
class PluginInfo:
    """What ``mesh plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    #: Why the plugin is not loaded (it failed to import or is invalid), with the fix; None
    #: for a loaded plugin.
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``mesh plugins --json`` entry; ``problem`` only for a plugin that is not loaded."""
        out: dict[str, Any] = {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": sorted(self.hooks),
            "registered": {k: sorted(v) for k, v in sorted(self.registered.items())},
        }
        if self.problem is not None:
            out["problem"] = self.problem
        return out

    def problem_line(self) -> str:
        """``plugin 'typo' (mesh-plugin-typo 0.1): <problem>``: one line for stderr."""
        return f"plugin {self.name!r} ({self.distribution} {self.version}): {self.problem}"


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

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo],
                 index: PluginIndex | None = None) -> None:
        self.pm = pm
        self.infos = infos
        #: What every installed plugin registers (None: everything is loaded already).
        self.index = index
        #: Plugins that failed to import (they are skipped), with their ``problem``.
        self.failed: dict[str, PluginInfo] = {}
        #: Plugins that implement an unknown hook or take arguments their hook does not have
        #: (they are not registered; a node refuses to start), with their ``problem``.
        self.invalid: dict[str, PluginInfo] = {}
        #: Where each entry-point or default plugin was imported from (its entry point value).
        self.targets: dict[str, str] = {}
        self.sections: dict[str, Registered] = {}
        self.backends: dict[str, Registered] = {}
        self.work_types: dict[str, Registered] = {}
        self.services: dict[str, Registered] = {}
        self.signers: dict[str, Registered] = {}
        self.control_commands: dict[str, Registered] = {}
        #: The click group plugins add subcommands to (see :meth:`register_cli`).
        self.cli_group: Any = None
        self._collect(None)

    # -- construction ------------------------------------------------------------------

    def _each_plugin(self, hook_name: str, owners: set[str] | None = None,
                     ) -> list[tuple[str, Callable[..., Any]]]:
        """One caller per plugin implementing ``hook_name`` (among ``owners`` if given), so
        registrations get an owner."""
        caller = getattr(self.pm.hook, hook_name)
        names = [impl.plugin_name for impl in caller.get_hookimpls()
                 if owners is None or impl.plugin_name in owners]
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

    def _collect(self, owners: set[str] | None) -> None:
        """Call the register hooks of ``owners`` (every plugin when None) and file what they
        register; refuse a plugin whose backend or work type has another ``abi``."""
        for owner, call in self._each_plugin("mesh_register_config_sections", owners):
            call(register=lambda spec, _o=owner: self._add_section(_o, spec))

        for hook, table, kind in (
            ("mesh_register_backends", self.backends, "backend"),
            ("mesh_register_work_types", self.work_types, "work type"),
            ("mesh_register_services", self.services, "service"),
        ):
            for owner, call in self._each_plugin(hook, owners):

                def register(spec: SectionSpec, factory: Any, _o: str = owner,
                             _t: dict = table, _k: str = kind) -> None:
                    _check_abi(_k, spec.name, factory)
                    spec = self._add_section(_o, spec)
                    self._add(_t, _k, Registered(spec.name, _o, spec, factory))

                try:
                    call(register=register)
                except _AbiMismatch as exc:
                    self._refuse(owner, str(exc))

        for owner, call in self._each_plugin("mesh_register_signers", owners):

            def register_signer(name: str, signer: SignerFactory | None,
                                verifier: VerifierFactory | None, _o: str = owner) -> None:
                self._add(self.signers, "signer", Registered(name, _o, None, (signer, verifier)))

            call(register=register_signer)

        for owner, call in self._each_plugin("mesh_register_control_commands", owners):

            def register_command(name: str, handler: CommandHandler, _o: str = owner) -> None:
                self._add(self.control_commands, "control command",
                          Registered(name.lower(), _o, None, handler))

            call(register=register_command)
        if self.cli_group is not None:
            self._register_cli(owners)

    def _refuse(self, owner: str, problem: str) -> None:
        """Take back what plugin ``owner`` registered and list it as invalid with ``problem``
        (under ``MESH_STRICT_PLUGINS=1``, raise :class:`IncompatiblePlugin`)."""
        info = self.infos.pop(owner, None) or PluginInfo(owner, "?", "?")
        info.problem = f"{problem}, or disable the plugin with MESH_DISABLE_PLUGINS={owner}"
        info.registered.clear()
        for table in (self.sections, self.backends, self.work_types, self.services,
                      self.signers, self.control_commands):
            for name in [name for name, item in table.items() if item.owner == owner]:
                del table[name]
        self.pm.unregister(name=owner)
        self.targets.pop(owner, None)
        if _strict():
            raise IncompatiblePlugin(None, info.problem_line())
        self.invalid[owner] = info

    def load(self, names: Iterable[str]) -> None:
        """Import and register the named plugins that are not loaded yet, as the index
        describes them (names it does not know are ignored).

        :raises PluginError: a plugin failed to import or is invalid, under
            ``MESH_STRICT_PLUGINS=1`` (otherwise it is skipped: see :attr:`failed`,
            :attr:`invalid`).
        """
        if self.index is None:
            return
        new: set[str] = set()
        for name in names:
            entry = self.index.plugins.get(name)
            if entry is None or name in self.infos or name in self.failed or name in self.invalid:
                continue
            info = PluginInfo(name, entry.distribution, entry.version)
            plugin = _load_plugin(self.failed, info, entry.target)
            if plugin is not None and _register_valid(self.pm, plugin, info, self.invalid):
                self.infos[name] = info
                self.targets[name] = entry.target
                new.add(name)
        if new:
            self._collect(new)

    def load_for_node(self, sections: Iterable[str]) -> set[str]:
        """Load what a node needs: the kernel's node plugins, the owners of ``sections`` (as
        written in the config, singular or version-2 plural) and the plugins without sections
        that implement more than registration hooks.  Returns the section names no plugin
        owns.

        :raises InvalidPlugin: an installed plugin is invalid (a misspelt hook registers
            nothing, so the node cannot know whether it needs the plugin); the message names
            the plugin, the hook and the fix.
        """
        if self.index is None:
            unknown = {name for name in sections if name not in self.sections}
        else:
            owners, unknown = self.index.section_owners(sections)
            observers = [plugin.name for plugin in self.index.plugins.values()
                         if "config section" not in plugin.registered
                         and set(plugin.hooks) - NAMED_REGISTRATION_HOOKS]
            self.load([*NODE_PLUGINS, *sorted(owners), *observers])
        if self.invalid:
            first = self.invalid[min(self.invalid)]
            raise InvalidPlugin(None, first.problem_line())
        return unknown

    def control_command(self, name: str) -> Registered | None:
        """The handler registered for control command ``name``, loading its plugin if needed."""
        registered = self.control_commands.get(name)
        if registered is None and self.index is not None:
            owner = self.index.owners("control command").get(name)
            if owner is not None:
                self.load([owner])
                registered = self.control_commands.get(name)
        return registered

    # -- façade used by the kernel -----------------------------------------------------

    def section_specs(self) -> SectionSpecs:
        """Every registered config section, by lower-case name; a config that uses a section of
        an installed plugin that ``MESH_DISABLE_PLUGINS`` or ``MESH_LOAD_PLUGINS`` left out is
        told so (:func:`unselected_section_owner`)."""
        from mesh.config.loader import SectionSpecs

        return SectionSpecs({name: reg.spec for name, reg in self.sections.items() if reg.spec},
                            explain=unselected_section_owner)

    def register_cli(self, cli: Any) -> None:
        """Let the loaded plugins add their subcommands to ``cli``, and plugins loaded later
        too."""
        self.cli_group = cli
        self._register_cli(None)

    def _register_cli(self, owners: set[str] | None) -> None:
        cli = self.cli_group
        for owner, call in self._each_plugin("mesh_register_cli_commands", owners):
            before = set(cli.commands)
            call(cli=cli)
            for name in sorted(set(cli.commands) - before):
                self._note(owner, "cli command", name)

    def load_cli_command(self, name: str) -> None:
        """Import the plugin that adds subcommand ``name`` (from the index)."""
        if self.index is not None and name in self.index.cli_commands:
            self.load([self.index.cli_commands[name].owner])

    def tls_config(self, node: HookNode, kind: str, name: str) -> TLSConfig | None:
        """The TLS configuration ``name`` of ``kind`` (server/client), or None if unknown."""
        return self.pm.hook.mesh_tls_config(node=node, kind=kind, name=name)

    def route_authenticator(self, node: HookNode) -> RouteAuthenticator | None:
        """The node's route authenticator (``mesh_route_authenticator``), or None."""
        return self.pm.hook.mesh_route_authenticator(node=node)

    def work_signing(self, node: HookNode) -> tuple[Signer | None, Verifier | None]:
        """The signer and the verifier ``node`` uses, each None when no signer plugin sets
        one up (:mod:`mesh.work.signer_choice`: several need the config to name one).

        :raises mesh.config.errors.ConfigError: the config names none of several, or one that
            is not set up.
        """
        if not self.signers:  # no signer plugin loaded (the usual node): nothing to choose
            return None, None
        from mesh.work.signer_choice import SIGNER, VERIFIER, Candidate, choose

        def candidates(which: int) -> dict[str, Candidate]:
            return {name: Candidate(self._label(reg.owner), reg.factory[which])
                    for name, reg in self.signers.items()}

        return choose(SIGNER, candidates(0), node), choose(VERIFIER, candidates(1), node)

    def node_started(self, node: HookNode) -> None:
        self.pm.hook.mesh_node_started(node=node)

    def node_stopping(self, node: HookNode) -> None:
        self.pm.hook.mesh_node_stopping(node=node)

    def link_up(self, node: HookNode, peer: str, cost: float) -> None:
        self.pm.hook.mesh_link_up(node=node, peer=peer, cost=cost)

    def link_down(self, node: HookNode, peer: str, reason: str) -> None:
        self.pm.hook.mesh_link_down(node=node, peer=peer, reason=reason)

    def unit_state_changed(self, node: HookNode, unit_id: str, state: int, detail: str) -> None:
        self.pm.hook.mesh_unit_state_changed(node=node, unit_id=unit_id, state=state,
                                             detail=detail)

    def plugin_list(self) -> list[PluginInfo]:
        """Every plugin by name: the loaded ones and those that failed or are invalid."""
        every = {**self.failed, **self.invalid, **self.infos}
        return [every[name] for name in sorted(every)]

    def all_loaded(self) -> bool:
        """No plugin failed to import or is invalid (only then is the index stored)."""
        return not self.failed and not self.invalid


def _check_abi(kind: str, name: str, factory: Any) -> None:
    """Raise :class:`_AbiMismatch` when ``factory`` has an ``abi`` other than the kernel's for
    ``kind`` (see :data:`ABI_VERSIONS`)."""
    declared = getattr(factory, "abi", None)
    if declared is None or kind not in ABI_VERSIONS:
        return
    module, constant, what = ABI_VERSIONS[kind]
    expected = getattr(importlib.import_module(module), constant)  # loaded: a subclass's base
    if declared != expected:
        raise _AbiMismatch(f"{kind} {name!r} is made for {what} {declared!r}, but "
                           f"{DISTRIBUTION} {__version__} has {what} {expected}; install a "
                           f"version of the plugin made for this mesh")


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))


def _left_out_by(name: str, distribution: str | None) -> str | None:
    """The discovery variable that leaves entry point ``name`` out, or None if it loads."""
    names = {name} | ({distribution} if distribution else set())
    if distribution == DISTRIBUTION:
        names.add("mesh")  # the builtins by the name the project goes by
    allow = _env_list("MESH_LOAD_PLUGINS")
    if allow is not None and not names & set(allow):
        return "MESH_LOAD_PLUGINS"
    block = _env_list("MESH_DISABLE_PLUGINS") or []
    return "MESH_DISABLE_PLUGINS" if names & set(block) else None


def _selected(name: str, distribution: str | None) -> bool:
    return _left_out_by(name, distribution) is None


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    log = _log()

    def before(hook_name: str, hook_impls: list, kwargs: dict) -> None:
        log.info("hook_call", hook=hook_name, plugins=[i.plugin_name for i in hook_impls],
                 kwargs={k: repr(v)[:120] for k, v in kwargs.items()})

    def after(outcome: Any, hook_name: str, hook_impls: list, kwargs: dict) -> None:
        log.info("hook_result", hook=hook_name, result=repr(outcome.get_result())[:200])

    pm.add_hookcall_monitoring(before, after)


def _declared_hooks(pm: pluggy.PluginManager, plugin: object) -> list[tuple[str, bool]]:
    """The hooks ``plugin`` implements, by hook name, each with its ``optionalhook`` flag."""
    hooks = []
    for attribute in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attribute)
        if opts is not None:
            hooks.append((opts.get("specname") or attribute, bool(opts.get("optionalhook"))))
    return sorted(hooks)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """The hooks that registered ``plugin`` implements and mesh does not have (``optionalhook``
    ones aside): what pluggy's ``check_pending`` would reject, found from the hook callers
    that registering made, without another pass over the plugin's attributes."""
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or []
                  if not caller.has_spec()
                  and any(impl.plugin is plugin and not impl.optionalhook
                          for impl in caller.get_hookimpls()))


def _unknown_hooks_problem(pm: pluggy.PluginManager, plugin: object, name: str,
                           unknown: list[str]) -> str:
    """``unknown hook 'x', did you mean 'y'?`` for each of ``unknown``, and the fix."""
    import difflib  # only on this error path

    specs = sorted(hook for hook, caller in vars(pm.hook).items()
                   if isinstance(caller, pluggy.HookCaller) and caller.has_spec())
    guesses = []
    for hook in unknown:
        match = difflib.get_close_matches(hook, specs, n=1)
        guesses.append(f"unknown hook {hook!r}"
                       + (f", did you mean {match[0]!r}?" if match else ""))
    where = getattr(plugin, "__name__", type(plugin).__name__)
    text = "; ".join(guesses)
    return (f"{text}{' ' if text.endswith('?') else '. '}Rename it in {where} (mesh hooks are "
            f"listed in mesh.hookspecs), or disable the plugin with MESH_DISABLE_PLUGINS={name}")


def _validated(pm: pluggy.PluginManager, plugin: object, name: str) -> str | None:
    """Register ``plugin`` as ``name`` if it is valid; otherwise return what is wrong with it
    (one line, with the fix) and leave it unregistered."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # a hookimpl argument its hookspec lacks
        from mesh.config.errors import one_line

        return (f"{one_line(str(exc))}; fix the arguments (mesh hooks are listed in "
                f"mesh.hookspecs), or disable the plugin with MESH_DISABLE_PLUGINS={name}")
    unknown = _unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin)
        return _unknown_hooks_problem(pm, plugin, name, unknown)
    return None


def _register(pm: pluggy.PluginManager, plugin: object, name: str, where: str) -> None:
    """Register one plugin or raise :class:`InvalidPlugin` naming it."""
    problem = _validated(pm, plugin, name)
    if problem is not None:
        raise InvalidPlugin(plugin, f"plugin {name!r} ({where}): {problem}")


def _register_valid(pm: pluggy.PluginManager, plugin: object, info: PluginInfo,
                    invalid: dict[str, PluginInfo]) -> bool:
    """Register an installed plugin; an invalid one is noted in ``invalid`` and skipped
    (False), or raised as :class:`InvalidPlugin` in strict mode.  Fills ``info.hooks``."""
    problem = _validated(pm, plugin, info.name)
    if problem is None:
        info.hooks = _hooks_of(pm, plugin)
        return True
    info.problem = problem
    info.hooks = [hook for hook, _ in _declared_hooks(pm, plugin)]
    if _strict():
        raise InvalidPlugin(plugin, info.problem_line())
    invalid[info.name] = info
    return False


def _import_target(target: str) -> Any:
    """The object an entry point's value names (``module`` or ``module:attribute``)."""
    module_name, _, attribute = target.partition(":")
    plugin: Any = importlib.import_module(module_name.strip())
    for part in filter(None, attribute.strip().split(".")):
        plugin = getattr(plugin, part)
    return plugin


def _load_plugin(failed: dict[str, PluginInfo], info: PluginInfo, target: str) -> Any:
    """Import one plugin; a failure is logged, noted in ``failed`` and the plugin skipped
    (None), or raised as PluginError in strict mode."""
    try:
        return _import_target(target)
    except Exception as exc:  # a broken third-party plugin must not stop the node
        if _strict():
            raise PluginError(f"plugin {info.name!r} ({info.distribution} {info.version}) "
                              f"failed to load: {exc}") from exc
        _log().error("plugin_load_failed", plugin=info.name, distribution=info.distribution,
                     version=info.version, error=str(exc))
        info.problem = f"failed to import: {exc}"
        failed[info.name] = info
        return None


def unselected_section_owner(section: str) -> str | None:
    """Why config section ``section`` (canonical name) is not registered, when an installed
    plugin that ``MESH_DISABLE_PLUGINS`` or ``MESH_LOAD_PLUGINS`` leaves out owns it; else None.

    Called only when a config names an unknown section: it imports the plugins left out (and
    nothing when none is), so a node that starts pays nothing for it.
    """
    import importlib.metadata

    from mesh.config.schema import normalize_section

    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        variable = _left_out_by(ep.name, ep.dist.name if ep.dist else None)
        if variable is None:
            continue
        try:
            pm = _new_manager()
            if _validated(pm, _import_target(ep.value), ep.name) is not None:
                continue
            sections = PluginHost(pm, {}).sections.values()
        except (Exception, SystemExit):  # a plugin left out may well be broken: unnamed then
            continue
        if not any(section in (reg.name, normalize_section(reg.spec.plural_key))
                   for reg in sections if reg.spec is not None):
            continue
        where = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        if variable == "MESH_LOAD_PLUGINS":
            why, fix = "MESH_LOAD_PLUGINS does not list", "add it to MESH_LOAD_PLUGINS"
        else:
            why, fix = "is disabled (MESH_DISABLE_PLUGINS)", "take it out of MESH_DISABLE_PLUGINS"
        return (f"section {section!r} belongs to plugin {ep.name!r} ({where}), which {why}; "
                f"{fix}, or remove the section")
    return None


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("mesh")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("MESH_TRACE_PLUGINS", "") not in ("", "0"):
        _enable_tracing(pm)
    return pm


def make_plugin_manager(*, entry_points: bool = True,
                        extra: list[tuple[str, object]] | None = None) -> PluginHost:
    """Build the plugin manager and registries with every plugin imported.

    :param entry_points: load plugins from the ``mesh.plugins`` entry-point group (tests that
        must not see ambient plugins pass ``False``).
    :param extra: additional ``(name, plugin)`` pairs to register (used by tests).
    :raises PluginError: a plugin failed to import under ``MESH_STRICT_PLUGINS=1``
        (otherwise it is logged and skipped: :attr:`PluginHost.failed`).
    :raises InvalidPlugin: a plugin of ``extra``, or an installed one under
        ``MESH_STRICT_PLUGINS=1``, implements an unknown hook or takes arguments its hook
        does not have, or registers a backend or work type of another ``abi``
        (:class:`IncompatiblePlugin`); an installed one is otherwise skipped
        (:attr:`PluginHost.invalid`).  Also a ``pluggy.PluginValidationError``.
    :raises DuplicateRegistration: two entry points share a name, or two plugins register
        the same section, backend, work type, signer or control command.
    """
    import importlib.metadata

    pm = _new_manager()
    infos: dict[str, PluginInfo] = {}
    targets: dict[str, str] = {}
    failed: dict[str, PluginInfo] = {}
    invalid: dict[str, PluginInfo] = {}

    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        _register(pm, module, module_name, f"{DISTRIBUTION} {__version__}")
        infos[module_name] = PluginInfo(module_name, DISTRIBUTION, __version__)
        targets[module_name] = module_name

    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if not _selected(ep.name, ep.dist.name if ep.dist else None):
                continue
            first = infos.get(ep.name) or invalid.get(ep.name) or failed.get(ep.name)
            if first is not None:
                raise DuplicateRegistration("plugin", ep.name,
                                            f"{first.distribution} {first.version}",
                                            f"{dist} {version}")
            info = PluginInfo(ep.name, dist, version)
            plugin = _load_plugin(failed, info, ep.value)
            if plugin is not None and _register_valid(pm, plugin, info, invalid):
                infos[ep.name] = info
                targets[ep.name] = ep.value

    for name, plugin in extra or []:
        module = plugin if isinstance(plugin, ModuleType) else None
        info = PluginInfo(name, getattr(module, "__name__", "<object>"), "-")
        _register(pm, plugin, name, info.distribution)
        infos[name] = info

    for name, info in infos.items():
        plugin = pm.get_plugin(name)
        info.hooks = _hooks_of(pm, plugin) if plugin is not None else []
    host = PluginHost(pm, infos)  # refuses, into host.invalid, plugins of another abi
    host.failed = failed
    host.invalid.update(invalid)
    host.targets = {name: target for name, target in targets.items() if name in host.infos}
    refused = [name for name, _ in extra or [] if name in host.invalid]
    if refused:
        raise IncompatiblePlugin(None, host.invalid[refused[0]].problem_line())
    return host


def build_index(host: PluginHost) -> PluginIndex:
    """The index of a host that has every plugin loaded (from :func:`make_plugin_manager`)."""
    import click

    if host.cli_group is None:
        host.register_cli(click.Group("mesh"))
    group = host.cli_group
    index = PluginIndex()
    for name, info in host.infos.items():
        target = host.targets.get(name)
        if target is None:
            continue  # registered by a test, not installed
        index.plugins[name] = IndexedPlugin(name, target, info.distribution, info.version,
                                            list(info.hooks),
                                            {k: list(v) for k, v in info.registered.items()})
    for name, registered in host.sections.items():
        if registered.spec is not None and registered.owner in index.plugins:
            index.sections[name] = (registered.owner, registered.spec.plural_key)
    for owner, plugin in index.plugins.items():
        for command in plugin.registered.get("cli command", ()):
            cmd = group.commands[command]
            index.cli_commands[command] = CliCommandInfo(owner, cmd.help, cmd.short_help,
                                                         cmd.hidden)
    index.help = _root_help(group)
    return index


def _root_help(group: Any) -> str:
    """``mesh --help``, 80 columns wide, with the subcommands of ``group``."""
    import click

    from mesh.cli_group import cli

    root = click.Group(cli.name, params=cli.params, help=cli.help, commands=group.commands)
    settings = {**cli.context_settings, "terminal_width": 78}  # what click gives 80 columns
    with click.Context(root, info_name="mesh", **settings) as ctx:
        return root.get_help(ctx) + "\n"


def lazy_plugin_host(load: Iterable[str] = ()) -> PluginHost:
    """A host that imports plugins when they are needed (:meth:`PluginHost.load`,
    :meth:`PluginHost.load_for_node`, :meth:`PluginHost.load_cli_command`), starting with
    ``load``.

    Reads the plugin index; when it is missing or stale, imports every plugin once to rebuild
    it (and stores it unless a plugin failed to import or is invalid: the host then knows
    them, in :attr:`PluginHost.failed` and :attr:`PluginHost.invalid`).  Either way the host
    starts with only ``load`` registered, so what runs does not depend on the state of the
    cache.

    :raises PluginError: as :func:`make_plugin_manager`, while the index is rebuilt.
    """
    index = read_index()
    full: PluginHost | None = None
    if index is None:
        with BuildLock():
            index = read_index()  # another process may have just built it
            if index is None:
                full = make_plugin_manager()
                index = build_index(full)
                if full.all_loaded():
                    write_index(index)
    host = PluginHost(_new_manager(), {}, index)
    if full is not None:
        host.failed, host.invalid = dict(full.failed), dict(full.invalid)
    host.load(load)
    return host


