"""A real identity provider: the running platform switched (`finopti mesh apply`) to an OpenID Connect provider
started here (finopti.testing.oidc_provider: discovery, JWKS, key rotation), then back to the development one.
Roles still come from a claim (groups) mapped in the role data."""

import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO

from finopti.errors import FinoptiError
from finopti.idp import DevIdentityProvider, generate_key
from finopti.mesh.model import Identity
from finopti.oidc import discover_jwks_uri
from finopti.testing.oidc_provider import DISCOVERY_PATH, JWKS_PATH, OidcProvider

CACHE = 2.0  # jwks_cache of the test mesh: how long Envoy keeps the keys


def _get_logs(platform, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{platform.edge}/api/logs", params={"limit": 1}, headers=headers, timeout=10)


def _eventually(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def provider(platform, tmp_path_factory):
    """The platform, verifying tokens of a local OpenID Connect provider for the module's tests."""
    with OidcProvider() as idp:
        raw = yaml.safe_load((REPO / "mesh.yaml").read_text())
        raw["identity"] = {**raw["identity"], "provider": "oidc", "issuer": idp.issuer, "dev_sign_in": False,
                           "jwks_cache": f"{CACHE}s"}
        mesh = Path(tmp_path_factory.mktemp("oidc")) / "mesh.yaml"
        mesh.write_text(yaml.safe_dump(raw))
        platform.cli("mesh", "apply", "--mesh", str(mesh), check=True)
        try:
            # The gateway fetched the keys (its main thread, as the listener came up) before taking tokens.
            _eventually(lambda: _get_logs(platform, idp.mint("carol@corp.example", ["sre"])).status_code == 200,
                        15, "the gateway accepting the provider's tokens")
            yield idp
        finally:
            platform.cli("mesh", "apply", "--mesh", str(REPO / "mesh.yaml"), check=True)


def test_discovery_finds_the_key_set_and_checks_the_issuer():
    with OidcProvider() as idp:
        assert discover_jwks_uri(Identity(provider="oidc", issuer=idp.issuer, dev_sign_in=False)) == (
            idp.issuer + JWKS_PATH)
        # The document's issuer must be the configured one exactly (Discovery §4.3), even a trailing slash.
        with pytest.raises(FinoptiError, match="names the issuer"):
            discover_jwks_uri(Identity(provider="oidc", issuer=idp.issuer + "/", dev_sign_in=False))
        with pytest.raises(FinoptiError, match="answered 404"):
            discover_jwks_uri(Identity(provider="oidc", issuer=idp.issuer + "/realms/other", dev_sign_in=False))
        assert idp.requests[DISCOVERY_PATH] == 2
    with pytest.raises(FinoptiError, match="cannot read"):
        discover_jwks_uri(Identity(provider="oidc", issuer=idp.issuer, dev_sign_in=False), timeout=2)


def test_roles_come_from_the_groups_claim(platform, provider):
    assert _get_logs(platform, provider.mint("carol@corp.example", ["sre"])).status_code == 200
    denied = _get_logs(platform, provider.mint("bob@corp.example", ["finops-viewers"]))
    assert denied.status_code == 403 and "observability_admin" in denied.json()["message"]
    asked = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "list buckets"}, timeout=60,
                       headers={"authorization": f"Bearer {provider.mint('bob@corp.example', ['finops-viewers'])}"})
    assert asked.status_code == 200, asked.text
    line = platform.wait_for_log("orchestrator", lambda entry: entry.get("request_id") == asked.json()["request_id"])
    assert line and line[0]["user"] == "bob@corp.example"


def test_tokens_the_provider_did_not_issue_are_refused(platform, provider):
    forged_key = generate_key()
    now = int(time.time())
    refused = {
        "none": None,
        "development provider": DevIdentityProvider(platform.state.idp, Identity()).issue("erin@finopti.dev"),
        "another key, same kid": provider.mint("carol@corp.example", ["sre"], key=forged_key),
        "unknown kid": provider.mint("carol@corp.example", ["sre"], kid="nobody", key=forged_key),
        "wrong issuer": provider.mint("carol@corp.example", ["sre"], iss="https://evil.example"),
        "wrong audience": provider.mint("carol@corp.example", ["sre"], aud="another-app"),
        "expired": provider.mint("carol@corp.example", ["sre"], exp=now - 600, iat=now - 900, nbf=now - 900),
    }
    for name, token in refused.items():
        assert _get_logs(platform, token).status_code == 401, name
    with pytest.raises(FinoptiError, match="users' tokens come from"):
        DevIdentityProvider(platform.state.idp, Identity(provider="oidc", issuer=provider.issuer,
                                                        dev_sign_in=False)).issue("erin@finopti.dev")
    assert httpx.post(f"{platform.edge}/auth/dev-token", json={"email": "erin@finopti.dev"}).status_code == 404


def test_key_rotation_needs_no_restart(platform, provider):
    """A new key is trusted, and a withdrawn one refused, within the cache time, with no restart."""
    old = provider.sign_with
    new = provider.add_key()
    new_token = provider.mint("carol@corp.example", ["sre"], kid=new)
    _eventually(lambda: _get_logs(platform, new_token).status_code == 200, CACHE * 5, "the new key trusted")
    provider.sign_with = new
    old_token = provider.mint("carol@corp.example", ["sre"], kid=old)
    assert _get_logs(platform, old_token).status_code == 200  # both keys are published during the rotation
    provider.retire(old)
    _eventually(lambda: _get_logs(platform, old_token).status_code == 401, CACHE * 5, "the withdrawn key refused")
    assert _get_logs(platform, new_token).status_code == 200


def test_the_key_set_is_cached_not_fetched_per_request(platform, provider):
    before, started = provider.requests[JWKS_PATH], time.monotonic()
    token = provider.mint("carol@corp.example", ["sre"])
    for _ in range(30):
        assert _get_logs(platform, token).status_code == 200
    fetches = provider.requests[JWKS_PATH] - before
    # Each listener (edge, mesh) keeps its copy: at most one fetch per listener per cache period, not per request.
    assert fetches <= 2 * ((time.monotonic() - started) / CACHE + 1), fetches
