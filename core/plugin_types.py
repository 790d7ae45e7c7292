"""The types of the plugin API: what hooks receive and what plugins register.

:mod:`mesh.hookspecs` declares the hooks with these types.  They are protocols, so a plugin
needs no base class to satisfy them (a backend or a work type usually subclasses
:class:`mesh.net.backend.Backend` or :class:`mesh.work.worktype.WorkType`, whose ``abi`` the
kernel checks when the plugin registers it).  Factories and handlers are called positionally,
so a class whose ``__init__`` takes ``(config, node)`` is a factory.

Importing this module costs nothing: the kernel types it names are imported only for type
checkers.  The kernel's subsystems do not import it (each declares the narrow interface it
uses of the node), except the control service, which hands command handlers a
:class:`CommandContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    import ssl
    from pathlib import Path

    from mesh.config.loader import LoadedConfig
    from mesh.config.schema import SectionSpec
    from mesh.control.protocol import Request
    from mesh.net.backend import Backend
    from mesh.net.netceptor import Netceptor
    from mesh.net.quic_tls import QuicTLSOptions
    from mesh.work.workceptor import Workceptor
    from mesh.work.worktype import WorkType

__all__ = [
    "BackendFactory", "CommandContext", "CommandHandler", "ControlConn", "HookNode",
    "PluginNode", "RegisterBackend",
    "RegisterControlCommand", "RegisterSection", "RegisterService", "RegisterSigner",
    "RegisterWorkType", "RouteAuthenticator", "Service", "ServiceFactory", "Signer",
    "SignerFactory", "TLSConfig", "Verifier", "VerifierFactory", "WorkTypeFactory",
]

# -- the node ------------------------------------------------------------------------------


class HookNode(Protocol):
    """The node as hooks and signer factories see it (a :class:`mesh.node.Node`)."""

    @property
    def node_id(self) -> str:
        """This node's ID."""

    @property
    def config(self) -> LoadedConfig:
        """The loaded config: ``config.one("section")`` for a singleton, ``config.of(...)``."""

    @property
    def plugin_state(self) -> dict[str, Any]:
        """Objects plugins keep on the node, by a name of their choice."""

    @property
    def netceptor(self) -> Netceptor:
        """The node's mesh layer (its ``limits`` size a route authenticator's caches)."""

    @property
    def stop_reason(self) -> str:
        """Why the node stops (set before ``mesh_node_stopping``; ``""`` while it runs)."""


class PluginNode(HookNode, Protocol):
    """The node as the backends, work types and services that plugins register see it."""

    @property
    def work(self) -> Workceptor:
        """The node's work manager (``work.max_stdout``, ``work.list()``)."""

    @property
    def datadir(self) -> Path:
        """The node's data directory (``datadir`` of its ``node`` section); its units live
        in ``<datadir>/<node id>``."""

    def tls_config(self, kind: str, name: str) -> TLSConfig:
        """The ``tls-server``/``tls-client`` section ``name``; raises when there is none."""

    def listen_stream(self, service: str, *, tags: dict[str, str] | None = None,
                      tls: str | None = None, advertise: bool = True) -> Any:
        """Bind a mesh stream listener on ``service``."""

    async def dial_stream(self, node: str, service: str, *, tls: str | None = None,
                          timeout: float = 15.0, pooled: bool = False) -> Any:
        """Open a mesh stream to ``node:service``."""

    def alarms(self) -> dict[str, str | None]:
        """Each alarm the node can raise: its reason while raised, else None."""


# -- what plugins hand back -----------------------------------------------------------------


class Service(Protocol):
    """A service that runs beside the node, one per entry of its config section."""

    async def run(self) -> None:
        """Serve until cancelled."""


class Signer(Protocol):
    """Signs the work a node submits to other nodes."""

    def sign(self, audience: str) -> str:
        """A token for the node ``audience``."""


class Verifier(Protocol):
    """Checks the signature of work submitted to this node."""

    @property
    def verify_unix_socket(self) -> bool:
        """True to check clients of the Unix control socket too."""

    def verify(self, token: str, audience: str) -> None:
        """Raise unless ``token`` is a valid signature for this node (``audience``)."""


class TLSConfig(Protocol):
    """A named TLS configuration (``mesh_tls_config``)."""

    def ssl_context(self) -> ssl.SSLContext:
        """For TCP, websockets and the control service."""

    def quic_options(self) -> QuicTLSOptions:
        """For mesh streams."""

    def peer_node_ids(self, der_cert: bytes) -> list[str] | None:
        """The Receptor node-ID SANs of a peer certificate (None: verification is off)."""


class RouteAuthenticator(Protocol):
    """Signs this node's routing updates and adverts and checks those it receives
    (``mesh_route_authenticator``); it may add ``stats() -> dict`` for the metrics."""

    def sign_update(self, update: Any) -> None:
        """Set the signature fields of a routing update this node originates."""

    def sign_advertisement(self, ad: Any) -> None:
        """Set the signature fields of a service advert this node originates."""

    def accept_update(self, update: Any, peer: str) -> bool:
        """False to drop a routing update received from neighbour ``peer``."""

    def accept_advertisement(self, ad: Any, peer: str) -> bool:
        """False to drop a service advert received from neighbour ``peer``."""


# -- what control-command handlers get --------------------------------------------------------


class ControlConn(Protocol):
    """A control client connection, whatever the transport."""

    kind: str   # "unix", "tcp", "tls" or "mesh"
    peer: str

    async def readline(self) -> bytes: ...
    async def read(self, n: int = 65536) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    async def close(self) -> None: ...

    def peer_closed(self) -> bool:
        """After EOF: True when the client closed or reset the connection instead of
        half-closing it, i.e. it vanished rather than finished sending."""


@dataclass
class CommandContext:
    """What a command handler gets besides its request (also importable from
    :mod:`mesh.control.server`)."""

    node: PluginNode
    conn: ControlConn
    extra: dict[str, Any] = field(default_factory=dict)


# -- factories and handlers -----------------------------------------------------------------


class BackendFactory(Protocol):
    """Makes the backend of one config entry (a :class:`~mesh.net.backend.Backend` subclass
    is one)."""

    def __call__(self, config: Any, node: PluginNode, /) -> Backend: ...


class WorkTypeFactory(Protocol):
    """Makes the work type of one config entry (a :class:`~mesh.work.worktype.WorkType`
    subclass is one)."""

    def __call__(self, config: Any, node: PluginNode, /) -> WorkType: ...


class ServiceFactory(Protocol):
    """Makes the service of one config entry."""

    def __call__(self, config: Any, node: PluginNode, /) -> Service: ...


class SignerFactory(Protocol):
    """The node's signer, or None when its config does not set this one up."""

    def __call__(self, node: HookNode, /) -> Signer | None: ...


class VerifierFactory(Protocol):
    """The node's verifier, or None when its config does not set this one up."""

    def __call__(self, node: HookNode, /) -> Verifier | None: ...


class CommandHandler(Protocol):
    """Answers one control command: a JSON-serialisable reply, or
    :data:`mesh.control.server.STREAMED`."""

    async def __call__(self, ctx: CommandContext, request: Request, /) -> Any: ...


# -- the register callables -----------------------------------------------------------------


class RegisterSection(Protocol):
    """``register(spec)`` of ``mesh_register_config_sections``."""

    def __call__(self, spec: SectionSpec) -> None: ...


class RegisterBackend(Protocol):
    """``register(spec, factory)`` of ``mesh_register_backends``."""

    def __call__(self, spec: SectionSpec, factory: BackendFactory) -> None: ...


class RegisterWorkType(Protocol):
    """``register(spec, factory)`` of ``mesh_register_work_types``."""

    def __call__(self, spec: SectionSpec, factory: WorkTypeFactory) -> None: ...


class RegisterService(Protocol):
    """``register(spec, factory)`` of ``mesh_register_services``."""

    def __call__(self, spec: SectionSpec, factory: ServiceFactory) -> None: ...


class RegisterSigner(Protocol):
    """``register(name, signer_factory, verifier_factory)`` of ``mesh_register_signers``."""

    def __call__(self, name: str, signer: SignerFactory | None,
                 verifier: VerifierFactory | None) -> None: ...


class RegisterControlCommand(Protocol):
    """``register(name, handler)`` of ``mesh_register_control_commands``."""

    def __call__(self, name: str, handler: CommandHandler) -> None: ...
