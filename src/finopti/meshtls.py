"""TLS for the mesh: the contexts services use to serve (mTLS, only pinned callers) and to call the gateway."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the PKI (cryptography) loads only where certificates are made
    from finopti.pki import MeshPki

# Who may open a connection to a service: the gateway (all traffic) and Prometheus (scrapes /metrics).
SERVICE_CALLERS = ("gateway", "prometheus")
TRUST_BUNDLE = "service-callers.pem"
PLATFORM_IDENTITIES = ("gateway", "prometheus", "cli", "collector")


def server_context(cert: Path, key: Path, callers_bundle: Path) -> ssl.SSLContext:
    """Require a client certificate that is one of the pinned callers' leaf certificates.

    The bundle holds leaf certificates, not the CA: PARTIAL_CHAIN makes OpenSSL accept a pinned leaf as
    a trust anchor, so a certificate the mesh CA issued to another service is still refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(callers_bundle))
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
