"""Mesh PKI: one private CA plus short-lived per-service mTLS certificates (SPIFFE-style URI SANs)."""

from finopti.pki.core import (
    TRUST_DOMAIN,
    MeshPki,
    cert_info,
    ensure_pki,
    identity_from_spiffe,
    make_foreign_ca_cert,
    promote,
    rotate,
    spiffe_id,
    stage,
    staged_paths,
)
from finopti.pki.errors import PkiError

__all__ = [
    "TRUST_DOMAIN",
    "MeshPki",
    "PkiError",
    "cert_info",
    "ensure_pki",
    "identity_from_spiffe",
    "make_foreign_ca_cert",
    "promote",
    "rotate",
    "spiffe_id",
    "stage",
    "staged_paths",
]
