"""``mesh cert init/makereq/signreq`` write the files Receptor's cert commands write (spec §8)."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from mesh.net.quic_tls import NODE_ID_OID, receptor_node_ids
from mesh_builtin import certs

MESH = [sys.executable, "-m", "mesh"]
SAN_OID_DER = bytes.fromhex("0603551d11")            # OID 2.5.29.17
NODE_ID_OID_DER = bytes.fromhex("06092b0601040192081301")  # OID 1.3.6.1.4.1.2312.19.1


def mesh(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MESH, *args], cwd=cwd, input=stdin, capture_output=True, text=True,
                          timeout=60)


# -- a hand-written DER reader (independent of cryptography's encoder) ----------------------


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, next position) of the TLV at ``pos`` (definite lengths only)."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return tag, data[pos:pos + length], pos + length


def children(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, content, full encoding) of each TLV in ``content``."""
    out, pos = [], 0
    while pos < len(content):
        tag, body, end = read_tlv(content, pos)
        out.append((tag, body, content[pos:end]))
        pos = end
    return out


def find_san(der: bytes) -> bytes:
    """The extnValue of the subjectAltName extension anywhere in a certificate or request."""
    for tag, body, _ in children(der):
        if not tag & 0x20:  # primitive
            continue
        items = children(body)
        if tag == 0x30 and items and items[0][2] == SAN_OID_DER:
            assert items[-1][0] == 0x04  # OCTET STRING (after an optional BOOLEAN critical)
            return items[-1][1]
        try:
            return find_san(body)
        except LookupError:
            continue
    raise LookupError("no subjectAltName")


def tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 0x80
    return bytes([tag, len(body)]) + body


def expected_san(dns: str, ip: bytes, node_id: str) -> bytes:
    """Receptor's SAN: [2] IA5 DNS name, [7] IP, [0] otherName {OID, [0] EXPLICIT UTF8String}."""
    other_name = tlv(0xA0, NODE_ID_OID_DER + tlv(0xA0, tlv(0x0C, node_id.encode())))
    return tlv(0x30, tlv(0x82, dns.encode()) + tlv(0x87, ip) + other_name)


# -- CLI -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a signed node certificate made with the CLI."""
    path = tmp_path_factory.mktemp("certs")
    done = mesh("cert", "init", "--commonname", "Mesh Test CA", "--outcert", "ca.crt",
                "--outkey", "ca.key", cwd=path)
    assert done.returncode == 0, done.stderr
    done = mesh("cert", "makereq", "--commonname", "node1", "--dnsname", "node1.example",
                "--ipaddress", "192.0.2.7", "--nodeid", "node1", "--outreq", "node1.csr",
                "--outkey", "node1.key", cwd=path)
    assert done.returncode == 0, done.stderr
    done = mesh("cert", "signreq", "--req", "node1.csr", "--cacert", "ca.crt", "--cakey",
                "ca.key", "--outcert", "node1.crt", "--verify", cwd=path)
    assert done.returncode == 0, done.stderr
    return path


def test_ca_certificate(issued: Path) -> None:
    before = int(time.time())
    ca = x509.load_pem_x509_certificate((issued / "ca.crt").read_bytes())
    assert (issued / "ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert ca.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mesh Test CA")])
    assert ca.issuer == ca.subject
    assert before - 120 <= ca.serial_number <= before  # serial = Unix time
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.value.ca and basic.critical
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_cert_sign and not usage.key_encipherment
    eku = ca.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3654)
    key = certs.load_key(issued / "ca.key")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    ca.verify_directly_issued_by(ca)


def test_keys_are_pkcs1_pem_and_private(issued: Path) -> None:
    for name in ("ca.key", "node1.key"):
        text = (issued / name).read_text()
        assert text.startswith("-----BEGIN RSA PRIVATE KEY-----"), name
        assert (issued / name).stat().st_mode & 0o077 == 0, name


def test_request_carries_only_the_san(issued: Path) -> None:
    req = x509.load_pem_x509_csr((issued / "node1.csr").read_bytes())
    assert (issued / "node1.csr").read_text().startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert req.is_signature_valid
    assert [ext.oid for ext in req.extensions] == [ExtensionOID.SUBJECT_ALTERNATIVE_NAME]
    assert find_san(req.public_bytes(serialization.Encoding.DER)) == \
        expected_san("node1.example", bytes([192, 0, 2, 7]), "node1")


def test_signed_certificate(issued: Path) -> None:
    ca = x509.load_pem_x509_certificate((issued / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((issued / "node1.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.rfc4514_string() == "CN=node1"
    assert leaf.issuer == ca.subject
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert datetime.timedelta(days=364) <= lifetime <= datetime.timedelta(days=366)

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["node1.example"]
    assert [str(i) for i in san.value.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    (other,) = san.value.get_values_for_type(x509.OtherName)
    assert other.type_id == NODE_ID_OID and other.value == b"\x0c\x05node1"
    assert receptor_node_ids(leaf) == ["node1"]
    # The exact DER, read from the certificate's own bytes: copied verbatim from the request.
    raw = find_san(leaf.public_bytes(serialization.Encoding.DER))
    assert raw == expected_san("node1.example", bytes([192, 0, 2, 7]), "node1")
    assert raw.hex().endswith("a01406092b0601040192081301a0070c056e6f646531")


def test_signreq_refuses_a_request_without_names(tmp_path: Path) -> None:
    assert mesh("cert", "init", "--commonname", "CA", "--outcert", "ca.crt", "--outkey",
                "ca.key", cwd=tmp_path).returncode == 0
    done = mesh("cert", "makereq", "--commonname", "nameless", "--outreq", "n.csr",
                "--outkey", "n.key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = mesh("cert", "signreq", "--req", "n.csr", "--cacert", "ca.crt", "--cakey", "ca.key",
                "--outcert", "n.crt", "--verify", cwd=tmp_path)
    assert done.returncode == 1
    assert "names no DNS names, IP addresses or node IDs" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "n.crt").exists()


@pytest.mark.parametrize("answer,signed", [("yes\n", True), ("no\n", False), ("", False)])
def test_signreq_asks_before_signing(issued: Path, tmp_path: Path, answer: str,
                                     signed: bool) -> None:
    out = tmp_path / "out.crt"
    done = mesh("cert", "signreq", "--req", str(issued / "node1.csr"), "--cacert",
                str(issued / "ca.crt"), "--cakey", str(issued / "ca.key"), "--outcert", str(out),
                cwd=tmp_path, stdin=answer)
    assert "Requested certificate:" in done.stdout
    assert "Subject: CN=node1" in done.stdout
    assert "Encryption Algorithm: RSA (2048 bits)" in done.stdout
    assert "DNS Name: node1.example" in done.stdout
    assert "IP Address: 192.0.2.7" in done.stdout
    assert "Receptor Node ID: node1" in done.stdout
    assert "Sign certificate (yes/no)?" in done.stdout
    assert "Traceback" not in done.stderr
    assert (done.returncode == 0) is signed, done.stderr
    assert out.exists() is signed
    if not signed:
        assert "not signed" in done.stderr


def test_makereq_with_existing_key_and_validity(issued: Path, tmp_path: Path) -> None:
    done = mesh("cert", "makereq", "--commonname", "again", "--nodeid", "node1",
                "--nodeid", "node1-alias", "--inkey", str(issued / "node1.key"), "--outreq",
                "again.csr", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    req = x509.load_pem_x509_csr((tmp_path / "again.csr").read_bytes())
    key = certs.load_key(issued / "node1.key")
    assert req.public_key().public_numbers() == key.public_key().public_numbers()
    done = mesh("cert", "signreq", "--req", "again.csr", "--cacert", str(issued / "ca.crt"),
                "--cakey", str(issued / "ca.key"), "--outcert", "again.crt", "--verify",
                "--notbefore", "2030-01-02T03:04:05Z", "--notafter", "2031-01-02T03:04:05Z",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "again.crt").read_bytes())
    assert cert.not_valid_before_utc.isoformat() == "2030-01-02T03:04:05+00:00"
    assert cert.not_valid_after_utc.isoformat() == "2031-01-02T03:04:05+00:00"
    assert receptor_node_ids(cert) == ["node1", "node1-alias"]


@pytest.mark.parametrize("args,message", [
    (["--outreq", "r.csr"], "exactly one of --inkey"),
    (["--outreq", "r.csr", "--inkey", "k", "--outkey", "k2"], "exactly one of --inkey"),
    (["--outreq", "r.csr", "--outkey", "k", "--ipaddress", "not-an-ip"], "not an IP address"),
])
def test_makereq_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = mesh("cert", "makereq", "--commonname", "x", *args, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_signreq_refuses_a_mismatched_ca_key(issued: Path, tmp_path: Path) -> None:
    assert mesh("cert", "init", "--commonname", "Other", "--outcert", "o.crt", "--outkey",
                "o.key", cwd=tmp_path).returncode == 0
    done = mesh("cert", "signreq", "--req", str(issued / "node1.csr"), "--cacert",
                str(issued / "ca.crt"), "--cakey", "o.key", "--outcert", "x.crt", "--verify",
                cwd=tmp_path)
    assert done.returncode == 1 and "does not belong to the CA certificate" in done.stderr


def test_node_id_encoding_handles_long_and_non_ascii_ids() -> None:
    for node_id in ("a" * 200, "nœud-ü"):
        name = certs.node_id_name(node_id)
        raw = node_id.encode()
        assert name.value[0] == 0x0C
        assert name.value.endswith(raw)
        if len(raw) >= 0x80:
            assert name.value[1:3] == bytes([0x81, len(raw)])
        key = certs.generate_key()
        req = certs.make_request("x", key, node_ids=[node_id])
        ca, ca_key = certs.make_ca("ca")
        assert receptor_node_ids(certs.sign_request(req, ca, ca_key)) == [node_id]
