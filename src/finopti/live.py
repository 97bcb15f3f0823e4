"""Change a running platform without restarting it: `finopti mesh apply`, faults and canary drills.

Drills (faults, canary weights) are kept as overrides in the state dir, on top of mesh.yaml, so a later
`mesh apply` keeps them until `finopti fault clear`. Everything goes to Envoy through its watched files
(a live xDS update) and to the policy service through its bundle (reloaded on change)."""

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from finopti.errors import MeshSpecError, PlatformStateError
from finopti.gateway_sync import wait_for_gateway
from finopti.mesh.model import MeshSpec, load_mesh, parse_mesh
from finopti.mesh.resolved import resolve
from finopti.paths import StateDir
from finopti.platform import Runtime, render_gateway, write_atomically

OVERRIDES = "overrides.json"


def _overrides_file(state: StateDir) -> Path:
    return state.root / OVERRIDES


def load_overrides(state: StateDir) -> dict:
    try:
        return json.loads(_overrides_file(state).read_text())
    except FileNotFoundError:
        return {"faults": {}, "canary": {}}


def save_overrides(state: StateDir, overrides: dict) -> None:
    write_atomically(_overrides_file(state), json.dumps(overrides, indent=2))


def with_overrides(spec: MeshSpec, overrides: dict, source: str) -> MeshSpec:
    """mesh.yaml plus the drills; validated again so a bad drill is refused like a bad file."""
    raw = spec.model_dump(mode="json", exclude_none=True)
    for route in raw["routes"]:
        policy = route.setdefault("policy", {})
        if route["name"] in overrides.get("faults", {}):
            policy["fault"] = overrides["faults"][route["name"]]
        if route["backend"] in overrides.get("canary", {}):
            policy["canary"] = overrides["canary"][route["backend"]]
    return parse_mesh(raw, source=f"{source} + drills in {OVERRIDES}")


def _same_processes(old: MeshSpec, new: MeshSpec) -> None:
    def processes(spec: MeshSpec) -> dict:
        return {s.name: (tuple(s.versions), s.entrypoint, s.health) for s in spec.services}

    before, after = processes(old), processes(new)
    if before != after:
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        raise PlatformStateError(
            f"services changed ({', '.join(changed)}): `mesh apply` changes routes and policies live; "
            "new or changed services need `finopti down` and `finopti up`"
        )


def apply_mesh(state: StateDir, mesh_file: Path | None = None, wait: float = 30.0) -> MeshSpec:
    """Validate and push mesh.yaml (plus drills) to the running gateway and policy service; returns once the
    gateway serves it on every connection (`gateway_sync`). The policy service reads its bundle afresh on the
    next decision after a change, so it needs no wait."""
    rt = Runtime.load(state)
    mesh_file = Path(mesh_file or rt.mesh_file).resolve()
    running = load_mesh(state.running_mesh) if state.running_mesh.exists() else load_mesh(rt.mesh_file)
    base = load_mesh(mesh_file)
    _same_processes(running, base)
    spec = with_overrides(base, load_overrides(state), str(mesh_file))
    _, versions = render_gateway(spec, state, rt)
    write_atomically(state.running_mesh, yaml.safe_dump(base.model_dump(mode="json", exclude_none=True)))
    if str(mesh_file) != rt.mesh_file:
        rt.mesh_file = str(mesh_file)
        rt.save(state)
    wait_for_gateway(rt.admin_url, versions, wait)
    return spec


def refresh_policies(state: StateDir) -> MeshSpec:
    """The platform's policy directory changed (data.json, a .rego file): copy it into the running platform
    and re-render the gateway's own rules from it, with the mesh that is running. A broken file raises before
    anything is written, so the rules in force stay."""
    spec = effective_spec(state)
    rt = Runtime.load(state)
    _, versions = render_gateway(spec, state, rt)
    wait_for_gateway(rt.admin_url, versions)
    return spec


def effective_spec(state: StateDir) -> MeshSpec:
    rt = Runtime.load(state)
    base = load_mesh(state.running_mesh) if state.running_mesh.exists() else load_mesh(rt.mesh_file)
    return with_overrides(base, load_overrides(state), rt.mesh_file)


def inject_fault(state: StateDir, route: str, fault: dict) -> MeshSpec:
    spec = effective_spec(state)
    if route not in {r.name for r in spec.routes}:
        raise MeshSpecError(f"no route named '{route}' (routes: {', '.join(r.name for r in spec.routes)})")
    return _apply_drill(state, lambda overrides: overrides.setdefault("faults", {}).update({route: fault}))


def clear_faults(state: StateDir, route: str | None = None) -> MeshSpec:
    def clear(overrides: dict) -> None:
        if route is None:
            overrides["faults"] = {}
        else:
            overrides.setdefault("faults", {}).pop(route, None)

    return _apply_drill(state, clear)


def set_canary(state: StateDir, service: str, weights: dict[str, int], pin_header: str = "x-canary") -> MeshSpec:
    spec = effective_spec(state)
    try:
        versions = spec.service(service).versions
    except KeyError:
        raise MeshSpecError(f"no service named '{service}'") from None
    given = sum(weights.values())
    remainder = versions[0]
    if remainder not in weights and given <= 100:
        weights = {remainder: 100 - given, **weights}  # the rest goes to the first (stable) version
    canary = {"weights": weights, "pin_header": pin_header}
    return _apply_drill(state, lambda overrides: overrides.setdefault("canary", {}).update({service: canary}))


def _apply_drill(state: StateDir, change: Callable[[dict], None]) -> MeshSpec:
    """Change the stored drills and apply them; a refused drill puts the previous ones back."""
    previous = load_overrides(state)
    overrides = load_overrides(state)
    change(overrides)
    save_overrides(state, overrides)
    try:
        return apply_mesh(state)
    except Exception:
        save_overrides(state, previous)  # a refused drill leaves nothing behind
        raise


def policy_table(spec: MeshSpec) -> list[dict]:
    """The effective policy of every route, for `finopti mesh show`."""
    rows = []
    for route in resolve(spec).routes:
        rows.append({
            "route": route.name,
            "listener": route.listener,
            "path": route.path,
            "backend": route.backend,
            "allowed_callers": None if route.allowed_callers is None else list(route.allowed_callers),
            "policy": route.policy.model_dump(mode="json", exclude_none=True),
        })
    return rows
