"""Authenticated routing: ``route-auth``, for meshes whose nodes hold node-ID certificates.

With ``mode: prefer`` or ``mode: require`` a node signs its own routing updates and service
adverts with the key of a ``tls-server``/``tls-client`` section (the ``mesh cert`` node-ID
certificate) and checks every update and advert it receives against the origin's certificate
and the section's CA bundle (``clientcas`` of a tls-server, ``rootcas`` of a tls-client).

Wire format (ignored by Go Receptor, kept by mesh relays): ``MeshSig`` (base64 signature over
:func:`mesh.net.messages.routing_update_signed_bytes` or
:func:`~mesh.net.messages.advertisement_signed_bytes`) and ``MeshCert`` (base64 DER of the
signer's certificate).  Every signed message carries the certificate, so a verifier needs
nothing but the CA: no certificate distribution, no lookups.  A certificate is trusted when it
chains to the CA, is valid now, may be used for TLS client authentication (as ``mesh cert`` and
``receptor cert-signreq`` issue them) and names the message's ``NodeID`` in its Receptor node-ID
SAN; verified certificates are cached, so the chain is checked once per certificate.  The
caches hold one certificate per node the node may know (``node: maxnodes``, at least
:data:`MIN_CACHE`), keyed by a SHA-256 digest of the certificate text, so their memory is bounded
by ``maxnodes`` whatever peers send.

Modes: ``off`` (Receptor's behaviour: nothing signed or checked); ``prefer`` (unsigned messages
are accepted from nodes never seen signing; a node once seen with a valid signature is never
again believed unsigned); ``require`` (every unsigned or mis-signed message is dropped).  A
message with a signature that does not verify is dropped in both.  Drops are logged as
``route_auth_dropped``, at most one line per neighbour every :data:`LOG_INTERVAL` seconds, and
every drop is counted by kind (:data:`KINDS`) and reason (:data:`REASONS`) in
:meth:`RouteAuthenticator.stats` (the metrics service exports it as
``mesh_route_auth_dropped_total``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import verification

from mesh import hookimpl
from mesh.config.errors import ConfigError, SectionValueError
from mesh.config.schema import SectionSpec
from mesh.net import messages as m
from mesh.net.control_limits import DEFAULT_MAX_NODES
from mesh.net.quic_tls import receptor_node_ids

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import HookNode, RegisterSection

log = structlog.get_logger(__name__)

MODES = ("off", "prefer", "require")
SECTION = "route-auth"
#: At most one ``route_auth_dropped`` line per neighbour this often (seconds).
LOG_INTERVAL = 10.0
#: Fewest entries of each certificate cache, whatever ``maxnodes`` is.
MIN_CACHE = 256
#: Longest refusal text kept in the refused cache (peers choose the certificates refused).
MAX_REFUSAL_TEXT = 200

#: Kinds of message dropped: the ``kind`` label of ``mesh_route_auth_dropped_total``.
KINDS = ("update", "advertisement")
#: Why a message was dropped: the ``reason`` label of ``mesh_route_auth_dropped_total``.
REASONS = (
    "unsigned",                   # no MeshSig and no MeshCert (require; prefer: a signing node)
    "incomplete",                 # MeshSig or MeshCert missing
    "malformed",                  # not base64 / DER, or fields that cannot be encoded again
    "untrusted_certificate",      # does not chain to the CA (or not for TLS client auth)
    "certificate_not_valid_now",  # expired or not yet valid
    "unsupported_key",            # a key type that cannot verify (RSA, ECDSA, Ed25519 can)
    "wrong_node_id",              # the certificate names other node IDs than the origin
    "bad_signature",              # the signature does not verify with the certificate's key
)
_LOG_KIND = {"update": "routing update", "advertisement": "advertisement"}


def cache_size(max_nodes: int) -> int:
    """Entries of each certificate cache for a node allowed to know ``max_nodes`` nodes: one
    per node (a node signs with one certificate at a time), at least :data:`MIN_CACHE`."""
    return max(MIN_CACHE, max_nodes)


class AuthFailure(Exception):
    """A signed message does not verify; the message says why and ``reason`` (one of
    :data:`REASONS`) says which check failed."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotValidNow(AuthFailure):
    """The certificate is outside its validity period now (not cached: that changes)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "certificate_not_valid_now")


# -- config --------------------------------------------------------------------------------


@dataclass
class RouteAuthConfig:
    mode: str = field(default="off", metadata={
        "doc": "off (Receptor's behaviour), prefer (a node seen signing is never believed "
               "unsigned) or require (drop every unsigned or mis-signed update and advert)."})
    tls: str | None = field(default=None, metadata={
        "doc": "Name of the tls-server or tls-client section whose cert and key sign and "
               "whose CA (clientcas or rootcas) verifies; needed unless mode is off."})

    def validate(self) -> None:
        if self.mode not in MODES:
            raise SectionValueError("mode", f"{self.mode!r} is not a mode; use one of "
                                            f"{', '.join(MODES)} (quote off: YAML reads it as "
                                            f"false)")
        if self.mode != "off" and not self.tls:
            raise SectionValueError("tls", f"mode {self.mode} needs tls: the name of a "
                                           f"tls-server or tls-client section holding this "
                                           f"node's certificate, key and CA")


# -- signing and verifying -----------------------------------------------------------------


def sign(key: Any, data: bytes) -> bytes:
    """Sign ``data`` with an RSA (PKCS#1 v1.5, SHA-256), ECDSA (SHA-256) or Ed25519 key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise TypeError(f"cannot sign with a {type(key).__name__}")


def verify_signature(public_key: Any, signature: bytes, data: bytes) -> None:
    """Raise :class:`AuthFailure` unless ``signature`` is ``public_key``'s over ``data``."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            raise AuthFailure(f"certificate key type {type(public_key).__name__} is not "
                              f"supported (RSA, ECDSA, Ed25519)", "unsupported_key")
    except InvalidSignature:
        raise AuthFailure("signature does not verify with the certificate's key",
                          "bad_signature") from None


@dataclass(frozen=True)
class TrustedCert:
    """A certificate that chains to the CA: its key, node IDs and end of validity."""

    public_key: Any
    node_ids: frozenset[str]
    not_before: float
    not_after: float


class CertificateChecker:
    """Checks certificates against a CA bundle, once per certificate.

    Two least-recently-used caches, each of :func:`cache_size` (``max_nodes``) entries, keyed by
    the SHA-256 of the certificate text: trusted certificates (about 0.9 KB each with an RSA
    2048 key; only the CA can add one) and refused ones (about 0.45 KB each: digest, reason and
    a refusal text of at most :data:`MAX_REFUSAL_TEXT` characters).  At the default
    ``maxnodes`` (10,000) both together stay under 14 MB."""

    def __init__(self, cas: list[x509.Certificate], max_nodes: int = DEFAULT_MAX_NODES) -> None:
        self._store = verification.Store(cas)
        #: Entries each cache holds at most.
        self.limit = cache_size(max_nodes)
        #: Chain checks done (cache misses of certificates not refused before).
        self.chain_checks = 0
        self._trusted: OrderedDict[bytes, TrustedCert] = OrderedDict()
        self._refused: OrderedDict[bytes, tuple[str, str]] = OrderedDict()

    def check(self, cert_b64: str, now: float | None = None) -> TrustedCert:
        """The certificate in ``cert_b64`` (base64 DER) if it chains to the CA and is valid
        at ``now``; raises :class:`AuthFailure` otherwise."""
        now = time.time() if now is None else now
        key = hashlib.sha256(cert_b64.encode("utf-8", "surrogatepass")).digest()
        trusted = self._trusted.get(key)
        if trusted is None:
            refused = self._refused.get(key)
            if refused is not None:
                self._refused.move_to_end(key)
                raise AuthFailure(*refused)
            self.chain_checks += 1
            try:
                trusted = self._verify_chain(cert_b64, now)
            except NotValidNow:
                raise  # not remembered: it may be valid soon (a clock behind the issuer's)
            except AuthFailure as exc:
                self._remember(self._refused, key, (str(exc)[:MAX_REFUSAL_TEXT], exc.reason))
                raise
            self._remember(self._trusted, key, trusted)
        else:
            self._trusted.move_to_end(key)
        if not trusted.not_before <= now <= trusted.not_after:
            raise NotValidNow("certificate is not valid now (expired or not yet valid)")
        return trusted

    def stats(self) -> dict[str, int]:
        """Cache sizes, their limit and the chain checks done so far."""
        return {"trusted": len(self._trusted), "refused": len(self._refused),
                "limit": self.limit, "chain_checks": self.chain_checks}

    def _remember(self, cache: OrderedDict[bytes, Any], key: bytes, value: Any) -> None:
        cache[key] = value
        while len(cache) > self.limit:
            cache.popitem(last=False)

    def _verify_chain(self, cert_b64: str, now: float) -> TrustedCert:
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64, validate=True))
        except (ValueError, binascii.Error):
            raise AuthFailure("MeshCert is not a base64 DER certificate", "malformed") from None
        if not cert.not_valid_before_utc.timestamp() <= now <= \
                cert.not_valid_after_utc.timestamp():
            raise NotValidNow("certificate is not valid now (expired or not yet valid)")
        verifier = verification.PolicyBuilder().store(self._store).time(
            datetime.datetime.now(datetime.timezone.utc)).build_client_verifier()
        try:
            verifier.verify(cert, [])
        except verification.VerificationError as exc:
            raise AuthFailure(f"certificate does not chain to the configured CA: {exc}",
                              "untrusted_certificate") from None
        try:
            public_key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise AuthFailure("certificate has an unusable public key",
                              "unsupported_key") from None
        return TrustedCert(public_key, frozenset(receptor_node_ids(cert)),
                           cert.not_valid_before_utc.timestamp(),
                           cert.not_valid_after_utc.timestamp())


class DropLog:
    """``route_auth_dropped`` lines, at most one per neighbour every ``interval`` seconds;
    ``count`` says how many messages from that neighbour were dropped since its last line."""

    def __init__(self, node_id: str, interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.interval = interval
        self.clock = clock
        self.dropped = 0
        #: Neighbour → (when its last line was written, drops since).
        self._peers: dict[str, tuple[float, int]] = {}

    def drop(self, peer: str, kind: str, origin: str, reason: str) -> bool:
        """Count one drop; returns True when a line was written."""
        self.dropped += 1
        now = self.clock()
        last, count = self._peers.get(peer, (None, 0))
        count += 1
        if last is not None and now - last < self.interval:
            self._peers[peer] = (last, count)
            return False
        self._peers[peer] = (now, 0)
        log.warning("route_auth_dropped", node_id=self.node_id, peer=peer, origin=origin,
                    kind=kind, reason=reason, count=count)
        return True


class Signer:
    """Signs with a node's key and attaches its certificate."""

    def __init__(self, key: Any, cert_der: bytes) -> None:
        self.key = key
        self.certificate = base64.b64encode(cert_der).decode("ascii")

    def signature(self, data: bytes) -> str:
        return base64.b64encode(sign(self.key, data)).decode("ascii")


class RouteAuthenticator:
    """What the ``mesh_route_authenticator`` hook gives a node: signs its routing updates and
    adverts and decides whether received ones are taken (see the module doc for the modes)."""

    def __init__(self, node_id: str, mode: str, signer: Signer,
                 checker: CertificateChecker, drops: DropLog | None = None) -> None:
        if mode not in ("prefer", "require"):
            raise ValueError(f"mode {mode!r}: an authenticator is for prefer or require")
        self.node_id = node_id
        self.mode = mode
        self.signer = signer
        self.checker = checker
        self.drops = drops or DropLog(node_id)
        #: Nodes seen with a valid signature (prefer: their unsigned messages are dropped).
        self.signing_nodes: set[str] = {node_id}
        #: Drops since start, by kind (:data:`KINDS`) and reason (:data:`REASONS`).
        self.dropped: dict[str, dict[str, int]] = {kind: dict.fromkeys(REASONS, 0)
                                                   for kind in KINDS}

    # -- our own messages --------------------------------------------------------------

    def sign_update(self, update: m.RoutingUpdate) -> None:
        """Set ``update``'s ``signature`` and ``certificate``."""
        update.certificate = self.signer.certificate
        update.signature = self.signer.signature(m.routing_update_signed_bytes(update))

    def sign_advertisement(self, ad: m.ServiceAdvertisement) -> None:
        """Set ``ad``'s ``signature`` and ``certificate``."""
        ad.certificate = self.signer.certificate
        ad.signature = self.signer.signature(m.advertisement_signed_bytes(ad))

    # -- received messages -------------------------------------------------------------

    def accept_update(self, update: m.RoutingUpdate, peer: str) -> bool:
        """True if ``update`` (from neighbour ``peer``) may be applied and forwarded."""
        return self._accept("update", update.node_id, update.signature,
                            update.certificate, lambda: m.routing_update_signed_bytes(update),
                            peer)

    def accept_advertisement(self, ad: m.ServiceAdvertisement, peer: str) -> bool:
        """True if ``ad`` (from neighbour ``peer``) may be stored and forwarded."""
        return self._accept("advertisement", ad.node_id, ad.signature, ad.certificate,
                            lambda: m.advertisement_signed_bytes(ad), peer)

    def _accept(self, kind: str, origin: str, signature: str | None,
                certificate: str | None, signed: Callable[[], bytes], peer: str) -> bool:
        if signature is None and certificate is None:
            if self.mode == "prefer" and origin not in self.signing_nodes:
                return True
            text = "unsigned" if self.mode == "require" else \
                "unsigned, from a node that signs (a Go relay drops signatures)"
            return self._drop(peer, kind, origin, "unsigned", text)
        try:
            self.verify(origin, signature, certificate, signed())
        except AuthFailure as exc:
            return self._drop(peer, kind, origin, exc.reason, str(exc))
        except m.MessageError as exc:  # fields that decode but cannot be encoded again
            return self._drop(peer, kind, origin, "malformed", f"cannot be checked: {exc}")
        if kind == "update":
            # only updates: a Go relay re-encodes them (dropping the signature) but passes
            # adverts on as they are, so a signed advert says nothing about the updates
            self.signing_nodes.add(origin)
        return True

    def _drop(self, peer: str, kind: str, origin: str, reason: str, text: str) -> bool:
        """Count and log one dropped message; False, for :meth:`_accept` to return."""
        self.dropped[kind][reason] += 1
        self.drops.drop(peer, _LOG_KIND[kind], origin, text)
        return False

    def verify(self, origin: str, signature: str | None, certificate: str | None,
               data: bytes) -> None:
        """Raise :class:`AuthFailure` unless ``signature`` over ``data`` is by a trusted
        certificate for node ``origin``."""
        if not signature or not certificate:
            raise AuthFailure("MeshSig or MeshCert is missing", "incomplete")
        trusted = self.checker.check(certificate)
        if origin not in trusted.node_ids:
            names = ", ".join(sorted(trusted.node_ids)) or "none"
            raise AuthFailure(f"certificate is for node ID(s) {names}, not {origin}",
                              "wrong_node_id")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            raise AuthFailure("MeshSig is not base64", "malformed") from None
        verify_signature(trusted.public_key, raw, data)

    def stats(self) -> dict[str, Any]:
        """Counters for status displays, metrics and tests: ``dropped`` (all drops),
        ``dropped_by`` (kind → reason → drops, every kind and reason present),
        ``signing_nodes`` and ``certificates`` (:meth:`CertificateChecker.stats`)."""
        return {"mode": self.mode, "dropped": self.drops.dropped,
                "dropped_by": {kind: dict(reasons) for kind, reasons in self.dropped.items()},
                "signing_nodes": len(self.signing_nodes),
                "certificates": self.checker.stats()}


# -- building one from a node's config -----------------------------------------------------


@dataclass
class _Identity:
    """What a tls section gives route authentication: cert, key and CA files."""

    section: str
    cert: str | None
    key: str | None
    cafile: str | None


def _find_tls(config: Any, name: str) -> _Identity | None:
    for entry in config.entries:
        values = entry.values
        if entry.section == "tls-server" and values.name == name:
            return _Identity("tls-server", values.cert, values.key, values.clientcas)
        if entry.section == "tls-client" and values.name == name:
            return _Identity("tls-client", values.cert, values.key, values.rootcas)
    return None


def _read(path: str, error: Callable[[str], ConfigError], what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def build(node_id: str, config: Any, file: str,
          max_nodes: int = DEFAULT_MAX_NODES) -> RouteAuthenticator | None:
    """The authenticator a node's ``route-auth`` section asks for (None when mode is off);
    ``max_nodes`` (the node's ``maxnodes``) sizes its certificate caches.

    :raises ConfigError: the tls section is missing, lacks a cert, key or CA, or its
        certificate does not name ``node_id`` or chain to the CA; the message says what to fix.
    """
    entry = next((e for e in config.entries if e.section == SECTION), None)
    if entry is None or entry.values.mode == "off":
        return None
    settings: RouteAuthConfig = entry.values

    def error(message: str) -> ConfigError:
        return ConfigError(message, file=file, section=SECTION, index=entry.index, key="tls")

    tls = _find_tls(config, settings.tls or "")
    if tls is None:
        raise error(f"no tls-server or tls-client section is named {settings.tls!r}; add one "
                    f"with this node's certificate, key and CA, or fix the name")
    where = f"{tls.section} {settings.tls!r}"
    if not tls.cert or not tls.key:
        raise error(f"{where} has no cert and key, which route authentication signs with; "
                    f"give it this node's node-ID certificate (mesh cert makereq --nodeid "
                    f"{node_id})")
    if not tls.cafile:
        ca_key = "clientcas" if tls.section == "tls-server" else "rootcas"
        raise error(f"{where} has no {ca_key}, the CA bundle that other nodes' certificates "
                    f"are checked against; set {ca_key} to the mesh CA (mesh cert init)")
    try:
        cas = x509.load_pem_x509_certificates(_read(tls.cafile, error, "CA bundle"))
        cert_der = x509.load_pem_x509_certificates(_read(tls.cert, error, "certificate"))[0] \
            .public_bytes(serialization.Encoding.DER)
        key = serialization.load_pem_private_key(_read(tls.key, error, "key"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise error(f"cannot load the certificate, key or CA of {where}: {exc}") from None
    cert = x509.load_der_x509_certificate(cert_der)
    if cert.public_key() != key.public_key():
        raise error(f"the key of {where} does not belong to its certificate")
    signer = Signer(key, cert_der)
    checker = CertificateChecker(cas, max_nodes)
    try:
        trusted = checker.check(signer.certificate)
    except AuthFailure as exc:
        raise error(f"this node's certificate in {where} would be refused by the other "
                    f"nodes: {exc}; issue it from the CA in {tls.cafile}") from None
    if node_id not in trusted.node_ids:
        raise error(f"the certificate of {where} does not name node ID {node_id} (it names "
                    f"{', '.join(sorted(trusted.node_ids)) or 'none'}); issue one with "
                    f"--nodeid {node_id}")
    try:
        sign(key, b"")
    except TypeError as exc:
        raise error(f"{where}: {exc}; use an RSA, ECDSA or Ed25519 key") from None
    log.info("route_auth_enabled", node_id=node_id, mode=settings.mode, tls=settings.tls,
             certificate_cache=checker.limit)
    return RouteAuthenticator(node_id, settings.mode, signer, checker)


# -- hooks ---------------------------------------------------------------------------------


@hookimpl
def mesh_register_config_sections(register: RegisterSection) -> None:
    register(SectionSpec(SECTION, RouteAuthConfig, singleton=True, bare="mode",
                         plural=SECTION,
                         doc="Sign routing updates and adverts; check others' (node-ID "
                             "certificates)."))


@hookimpl
def mesh_route_authenticator(node: HookNode) -> RouteAuthenticator | None:
    config = node.config
    return build(node.node_id, config, str(config.path or "<config>"),
                 node.netceptor.limits.caps.max_nodes)
