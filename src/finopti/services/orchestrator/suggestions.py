"""Example prompts for the signed-in user: what exists, limited to what the user may do.

- What exists: the assistant's examples (`examples.examples`), built from the inventory read through the mesh
  as the user, so a suggestion never names an instance that is not there.
- What the user may do: each example's agent action is put to the gateway's own policy bundle (the Rego in the
  running policy directory, evaluated in-process as the policy service does) for the hop the orchestrator
  would make. Nothing here authorizes anything: the gateway still decides every real request.
- Only read-only actions: an example is one click away, a change to the cloud never is.
"""

from pathlib import Path

from finopti.policy.engine import PolicyEngine, PolicyError
from finopti.policy.envoy import build_input_from_envoy, load_route_table, match_route

LIMIT = 8
# The chips lead with one question of each kind people come for (a cost trend, a forecast, waste, usage, a
# breakdown, the inventory, the platform's errors), then the catalog's order; always only what the user may run.
FIRST = ("compare_costs", "forecast_costs", "find_idle_instances", "query_time_series", "estimate_monthly_cost",
         "detect_cost_anomalies", "list_instances", "query_platform_logs")


class ActionPermissions:
    """May a user run an agent action? Asked of the running policy bundle, for the orchestrator's hop."""

    def __init__(self, policy_dir: Path):
        self.policy_dir = Path(policy_dir)
        self._engine: PolicyEngine | None = None
        self._stamp: tuple = ()

    def _current(self) -> PolicyEngine:
        # Reload when the bundle changes (`mesh apply` rewrites routes.json, role data may be edited).
        stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.policy_dir.glob("*.*")))
        if self._engine is None or stamp != self._stamp:
            self._engine, self._stamp = PolicyEngine(self.policy_dir), stamp
        return self._engine

    def allowed(self, user: str, groups: list[str], agent: str, action: str) -> bool:
        path = f"/{agent}/v1/actions/{action}"
        try:
            engine = self._current()
            route = match_route(load_route_table(self.policy_dir), "mesh", path)
        except (PolicyError, OSError, ValueError):
            return False  # no policy to ask: offer nothing rather than something that will be refused
        headers = {"x-user-email": user, "x-user-groups": ",".join(groups)}
        policy_input = build_input_from_envoy("POST", path, headers, route, "mesh", "orchestrator")
        return engine.decide(policy_input).allow


def for_user(examples: list[dict], permissions: ActionPermissions, user: str, groups: list[str],
             limit: int = LIMIT) -> list[dict]:
    """The read-only examples whose action the user's roles allow, at most `limit`: FIRST's, then the catalog's."""
    decided: dict[tuple[str, str], bool] = {}
    out = []
    rank = {action: i for i, action in enumerate(FIRST)}
    for example in sorted(examples, key=lambda e: rank.get(e["action"], len(FIRST))):
        if example.get("mutates"):
            continue
        key = (example["agent"], example["action"])
        if key not in decided:
            decided[key] = permissions.allowed(user, groups, *key)
        if decided[key]:
            out.append(example)
        if len(out) >= limit:
            break
    return out
