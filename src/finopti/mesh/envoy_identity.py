"""Users' identity in Envoy's words: the `jwt_authn` provider and, for an OpenID Connect provider, the
cluster Envoy fetches its key set from.

- `dev`: the development identity provider's JWKS file (local_jwks), which the platform writes once.
- `oidc`: the key set at the issuer's `jwks_uri` (found by discovery, `finopti.oidc`), fetched by Envoy's main
  thread before the keys expire from its cache (`jwks_cache`) and again after a failed fetch, so a rotated key
  is trusted within `jwks_cache` and no token waits for a fetch.

Tokens are read from `Authorization: Bearer` only; the verified email and groups claims become the identity
headers the policy and the services read.
"""

from urllib.parse import urlsplit

from finopti.mesh.model import Identity

JWKS_CLUSTER = "identity-provider-jwks"
JWKS_TIMEOUT = "5s"
# Where Debian keeps the public CAs an https key set is verified against.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def jwt_provider(identity: Identity, jwks_path: str, jwks_uri: str, failure_key: str) -> dict:
    provider: dict = {
        "issuer": identity.issuer,
        "audiences": [identity.audience],
        # Only from the Authorization header: by default Envoy also takes `access_token` from the query,
        # where URLs put it into logs, history and Referer headers.
        # The scheme is case-insensitive (RFC 9110 §11.1) but Envoy matches the prefix exactly: the two spellings
        # clients send, as APISIX's jwt-auth reads them.
        "from_headers": [{"name": "authorization", "value_prefix": prefix} for prefix in ("Bearer ", "bearer ")],
        # The token travels on so each mesh hop is authorized for the same user.
        "forward": True,
        "failed_status_in_metadata": failure_key,
        "claim_to_headers": [
            {"header_name": "x-user-email", "claim_name": identity.email_claim},
            {"header_name": "x-user-groups", "claim_name": identity.groups_claim},
        ],
    }
    if identity.provider == "dev":
        provider["local_jwks"] = {"filename": jwks_path}
        return provider
    if not jwks_uri:
        raise ValueError("an oidc identity needs the provider's jwks_uri (finopti.oidc.discover_jwks_uri)")
    provider["remote_jwks"] = {
        "http_uri": {"uri": jwks_uri, "cluster": JWKS_CLUSTER, "timeout": JWKS_TIMEOUT},
        "cache_duration": _seconds(identity.jwks_cache),
        # Fetched by the main thread, before the listener takes traffic and again as the cache expires: no
        # request waits for the provider, and the workers share one copy.
        "async_fetch": {"fast_listener": True, "failed_refetch_duration": "1s"},
        "retry_policy": {"num_retries": 3, "retry_back_off": {"base_interval": "0.5s", "max_interval": "5s"}},
    }
    return provider


def jwks_cluster(jwks_uri: str, ca_bundle: str = SYSTEM_CA_BUNDLE) -> dict:
    """The provider's host as an Envoy cluster: DNS-resolved, TLS verified against the public CAs for https."""
    url = urlsplit(jwks_uri)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = host.replace(".", "").isdigit() or ":" in host
    cluster: dict = {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": JWKS_CLUSTER,
        "type": "STATIC" if literal else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": JWKS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }
    if url.scheme == "https":
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": ca_bundle},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
                }},
            },
        }
    return cluster
