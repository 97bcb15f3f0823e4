"""Render the route table the Rego policy reads (`policies/routes.json`) from the resolved mesh.

Per route: `listener`, `path_prefix`, `exact`, `auth`, `backend`, `allowed_callers`, `roles`, and for a
route that can reach an agent's actions, `actions_prefix` (the policy reads the action after it and
looks it up in data.json's `agents`).
"""

from finopti.mesh.resolved import ResolvedMesh


def render_route_data(mesh: ResolvedMesh) -> dict:
    routes = {}
    for route in mesh.routes:
        entry: dict = {"listener": route.listener, "path_prefix": route.path, "backend": route.backend}
        if route.exact:
            entry["exact"] = True
        if route.auth != "required":
            entry["auth"] = route.auth
        if route.allowed_callers is not None:
            entry["allowed_callers"] = list(route.allowed_callers)
        if route.roles is not None:
            entry["roles"] = list(route.roles)
        if route.actions_prefix is not None:
            entry["actions_prefix"] = route.actions_prefix
        routes[route.name] = entry
    return {"finopti": {"routes": routes}}
