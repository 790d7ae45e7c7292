"""Certificates and TLS settings for mesh streams (QUIC over mesh datagrams, spec §4 and §8).

Receptor's rules, reproduced here:

* A listener without user TLS (advertised ``ConnType`` 1) presents a throw-away self-signed
  RSA-2048 certificate, serial 1, ``CN=netceptor-insecure-common-name``, valid from now - 1 min
  to now + 24 h.  The RSA key is generated once per process (keygen costs ~50-100 ms); every
  listener gets a freshly issued certificate for it.
* A dialer without a TLS name skips chain verification but accepts the server only if some
  presented certificate carries that common name; otherwise the dial fails with
  "insecure connection to secure service".  Its SNI is the dialing node's own ID.
* With user TLS (:class:`QuicTLSOptions`) the dialer verifies the chain against ``cafile``,
  requires EKU serverAuth (when the leaf lists EKUs), that the Receptor node-ID SAN
  (OID 1.3.6.1.4.1.2312.19.1) names the dialed node, and optional fingerprint pinning.
* A listener with ``require_client_cert`` asks for a client certificate and verifies it
  the same way after the handshake: chain to ``cafile``, EKU clientAuth, pinning, and the
  node-ID SAN must name the mesh node the QUIC packets came from.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:  # pragma: no cover - aioquic loads with the first stream (mesh.net.streams)
    from aioquic.quic.configuration import QuicConfiguration

#: ALPN protocol Receptor negotiates for mesh streams.
ALPN = "netceptor"
#: ALPN that two nodes of this project negotiate instead for multiplexed connections (many
#: mesh streams over one QUIC connection); Go Receptor never offers or picks it.
MUX_ALPN = "mesh-mux/1"
#: Common name of the throw-away certificate of listeners without user TLS.
INSECURE_COMMON_NAME = "netceptor-insecure-common-name"
#: OID of a Receptor node ID inside a subjectAltName ``otherName`` (§8.2).
NODE_ID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.2312.19.1")
INSECURE_PROBLEM = "insecure connection to secure service"

_ASN1_STRING_TAGS = frozenset({0x0C, 0x13, 0x16, 0x1E})  # UTF8, Printable, IA5, BMP


class TLSVerificationError(Exception):
    """The peer's certificate did not pass the mesh stream checks."""


class InsecureConnectionError(TLSVerificationError):
    """An insecure dial reached a server whose certificate is not the insecure one."""

    def __init__(self, message: str = INSECURE_PROBLEM) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class QuicTLSOptions:
    """User TLS for one mesh stream listener or dialer (a Receptor tls-server/tls-client).

    ``certfile``/``keyfile``: our certificate and key (required for a listener).
    ``cafile``: roots used to verify the peer (system/certifi roots when unset).
    ``insecure_skip_verify``: dialer performs no verification at all (Receptor semantics).
    ``verify_node_id``: dialer requires the server certificate's Receptor node-ID SAN to
    contain the dialed node ID (Receptor always does this for mesh streams).
    ``pinned_fingerprints``: SHA-256 or SHA-512 digests of acceptable leaf certificates.
    ``require_client_cert``: listener requests a client certificate and verifies it
    (chain to ``cafile``, clientAuth, pinning, node-ID SAN = the dialing node).
    """

    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    insecure_skip_verify: bool = False
    verify_node_id: bool = True
    pinned_fingerprints: tuple[bytes, ...] = ()
    require_client_cert: bool = False


@functools.cache
def _insecure_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def insecure_certificate(
    now: datetime.datetime | None = None, *, common_name: str = INSECURE_COMMON_NAME
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Issue a throw-away self-signed certificate like Receptor's ConnType-1 listeners.

    The key is shared process-wide; the certificate is new on every call.
    ``common_name`` exists for tests that need a "secure" certificate.
    """
    key = _insecure_key()
    now = now or datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=24))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _decode_asn1_string(der: bytes) -> str | None:
    """Decode a DER string TLV (the otherName value) or return None."""
    if len(der) < 2 or der[0] not in _ASN1_STRING_TAGS:
        return None
    length, pos = der[1], 2
    if length & 0x80:
        nbytes = length & 0x7F
        length = int.from_bytes(der[2 : 2 + nbytes], "big")
        pos = 2 + nbytes
    raw = der[pos : pos + length]
    try:
        return raw.decode("utf-16-be" if der[0] == 0x1E else "utf-8")
    except UnicodeDecodeError:
        return None


def receptor_node_ids(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """The Receptor node IDs a certificate (or request) names in its subjectAltName (§8.2)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san_node_ids(san)


def san_node_ids(san: x509.SubjectAlternativeName) -> list[str]:
    """The Receptor node IDs among the ``otherName`` entries of a subjectAltName."""
    names: list[str] = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == NODE_ID_OID:
            value = _decode_asn1_string(other.value)
            if value is not None:
                names.append(value)
    return names


def _common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def configure_server(config: QuicConfiguration, tls: QuicTLSOptions | None) -> None:
    """Install the listener's certificate into ``config`` (insecure one when ``tls`` is None)."""
    if tls is None:
        cert, key = insecure_certificate()
        config.certificate = cert
        config.private_key = key
        return
    # require_client_cert is applied per connection (aioquic has no configuration knob for
    # it): see streams.quic_private.MeshQuicConnection and verify_client_chain().
    if not tls.certfile:
        raise ValueError("a TLS mesh stream listener needs a certfile (and keyfile)")
    config.load_cert_chain(tls.certfile, tls.keyfile)


def configure_client(
    config: QuicConfiguration, tls: QuicTLSOptions | None, *, local_node: str
) -> None:
    """Set SNI, verification mode and client certificate of a dialer's ``config``."""
    if tls is None:
        config.verify_mode = ssl.CERT_NONE
        # Receptor sends the dialing node's ID as SNI; aioquic can only encode ASCII names.
        config.server_name = local_node if local_node.isascii() else None
        return
    config.server_name = None  # quic-go sends no SNI over mesh addresses
    if tls.certfile:
        config.load_cert_chain(tls.certfile, tls.keyfile)
    if tls.insecure_skip_verify:
        config.verify_mode = ssl.CERT_NONE
        return
    config.verify_mode = ssl.CERT_REQUIRED
    if tls.cafile:
        config.load_verify_locations(cafile=tls.cafile)


def verify_server_chain(
    chain: list[x509.Certificate], tls: QuicTLSOptions | None, *, remote_node: str
) -> None:
    """Receptor's extra checks on the certificates a server presented to our dial.

    Runs after aioquic's own chain verification (for user TLS) and before the dialer sends
    its Finished.  Raises :class:`TLSVerificationError` (or :class:`InsecureConnectionError`).
    """
    if tls is None:
        if not any(INSECURE_COMMON_NAME in _common_names(c) for c in chain):
            raise InsecureConnectionError()
        return
    if tls.insecure_skip_verify:
        return
    if not chain:
        raise TLSVerificationError("server presented no certificate")
    _check_leaf(chain[0], tls, remote_node=remote_node, role="server",
                usage=ExtendedKeyUsageOID.SERVER_AUTH, usage_name="serverAuth")


def verify_client_chain(
    chain: list[x509.Certificate], tls: QuicTLSOptions, *, remote_node: str
) -> None:
    """A listener's checks on the certificate a dialer presented (``require_client_cert``).

    aioquic's server checks only the CertificateVerify signature, so the chain is verified
    here against ``tls.cafile`` (certifi's roots when unset).  Raises
    :class:`TLSVerificationError`.
    """
    from aioquic import tls as aioquic_tls

    if not chain:
        raise TLSVerificationError("client presented no certificate")
    try:
        aioquic_tls.verify_certificate(certificate=chain[0], chain=chain[1:],
                                       cafile=tls.cafile)
    except aioquic_tls.Alert as exc:
        raise TLSVerificationError(f"client certificate rejected: {exc}") from None
    _check_leaf(chain[0], tls, remote_node=remote_node, role="client",
                usage=ExtendedKeyUsageOID.CLIENT_AUTH, usage_name="clientAuth")


def _check_leaf(leaf: x509.Certificate, tls: QuicTLSOptions, *, remote_node: str, role: str,
                usage: x509.ObjectIdentifier, usage_name: str) -> None:
    if tls.pinned_fingerprints:
        der = leaf.public_bytes(serialization.Encoding.DER)
        digests = {hashlib.sha256(der).digest(), hashlib.sha512(der).digest()}
        if not digests.intersection(tls.pinned_fingerprints):
            raise TLSVerificationError(f"{role} certificate does not match a pinned fingerprint")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and usage not in eku:
        raise TLSVerificationError(f"{role} certificate is not valid for {usage_name}")
    if tls.verify_node_id and remote_node not in receptor_node_ids(leaf):
        raise TLSVerificationError(
            f"{role} certificate does not name node {remote_node!r} in its Receptor node IDs"
        )


__all__ = [
    "ALPN",
    "MUX_ALPN",
    "INSECURE_COMMON_NAME",
    "INSECURE_PROBLEM",
    "NODE_ID_OID",
    "InsecureConnectionError",
    "QuicTLSOptions",
    "TLSVerificationError",
    "configure_client",
    "configure_server",
    "insecure_certificate",
    "receptor_node_ids",
    "san_node_ids",
    "verify_client_chain",
    "verify_server_chain",
]
