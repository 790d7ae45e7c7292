"""Signed work: RS512 tokens from work-signing, checked by work-verification on the executor."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mesh.testing import Mesh
from mesh_builtin.signing import SignatureError, sign_token, verify_token

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")


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

    signed = submit(mesh.nodes["controller01"], "--signwork")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith("signed hello")

    unsigned = submit(mesh.nodes["controller01"])
    assert unsigned.returncode != 0
    assert "requires signed work" in unsigned.stdout + unsigned.stderr

    forged = submit(mesh.nodes["rogue"], "--signwork")
    assert forged.returncode != 0
    assert "could not verify signature" in forged.stdout + forged.stderr

    # a Unix-socket client of the executor itself is verified too (Receptor skips it)
    local = subprocess.run([RECEPTORCTL, "--socket", str(mesh.nodes["executor01"].socket),
                            "work", "submit", "--node", "localhost", "--no-payload",
                            "signed-echo"], capture_output=True, text=True, timeout=60)
    assert local.returncode != 0
    assert "requires signed work" in local.stdout + local.stderr
