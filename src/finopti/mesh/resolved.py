"""The resolved mesh (IR): `mesh.yaml` plus `policies/data.json`, resolved once into plain frozen values
that every renderer reads (Envoy, gateway authorization, APISIX, Kubernetes, Prometheus rules), so no
renderer re-derives policy and two renderers cannot disagree about what a route means.

    mesh = resolve(spec, load_authz_data(policy_dir))    # or resolve(spec) when no renderer needs actions

    ResolvedMesh
      gateway, identity            as in mesh.yaml (frozen pydantic values)
      routes: tuple[ResolvedRoute] in mesh.yaml order; `most_specific_first(mesh.routes_on("edge"))` is
                                   the order a gateway must try them in
      backends: tuple[ResolvedBackend]  services (mesh.yaml order), then external components
      authz: AuthzData | None      roles of users/groups and agents' actions; None when not loaded
      route(name) / backend(name) / routes_on(listener) / services

    ResolvedRoute
      name, listener ("edge"|"mesh"), path, exact, rewrite (None: path kept)
      backend (name), external (bool), versions (the backend's; () for an external component)
      auth ("required"|"anonymous"), allowed_callers (tuple | None: any mesh identity)
      roles (tuple | None: not declared; "*" in it: any role), any_role (bool)
      authz ("native": decided by the gateway's own rules; "rego": the policy service on every request)
      policy: RoutePolicy          the effective policy (route fields over the service's defaults)
      actions_prefix               the gateway path under which the backend's `/v1/actions/<action>` lie
                                   (None: the route cannot reach them)
      actions: tuple[RouteAction] | None   for an agent backend (listed in data.json): each action with the
                                   roles that may run it *on this route* (the action's roles, narrowed
                                   by the route's own `roles:` when it declares some); None otherwise
      is_agent (bool)

    ResolvedBackend
      name, external, versions, health
      circuit_breaker, retry_budget_percent   Envoy keeps both per cluster: the service's policy or,
                                   failing that, the first route to it that sets one
      actions: tuple[ActionRule] | None  the agent's actions as data.json declares them
      url                          an external service's address (an LLM API); None for the rest

    AuthzData (policies/data.json, `finopti.roles` and `finopti.agents`)
      user_roles: {email: (role, ...)}, group_roles: {group: (role, ...)}
      agents: {agent: {action: ActionRule(name, roles, mutates)}}
      users_with(role) / groups_with(role)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finopti.errors import FinoptiError
from finopti.mesh.model import CircuitBreaker, Gateway, Identity, MeshSpec, Route, RoutePolicy

# Where every agent serves its actions (`POST /v1/actions/<action>`, see finopti.services.agent).
ACTIONS_PATH = "/v1/actions/"
ACTION_PATTERN = r"^[a-z][a-z0-9_]*$"
ROLE_PATTERN = r"^[a-z][a-z0-9_-]*$"
ANY_ROLE = "*"


class AuthzDataError(FinoptiError):
    """policies/data.json is missing, unreadable or does not have the expected shape."""

    exit_code = 2


# ---------------------------------------------------------------- policies/data.json


@dataclass(frozen=True)
class ActionRule:
    name: str
    roles: tuple[str, ...]
    mutates: bool  # changes resources (stop, resize, delete...), as opposed to reading them


@dataclass(frozen=True)
class AuthzData:
    user_roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    group_roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    agents: dict[str, dict[str, ActionRule]] = field(default_factory=dict)

    def users_with(self, role: str) -> tuple[str, ...]:
        return tuple(sorted(u for u, roles in self.user_roles.items() if role in roles))

    def groups_with(self, role: str) -> tuple[str, ...]:
        return tuple(sorted(g for g, roles in self.group_roles.items() if role in roles))

    def roles(self) -> tuple[str, ...]:
        """Every role anyone can hold."""
        held = {r for roles in (*self.user_roles.values(), *self.group_roles.values()) for r in roles}
        return tuple(sorted(held))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ActionModel(_Strict):
    roles: list[str] = Field(min_length=1, description="roles that may run the action")
    mutates: bool


class _AgentModel(_Strict):
    actions: dict[str, _ActionModel]


class _RolesModel(_Strict):
    users: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}


class _DataModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # other documents may live under `finopti` too
    roles: _RolesModel = _RolesModel()
    agents: dict[str, _AgentModel] = {}


def parse_authz_data(doc: object, source: str = "data.json") -> AuthzData:
    """The `finopti` document of data.json as AuthzData; every problem names the file and the field."""
    if not isinstance(doc, dict) or not isinstance(doc.get("finopti", {}), dict):
        raise AuthzDataError(f"{source}: expected an object with a `finopti` object at the top level")
    try:
        model = _DataModel.model_validate(doc.get("finopti", {}))
    except ValidationError as exc:
        problems = [f"finopti.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise AuthzDataError(f"{source}: invalid role data:\n  " + "\n  ".join(problems)) from None
    bad = [f"finopti.agents.{a}.actions.{n}: action names match {ACTION_PATTERN}"
           for a, agent in model.agents.items() for n in agent.actions if not re.match(ACTION_PATTERN, n)]
    bad += [f"{where}: role '{r}' does not match {ROLE_PATTERN}"
            for where, roles in _role_lists(model) for r in roles if not re.match(ROLE_PATTERN, r)]
    if bad:
        raise AuthzDataError(f"{source}: invalid role data:\n  " + "\n  ".join(bad))
    return AuthzData(
        user_roles={u: tuple(r) for u, r in model.roles.users.items()},
        group_roles={g: tuple(r) for g, r in model.roles.groups.items()},
        agents={a: {n: ActionRule(n, tuple(rule.roles), rule.mutates) for n, rule in agent.actions.items()}
                for a, agent in model.agents.items()},
    )


def _role_lists(model: _DataModel):
    for user, roles in model.roles.users.items():
        yield f"finopti.roles.users.{user}", roles
    for group, roles in model.roles.groups.items():
        yield f"finopti.roles.groups.{group}", roles
    for agent_name, agent in model.agents.items():
        for name, action in agent.actions.items():
            yield f"finopti.agents.{agent_name}.actions.{name}.roles", action.roles


def load_authz_data(policy_dir: Path | str) -> AuthzData:
    path = Path(policy_dir) / "data.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise AuthzDataError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise AuthzDataError(f"{path}: not valid JSON: {exc}") from None
    return parse_authz_data(doc, str(path))


# ---------------------------------------------------------------- the resolved mesh


@dataclass(frozen=True)
class RouteAction:
    name: str
    roles: tuple[str, ...]  # who may run it on this route; () nobody
    mutates: bool


@dataclass(frozen=True)
class ResolvedRoute:
    name: str
    listener: str
    path: str
    exact: bool
    rewrite: str | None
    backend: str
    external: bool
    versions: tuple[str, ...]
    auth: str
    allowed_callers: tuple[str, ...] | None
    roles: tuple[str, ...] | None
    authz: str
    policy: RoutePolicy
    actions_prefix: str | None
    actions: tuple[RouteAction, ...] | None
    external_url: str | None = None  # the address of the external service it leads to, if declared

    @property
    def any_role(self) -> bool:
        return self.roles is not None and ANY_ROLE in self.roles

    @property
    def is_agent(self) -> bool:
        return self.actions is not None

    def action(self, name: str) -> RouteAction | None:
        return next((a for a in self.actions or () if a.name == name), None)


@dataclass(frozen=True)
class ResolvedBackend:
    name: str
    external: bool
    versions: tuple[str, ...]
    health: str | None
    circuit_breaker: CircuitBreaker | None
    retry_budget_percent: float | None
    actions: tuple[ActionRule, ...] | None
    url: str | None = None  # an external service's address (scheme://host:port); None for platform components


@dataclass(frozen=True)
class ResolvedMesh:
    gateway: Gateway
    identity: Identity
    routes: tuple[ResolvedRoute, ...]
    backends: tuple[ResolvedBackend, ...]
    authz: AuthzData | None = None

    def route(self, name: str) -> ResolvedRoute:
        return next(r for r in self.routes if r.name == name)

    def backend(self, name: str) -> ResolvedBackend:
        return next(b for b in self.backends if b.name == name)

    def routes_on(self, listener: str) -> list[ResolvedRoute]:
        return [r for r in self.routes if r.listener == listener]

    @property
    def services(self) -> tuple[ResolvedBackend, ...]:
        """The mesh services (not external components), in mesh.yaml order."""
        return tuple(b for b in self.backends if not b.external)


def most_specific_first(routes: list[ResolvedRoute]) -> list[ResolvedRoute]:
    """The order a gateway tries routes in: exact paths, then longer prefixes before shorter ones."""
    return sorted(routes, key=lambda r: (not r.exact, -len(r.path)))


def actions_prefix(route: Route) -> str | None:
    """The gateway path prefix that reaches the backend's ACTIONS_PATH through this route's rewrite."""
    if route.exact:
        return None  # an exact route reaches one path only; no action can be named in it
    rewrite = route.rewrite if route.rewrite is not None else route.path
    if ACTIONS_PATH.startswith(rewrite):
        return route.path + ACTIONS_PATH[len(rewrite):]
    return None


def _route_actions(route: Route, agent: dict[str, ActionRule]) -> tuple[RouteAction, ...]:
    declared = None if route.roles is None or ANY_ROLE in route.roles else set(route.roles)
    return tuple(
        RouteAction(rule.name, tuple(r for r in rule.roles if declared is None or r in declared), rule.mutates)
        for rule in agent.values()
    )


def _backend_protection(spec: MeshSpec, service: str) -> tuple[CircuitBreaker | None, float | None]:
    own = [] if spec.is_external(service) else [spec.service(service).policy]
    policies = own + [spec.effective_policy(r) for r in spec.routes if r.backend == service]
    breaker = next((p.circuit_breaker for p in policies if p.circuit_breaker is not None), None)
    budget = next((p.retries.budget_percent for p in policies if p.retries is not None), None)
    return breaker, budget


def resolve(spec: MeshSpec, authz: AuthzData | None = None) -> ResolvedMesh:
    agents = authz.agents if authz is not None else {}
    routes = []
    for route in spec.routes:
        external = spec.is_external(route.backend)
        agent = None if external or authz is None else agents.get(route.backend)
        routes.append(ResolvedRoute(
            name=route.name,
            listener=route.listener,
            path=route.path,
            exact=route.exact,
            rewrite=route.rewrite,
            backend=route.backend,
            external=external,
            versions=() if external else tuple(spec.service(route.backend).versions),
            auth=route.auth,
            allowed_callers=None if route.allowed_callers is None else tuple(route.allowed_callers),
            roles=None if route.roles is None else tuple(route.roles),
            authz=route.authz,
            policy=spec.effective_policy(route),
            actions_prefix=None if external else actions_prefix(route),
            external_url=declared.url if (declared := spec.external_service(route.backend)) else None,
            actions=None if agent is None else _route_actions(route, agent),
        ))
    backends = []
    for service in spec.services:
        breaker, budget = _backend_protection(spec, service.name)
        agent = agents.get(service.name)
        backends.append(ResolvedBackend(
            name=service.name, external=False, versions=tuple(service.versions), health=service.health,
            circuit_breaker=breaker, retry_budget_percent=budget,
            actions=None if agent is None else tuple(agent.values()),
        ))
    for name in spec.external_names:
        declared = spec.external_service(name)
        breaker, budget = _backend_protection(spec, name) if declared else (None, None)
        backends.append(ResolvedBackend(name=name, external=True, versions=(), health=None, circuit_breaker=breaker,
                                        retry_budget_percent=budget, actions=None,
                                        url=declared.url if declared else None))
    return ResolvedMesh(gateway=spec.gateway, identity=spec.identity, routes=tuple(routes),
                        backends=tuple(backends), authz=authz)
