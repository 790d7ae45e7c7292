"""Which registered signer and verifier a node uses (``mesh_register_signers``).

A signer is *set up* on a node when its factory gives the node one (the builtin ``rs512``
does when the config has a ``work-signing`` section).  A node uses the one signer that is set
up.  When several are, the config names the one to use, as ``signer`` in the ``work-signing``
section, and the other factories are not asked; without that the node refuses to start with
an error naming them all: the plugin load order never decides.  Verifiers likewise, with
``verifier`` in ``work-verification``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from mesh.config.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import HookNode


@dataclass(frozen=True)
class Role:
    """Signer or verifier: what it is called and where a config names the one to use."""

    noun: str
    section: str
    key: str


SIGNER = Role("signer", "work-signing", "signer")
VERIFIER = Role("verifier", "work-verification", "verifier")


@dataclass(frozen=True)
class Candidate:
    """One registered signer (or verifier) factory and the plugin that registered it."""

    #: The plugin that registered it, with its distribution: ``signing (meshceptor 0.1.0)``.
    plugin: str
    factory: Callable[[HookNode], Any] | None


def choose(role: Role, candidates: Mapping[str, Candidate], node: HookNode) -> Any:
    """The ``role`` object the node uses, or None when no candidate sets one up.

    :param candidates: by registered name.
    :raises ConfigError: the config names a candidate that is not registered or sets nothing
        up, or names none while several set one up.
    """
    file = str(node.config.path or "<config>")
    named = _named(role, node)
    if named is not None:
        candidate = candidates.get(named)
        made = candidate.factory(node) if candidate and candidate.factory else None
        if made is None:
            offered = ", ".join(repr(n) for n, c in sorted(candidates.items()) if c.factory)
            raise ConfigError(f"no {role.noun} {named!r} is set up on this node; the "
                              f"registered ones are {offered or 'none'} (mesh plugins lists "
                              f"them), each set up by its own config section",
                              file=file, section=role.section, key=role.key)
        return made
    made_by = {name: made for name, candidate in sorted(candidates.items())
               if candidate.factory and (made := candidate.factory(node)) is not None}
    if len(made_by) > 1:
        which = " and ".join(f"{name!r} of {candidates[name].plugin}" for name in made_by)
        raise ConfigError(f"{len(made_by)} work {role.noun}s are set up: {which}; name the one "
                          f"to use with '{role.key}: NAME' in the {role.section} section, or "
                          f"leave one set up (remove the others' config, or disable their "
                          f"plugins with MESH_DISABLE_PLUGINS)", file=file)
    return next(iter(made_by.values()), None)


def _named(role: Role, node: HookNode) -> str | None:
    """The name the config gives for ``role``, or None."""
    try:
        section = node.config.one(role.section)
    except (KeyError, ValueError):  # no loaded plugin owns the section
        return None
    return getattr(section, role.key, None) or None
