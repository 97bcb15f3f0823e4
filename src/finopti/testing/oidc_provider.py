"""A local OpenID Connect provider for tests: the part a gateway talks to, as OpenID Connect Discovery 1.0
and RFC 7517 describe it, with keys that rotate on demand.

- `GET /.well-known/openid-configuration`: the provider metadata (issuer, jwks_uri and the required fields);
- `GET /protocol/openid-connect/certs` (Keycloak's path, so nothing can guess it without discovery): the
  public keys (JWK Set), each with `kid`, `kty`, `alg`, `use`, sent with a Cache-Control max-age;
- `mint(...)`: a token as the provider would issue it (RS256, `kid` in the header), claims overridable.

Rotation as real providers do it: `add_key()` publishes a new key (tokens are still signed with the old one
until `sign_with` moves), `retire(kid)` withdraws one. Every request is counted per path.
"""

import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from finopti.idp import generate_key, jwks_for

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/protocol/openid-connect/certs"


class OidcProvider:
    def __init__(self, audience: str = "finopti", jwks_max_age: int = 60):
        self.audience = audience
        self.jwks_max_age = jwks_max_age
        self.keys: dict[str, object] = {}  # kid -> private key, in publication order
        self.sign_with = self.add_key()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-provider", daemon=True)

    def __enter__(self) -> "OidcProvider":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- keys --------------------------------------------------------------------------------------------------

    def add_key(self) -> str:
        kid = f"key-{len(getattr(self, 'keys', {})) + 1}-{uuid.uuid4().hex[:6]}"
        self.keys[kid] = generate_key()
        return kid

    def retire(self, kid: str) -> None:
        with self._lock:
            self.keys.pop(kid)

    def jwks(self) -> dict:
        with self._lock:
            return {"keys": [jwks_for(key, kid)["keys"][0] for kid, key in self.keys.items()]}

    def metadata(self) -> dict:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "authorization_endpoint": self.issuer + "/protocol/openid-connect/auth",
            "token_endpoint": self.issuer + "/protocol/openid-connect/token",
            "response_types_supported": ["code", "id_token", "code id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def mint(self, email: str, groups: list[str] | None = None, kid: str | None = None, key=None,
             ttl: float = 300, **claims) -> str:
        """A token of this provider; `key` signs with another key under `kid` (a forgery)."""
        kid = kid or self.sign_with
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, email)),
                "email": email, "groups": groups or [], "iat": now - 2, "nbf": now - 2, "exp": now + int(ttl),
                "jti": uuid.uuid4().hex, **claims}
        return jwt.encode(body, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?")[0]
                provider.requests[path] += 1
                if path == DISCOVERY_PATH:
                    self._json(provider.metadata(), "public, max-age=3600")
                elif path == JWKS_PATH:
                    self._json(provider.jwks(), f"public, max-age={provider.jwks_max_age}")
                else:
                    self._json({"error": "not_found"}, "no-store", 404)

            def _json(self, doc: dict, cache: str, status: int = 200) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", cache)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler
