"""Certificate rotation on a running platform: re-issue, roll the services one by one, then the gateway.

Order matters: services are restarted while the gateway still presents its old certificate, and they
trust both the old and the new one; only then does the gateway switch (a live xDS update, no restart)."""

import time
from collections.abc import Callable

import httpx

from finopti.errors import StartupError
from finopti.mesh.envoy import cluster_name, render_envoy
from finopti.mesh.model import load_mesh
from finopti.mesh.supervisor import components
from finopti.meshtls import write_callers_bundle
from finopti.paths import StateDir
from finopti.pki import ensure_pki, rotate
from finopti.platform import (
    Runtime,
    gateway_runtime,
    mesh_identities,
    resolve_for,
    service_health,
    supervisor_rpc,
    write_envoy_files,
)


def _wait_cluster_healthy(rt: Runtime, cluster: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service_health(rt).get(cluster):
            return
        time.sleep(0.2)
    raise StartupError(f"{cluster} did not pass the gateway's health check within {timeout:.0f}s after rotation")


def _cluster_updates(rt: Runtime) -> dict[str, str]:
    """cluster -> when the gateway last took its configuration (Envoy's config dump)."""
    try:
        dump = httpx.get(f"{rt.admin_url}/config_dump?resource=dynamic_active_clusters", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {c["cluster"]["name"]: c.get("last_updated", "") for c in dump.get("configs", [])}


def _wait(predicate: Callable[[], bool], failure: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise StartupError(failure)
        time.sleep(0.2)


def rotate_certificates(state: StateDir, progress: Callable[[str], None] = lambda _: None) -> list[str]:
    rt = Runtime.load(state)
    spec = load_mesh(rt.mesh_file)
    identities = mesh_identities(spec)
    previous_gateway = (state.pki / "gateway.crt").read_bytes()
    rotated = rotate(state.pki, identities)
    write_callers_bundle(ensure_pki(state.pki, identities), previous_gateway)
    progress(f"re-issued {len(rotated)} certificates")
    rpc = supervisor_rpc(state)
    for component, service, version in components(spec):
        rpc.stopProcess(component)
        rpc.startProcess(component)
        _wait_cluster_healthy(rt, cluster_name(service, version))
        progress(f"{component} restarted with its new certificate")
    grt = gateway_runtime(state, rt, spec.identity)
    clusters = [cluster_name(service, version) for _, service, version in components(spec)]
    before = _cluster_updates(rt)
    write_envoy_files(render_envoy(resolve_for(spec, rt), grt), state.gateway, grt.xds_dir)
    # The switch replaces the clusters' TLS settings: Envoy warms them and health-checks them again. Done means
    # Envoy took the new clusters and every backend passes again, not just that the files were written.
    _wait(lambda: all(_cluster_updates(rt).get(c) not in (None, before.get(c)) for c in clusters),
          "the gateway did not take its new certificate within 30s")
    for cluster in clusters:
        _wait_cluster_healthy(rt, cluster)
    progress("gateway switched to its new certificate (live xDS update)")
    return rotated
