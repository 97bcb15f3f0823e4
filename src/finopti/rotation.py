"""Certificate rotation on a running platform: re-issue, roll the services one by one, then the gateway.

Order matters: services are restarted while the gateway still presents its old certificate, and they
trust both the old and the new one; only then does the gateway switch (a live xDS update, no restart)."""

import time
from collections.abc import Callable

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
    write_envoy_files(render_envoy(resolve_for(spec, rt), grt), state.gateway, grt.xds_dir)
    progress("gateway switched to its new certificate (live xDS update)")
    return rotated
