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
SAN; verified certificates are cached, so the chain is checked once per certificate.

Modes: ``off`` (Receptor's behaviour: nothing signed or checked); ``prefer`` (unsigned messages
are accepted from nodes never seen signing; a node once seen with a valid signature is never
again believed unsigned); ``require`` (every unsigned or mis-signed message is dropped).  A
message with a signature that does not verify is dropped in both.  Drops are logged as
``route_auth_dropped``, at most one line per neighbour every :data:`LOG_INTERVAL` seconds.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
from mesh.net.quic_tls import receptor_node_ids

log = structlog.get_logger(__name__)

MODES = ("off", "prefer", "require")
SECTION = "route-auth"
#: At most one ``route_auth_dropped`` line per neighbour this often (seconds).
LOG_INTERVAL = 10.0
#: Certificates whose chain was checked, kept by their base64 text (a mesh node each).
TRUSTED_CACHE = 2048
#: Certificates that failed the chain check, kept so a peer repeating one costs nothing.
REFUSED_CACHE = 256


class AuthFailure(Exception):
    """A signed message does not verify; the message says why."""


class NotValidNow(AuthFailure):
    """The certificate is outside its validity period now (not cached: that changes)."""


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
                              f"supported (RSA, ECDSA, Ed25519)")
    except InvalidSignature:
        raise AuthFailure("signature does not verify with the certificate's key") from None


@dataclass(frozen=True)
class TrustedCert:
    """A certificate that chains to the CA: its key, node IDs and end of validity."""

    public_key: Any
    node_ids: frozenset[str]
    not_before: float
    not_after: float


class CertificateChecker:
    """Checks certificates against a CA bundle, once per certificate (bounded caches)."""

    def __init__(self, cas: list[x509.Certificate]) -> None:
        self._store = verification.Store(cas)
        self._trusted: OrderedDict[str, TrustedCert] = OrderedDict()
        self._refused: OrderedDict[str, str] = OrderedDict()

    def check(self, cert_b64: str, now: float | None = None) -> TrustedCert:
        """The certificate in ``cert_b64`` (base64 DER) if it chains to the CA and is valid
        at ``now``; raises :class:`AuthFailure` otherwise."""
        now = time.time() if now is None else now
        trusted = self._trusted.get(cert_b64)
        if trusted is None:
            refused = self._refused.get(cert_b64)
            if refused is not None:
                raise AuthFailure(refused)
            try:
                trusted = self._verify_chain(cert_b64, now)
            except NotValidNow:
                raise  # not remembered: it may be valid soon (a clock behind the issuer's)
            except AuthFailure as exc:
                self._remember(self._refused, cert_b64, str(exc), REFUSED_CACHE)
                raise
            self._remember(self._trusted, cert_b64, trusted, TRUSTED_CACHE)
        else:
            self._trusted.move_to_end(cert_b64)
        if not trusted.not_before <= now <= trusted.not_after:
            raise AuthFailure("certificate is not valid now (expired or not yet valid)")
        return trusted

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)

    def _verify_chain(self, cert_b64: str, now: float) -> TrustedCert:
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64, validate=True))
        except (ValueError, binascii.Error):
            raise AuthFailure("MeshCert is not a base64 DER certificate") from None
        if not cert.not_valid_before_utc.timestamp() <= now <= \
                cert.not_valid_after_utc.timestamp():
            raise NotValidNow("certificate is not valid now (expired or not yet valid)")
        verifier = verification.PolicyBuilder().store(self._store).time(
            datetime.datetime.now(datetime.timezone.utc)).build_client_verifier()
        try:
            verifier.verify(cert, [])
        except verification.VerificationError as exc:
            raise AuthFailure(f"certificate does not chain to the configured CA: {exc}") \
                from None
        try:
            public_key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise AuthFailure("certificate has an unusable public key") from None
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
        return self._accept("routing update", update.node_id, update.signature,
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
            reason = "unsigned" if self.mode == "require" else \
                "unsigned, from a node that signs (a Go relay drops signatures)"
            self.drops.drop(peer, kind, origin, reason)
            return False
        try:
            self.verify(origin, signature, certificate, signed())
        except AuthFailure as exc:
            self.drops.drop(peer, kind, origin, str(exc))
            return False
        except m.MessageError as exc:  # fields that decode but cannot be encoded again
            self.drops.drop(peer, kind, origin, f"cannot be checked: {exc}")
            return False
        if kind == "routing update":
            # only updates: a Go relay re-encodes them (dropping the signature) but passes
            # adverts on as they are, so a signed advert says nothing about the updates
            self.signing_nodes.add(origin)
        return True

    def verify(self, origin: str, signature: str | None, certificate: str | None,
               data: bytes) -> None:
        """Raise :class:`AuthFailure` unless ``signature`` over ``data`` is by a trusted
        certificate for node ``origin``."""
        if not signature or not certificate:
            raise AuthFailure("MeshSig or MeshCert is missing")
        trusted = self.checker.check(certificate)
        if origin not in trusted.node_ids:
            names = ", ".join(sorted(trusted.node_ids)) or "none"
            raise AuthFailure(f"certificate is for node ID(s) {names}, not {origin}")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            raise AuthFailure("MeshSig is not base64") from None
        verify_signature(trusted.public_key, raw, data)

    def stats(self) -> dict[str, Any]:
        """Counters for status displays and tests."""
        return {"mode": self.mode, "dropped": self.drops.dropped,
                "signing_nodes": len(self.signing_nodes)}


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


def build(node_id: str, config: Any, file: str) -> RouteAuthenticator | None:
    """The authenticator a node's ``route-auth`` section asks for (None when mode is off).

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
    checker = CertificateChecker(cas)
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
    log.info("route_auth_enabled", node_id=node_id, mode=settings.mode, tls=settings.tls)
    return RouteAuthenticator(node_id, settings.mode, signer, checker)


# -- hooks ---------------------------------------------------------------------------------


@hookimpl
def mesh_register_config_sections(register: Any) -> None:
    register(SectionSpec(SECTION, RouteAuthConfig, singleton=True, bare="mode",
                         plural=SECTION,
                         doc="Sign routing updates and adverts; check others' (node-ID "
                             "certificates)."))


@hookimpl
def mesh_route_authenticator(node: Any) -> RouteAuthenticator | None:
    config = node.config
    return build(node.node_id, config, str(config.path or "<config>"))
