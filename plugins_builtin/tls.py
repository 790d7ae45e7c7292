"""TLS settings: ``tls-server`` and ``tls-client`` sections, resolved for the kernel (spec §8).

Every other part of mesh refers to these sections by name (``tls:`` on a tcp-listener,
``tcptls`` on a control service, ``tls`` on a mesh service, the ``tlsclient`` of ``connect``)
and asks for them through the ``mesh_tls_config`` hook.  This plugin answers with one
:class:`TLSSection` per section, built once per node and cached.

Receptor's rules (spec §8.3, §8.4) and where mesh is stricter:

* **Startup check.** A section with a certificate must name the node's own ID among the
  certificate's Receptor node-ID SANs unless ``skipreceptornamescheck: true``; otherwise the
  node refuses to start with a config error naming the file, section and key.  Unreadable or
  mismatched cert/key/CA files are config errors too.  Every section is checked at start,
  used or not.
* **Servers** present ``cert``/``key``; with ``requireclientcert`` *or* ``clientcas`` they
  require a client certificate that chains to ``clientcas`` (system CAs if unset) and allows
  clientAuth.  TLS 1.2 at least (1.3 with ``mintls13``).
* **Clients** verify the server against ``rootcas`` (system CAs if unset), require serverAuth,
  and check the DNS/IP name of the address they dial.  ``insecureskipverify`` turns every
  check off (chain, name, pinning and the node-ID binding below), as in Receptor.
* **Pinning**: ``pinnedservercert``/``pinnedclientcert`` list SHA-256 or SHA-512 fingerprints of
  the peer's leaf certificate (hex, colons allowed).  Python's ``ssl`` has no verification
  callback, so on TCP links the pin is checked right after the TLS handshake, when the kernel
  asks :meth:`TLSSection.peer_node_ids`; a mismatch closes the link (event
  ``tls_pinned_certificate_mismatch``).  The control service checks it when a client
  connects; mesh streams check it inside the QUIC handshake.
* **Node-ID binding (mesh only).** On a TLS link the kernel refuses a peer whose declared node
  ID is not among the node-ID SANs that :meth:`TLSSection.peer_node_ids` returns (event
  ``tls_node_id_mismatch``).  Receptor never binds link certificates to node IDs.  A link
  listener therefore needs a tls-server that requires client certificates: without one the
  dialer presents no certificate and every link is refused.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509

from mesh import hookimpl
from mesh.config.errors import ConfigError, SectionValueError
from mesh.config.schema import SectionSpec
from mesh.net.backend import SessionClosed
from mesh.net.quic_tls import QuicTLSOptions, receptor_node_ids

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import HookNode, RegisterSection

log = structlog.get_logger(__name__)

#: ``node.plugin_state`` key under which the per-node provider is kept.
STATE_KEY = "tls"


class PinnedCertificateMismatch(SessionClosed):
    """The peer's certificate matches none of the pinned fingerprints."""


def parse_fingerprint(text: str) -> bytes:
    """A pinned-certificate fingerprint: hex of a SHA-256 or SHA-512 digest, colons allowed."""
    cleaned = text.strip().replace(":", "")
    try:
        digest = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a hex fingerprint") from None
    if len(digest) not in (32, 64):
        raise ValueError(f"{text!r} is {len(digest)} bytes; pin a SHA-256 (32 bytes) or "
                         f"SHA-512 (64 bytes) fingerprint of the certificate")
    return digest


def fingerprints(der: bytes) -> tuple[str, str]:
    """(SHA-256, SHA-512) fingerprints of a DER certificate as colon-separated hex."""
    return (hashlib.sha256(der).digest().hex(":"), hashlib.sha512(der).digest().hex(":"))


def _check_pins(key: str, values: list[str]) -> None:
    for value in values:
        try:
            parse_fingerprint(value)
        except ValueError as exc:
            raise SectionValueError(key, str(exc)) from None


# -- config sections -----------------------------------------------------------------------


@dataclass
class TlsServerConfig:
    name: str = field(metadata={"doc": "Name that tls/tcptls keys refer to."})
    cert: str = field(metadata={"doc": "Certificate (PEM; chain allowed) presented to clients."})
    key: str = field(metadata={"doc": "Private key of cert (PEM)."})
    requireclientcert: bool = field(default=False, metadata={
        "doc": "Require a client certificate signed by clientcas (system CAs if unset). "
               "Needed on link listeners: mesh binds each link to the node ID in it."})
    clientcas: str | None = field(default=None, metadata={
        "doc": "CA bundle for client certificates (setting it also requires one)."})
    pinnedclientcert: list[str] = field(default_factory=list, metadata={
        "doc": "Accept only client certificates with these SHA-256/512 fingerprints (hex)."})
    skipreceptornamescheck: bool = field(default=False, metadata={
        "doc": "Start even if cert does not name this node's ID."})
    mintls13: bool = field(default=False, metadata={"doc": "Require TLS 1.3 (default 1.2)."})

    def validate(self) -> None:
        if not self.name:
            raise SectionValueError("name", "must not be empty")
        _check_pins("pinnedclientcert", self.pinnedclientcert)


@dataclass
class TlsClientConfig:
    name: str = field(metadata={"doc": "Name that tls/tlsclient keys refer to."})
    cert: str | None = field(default=None, metadata={
        "doc": "Client certificate (PEM); give it with key."})
    key: str | None = field(default=None, metadata={"doc": "Private key of cert (PEM)."})
    rootcas: str | None = field(default=None, metadata={
        "doc": "CA bundle that server certificates must chain to (system CAs if unset)."})
    insecureskipverify: bool = field(default=False, metadata={
        "doc": "Do not verify the server at all (no chain, name, pin or node-ID check)."})
    pinnedservercert: list[str] = field(default_factory=list, metadata={
        "doc": "Accept only server certificates with these SHA-256/512 fingerprints (hex)."})
    skipreceptornamescheck: bool = field(default=False, metadata={
        "doc": "Start even if cert does not name this node's ID."})
    mintls13: bool = field(default=False, metadata={"doc": "Require TLS 1.3 (default 1.2)."})

    def validate(self) -> None:
        if not self.name:
            raise SectionValueError("name", "must not be empty")
        if bool(self.cert) != bool(self.key):
            raise SectionValueError("cert" if not self.cert else "key",
                                    "cert and key must be given together")
        _check_pins("pinnedservercert", self.pinnedservercert)


SECTIONS = {"server": "tls-server", "client": "tls-client"}


# -- resolved sections ---------------------------------------------------------------------


class TLSSection:
    """One ``tls-server``/``tls-client`` entry, checked and ready to use.

    Implements the object ``mesh_tls_config`` returns: :meth:`ssl_context`,
    :meth:`quic_options` and :meth:`peer_node_ids`.
    """

    def __init__(self, kind: str, values: Any, *, node_id: str, file: str,
                 index: int | None) -> None:
        self.kind = kind
        self.section = SECTIONS[kind]
        self.values = values
        self.name: str = values.name
        self.node_id = node_id
        self._file = file
        self._index = index
        pins = values.pinnedclientcert if kind == "server" else values.pinnedservercert
        self.pins = tuple(parse_fingerprint(p) for p in pins)
        self._context: ssl.SSLContext | None = None
        self._quic: QuicTLSOptions | None = None

    # -- facts -------------------------------------------------------------------------

    @property
    def verifies_peer(self) -> bool:
        """Whether the peer's certificate is verified (servers: client certs required)."""
        if self.kind == "server":
            return bool(self.values.requireclientcert or self.values.clientcas)
        return not self.values.insecureskipverify

    @property
    def cafile(self) -> str | None:
        return self.values.clientcas if self.kind == "server" else self.values.rootcas

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, file=self._file, section=self.section, index=self._index,
                           key=key)

    # -- startup checks ----------------------------------------------------------------

    def check(self) -> None:
        """Receptor's startup check plus loading every file; raises :class:`ConfigError`."""
        values = self.values
        if values.cert:
            leaf = self._load_leaf(values.cert)
            names = receptor_node_ids(leaf)
            if not values.skipreceptornamescheck and self.node_id not in names:
                found = ", ".join(names) if names else "none"
                raise self.error("cert", f"nodeID={self.node_id} not found in certificate "
                                         f"name(s) (node IDs in {values.cert}: {found}); issue "
                                         f"it with --nodeid {self.node_id} or set "
                                         f"skipreceptornamescheck: true")
        self.ssl_context()

    def _load_leaf(self, path: str) -> x509.Certificate:
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise self.error("cert", f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return x509.load_pem_x509_certificates(data)[0]
        except (ValueError, IndexError):
            raise self.error("cert", f"{path} contains no PEM certificate") from None

    # -- the hook object ---------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` for TCP links and the control service (built once)."""
        if self._context is None:
            self._context = (self._server_context() if self.kind == "server"
                             else self._client_context())
        return self._context

    def _minimum(self, ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if self.values.mintls13
                               else ssl.TLSVersion.TLSv1_2)

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        cert = str(Path(self.values.cert).expanduser())
        key = str(Path(self.values.key).expanduser())
        for config_key, path in (("cert", cert), ("key", key)):
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise self.error(config_key, f"cannot read {path}: "
                                             f"{exc.strerror or exc}") from None
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise self.error("key", f"cannot load certificate {self.values.cert} with key "
                                    f"{self.values.key}: {exc}") from None

    def _load_cas(self, ctx: ssl.SSLContext, key: str, purpose: ssl.Purpose) -> None:
        path = self.cafile
        if not path:
            ctx.load_default_certs(purpose)
            return
        try:
            ctx.load_verify_locations(cafile=str(Path(path).expanduser()))
        except (ssl.SSLError, OSError) as exc:
            raise self.error(key, f"cannot load CA certificates from {path}: {exc}") from None

    def _server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._minimum(ctx)
        self._load_chain(ctx)
        if self.verifies_peer:
            # OpenSSL checks the client chain for clientAuth on the server side.
            ctx.verify_mode = ssl.CERT_REQUIRED
            self._load_cas(ctx, "clientcas", ssl.Purpose.CLIENT_AUTH)
        return ctx

    def _client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
        self._minimum(ctx)
        if self.values.insecureskipverify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            self._load_cas(ctx, "rootcas", ssl.Purpose.SERVER_AUTH)
        if self.values.cert:
            self._load_chain(ctx)
        return ctx

    def quic_options(self) -> QuicTLSOptions:
        """Settings for mesh streams (QUIC) with this section."""
        if self._quic is None:
            values = self.values
            self._quic = QuicTLSOptions(
                certfile=values.cert or None, keyfile=values.key or None, cafile=self.cafile,
                insecure_skip_verify=self.kind == "client" and values.insecureskipverify,
                verify_node_id=True, pinned_fingerprints=self.pins,
                require_client_cert=self.kind == "server" and self.verifies_peer)
        return self._quic

    def check_pinned(self, der: bytes, *, peer: str = "") -> None:
        """Raise :class:`PinnedCertificateMismatch` unless ``der`` matches a pin (if any)."""
        if not self.pins or not self.verifies_peer:
            return
        digests = {hashlib.sha256(der).digest(), hashlib.sha512(der).digest()}
        if digests.isdisjoint(self.pins):
            sha256, _ = fingerprints(der)
            # without ``peer`` the caller's bound context supplies it (the kernel binds the
            # declared node ID while it asks for a link's certificate identity)
            log.error("tls_pinned_certificate_mismatch", node_id=self.node_id,
                      section=self.section, name=self.name, sha256=sha256,
                      **({"peer": peer} if peer else {}))
            raise PinnedCertificateMismatch(
                f"{'server' if self.kind == 'client' else 'client'} certificate (sha256 "
                f"{sha256}) matches no fingerprint pinned in {self.section} {self.name!r}")

    def peer_node_ids(self, der_cert: bytes) -> list[str] | None:
        """Node-ID SANs of a verified peer certificate, after the pinning check.

        Returns None (no binding) when this section does not verify peers at all
        (``insecureskipverify``); raises :class:`PinnedCertificateMismatch` (a
        :class:`~mesh.net.backend.SessionClosed`, so the link just ends) on a pin mismatch.
        """
        if not self.verifies_peer:
            return None
        self.check_pinned(der_cert)
        try:
            cert = x509.load_der_x509_certificate(der_cert)
        except ValueError:
            return []
        return receptor_node_ids(cert)

    def __repr__(self) -> str:
        return f"<TLSSection {self.section} {self.name!r}>"


class TLSProvider:
    """Every TLS section of one node, checked once at start."""

    def __init__(self, node: HookNode) -> None:
        config = node.config
        file = str(getattr(config, "path", None) or "<config>")
        self.sections: dict[tuple[str, str], TLSSection] = {}
        for entry in getattr(config, "entries", []):
            kind = next((k for k, s in SECTIONS.items() if s == entry.section), None)
            if kind is None:
                continue
            section = TLSSection(kind, entry.values, node_id=node.node_id, file=file,
                                 index=entry.index)
            if (kind, section.name) in self.sections:
                raise section.error("name", f"another {section.section} is already named "
                                            f"{section.name!r}; names must be unique")
            self.sections[(kind, section.name)] = section
        for section in self.sections.values():
            section.check()

    def get(self, kind: str, name: str) -> TLSSection | None:
        return self.sections.get((kind, name))


def provider(node: HookNode) -> TLSProvider:
    """The node's :class:`TLSProvider`, built (and checked) on first use."""
    state = node.plugin_state
    found = state.get(STATE_KEY)
    if found is None:
        found = state[STATE_KEY] = TLSProvider(node)
    return found


# -- hooks ---------------------------------------------------------------------------------


@hookimpl
def mesh_register_config_sections(register: RegisterSection) -> None:
    register(SectionSpec("tls-server", TlsServerConfig,
                         doc="A named TLS server identity (links, control service, mesh "
                             "services)."))
    register(SectionSpec("tls-client", TlsClientConfig,
                         doc="A named TLS client identity and trust settings."))


@hookimpl
def mesh_tls_config(node: HookNode, kind: str, name: str) -> TLSSection | None:
    if kind not in SECTIONS or not hasattr(node, "config"):
        return None
    return provider(node).get(kind, name)


@hookimpl
def mesh_node_started(node: HookNode) -> None:
    # Receptor checks every TLS section at start, used or not.
    if hasattr(node, "config") and hasattr(node, "plugin_state"):
        provider(node)
