"""Render the route table the Rego policy reads (`policies/routes.json`) from mesh.yaml."""

from finopti.mesh.model import MeshSpec


def render_route_data(spec: MeshSpec) -> dict:
    routes = {}
    for route in spec.routes:
        entry: dict = {"listener": route.listener, "path_prefix": route.path}
        if route.exact:
            entry["exact"] = True
        if route.auth != "required":
            entry["auth"] = route.auth
        if route.allowed_callers is not None:
            entry["allowed_callers"] = list(route.allowed_callers)
        if route.roles is not None:
            entry["roles"] = list(route.roles)
        routes[route.name] = entry
    return {"finopti": {"routes": routes}}
