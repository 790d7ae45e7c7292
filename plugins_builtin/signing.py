"""Signed work: ``work-signing`` / ``work-verification`` with RS512 JSON Web Tokens.

Tokens are what Receptor sends (reference §6.9): a JWT signed RS512 whose claims are ``exp``
and ``aud`` (a list holding the target node ID).  Better than Receptor: verification pins the
algorithm to RS512, requires ``exp``, and checks ``aud`` against the verifying node.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import Duration, SectionSpec

ALGORITHM = "RS512"
DEFAULT_EXPIRATION = 300.0


class SignatureError(Exception):
    """A token is missing, malformed, expired, for another node, or wrongly signed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise SignatureError("token is not valid base64url") from None


def _load_private(path: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SectionValueError("privatekey", f"cannot load RSA private key {path}: {exc}")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SectionValueError("privatekey", f"{path} is not an RSA private key")
    return key


def _load_public(path: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SectionValueError("publickey", f"cannot load RSA public key {path}: {exc}")
    if not isinstance(key, rsa.RSAPublicKey):
        raise SectionValueError("publickey", f"{path} is not an RSA public key")
    return key


def sign_token(key: rsa.RSAPrivateKey, audience: str, expires_in: float) -> str:
    """A JWT for ``audience`` valid for ``expires_in`` seconds."""
    header = _b64(json.dumps({"alg": ALGORITHM, "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"aud": [audience], "exp": int(time.time() + expires_in)},
                             separators=(",", ":")).encode())
    signed = f"{header}.{claims}".encode()
    signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA512())
    return f"{header}.{claims}.{_b64(signature)}"


def verify_token(key: rsa.RSAPublicKey, token: str, audience: str) -> None:
    """Raise :class:`SignatureError` unless ``token`` is a valid RS512 JWT for ``audience``."""
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureError("token is not a JWT (three dot-separated parts)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SignatureError("token header or claims are not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        raise SignatureError(f"token algorithm must be {ALGORITHM}")
    try:
        key.verify(_unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                   hashes.SHA512())
    except InvalidSignature:
        raise SignatureError("token signature does not verify with the configured public "
                             "key") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), (int, float)):
        raise SignatureError("token has no exp claim")
    if claims["exp"] < time.time():
        raise SignatureError("token has expired")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise SignatureError("token audience did not match node ID")


@dataclass
class WorkSigningConfig:
    privatekey: str = field(metadata={"doc": "PEM RSA private key (PKCS#1 or PKCS#8)."})
    tokenexpiration: Duration = field(default=DEFAULT_EXPIRATION,
                                      metadata={"doc": "Token lifetime (Go duration; 5m)."})

    def validate(self) -> None:
        _load_private(self.privatekey)
        if self.tokenexpiration <= 0:
            raise SectionValueError("tokenexpiration", "must be positive")


@dataclass
class WorkVerificationConfig:
    publickey: str = field(metadata={"doc": "PEM RSA public key (PKIX)."})
    verifyunixsocket: bool = field(
        default=True, metadata={"doc": "Verify signatures from Unix-socket clients too "
                                       "(Receptor skips them; set false to do the same)."})

    def validate(self) -> None:
        _load_public(self.publickey)


class RS512Signer:
    """Signs tokens with the ``work-signing`` key."""

    def __init__(self, config: WorkSigningConfig) -> None:
        self.key = _load_private(config.privatekey)
        self.expiration = config.tokenexpiration

    def sign(self, audience: str) -> str:
        return sign_token(self.key, audience, self.expiration)


class RS512Verifier:
    """Verifies tokens with the ``work-verification`` key."""

    def __init__(self, config: WorkVerificationConfig) -> None:
        self.key = _load_public(config.publickey)
        self.verify_unix_socket = config.verifyunixsocket

    def verify(self, token: str, audience: str) -> None:
        verify_token(self.key, token, audience)


@hookimpl
def mesh_register_config_sections(register: Any) -> None:
    register(SectionSpec("work-signing", WorkSigningConfig, singleton=True, bare="privatekey",
                         plural="work-signing", doc="Sign remote work (RS512 JWT)."))
    register(SectionSpec("work-verification", WorkVerificationConfig, singleton=True,
                         bare="publickey", plural="work-verification",
                         doc="Verify signed work for work types with verifysignature."))


def signer_for(node: Any) -> RS512Signer | None:
    """The node's signer, if its config has a ``work-signing`` section."""
    config = node.config.one("work-signing")
    return RS512Signer(config) if config is not None else None


def verifier_for(node: Any) -> RS512Verifier | None:
    """The node's verifier, if its config has a ``work-verification`` section."""
    config = node.config.one("work-verification")
    return RS512Verifier(config) if config is not None else None


@hookimpl
def mesh_register_signers(register: Any) -> None:
    register("rs512", signer_for, verifier_for)
