"""The meshes the renderers' parity tests walk: together their routes use every kind of policy mesh.yaml has
(timeouts, retries, breaker, rate limit, canary, fault)."""

import yaml
from conftest import REPO

from finopti.mesh.model import MeshSpec, load_mesh, parse_mesh
from finopti.mesh.resolved import resolve

EVERY_POLICY = {"timeout", "per_try_timeout", "retries", "circuit_breaker", "rate_limit", "canary", "fault"}


def fault_variant() -> MeshSpec:
    """The traffic fixture with a fault on its `fault` route: delay and abort, only for a header."""
    raw = yaml.safe_load((REPO / "tests" / "fixtures" / "traffic-mesh.yaml").read_text())
    fault = next(r for r in raw["routes"] if r["name"] == "fault")
    fault["policy"] = {"fault": {"delay": {"duration": "250ms", "percent": 50},
                                 "abort": {"status": 503, "percent": 12.5},
                                 "header": {"name": "x-finopti-fault", "value": "on"}}}
    raw["routes"].append({"name": "slow-write", "listener": "edge", "path": "/slow/", "rewrite": "/echo/",
                          "backend": "flaky", "roles": ["*"],
                          "policy": {"timeout": "8s", "idempotent": True,
                                     "retries": {"attempts": 3, "conditions": ["reset", "502", "504"]}}})
    return parse_mesh(raw, source="fault variant")


MESHES = {
    "platform": lambda: load_mesh(REPO / "mesh.yaml"),
    "traffic": lambda: load_mesh(REPO / "tests" / "fixtures" / "traffic-mesh.yaml"),
    "fault-variant": fault_variant,
}


def policies_used(spec: MeshSpec) -> set[str]:
    """The kinds of policy the routes of `spec` that a gateway serves (not external ones) have in effect."""
    return {kind for route in resolve(spec).routes if not route.external
            for kind in EVERY_POLICY if getattr(route.policy, kind) is not None}
