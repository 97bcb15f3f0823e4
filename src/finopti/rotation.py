"""Certificate rotation on a running platform, with no restart and no request lost.

Services pin their callers' certificates (the gateway's, Prometheus's), so a caller's next certificate must be
trusted before it is served: it is issued beside the one in use (`pki.stage`), added to the services' trust
bundle, then moved into place. Every process picks up new files at its next handshake: services through
their TLS contexts (`meshtls`), the gateway through its SDS secret, which watches the PKI directory. Connections
already open keep going. Last, the outgoing certificates are trusted no more."""

import time
from collections.abc import Callable

import httpx

from finopti.errors import StartupError
from finopti.mesh.model import load_mesh
from finopti.meshtls import SERVICE_CALLERS, write_callers_bundle
from finopti.oplock import operation
from finopti.paths import StateDir
from finopti.pki import cert_info, ensure_pki, promote, rotate, stage, staged_paths
from finopti.platform import Runtime, mesh_identities, running_runtime


def served_serials(rt: Runtime) -> set[str]:
    """Serial numbers of the certificates the gateway presents now (its admin API's /certs), lower-case hex."""
    try:
        certs = httpx.get(f"{rt.admin_url}/certs", timeout=2).json().get("certificates", [])
    except (httpx.HTTPError, ValueError):
        return set()
    return {c["serial_number"].lower().lstrip("0") for entry in certs for c in entry.get("cert_chain", [])}


def _wait(predicate: Callable[[], bool], failure: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise StartupError(failure)
        time.sleep(0.1)


def rotate_certificates(state: StateDir, progress: Callable[[str], None] = lambda _: None) -> list[str]:
    """One operation (`oplock`): a `mesh apply` or drill meanwhile waits. Refused, changing nothing, when no
    platform runs (its gateway could not take the new certificates)."""
    with operation(state.root, "`finopti pki rotate`"):
        return _rotate(state, running_runtime(state), progress)


def _rotate(state: StateDir, rt: Runtime, progress: Callable[[str], None]) -> list[str]:
    started = time.monotonic()
    identities = mesh_identities(load_mesh(rt.mesh_file))
    pki = ensure_pki(state.pki, identities)
    callers = list(SERVICE_CALLERS)
    outgoing = [pki.paths(name)[0].read_bytes() for name in callers]
    stage(state.pki, callers)
    incoming = [staged_paths(pki, name)[0].read_bytes() for name in callers]
    write_callers_bundle(pki, outgoing + incoming)
    rotated = rotate(state.pki, [name for name in identities if name not in callers])
    progress(f"re-issued {len(rotated)} certificates; services trust the gateway's and Prometheus's next ones")
    promote(state.pki, callers)
    serial = cert_info(pki.paths("gateway")[0])["serial"]
    _wait(lambda: served_serials(rt) == {serial}, "the gateway did not serve its new certificate within 30s")
    progress("gateway switched to its new certificate (SDS, no restart)")
    write_callers_bundle(pki)
    progress(f"outgoing certificates no longer trusted; rotation took {time.monotonic() - started:.1f}s")
    return sorted(rotated + callers)
