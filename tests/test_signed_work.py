"""Signed work: RS512 tokens from work-signing, checked by work-verification on the executor.

Keys come in PEM (PKCS#1, PKCS#8, SubjectPublicKeyInfo) and OpenSSH form; the OpenSSH ones (and
their PEM conversions) are made by the real ``ssh-keygen`` (Debian package openssh-client).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mesh.config.errors import ConfigError
from mesh.config.loader import parse_config
from mesh.config.schema import SectionSpec
from mesh.testing import Mesh, wait_until
from mesh_builtin import signing
from mesh_builtin.signing import SignatureError, sign_token, verify_token

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")
SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(
    SSH_KEYGEN is None, reason="ssh-keygen is not installed (Debian package openssh-client)")


def keypair(directory: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / f"{name}.key"
    public = directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def ssh_keygen(*args: str) -> str:
    assert SSH_KEYGEN is not None
    return subprocess.run([SSH_KEYGEN, "-q", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def ssh_keypair(directory: Path, name: str, key_type: str = "rsa", passphrase: str = "",
                *args: str) -> Path:
    """A key pair made by ssh-keygen: ``directory/name`` and ``directory/name.pub``."""
    path = directory / name
    ssh_keygen("-t", key_type, "-N", passphrase, "-C", f"{name}@mesh-test", "-f", str(path),
               *args)
    return path


def ssh_keygen_private_as(key: Path, fmt: str) -> Path:
    """A copy of ``key`` rewritten by ssh-keygen in ``fmt`` (``PEM`` = PKCS#1, ``PKCS8``)."""
    copy = key.with_name(f"{key.name}.{fmt.lower()}")
    shutil.copy(key, copy)
    ssh_keygen("-p", "-P", "", "-N", "", "-m", fmt, "-f", str(copy))
    return copy


def ssh_keygen_public_as(key: Path, fmt: str) -> Path:
    """``key``'s public half exported by ssh-keygen in ``fmt`` (``PEM`` = PKCS#1, ``PKCS8``)."""
    out = key.with_name(f"{key.name}.pub.{fmt.lower()}")
    out.write_text(ssh_keygen("-e", "-m", fmt, "-f", f"{key}.pub"))
    return out


def signing_specs() -> dict[str, SectionSpec]:
    """The signing plugin's sections alone (no ambient plugins)."""
    specs: dict[str, SectionSpec] = {}
    signing.mesh_register_config_sections(lambda spec: specs.setdefault(spec.name, spec))
    return specs


@needs_ssh_keygen
def test_every_accepted_key_format_loads_and_signs(tmp_path: Path) -> None:
    key = ssh_keypair(tmp_path, "id_rsa", "rsa", "", "-b", "2048")
    privates = {"-----BEGIN OPENSSH PRIVATE KEY-----": key,
                "-----BEGIN RSA PRIVATE KEY-----": ssh_keygen_private_as(key, "PEM"),
                "-----BEGIN PRIVATE KEY-----": ssh_keygen_private_as(key, "PKCS8")}
    publics = {"ssh-rsa AAAA": Path(f"{key}.pub"),
               "-----BEGIN PUBLIC KEY-----": ssh_keygen_public_as(key, "PKCS8"),
               "-----BEGIN RSA PUBLIC KEY-----": ssh_keygen_public_as(key, "PEM")}
    for marker, path in {**privates, **publics}.items():
        assert path.read_text().startswith(marker), path
    for private in privates.values():
        config = parse_config(f"- work-signing:\n    privatekey: {private}\n", signing_specs())
        signer = signing.RS512Signer(config.one("work-signing"))
        token = signer.sign("executor01")
        for public in publics.values():
            config = parse_config(f"- work-verification: {public}\n", signing_specs())
            signing.RS512Verifier(config.one("work-verification")).verify(token, "executor01")


#: case -> (section, key, how to make the file, what the error must say besides its place)
BAD_KEYS = {
    "ed25519-private": ("work-signing", "privatekey", lambda d: ssh_keypair(d, "ed", "ed25519"),
                        ["key of type Ed25519", "OpenSSH", "RSA keys only", "ssh-keygen -t rsa"]),
    "ed25519-public": ("work-verification", "publickey",
                       lambda d: Path(f"{ssh_keypair(d, 'ed', 'ed25519')}.pub"),
                       ["key of type Ed25519", "RSA keys only", "ssh-keygen -t rsa"]),
    "ecdsa-private": ("work-signing", "privatekey", lambda d: ssh_keypair(d, "ec", "ecdsa"),
                      ["key of type ECDSA", "RSA keys only", "ssh-keygen -t rsa"]),
    "encrypted-openssh": ("work-signing", "privatekey",
                          lambda d: ssh_keypair(d, "enc", "rsa", "a passphrase", "-b", "2048"),
                          ["passphrase", "OpenSSH", "ssh-keygen -p -N ''"]),
    "encrypted-pem": ("work-signing", "privatekey",
                      lambda d: ssh_keypair(d, "enc", "rsa", "a passphrase", "-b", "2048",
                                            "-m", "PEM"),
                      ["passphrase", "PEM", "ssh-keygen -p -N ''"]),
    "public-as-private": ("work-signing", "privatekey",
                          lambda d: Path(f"{ssh_keypair(d, 'k', 'rsa', '', '-b', '2048')}.pub"),
                          ["holds a public key", "private half", "BEGIN OPENSSH PRIVATE KEY"]),
    "private-as-public": ("work-verification", "publickey",
                          lambda d: ssh_keypair(d, "k", "rsa", "", "-b", "2048"),
                          ["holds a private key", ".pub", "ssh-rsa"]),
}


@needs_ssh_keygen
@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_unusable_key_gives_a_config_error_with_the_fix(tmp_path: Path, case: str) -> None:
    section, key, make, expected = BAD_KEYS[case]
    path = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_config(f"- {section}:\n    {key}: {path}\n", signing_specs(), source="mesh.yml")
    message = str(info.value)
    assert message.startswith(f"mesh.yml: {section} (item 1): key '{key}': "), message
    assert str(path) in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@needs_ssh_keygen
def test_node_with_an_ed25519_signing_key_refuses_to_start(tmp_path: Path) -> None:
    key = ssh_keypair(tmp_path, "id_ed25519", "ed25519")
    config = tmp_path / "node.yml"
    config.write_text(f"- node:\n    id: a\n    datadir: {tmp_path / 'data'}\n"
                      f"- work-signing:\n    privatekey: {key}\n")
    result = subprocess.run([sys.executable, "-m", "mesh", "node", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"mesh: {config}: work-signing (item 2): key 'privatekey': "
                                    f"{key} holds a key of type Ed25519"), result.stderr
    assert "Traceback" not in result.stderr


def test_token_rules() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = sign_token(key, "executor01", 60)
    verify_token(key.public_key(), token, "executor01")
    with pytest.raises(SignatureError, match="audience"):
        verify_token(key.public_key(), token, "someone-else")
    with pytest.raises(SignatureError, match="signature"):
        verify_token(other.public_key(), token, "executor01")
    with pytest.raises(SignatureError, match="expired"):
        verify_token(key.public_key(), sign_token(key, "executor01", -10), "executor01")
    header, claims, signature = token.split(".")
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(SignatureError, match="RS512"):
        verify_token(key.public_key(), f"{none_header}.{claims}.", "executor01")
    no_exp = base64.urlsafe_b64encode(json.dumps({"aud": ["executor01"]}).encode()) \
        .rstrip(b"=").decode()
    with pytest.raises(SignatureError):
        verify_token(key.public_key(), f"{header}.{no_exp}.{signature}", "executor01")
    with pytest.raises(SignatureError, match="JWT"):
        verify_token(key.public_key(), "garbage", "executor01")


def submit(node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECEPTORCTL, "--socket", str(node.socket), "work", "submit",
                           "--node", "executor01", "--payload-literal", "signed hello",
                           "--rm", "--follow", *args, "signed-echo"],
                          capture_output=True, text=True, timeout=120)



def assert_signed_passes_and_unsigned_is_refused(mesh: Mesh) -> None:
    """controller01's signed submit to executor01 runs; its unsigned one is refused."""
    signed = submit(mesh.nodes["controller01"], "--signwork")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith("signed hello")
    unsigned = submit(mesh.nodes["controller01"])
    assert unsigned.returncode != 0
    assert "requires signed work" in unsigned.stdout + unsigned.stderr


def test_signed_work_across_two_hops(mesh: Mesh, tmp_path: Path) -> None:
    good_key, good_pub = keypair(tmp_path, "good")
    bad_key, _ = keypair(tmp_path, "bad")
    mesh.add("controller01", sections=[{"work-signing": {"privatekey": str(good_key),
                                                         "tokenexpiration": "1m"}}])
    mesh.add("rogue", sections=[{"work-signing": {"privatekey": str(bad_key),
                                                  "tokenexpiration": "1m"}}])
    mesh.add("relayer01")
    mesh.add("executor01", listen=False, sections=[
        {"work-verification": {"publickey": str(good_pub)}},
        {"work-command": {"worktype": "signed-echo", "command": "cat",
                          "verifysignature": True}}])
    mesh.link("relayer01", "controller01")
    mesh.link("rogue", "controller01")
    mesh.link("executor01", "relayer01")
    mesh.start()
    mesh.wait_converged()
    mesh.wait_until_work_types("controller01", "executor01", ["signed-echo"])
    status = mesh.nodes["controller01"].status()
    secure = [c for ad in status["Advertisements"] if ad["NodeID"] == "executor01"
              for c in ad.get("WorkCommands") or []]
    assert {"WorkType": "signed-echo", "Secure": True} in secure

    assert_signed_passes_and_unsigned_is_refused(mesh)

    forged = submit(mesh.nodes["rogue"], "--signwork")
    assert forged.returncode != 0
    assert "could not verify signature" in forged.stdout + forged.stderr

    # a Unix-socket client of the executor itself is verified too (Receptor skips it)
    local = subprocess.run([RECEPTORCTL, "--socket", str(mesh.nodes["executor01"].socket),
                            "work", "submit", "--node", "localhost", "--no-payload",
                            "signed-echo"], capture_output=True, text=True, timeout=60)
    assert local.returncode != 0
    assert "requires signed work" in local.stdout + local.stderr


def submit_locally(node, signature: str) -> subprocess.CompletedProcess[str]:
    """Submit to ``node`` itself with a ready-made token (results and release would need one
    too, and receptorctl sends none, so the unit is neither followed nor removed)."""
    return subprocess.run([RECEPTORCTL, "--socket", str(node.socket), "work", "submit",
                           "--node", "localhost", "--no-payload", "--param",
                           f"signature={signature}", "signed-echo"],
                          capture_output=True, text=True, timeout=60)


@needs_ssh_keygen
def test_openssh_keys_sign_and_verify_remote_work(mesh: Mesh, tmp_path: Path) -> None:
    key = ssh_keypair(tmp_path, "id_rsa", "rsa", "", "-b", "2048")
    intruder = ssh_keypair(tmp_path, "intruder", "rsa", "", "-b", "2048")
    mesh.add("controller01", sections=[{"work-signing": {"privatekey": str(key),
                                                         "tokenexpiration": "1m"}}])
    mesh.add("executor01", listen=False, sections=[
        {"work-verification": {"publickey": f"{key}.pub"}},
        {"work-command": {"worktype": "signed-echo", "command": "cat",
                          "verifysignature": True}}])
    mesh.link("executor01", "controller01")
    mesh.start()
    mesh.wait_converged()
    mesh.wait_until_work_types("controller01", "executor01", ["signed-echo"])

    assert_signed_passes_and_unsigned_is_refused(mesh)

    # tokens handed straight to the executor: the right key's passes, another key's is refused
    executor = mesh.nodes["executor01"]

    def token(private: Path) -> str:
        loaded = serialization.load_ssh_private_key(private.read_bytes(), password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        return sign_token(loaded, "executor01", 60)

    good = submit_locally(executor, token(key))
    assert good.returncode == 0, good.stdout + good.stderr
    unit = re.search(r"Unit ID: (\S+)", good.stdout)
    assert unit, good.stdout
    wait_until(lambda: executor.control(f"work status {unit[1]}")["StateName"] == "Succeeded",
               what="the locally signed unit to succeed")
    forged = submit_locally(executor, token(intruder))
    assert forged.returncode != 0
    assert "could not verify signature" in forged.stdout + forged.stderr
