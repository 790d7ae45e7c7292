"""Signed work: ``work-signing`` / ``work-verification`` with RS512 JSON Web Tokens.

Tokens are what Receptor sends (reference §6.9): a JWT signed RS512 whose claims are ``exp``
and ``aud`` (a list holding the target node ID).  Better than Receptor: verification pins the
algorithm to RS512, requires ``exp``, and checks ``aud`` against the verifying node.  Keys are
RSA, in PEM or OpenSSH form (:data:`PRIVATE_KEY_FORMATS`, :data:`PUBLIC_KEY_FORMATS`), so a pair
made by ``ssh-keygen -t rsa`` works as it is.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import Duration, SectionSpec

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import HookNode, RegisterSection, RegisterSigner

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


#: What a ``work-signing`` ``privatekey`` file may hold.
PRIVATE_KEY_FORMATS = ("PEM (PKCS#1 'BEGIN RSA PRIVATE KEY' or PKCS#8 'BEGIN PRIVATE KEY') or "
                       "OpenSSH ('BEGIN OPENSSH PRIVATE KEY', as ssh-keygen writes it)")
#: What a ``work-verification`` ``publickey`` file may hold.
PUBLIC_KEY_FORMATS = ("PEM (SubjectPublicKeyInfo 'BEGIN PUBLIC KEY' or PKCS#1 'BEGIN RSA PUBLIC "
                      "KEY') or an OpenSSH public key line ('ssh-rsa AAAA...', ssh-keygen's .pub)")
_OPENSSH_PRIVATE = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_NEW_KEY_PAIR = ("create an RSA pair with: ssh-keygen -t rsa -b 4096 -N '' -f FILE, then use FILE "
                 "as work-signing privatekey and FILE.pub as work-verification publickey")
_WANT_PRIVATE = ("this file holds a public key: privatekey needs the private half (ssh-keygen's "
                 "file without .pub)")
#: (config key, marker in the file, what to tell the user) for files that are the wrong thing;
#: ``{path}`` is the file, quoted for a shell.
_HINTS = (
    ("privatekey", b"PUBLIC KEY", _WANT_PRIVATE),
    ("privatekey", b"ssh-", _WANT_PRIVATE),
    ("publickey", b"PRIVATE KEY-----", "this file holds a private key: publickey needs the public "
     "half, the .pub file ssh-keygen wrote (write it again with: ssh-keygen -y -f {path} > "
     "{path_pub})"),
    ("publickey", b"BEGIN SSH2 PUBLIC KEY", "this is an RFC 4716 public key: convert it to an "
     "OpenSSH line with: ssh-keygen -i -f {path}"),
    ("publickey", b"BEGIN CERTIFICATE", "this is a certificate: extract its public key with: "
     "openssl x509 -in {path} -pubkey -noout"),
)
_KEY_KINDS = (((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "Ed25519"),
              ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "Ed448"),
              ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "DSA"))


def _read_key_file(config_key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SectionValueError(config_key, f"cannot read key file {path}: "
                                f"{exc.strerror or exc}; check the path and that the node's "
                                f"user may read it") from None


def _key_kind(key: object) -> str:
    """A readable name for a key's type, e.g. ``Ed25519`` or ``ECDSA (secp256r1)``."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"ECDSA ({key.curve.name})"
    return next((name for kinds, name in _KEY_KINDS if isinstance(key, kinds)),
                type(key).__name__)


def _unloadable(config_key: str, path: str, data: bytes, exc: Exception, formats: str) -> \
        SectionValueError:
    # a file that is plainly the wrong thing gets the fix, not the parser's complaint
    hint = next((text for key, marker, text in _HINTS if key == config_key and marker in data),
                None)
    reason = (hint.format(path=shlex.quote(str(path)), path_pub=shlex.quote(f"{path}.pub"))
              if hint else str(exc))
    return SectionValueError(config_key, f"cannot load {path}: {reason}; expected an RSA key in "
                                         f"{formats}")


def _not_rsa(config_key: str, path: str, key: object, fmt: str) -> SectionValueError:
    return SectionValueError(config_key, f"{path} holds a key of type {_key_kind(key)} ({fmt} "
                                         f"format), but work signing makes RS512 JWTs as Receptor "
                                         f"does and supports RSA keys only; {_NEW_KEY_PAIR}")


def _load_private(path: str) -> rsa.RSAPrivateKey:
    """The RSA private key in ``path``: PEM (PKCS#1 or PKCS#8) or OpenSSH, unencrypted."""
    data = _read_key_file("privatekey", path)
    openssh = _OPENSSH_PRIVATE in data
    fmt = "OpenSSH" if openssh else "PEM"
    try:
        key = (serialization.load_ssh_private_key(data, password=None) if openssh
               else serialization.load_pem_private_key(data, password=None))
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise SectionValueError("privatekey", f"{path} is protected by a passphrase ({fmt} "
                                f"format), which a node cannot ask for; remove it with: "
                                f"ssh-keygen -p -N '' -f {shlex.quote(str(path))}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _unloadable("privatekey", path, data, exc, PRIVATE_KEY_FORMATS) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _not_rsa("privatekey", path, key, fmt)
    return key


def _load_public(path: str) -> rsa.RSAPublicKey:
    """The RSA public key in ``path``: PEM (SubjectPublicKeyInfo or PKCS#1) or an OpenSSH line."""
    data = _read_key_file("publickey", path)
    pem = data.lstrip().startswith(b"-----BEGIN ")
    fmt = "PEM" if pem else "OpenSSH"
    try:
        key = (serialization.load_pem_public_key(data) if pem
               else serialization.load_ssh_public_key(data.strip()))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _unloadable("publickey", path, data, exc, PUBLIC_KEY_FORMATS) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _not_rsa("publickey", path, key, fmt)
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
    privatekey: str = field(metadata={"doc": "RSA private key file, unencrypted: PEM (PKCS#1 or "
                                             "PKCS#8) or OpenSSH (`ssh-keygen -t rsa`)."})
    tokenexpiration: Duration = field(default=DEFAULT_EXPIRATION,
                                      metadata={"doc": "Token lifetime (Go duration; 5m)."})
    signer: str | None = field(
        default=None, metadata={"doc": "mesh extension: the registered signer that signs this "
                                       "node's work (`mesh plugins` lists them), needed only "
                                       "when plugins set up more than one; `rs512` is this "
                                       "section's."})

    def validate(self) -> None:
        _load_private(self.privatekey)
        if self.tokenexpiration <= 0:
            raise SectionValueError("tokenexpiration", "must be positive")


@dataclass
class WorkVerificationConfig:
    publickey: str = field(metadata={"doc": "RSA public key file: PEM (SubjectPublicKeyInfo or "
                                            "PKCS#1) or an OpenSSH `ssh-rsa` line (the `.pub` "
                                            "of `ssh-keygen`)."})
    verifyunixsocket: bool = field(
        default=True, metadata={"doc": "Verify signatures from Unix-socket clients too "
                                       "(Receptor skips them; set false to do the same)."})
    verifier: str | None = field(
        default=None, metadata={"doc": "mesh extension: the registered verifier that checks "
                                       "work for this node (`mesh plugins` lists them), needed "
                                       "only when plugins set up more than one; `rs512` is "
                                       "this section's."})

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
def mesh_register_config_sections(register: RegisterSection) -> None:
    register(SectionSpec("work-signing", WorkSigningConfig, singleton=True, bare="privatekey",
                         plural="work-signing", doc="Sign remote work (RS512 JWT)."))
    register(SectionSpec("work-verification", WorkVerificationConfig, singleton=True,
                         bare="publickey", plural="work-verification",
                         doc="Verify signed work for work types with verifysignature."))


def signer_for(node: HookNode) -> RS512Signer | None:
    """The node's signer, if its config has a ``work-signing`` section."""
    config = node.config.one("work-signing")
    return RS512Signer(config) if isinstance(config, WorkSigningConfig) else None


def verifier_for(node: HookNode) -> RS512Verifier | None:
    """The node's verifier, if its config has a ``work-verification`` section."""
    config = node.config.one("work-verification")
    return RS512Verifier(config) if isinstance(config, WorkVerificationConfig) else None


@hookimpl
def mesh_register_signers(register: RegisterSigner) -> None:
    register("rs512", signer_for, verifier_for)
