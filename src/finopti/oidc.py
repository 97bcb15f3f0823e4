"""OpenID Connect issuer discovery (OpenID Connect Discovery 1.0, §4): before rendering the gateway, the
platform reads the provider's configuration at `{issuer}/.well-known/openid-configuration` and takes its
`jwks_uri`. The gateway then fetches the key set itself, caches it and fetches it again, so a provider's key
rotation needs no restart (see `finopti.mesh.envoy_identity`).

The document's `issuer` must be exactly the configured issuer (§4.3): otherwise a provider could vouch for
tokens of another.
"""

import httpx

from finopti.errors import FinoptiError
from finopti.mesh.model import Identity

WELL_KNOWN = "/.well-known/openid-configuration"


class IdentityProviderError(FinoptiError):
    """The OpenID Connect provider's configuration cannot be read or is not trustworthy."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + WELL_KNOWN


def discover_jwks_uri(identity: Identity, timeout: float = 10.0) -> str:
    """The key set URI of an `oidc` identity: as configured, else from the issuer's discovery document."""
    if identity.jwks_uri:
        return identity.jwks_uri
    url = discovery_url(identity.issuer)
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise IdentityProviderError(f"identity.issuer: cannot read {url}: {exc}") from None
    if response.status_code != 200:
        raise IdentityProviderError(f"identity.issuer: {url} answered {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise IdentityProviderError(f"identity.issuer: {url} is not a JSON document") from None
    if not isinstance(document, dict) or document.get("issuer") != identity.issuer:
        found = document.get("issuer") if isinstance(document, dict) else None
        raise IdentityProviderError(f"identity.issuer: {url} names the issuer {found!r}, not {identity.issuer!r}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
        raise IdentityProviderError(f"identity.issuer: {url} has no jwks_uri")
    if jwks_uri.startswith("http://") and identity.issuer.startswith("https://"):
        raise IdentityProviderError(f"identity.issuer: {url} publishes its keys over plain http ({jwks_uri})")
    return jwks_uri
