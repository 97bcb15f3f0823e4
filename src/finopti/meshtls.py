"""TLS for the mesh: the contexts services use to serve (mTLS, only pinned callers) and to call the gateway, and
the verified caller identity the gateway forwards (x-forwarded-client-cert)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:  # the PKI (cryptography) loads only where certificates are made or read
    from finopti.pki import MeshPki

# Who may open a connection to a service: the gateway (all traffic) and Prometheus (scrapes /metrics).
SERVICE_CALLERS = ("gateway", "prometheus")
TRUST_BUNDLE = "service-callers.pem"
PLATFORM_IDENTITIES = ("gateway", "prometheus", "cli", "collector")


def server_context(cert: Path, key: Path, callers_bundle: Path) -> ssl.SSLContext:
    """Require a client certificate that is one of the pinned callers' leaf certificates.

    The bundle holds leaf certificates, not the CA: PARTIAL_CHAIN makes OpenSSL accept a pinned leaf as
    a trust anchor, so a certificate the mesh CA issued to another service is still refused. `callers_bundle`
    may name several files, separated by os.pathsep (Kubernetes: the CA that issues only the gateway's and
    Prometheus's certificates, and the service's own certificate for its health probe)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    for bundle in str(callers_bundle).split(os.pathsep):
        ctx.load_verify_locations(cafile=bundle)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Present our identity to the gateway and verify the gateway against the mesh CA."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(cert, key)
    return ctx


def write_callers_bundle(pki: MeshPki, previous_gateway_pem: bytes = b"") -> Path:
    """The pinned callers, plus the gateway's previous certificate while a rotation rolls out."""
    parts = [pki.paths(name)[0].read_bytes() for name in SERVICE_CALLERS]
    if previous_gateway_pem and previous_gateway_pem not in parts:
        parts.append(previous_gateway_pem)
    bundle = pki.pki_dir / TRUST_BUNDLE
    tmp = bundle.with_suffix(".tmp")
    tmp.write_bytes(b"".join(parts))
    tmp.replace(bundle)
    return bundle


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def source_from_xfcc(value: str | None) -> str | None:
    """Calling service from ``x-forwarded-client-cert`` (``By=..;Hash=..;URI=spiffe://finopti.local/svc/<name>``).

    The mesh listener sets the header itself (SANITIZE_SET), so it holds one element, for the
    direct peer; if there are several, the last one (appended by the nearest proxy) counts.
    Anything that is not exactly a mesh SPIFFE id gives ``None``.
    """
    if not value:
        return None
    element = _split_outside_quotes(value, ",")[-1]
    for pair in _split_outside_quotes(element, ";"):
        key, _, raw = pair.strip().partition("=")
        if key.strip().lower() == "uri":
            from finopti.pki import identity_from_spiffe

            return identity_from_spiffe(unquote(raw.strip().strip('"')))
    return None
