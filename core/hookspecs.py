"""Every hook a mesh plugin can implement.

Hooks that contribute name-keyed things (config sections, backends, work types, signers,
control commands) follow the register-callback style: the hook receives a ``register``
callable and calls it once per thing.  The kernel owns the registries, resolves names and
rejects duplicates with an error that names both plugins.  Hooks never do I/O themselves;
I/O lives in ``async`` methods of the objects they register.

Lifecycle hooks are notifications: the kernel calls them and ignores their return values.

The types of the ``register`` callables, of what they take and of the ``node`` hooks receive are
protocols in :mod:`mesh.plugin_types`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from mesh.plugin_types import (HookNode, RegisterBackend, RegisterControlCommand,
                                   RegisterSection, RegisterService, RegisterSigner,
                                   RegisterWorkType, RouteAuthenticator, TLSConfig)

hookspec = pluggy.HookspecMarker("mesh")

# --------------------------------------------------------------------------------------
# Registration hooks (called once per plugin manager, at node or CLI start)
# --------------------------------------------------------------------------------------


@hookspec
def mesh_register_config_sections(register: RegisterSection) -> None:
    """Register configuration sections that this plugin owns.

    Called once when the kernel builds its section registry, before any config file is read.

    :param register: call ``register(spec)`` with a :class:`mesh.config.schema.SectionSpec`
        for each section (its name, its dataclass schema, whether it is a singleton, its bare
        key and its version-2 plural key).  Registering a name that another plugin already
        registered raises :class:`mesh.plugins.DuplicateRegistration` naming both plugins.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_register_backends(register: RegisterBackend) -> None:
    """Register link backends (tcp, udp, websocket, ...).

    Called once when the backend registry is built.  A backend also owns its config section.

    :param register: call ``register(spec, factory)`` where ``spec`` is the
        :class:`~mesh.config.schema.SectionSpec` of the backend's section (for example
        ``tcp-listener``) and ``factory(config, node)`` returns a
        :class:`mesh.net.backend.Backend` for one config entry.  A factory whose ``abi``
        differs from :data:`mesh.net.backend.BACKEND_ABI` is refused with
        :class:`mesh.plugins.IncompatiblePlugin`.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_register_work_types(register: RegisterWorkType) -> None:
    """Register work-type kinds (``command``, ``container``, ...).

    Called once when the work-type registry is built.  Each kind owns a config section
    (for example ``work-command``); every entry of that section defines one named work type.

    :param register: call ``register(spec, factory)`` where ``spec`` is the section's
        :class:`~mesh.config.schema.SectionSpec` and ``factory(config, node)`` returns the
        :class:`mesh.work.worktype.WorkType` of one config entry.  A factory whose ``abi``
        differs from :data:`mesh.work.worktype.WORK_ABI` is refused with
        :class:`mesh.plugins.IncompatiblePlugin`.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_register_services(register: RegisterService) -> None:
    """Register mesh services that run beside the node (TCP/UDP proxies, ...).

    Called once when the service registry is built.  A service kind owns a config section;
    the node starts one service per entry of that section when it starts, and cancels it
    when it stops.

    :param register: call ``register(spec, factory)`` where ``spec`` is the section's
        :class:`~mesh.config.schema.SectionSpec` and ``factory(config, node)`` returns an
        object with an ``async run()`` method that serves until cancelled.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_register_signers(register: RegisterSigner) -> None:
    """Register work signers and verifiers (for example RS512 JWT).

    Called once when the signer registry is built.

    :param register: call ``register(name, signer_factory, verifier_factory)``; ``name`` is the
        algorithm name.  ``signer_factory(node)`` returns an object with
        ``sign(audience: str) -> str`` (a token for the target node) or ``None`` when the node
        is not configured to sign; ``verifier_factory(node)`` returns an object with
        ``verify(token: str, audience: str) -> None`` (raising on a bad token) and a
        ``verify_unix_socket`` flag, or ``None``.  Either factory may be ``None``.  A node
        uses the one signer (verifier) its config sets up; when several are, the config names
        the one to use with ``signer`` in ``work-signing`` (``verifier`` in
        ``work-verification``), else the node refuses to start naming them
        (:mod:`mesh.work.signer_choice`).
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_register_control_commands(register: RegisterControlCommand) -> None:
    """Register control-service commands (``status``, ``ping``, ``work``, ...).

    Called once when the plugin manager is built; a node's control services dispatch every
    request through the resulting registry.

    :param register: call ``register(name, handler)``.  ``name`` is the command word
        (stored lower-case).  ``handler`` is an ``async`` callable ``handler(ctx, request)``
        where ``ctx`` is a :class:`mesh.control.server.CommandContext` (``node``, the client
        connection ``conn`` and a free-form ``extra`` dict) and ``request`` a
        :class:`mesh.control.protocol.Request`.  It returns a JSON-serialisable object to
        reply with, or :data:`mesh.control.server.STREAMED` if it wrote the reply itself on
        ``ctx.conn`` (streaming commands; the session then ends).  It raises
        :class:`mesh.control.protocol.CommandError` to reply ``ERROR: <message>``.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_register_cli_commands(cli: "click.Group") -> None:
    """Add subcommands to the ``mesh`` command line.

    Called once when the CLI starts, before arguments are parsed.  The built-in subcommands
    (``node``, ``status``, ``ping``, ...) are added through this same hook.

    :param cli: the top-level :class:`click.Group`; call ``cli.add_command(cmd)``.
    :return: nothing; the return value is ignored.
    """


@hookspec(firstresult=True)
def mesh_tls_config(node: HookNode, kind: str, name: str) -> TLSConfig | None:
    """Resolve a named TLS configuration (a ``tls-server`` or ``tls-client`` section).

    Called whenever a backend, the control service or a mesh stream needs TLS.  First
    non-None result wins.

    :param node: the :class:`mesh.node.Node` asking.
    :param kind: ``"server"`` or ``"client"``.
    :param name: the ``name`` of the section, as given in the ``tls`` key that refers to it.
    :return: ``None`` if this plugin does not know ``name``; otherwise an object with
        ``ssl_context() -> ssl.SSLContext`` (for TCP, websockets and the control service),
        ``quic_options() -> mesh.net.quic_tls.QuicTLSOptions`` (for mesh streams) and
        ``peer_node_ids(der_cert: bytes) -> list[str] | None`` (the Receptor node-ID SANs of a
        peer certificate, used to bind a link's TLS identity to its declared node ID; ``None``
        when verification is off (``insecureskipverify``); it raises
        :class:`mesh.net.backend.SessionClosed` when certificate pinning fails).
    """


@hookspec(firstresult=True)
def mesh_route_authenticator(node: HookNode) -> RouteAuthenticator | None:
    """Give a node the object that signs its routing updates and service adverts and checks
    those it receives (authenticated routing; the builtin ``route-auth`` section provides one).

    Called once while the node is built, after its config is loaded and before any link
    comes up.  First non-None result wins; with none, nothing is signed or checked (Receptor's
    behaviour).  Raise :class:`mesh.config.errors.ConfigError` for a bad setting.

    :param node: the :class:`mesh.node.Node` being built (``node.config``, ``node.node_id``).
    :return: ``None``, or an object with ``sign_update(update)`` and
        ``sign_advertisement(ad)`` (set the ``signature`` and ``certificate`` fields of a
        :class:`mesh.net.messages.RoutingUpdate` / :class:`~mesh.net.messages.ServiceAdvertisement`
        this node originates, just before it is encoded) and ``accept_update(update, peer)`` /
        ``accept_advertisement(ad, peer) -> bool`` (called for every update and advert
        received from neighbour ``peer``, before it is applied or forwarded; ``False`` drops
        it, and the object logs why).  They run on the event loop for every message: no I/O.
        Optionally ``stats() -> dict`` whose ``dropped_by`` (kind → reason → count) the
        metrics service exports as ``mesh_route_auth_dropped_total``.
    """


# --------------------------------------------------------------------------------------
# Lifecycle notifications (called by a running node)
# --------------------------------------------------------------------------------------


@hookspec
def mesh_node_started(node: HookNode) -> None:
    """A node finished starting: backends, control services and work types are running.

    :param node: the running :class:`mesh.node.Node`.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_node_stopping(node: HookNode) -> None:
    """A node is about to stop (signal, duplicate node ID, or failed start-up).

    Backends and control services are still running while this hook runs.

    :param node: the :class:`mesh.node.Node` that is stopping; ``node.stop_reason`` says why.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_link_up(node: HookNode, peer: str, cost: float) -> None:
    """A link to a neighbouring node was accepted (handshake finished).

    :param node: the local :class:`mesh.node.Node`.
    :param peer: the neighbour's node ID.
    :param cost: the link's agreed cost.
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_link_down(node: HookNode, peer: str, reason: str) -> None:
    """A link to a neighbouring node ended.

    :param node: the local :class:`mesh.node.Node`.
    :param peer: the neighbour's node ID.
    :param reason: a short text saying why (``closed``, ``idle timeout``, ``node stopping``,
        ``remote node rejected the connection``, ...).
    :return: nothing; the return value is ignored.
    """


@hookspec
def mesh_unit_state_changed(node: HookNode, unit_id: str, state: int, detail: str) -> None:
    """A work unit changed state.

    :param node: the local :class:`mesh.node.Node`.
    :param unit_id: the unit's 8-character ID.
    :param state: the new state (0 Pending, 1 Running, 2 Succeeded, 3 Failed, 4 Canceled).
    :param detail: the unit's new Detail text.
    :return: nothing; the return value is ignored.
    """
