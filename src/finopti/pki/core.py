"""Mesh PKI: a private CA and short-lived per-service certificates, kept as PEM files in one directory.

Layout of ``pki_dir``: ``ca.crt``/``ca.key`` plus ``<name>.crt``/``<name>.key`` per identity. Every file is
written atomically (temp file in the same directory, then ``os.replace``) because Envoy watches them.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from finopti.pki.errors import PkiError

TRUST_DOMAIN = "finopti.local"
CA_COMMON_NAME = "FinOptiAgents mesh CA"
CA_VALIDITY = dt.timedelta(days=365)
# Leaves this close to expiry are re-issued by ensure_pki.
RENEW_BEFORE = dt.timedelta(hours=24)
# Backdate notBefore so a peer whose clock lags slightly still accepts a fresh certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)

_SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/svc/"
# A name becomes a file name, a DNS SAN and a SPIFFE path segment, so it must be a plain DNS label.
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RESERVED = frozenset({"ca"})  # would clobber ca.crt / ca.key
_CERT_MODE = 0o644
_KEY_MODE = 0o600


def _now() -> dt.datetime:
    """Current UTC time; a function so tests can move the clock."""
    return dt.datetime.now(dt.UTC)


# --- identities -------------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in _RESERVED:
        raise ValueError(f"invalid mesh identity {name!r}: use a lowercase DNS label other than 'ca'")
    return name


def _check_names(identities: Iterable[str]) -> tuple[str, ...]:
    if isinstance(identities, str):  # a bare string would silently become one identity per character
        raise TypeError("identities must be a list of names, not a single string")
    return tuple(dict.fromkeys(_check_name(n) for n in identities))


def spiffe_id(name: str) -> str:
    """SPIFFE ID of a mesh identity, e.g. ``spiffe://finopti.local/svc/gateway``."""
    return _SPIFFE_PREFIX + _check_name(name)


def identity_from_spiffe(uri: str) -> str | None:
    """Inverse of :func:`spiffe_id`; ``None`` for anything that is not exactly a mesh SPIFFE ID."""
    if not isinstance(uri, str) or not uri.startswith(_SPIFFE_PREFIX):
        return None
    name = uri[len(_SPIFFE_PREFIX) :]
    return name if _NAME_RE.fullmatch(name) and name not in _RESERVED else None


@dataclass(frozen=True)
class MeshPki:
    """Where the mesh PKI lives on disk."""

    pki_dir: Path
    ca_cert: Path
    identities: tuple[str, ...] = ()

    def paths(self, name: str) -> tuple[Path, Path]:
        """``(cert_path, key_path)`` of an identity."""
        _check_name(name)
        return self.pki_dir / f"{name}.crt", self.pki_dir / f"{name}.key"

    def spiffe_id(self, name: str) -> str:
        return spiffe_id(name)


# --- files ------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Temp file in the same directory + ``os.replace``: readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL with an explicit mode: the file is created with its final permissions, never briefly wider.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _locked(pki_dir: Path) -> Iterator[None]:
    """Serialise writers (e.g. two processes starting at once) so they cannot mint two different CAs."""
    pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(pki_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise PkiError(f"cannot load certificate {path}: {e}") from e


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise PkiError(f"cannot load private key {path}: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"private key {path} is not an EC key")
    return key


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- certificate building ---------------------------------------------------------------------------


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


def _build_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    not_before = _now() - CLOCK_SKEW
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + CA_VALIDITY)
        # pathlen 0: the CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _build_leaf(
    name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, validity: dt.timedelta
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = _now() - CLOCK_SKEW
    not_after = min(not_before + validity, ca_cert.not_valid_after_utc)  # never outlive the issuer
    san = x509.SubjectAlternativeName([
        x509.UniformResourceIdentifier(spiffe_id(name)),
        x509.DNSName(name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)  # ECDHE-ECDSA needs only this
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write_pair(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    # Key first: a certificate on disk then always has its key already in place. Between the two renames
    # the old cert sits next to the new key; a watcher that loads that mismatched pair fails and picks up
    # the matching pair on the next rename.
    _write_atomic(key_path, _key_pem(key), _KEY_MODE)
    _write_atomic(cert_path, _cert_pem(cert), _CERT_MODE)


# --- CA and leaves on disk --------------------------------------------------------------------------


def _ensure_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not cert_path.exists():
        # ca.key is always written before ca.crt, so a key without a cert is a leftover nobody trusts yet.
        cert, key = _build_ca()
        _write_pair(cert_path, key_path, cert, key)
        return cert, key
    cert, key = _read_cert(cert_path), _read_key(key_path)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise PkiError(f"CA key {key_path} does not belong to CA certificate {cert_path}")
    if cert.not_valid_after_utc - RENEW_BEFORE <= _now():
        raise PkiError(
            f"mesh CA {cert_path} expires at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            f"remove {cert_path.name} and {key_path.name} to create a new CA"
        )
    return cert, key


def _cert_spiffe(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    return uris[0] if uris else None


def _leaf_is_current(pki: MeshPki, name: str, ca_cert: x509.Certificate) -> bool:
    """Reusable = parses, signed by *this* CA, right identity, key matches and is private, not near expiry."""
    cert_path, key_path = pki.paths(name)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        key_mode = key_path.stat().st_mode
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature):
        return False
    return (
        _cert_spiffe(cert) == spiffe_id(name)
        and _spki(cert.public_key()) == _spki(key.public_key())
        and key_mode & 0o077 == 0  # a key others could read may have leaked: replace it
        and cert.not_valid_after_utc - RENEW_BEFORE > _now()
    )


def _validity(validity_days: int) -> dt.timedelta:
    validity = dt.timedelta(days=validity_days)
    if validity <= RENEW_BEFORE:
        raise ValueError(f"validity_days must exceed {RENEW_BEFORE}, or every call would re-issue")
    return validity


def _prepare(pki_dir: Path, identities: Iterable[str], validity_days: int) -> tuple[MeshPki, dt.timedelta]:
    pki_dir = Path(pki_dir)
    return MeshPki(pki_dir, pki_dir / "ca.crt", _check_names(identities)), _validity(validity_days)


def ensure_pki(pki_dir: Path, identities: list[str], validity_days: int = 7) -> MeshPki:
    """Create the CA once and a certificate per identity; reuse what is still valid (idempotent)."""
    pki, validity = _prepare(pki_dir, identities, validity_days)
    with _locked(pki.pki_dir):
        ca_cert, ca_key = _ensure_ca(pki.pki_dir)
        for name in pki.identities:
            if not _leaf_is_current(pki, name, ca_cert):
                _write_pair(*pki.paths(name), *_build_leaf(name, ca_cert, ca_key, validity))
    return pki


def rotate(pki_dir: Path, identities: list[str], validity_days: int = 7) -> list[str]:
    """Re-issue every leaf (new key, new serial) under the existing CA. Returns the names rotated."""
    pki, validity = _prepare(pki_dir, identities, validity_days)
    with _locked(pki.pki_dir):
        ca_cert, ca_key = _ensure_ca(pki.pki_dir)
        for name in pki.identities:
            _write_pair(*pki.paths(name), *_build_leaf(name, ca_cert, ca_key, validity))
    return list(pki.identities)


STAGED = ".next"


def staged_paths(pki: MeshPki, name: str) -> tuple[Path, Path]:
    """Where `stage` puts an identity's next certificate and key (not a `*.crt`: never taken for one in use)."""
    cert, key = pki.paths(name)
    return cert.with_name(cert.name + STAGED), key.with_name(key.name + STAGED)


def stage(pki_dir: Path, identities: list[str], validity_days: int = 7) -> MeshPki:
    """Issue the next certificate of each identity beside the one in use, so that whoever pins it can trust it
    before it is served (`promote` puts it in place)."""
    pki, validity = _prepare(pki_dir, identities, validity_days)
    with _locked(pki.pki_dir):
        ca_cert, ca_key = _ensure_ca(pki.pki_dir)
        for name in pki.identities:
            _write_pair(*staged_paths(pki, name), *_build_leaf(name, ca_cert, ca_key, validity))
    return pki


def promote(pki_dir: Path, identities: list[str]) -> None:
    """Move the staged certificates into place: key first, like `_write_pair`, each by one rename."""
    pki, _ = _prepare(pki_dir, identities, 7)
    with _locked(pki.pki_dir):
        for name in pki.identities:
            (staged_cert, staged_key), (cert, key) = staged_paths(pki, name), pki.paths(name)
            os.replace(staged_key, key)
            os.replace(staged_cert, cert)


def cert_info(path: Path) -> dict[str, Any]:
    """Summary of a certificate for status output. Times are aware UTC datetimes; serial is hex."""
    path = Path(path)
    cert = _read_cert(path)
    return {
        "path": str(path),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "spiffe_id": _cert_spiffe(cert),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "serial": format(cert.serial_number, "x"),
    }


def make_foreign_ca_cert(dir: Path, name: str) -> tuple[Path, Path]:
    """A mesh-looking certificate for ``name`` signed by a throwaway CA that the mesh does not trust.

    The throwaway CA reuses the mesh CA's subject name, so a rejection proves that peers check the
    signature, not just the issuer name. Files are ``<name>.foreign.crt``/``.key`` so that pointing
    ``dir`` at the real PKI directory cannot overwrite a real identity.
    """
    dir = Path(dir)
    _check_name(name)
    dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _build_ca()  # discarded: nobody may ever trust it
    cert, key = _build_leaf(name, ca_cert, ca_key, dt.timedelta(days=7))
    cert_path, key_path = dir / f"{name}.foreign.crt", dir / f"{name}.foreign.key"
    _write_pair(cert_path, key_path, cert, key)
    return cert_path, key_path
