"""``mesh cert``: a certificate authority for a mesh, compatible with Receptor (spec §8.1, §8.2).

``mesh cert init`` creates a CA, ``mesh cert makereq`` a key and a certificate request naming
the node (DNS names, IP addresses and Receptor node IDs), ``mesh cert signreq`` signs a request
with the CA.  The files are what Receptor's ``cert-init``/``cert-makereq``/``cert-signreq`` write:
RSA keys as PKCS#1 PEM (``RSA PRIVATE KEY``), certificates with serial = Unix time,
KeyUsage and ExtKeyUsage as Receptor sets them, and node IDs as subjectAltName ``otherName``
entries (OID 1.3.6.1.4.1.2312.19.1, ``[0] EXPLICIT UTF8String``).

The functions are usable without the CLI (tests use them to build certificates).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh import hookimpl
from mesh.net.quic_tls import NODE_ID_OID, san_node_ids

DEFAULT_BITS = 2048
CA_VALIDITY = datetime.timedelta(days=3652)   # Receptor: now + 10 years
LEAF_VALIDITY = datetime.timedelta(days=365)  # Receptor: now + 1 year
_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])


class CertError(Exception):
    """A user-caused problem with certificate files or options; the message says what to fix."""


# -- building blocks -----------------------------------------------------------------------


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """digitalSignature, plus keyCertSign for a CA (as Receptor's certificates have)."""
    return x509.KeyUsage(digital_signature=True, key_cert_sign=cert_sign,
                         content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def generate_key(bits: int = DEFAULT_BITS) -> rsa.RSAPrivateKey:
    """A new RSA key (``bits`` 0 means 2048, as in Receptor)."""
    bits = bits or DEFAULT_BITS
    if bits < 1024:
        raise CertError(f"--bits {bits} is too small; use 2048 or more")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def encode_utf8_string(text: str) -> bytes:
    """DER of an ASN.1 UTF8String (tag 0x0c, definite length)."""
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 0x80:
        length = bytes([n])
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(size)]) + size
    return b"\x0c" + length + raw


def node_id_name(node_id: str) -> x509.OtherName:
    """The subjectAltName entry for a Receptor node ID.

    cryptography's ``OtherName.value`` is the DER of the inner value and is wrapped in the
    ``[0] EXPLICIT`` tag on encoding, so the result is ``[0] { OID, [0] { UTF8String } }``.
    """
    return x509.OtherName(NODE_ID_OID, encode_utf8_string(node_id))


def subject_alt_name(dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
                     node_ids: Sequence[str] = ()) -> x509.SubjectAlternativeName:
    """A SAN extension in Receptor's order: DNS names, IP addresses, node IDs."""
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    for text in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            raise CertError(f"--ipaddress {text!r} is not an IP address") from None
    names.extend(node_id_name(n) for n in node_ids)
    return x509.SubjectAlternativeName(names)


def _subject(common_name: str) -> x509.Name:
    if not common_name:
        raise CertError("--commonname must not be empty")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(not_before: datetime.datetime | None, not_after: datetime.datetime | None,
              default: datetime.timedelta) -> tuple[datetime.datetime, datetime.datetime]:
    start = not_before or _now()
    end = not_after or start + default
    if end <= start:
        raise CertError("--notafter must be later than --notbefore")
    return start, end


def _serial() -> int:
    """Receptor uses the current Unix time as the serial number."""
    return int(_now().timestamp())


def make_ca(common_name: str, *, bits: int = DEFAULT_BITS,
            not_before: datetime.datetime | None = None,
            not_after: datetime.datetime | None = None,
            ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed CA like Receptor's ``cert-init``: Subject CN only, IsCA, KeyUsage
    DigitalSignature|CertSign, ExtKeyUsage clientAuth+serverAuth."""
    key = generate_key(bits)
    start, end = _validity(not_before, not_after, CA_VALIDITY)
    name = _subject(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(_EKU, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_request(common_name: str, key: rsa.RSAPrivateKey, *, dns_names: Sequence[str] = (),
                 ip_addresses: Sequence[str] = (), node_ids: Sequence[str] = (),
                 ) -> x509.CertificateSigningRequest:
    """A certificate request like Receptor's ``cert-makereq``: its only extension is the SAN."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(common_name))
    if dns_names or ip_addresses or node_ids:
        builder = builder.add_extension(subject_alt_name(dns_names, ip_addresses, node_ids),
                                        critical=False)
    return builder.sign(key, hashes.SHA256())


def _request_san(req: x509.CertificateSigningRequest) -> x509.Extension[Any] | None:
    try:
        return req.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None


def request_names(req: x509.CertificateSigningRequest) -> tuple[list[str], list[str], list[str]]:
    """(DNS names, IP addresses, Receptor node IDs) of a request."""
    ext = _request_san(req)
    if ext is None:
        return [], [], []
    san = ext.value
    return (list(san.get_values_for_type(x509.DNSName)),
            [str(ip) for ip in san.get_values_for_type(x509.IPAddress)], san_node_ids(san))


def sign_request(req: x509.CertificateSigningRequest, ca_cert: x509.Certificate,
                 ca_key: rsa.RSAPrivateKey, *, not_before: datetime.datetime | None = None,
                 not_after: datetime.datetime | None = None) -> x509.Certificate:
    """Issue a certificate like Receptor's ``cert-signreq``: KeyUsage DigitalSignature,
    ExtKeyUsage clientAuth+serverAuth, the request's SAN copied verbatim."""
    if not req.is_signature_valid:
        raise CertError("the certificate request's signature is invalid")
    dns, ips, node_ids = request_names(req)
    if not (dns or ips or node_ids):
        raise CertError("the certificate request names no DNS names, IP addresses or node IDs; "
                        "make it with --dnsname, --ipaddress or --nodeid")
    if ca_cert.public_key().public_numbers() != ca_key.public_key().public_numbers():
        raise CertError("the CA key does not belong to the CA certificate")
    start, end = _validity(not_before, not_after, LEAF_VALIDITY)
    san = _request_san(req)
    assert san is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(req.subject)
        .issuer_name(ca_cert.subject)
        .public_key(req.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(_EKU, critical=False)
        .add_extension(san.value, critical=san.critical)
    )
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(ca_key, hashes.SHA256())


def describe_request(req: x509.CertificateSigningRequest) -> str:
    """What ``signreq`` shows before asking whether to sign."""
    key = req.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        algorithm = f"RSA ({key.key_size} bits)"
    else:
        algorithm = type(key).__name__
    hash_name = req.signature_hash_algorithm.name.upper() if req.signature_hash_algorithm else "?"
    dns, ips, node_ids = request_names(req)
    lines = ["Requested certificate:",
             f"  Subject: {req.subject.rfc4514_string()}",
             f"  Encryption Algorithm: {algorithm}",
             f"  Signature Algorithm: {hash_name}-RSA",
             "  Names:"]
    lines += [f"    DNS Name: {d}" for d in dns]
    lines += [f"    IP Address: {i}" for i in ips]
    lines += [f"    Receptor Node ID: {n}" for n in node_ids]
    return "\n".join(lines)


# -- files ---------------------------------------------------------------------------------


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#1 PEM (``-----BEGIN RSA PRIVATE KEY-----``), unencrypted, as Receptor writes it."""
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def write_file(path: str | Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data``; private keys get mode 0600 from the start."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_key(path: str | Path, key: rsa.RSAPrivateKey) -> None:
    write_file(path, key_pem(key), private=True)


def write_cert(path: str | Path, cert: x509.Certificate) -> None:
    write_file(path, cert.public_bytes(serialization.Encoding.PEM))


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_key(path: str | Path) -> rsa.RSAPrivateKey:
    data = _read(path, "key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertError(f"{path} is not an RSA key (Receptor certificates use RSA)")
    return key


def load_cert(path: str | Path) -> x509.Certificate:
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertError(f"{path} is not a PEM certificate ({exc})") from None


def load_request(path: str | Path) -> x509.CertificateSigningRequest:
    data = _read(path, "certificate request")
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CertError(f"{path} is not a PEM certificate request ({exc})") from None


# -- CLI -----------------------------------------------------------------------------------


class _Rfc3339(click.ParamType):
    name = "RFC3339"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value
        try:
            parsed = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an RFC 3339 time such as 2030-01-02T15:04:05Z",
                      param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        return parsed


RFC3339 = _Rfc3339()


def _fail(exc: Exception) -> None:
    click.echo(f"mesh: {exc}", err=True)
    sys.exit(1)


@click.group("cert")
def cert_group() -> None:
    """Create a certificate authority, certificate requests and node certificates."""


@cert_group.command("init")
@click.option("--commonname", required=True, help="Common name of the CA.")
@click.option("--bits", type=int, default=DEFAULT_BITS, show_default=True,
              help="RSA key size (0 means 2048).")
@click.option("--notbefore", type=RFC3339, default=None, help="Start of validity (default: now).")
@click.option("--notafter", type=RFC3339, default=None,
              help="End of validity (default: 10 years after --notbefore).")
@click.option("--outcert", required=True, type=click.Path(dir_okay=False),
              help="Where to write the CA certificate (PEM).")
@click.option("--outkey", required=True, type=click.Path(dir_okay=False),
              help="Where to write the CA key (PEM, mode 0600).")
def init_command(commonname: str, bits: int, notbefore: datetime.datetime | None,
                 notafter: datetime.datetime | None, outcert: str, outkey: str) -> None:
    """Create a self-signed certificate authority (Receptor's cert-init)."""
    try:
        cert, key = make_ca(commonname, bits=bits, not_before=notbefore, not_after=notafter)
        write_key(outkey, key)
        write_cert(outcert, cert)
    except (CertError, OSError) as exc:
        _fail(exc)


@cert_group.command("makereq")
@click.option("--commonname", required=True, help="Common name of the certificate.")
@click.option("--bits", type=int, default=None, help="RSA key size for --outkey (default 2048).")
@click.option("--dnsname", multiple=True, help="A DNS name for the certificate (repeatable).")
@click.option("--ipaddress", multiple=True, help="An IP address for the certificate "
                                                 "(repeatable).")
@click.option("--nodeid", multiple=True, help="A mesh node ID for the certificate "
                                              "(repeatable).")
@click.option("--outreq", required=True, type=click.Path(dir_okay=False),
              help="Where to write the request (PEM).")
@click.option("--inkey", type=click.Path(dir_okay=False), default=None,
              help="Use this existing private key.")
@click.option("--outkey", type=click.Path(dir_okay=False), default=None,
              help="Create a new private key here (PEM, mode 0600).")
def makereq_command(commonname: str, bits: int | None, dnsname: tuple[str, ...],
                    ipaddress: tuple[str, ...], nodeid: tuple[str, ...], outreq: str,
                    inkey: str | None, outkey: str | None) -> None:
    """Create a certificate request naming DNS names, IP addresses and node IDs."""
    try:
        if bool(inkey) == bool(outkey):
            raise CertError("give exactly one of --inkey (existing key) or --outkey (new key)")
        if inkey and bits is not None:
            raise CertError("--bits only applies to a new key (--outkey), not to --inkey")
        key = load_key(inkey) if inkey else generate_key(bits or DEFAULT_BITS)
        req = make_request(commonname, key, dns_names=dnsname, ip_addresses=ipaddress,
                           node_ids=nodeid)
        if outkey:
            write_key(outkey, key)
        write_file(outreq, req.public_bytes(serialization.Encoding.PEM))
    except (CertError, OSError) as exc:
        _fail(exc)


@cert_group.command("signreq")
@click.option("--req", "req_path", required=True, type=click.Path(dir_okay=False),
              help="The certificate request (PEM).")
@click.option("--cacert", required=True, type=click.Path(dir_okay=False),
              help="The CA certificate.")
@click.option("--cakey", required=True, type=click.Path(dir_okay=False), help="The CA key.")
@click.option("--outcert", required=True, type=click.Path(dir_okay=False),
              help="Where to write the signed certificate (PEM).")
@click.option("--notbefore", type=RFC3339, default=None, help="Start of validity (default: now).")
@click.option("--notafter", type=RFC3339, default=None,
              help="End of validity (default: 1 year after --notbefore).")
@click.option("--verify", is_flag=True, default=False,
              help="The request was checked already: sign without asking.")
def signreq_command(req_path: str, cacert: str, cakey: str, outcert: str,
                    notbefore: datetime.datetime | None, notafter: datetime.datetime | None,
                    verify: bool) -> None:
    """Sign a certificate request with the CA (asks first unless --verify)."""
    try:
        req = load_request(req_path)
        ca_cert, ca_key = load_cert(cacert), load_key(cakey)
        dns, ips, node_ids = request_names(req)
        if not (dns or ips or node_ids):
            raise CertError("the certificate request names no DNS names, IP addresses or node "
                            "IDs; make it with --dnsname, --ipaddress or --nodeid")
        if not verify:
            click.echo(describe_request(req))
            answer = click.prompt("Sign certificate (yes/no)?", default="", show_default=False,
                                  prompt_suffix=" ")
            if answer.strip().lower() not in ("yes", "y"):
                raise CertError("certificate not signed")
        cert = sign_request(req, ca_cert, ca_key, not_before=notbefore, not_after=notafter)
        write_cert(outcert, cert)
    except (CertError, OSError) as exc:
        _fail(exc)
    except click.Abort:  # EOF on stdin at the prompt
        _fail(CertError("certificate not signed (no answer on stdin)"))


@hookimpl
def mesh_register_cli_commands(cli: click.Group) -> None:
    cli.add_command(cert_group)
