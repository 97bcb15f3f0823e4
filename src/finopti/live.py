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
from finopti.oplock import operation
from finopti.paths import StateDir
from finopti.platform import Runtime, render_gateway, running_runtime, write_atomically

OVERRIDES = "overrides.json"


def _overrides_file(state: StateDir) -> Path:
    return state.root / OVERRIDES


def load_overrides(state: StateDir) -> dict:
    path = _overrides_file(state)
    try:
        overrides = json.loads(path.read_text())
    except FileNotFoundError:
        return {"faults": {}, "canary": {}}
    except (OSError, ValueError) as exc:
        raise PlatformStateError(f"{path}: the drills in force cannot be read ({exc}); fix the file, or delete it to "
                                 "end every drill, then run `finopti mesh apply`") from None
    if not isinstance(overrides, dict) or not all(isinstance(overrides.get(k, {}), dict) for k in ("faults", "canary")):
        raise PlatformStateError(f"{path}: expected {{\"faults\": {{route: fault}}, \"canary\": {{service: split}}}}; "
                                 "fix the file, or delete it to end every drill, then run `finopti mesh apply`")
    return overrides


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


def _running_record(state: StateDir, rt: Runtime) -> MeshSpec:
    """The mesh the platform runs (mesh.running.yaml, as last started or applied). A damaged record is named, with
    the way out: `mesh apply` writes it again (see `apply_mesh`)."""
    if not state.running_mesh.exists():
        return load_mesh(rt.mesh_file)
    try:
        return load_mesh(state.running_mesh)
    except MeshSpecError as exc:
        raise MeshSpecError(f"the record of the running mesh is damaged ({exc}); `finopti mesh apply` writes it "
                            "again") from None


def _same_processes(old: MeshSpec | None, new: MeshSpec, source: Path, rt: Runtime) -> None:
    """What only a restart changes: the services (processes) and where the gateway listens (its ports were chosen
    and bound at `up`, and are not re-rendered live). Without a readable record of the running mesh (`old`), the
    services and versions running are those the platform chose ports for."""
    def processes(spec: MeshSpec) -> dict:
        if old is None:
            return {s.name: tuple(s.versions) for s in spec.services}
        return {s.name: (tuple(s.versions), s.entrypoint, s.health) for s in spec.services}

    before = processes(old) if old is not None else {name: tuple(ports) for name, ports in rt.service_ports.items()}
    after = processes(new)
    if before != after:
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        raise PlatformStateError(
            f"{source}: services changed ({', '.join(changed)}): `mesh apply` changes routes and policies live; "
            "new or changed services need `finopti down` and `finopti up`"
        )
    for name in ("edge", "mesh") if old is not None else ():
        was, now = getattr(old.gateway, name), getattr(new.gateway, name)
        for field in ("host", "port"):
            if getattr(was, field) != getattr(now, field):
                raise PlatformStateError(
                    f"{source}: gateway.{name}.{field} changed ({getattr(was, field)} -> {getattr(now, field)}): "
                    "the gateway's listeners are bound at start; `finopti down` and `finopti up` move them")


def apply_mesh(state: StateDir, mesh_file: Path | None = None, wait: float = 30.0, overrides: dict | None = None,
               what: str = "`finopti mesh apply`") -> MeshSpec:
    """Validate and push mesh.yaml (plus drills: those stored, or `overrides`, stored once written) to the running
    gateway and policy service; returns once the gateway serves it on every connection (`gateway_sync`). The
    policy service reads its bundle afresh on the next decision after a change, so it needs no wait.

    Everything is validated before anything is written, so a refused change leaves all as it was. Once written,
    the files and the records (mesh.running.yaml, drills) agree, even if the gateway is slow to take them: it
    serves them when it answers again (a restarted gateway reads them at start)."""
    with operation(state.root, what):
        rt = running_runtime(state)
        mesh_file = Path(mesh_file or rt.mesh_file).resolve()
        base = load_mesh(mesh_file)
        try:
            running = _running_record(state, rt)
        except MeshSpecError:
            running = None  # damaged: this apply writes it again
        _same_processes(running, base, mesh_file, rt)
        drills = load_overrides(state) if overrides is None else overrides
        spec = with_overrides(base, drills, str(mesh_file))
        _, versions = render_gateway(spec, state, rt)
        write_atomically(state.running_mesh, yaml.safe_dump(base.model_dump(mode="json", exclude_none=True)))
        if overrides is not None:
            save_overrides(state, overrides)
        if str(mesh_file) != rt.mesh_file:
            rt.mesh_file = str(mesh_file)
            rt.save(state)
        # Inside the lock: another operation's files would make this wait see versions it did not write.
        wait_for_gateway(rt.admin_url, versions, wait)
        return spec


def refresh_policies(state: StateDir) -> MeshSpec:
    """The platform's policy directory changed (data.json, a .rego file): copy it into the running platform
    and re-render the gateway's own rules from it, with the mesh that is running. A broken file raises before
    anything is written, so the rules in force stay."""
    with operation(state.root, "the policy service's re-render of the gateway's rules"):
        spec = effective_spec(state)
        rt = running_runtime(state)
        _, versions = render_gateway(spec, state, rt)
        wait_for_gateway(rt.admin_url, versions)
        return spec


def effective_spec(state: StateDir) -> MeshSpec:
    rt = Runtime.load(state)
    return with_overrides(_running_record(state, rt), load_overrides(state), rt.mesh_file)


def inject_fault(state: StateDir, route: str, fault: dict) -> MeshSpec:
    def change(spec: MeshSpec, overrides: dict) -> None:
        if route not in {r.name for r in spec.routes}:
            raise MeshSpecError(f"no route named '{route}' (routes: {', '.join(r.name for r in spec.routes)})")
        overrides.setdefault("faults", {})[route] = fault

    return _apply_drill(state, "`finopti fault inject`", change)


def clear_faults(state: StateDir, route: str | None = None) -> MeshSpec:
    def clear(_: MeshSpec, overrides: dict) -> None:
        if route is None:
            overrides["faults"] = {}
        else:
            overrides.setdefault("faults", {}).pop(route, None)

    return _apply_drill(state, "`finopti fault clear`", clear)


def set_canary(state: StateDir, service: str, weights: dict[str, int], pin_header: str = "x-canary") -> MeshSpec:
    def change(spec: MeshSpec, overrides: dict) -> None:
        try:
            versions = spec.service(service).versions
        except KeyError:
            raise MeshSpecError(f"no service named '{service}'") from None
        split = weights
        if versions[0] not in split and sum(split.values()) <= 100:
            split = {versions[0]: 100 - sum(split.values()), **split}  # the rest goes to the first (stable) version
        overrides.setdefault("canary", {})[service] = {"weights": split, "pin_header": pin_header}

    return _apply_drill(state, "`finopti canary set`", change)


def _apply_drill(state: StateDir, what: str, change: Callable[[MeshSpec, dict], None]) -> MeshSpec:
    """Change the drills in force and apply them, as one operation: a drill run at the same time waits, so neither
    is lost; a refused drill (validated before anything is written) leaves the previous ones in force."""
    with operation(state.root, what):
        overrides = load_overrides(state)
        change(effective_spec(state), overrides)
        return apply_mesh(state, overrides=overrides, what=what)


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
