"""The local development identity provider: one RSA key made once in the state dir, a JWKS the
gateway verifies against, and tokens for development users. Production uses a real OIDC provider."""

import json
import os
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from finopti.mesh.model import Identity

KEY_ID = "finopti-dev-1"


def _write_private(path: Path, data: bytes) -> None:
    # Created with 0600 from the start so the key is never world-readable, even briefly.
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_for(key: rsa.RSAPrivateKey, kid: str = KEY_ID) -> dict:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return {"keys": [jwk]}


class DevIdentityProvider:
    def __init__(self, directory: Path, identity: Identity):
        self.directory = directory
        self.identity = identity
        self.key_path = directory / "signing-key.pem"
        self.jwks_path = directory / "jwks.json"

    def ensure(self) -> "DevIdentityProvider":
        """Create the signing key and JWKS once; later calls reuse them."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.key_path.exists():
            key = generate_key()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_private(self.key_path, pem)
        if not self.jwks_path.exists():
            self.jwks_path.write_text(json.dumps(jwks_for(self._key()), indent=2))
        return self

    def _key(self) -> rsa.RSAPrivateKey:
        return serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)

    def issue(self, email: str, groups: list[str] | None = None, ttl: float | None = None) -> str:
        if self.identity.provider != "dev":
            from finopti.oidc import IdentityProviderError

            raise IdentityProviderError(f"identity.provider is '{self.identity.provider}': users' tokens come from "
                                        f"{self.identity.issuer}, not from the development identity provider")
        self.ensure()
        now = int(time.time())
        claims = {
            "iss": self.identity.issuer,
            "aud": self.identity.audience,
            "sub": email,
            "email": email,
            "groups": ",".join(groups or []),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl if ttl is not None else self.identity.token_ttl),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key(), algorithm="RS256", headers={"kid": KEY_ID})
