"""TLS for the mesh: the contexts services use to serve (mTLS, only pinned callers) and to call the gateway, and
the verified caller identity the gateway forwards (x-forwarded-client-cert)."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:  # the PKI (cryptography) loads only where certificates are made or read
    from finopti.pki import MeshPki

# Who may open a connection to a service: the gateway (all traffic) and Prometheus (scrapes /metrics).
SERVICE_CALLERS = ("gateway", "prometheus")
TRUST_BUNDLE = "service-callers.pem"
PLATFORM_IDENTITIES = ("gateway", "prometheus", "cli", "collector")

log = logging.getLogger("finopti.tls")


class _Files:
    """A set of files, compared by inode, size and modification time: cheap enough to look at per handshake."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.seen = self.now()

    def now(self) -> tuple:
        def one(path: Path) -> tuple:
            try:
                st = path.stat()
            except OSError:
                return ()
            return st.st_ino, st.st_size, st.st_mtime_ns

        return tuple(one(p) for p in self.paths)


def _pinned_callers_context(cert: Path, key: Path, bundles: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    for bundle in bundles:
        ctx.load_verify_locations(cafile=bundle)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def server_context(cert: Path, key: Path, callers_bundle: Path) -> ssl.SSLContext:
    """Require a client certificate that is one of the pinned callers' leaf certificates.

    The bundle holds leaf certificates, not the CA: PARTIAL_CHAIN makes OpenSSL accept a pinned leaf as
    a trust anchor, so a certificate the mesh CA issued to another service is still refused. `callers_bundle`
    may name several files, separated by os.pathsep (Kubernetes: the CA that issues only the gateway's and
    Prometheus's certificates, and the service's own certificate for its health probe).

    Certificates rotate without a restart (`finopti pki rotate`): every handshake looks at the files, and when
    they changed it is served by a context built from them (OpenSSL's server-name callback runs for every
    handshake, with or without SNI, and may switch the context: certificate and trusted callers both).
    Connections already open keep theirs. A half-written rotation (a new key next to the old certificate)
    keeps the previous context until the files agree again."""
    bundles = str(callers_bundle).split(os.pathsep)
    files = _Files([Path(cert), Path(key), *map(Path, bundles)])
    current = _pinned_callers_context(cert, key, bundles)

    def pick(ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        nonlocal current
        now = files.now()
        if now != files.seen:
            try:
                current = _pinned_callers_context(cert, key, bundles)
                files.seen = now
                log.info("TLS certificates reloaded", extra={"event": "tls_reload"})
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS certificates changed but do not load yet, keeping the previous ones: %s", exc)
        ssl_object.context = current

    front = _pinned_callers_context(cert, key, bundles)
    front.sni_callback = pick
    return front


class _RenewingClientContext(ssl.SSLContext):
    """A client context that presents the certificate on disk now: each new connection looks at the files and
    loads them again if they changed (a rotation), so a long-running service never presents one it replaced."""

    files: _Files
    cert: Path
    key: Path

    def _renew(self) -> None:
        now = self.files.now()
        if now != self.files.seen:
            try:
                self.load_cert_chain(self.cert, self.key)
                self.files.seen = now
            except (OSError, ssl.SSLError) as exc:  # half-written: the next connection tries again
                log.warning("TLS certificate changed but does not load yet, keeping the previous one: %s", exc)

    def wrap_socket(self, *args, **kwargs):  # type: ignore[override]
        self._renew()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args, **kwargs):  # type: ignore[override]
        self._renew()
        return super().wrap_bio(*args, **kwargs)


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Present our identity to the gateway and verify the gateway against the mesh CA."""
    ctx = _RenewingClientContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.cert, ctx.key = Path(cert), Path(key)
    ctx.files = _Files([ctx.cert, ctx.key])
    ctx.load_cert_chain(cert, key)
    return ctx


def write_callers_bundle(pki: MeshPki, also_trusted: Iterable[bytes] = ()) -> Path:
    """The pinned callers, plus `also_trusted` while a rotation rolls out (their outgoing and next certificates)."""
    parts = [pki.paths(name)[0].read_bytes() for name in SERVICE_CALLERS]
    parts += [pem for pem in also_trusted if pem not in parts]
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
