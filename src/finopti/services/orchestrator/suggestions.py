"""Example prompts for the signed-in user, built from what exists and what the user may do.

- What exists: the instances the user can see, read through the mesh as the user (gcloud-agent's
  `list_instances`, or monitoring-agent's `list_monitored_instances` for a monitoring-only role), so a suggestion
  never names an instance that is not there.
- What the user may do: each suggestion's agent action is put to the gateway's own policy bundle (the Rego in
  the running policy directory, evaluated in-process as the policy service does) for the hop the orchestrator
  would make. Nothing here authorizes anything: the gateway still decides every real request.
"""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from finopti.policy.engine import PolicyEngine, PolicyError
from finopti.policy.envoy import build_input_from_envoy, load_route_table, match_route


@dataclass(frozen=True)
class Template:
    agent: str
    action: str
    prompt: str  # {instance}, {zone}: filled from the inventory
    description: str


TEMPLATES = (
    Template("gcloud-agent", "find_idle_instances", "find idle instances", "running instances with almost no CPU"),
    Template("gcloud-agent", "estimate_monthly_cost", "monthly cost by team", "the monthly bill per team label"),
    Template("gcloud-agent", "rightsizing_recommendations", "rightsizing recommendations",
             "machine types to shrink or grow"),
    Template("monitoring-agent", "query_time_series", "cpu utilization of {instance} over 3 days",
             "an instance's CPU, hour by hour"),
    Template("gcloud-agent", "list_instances", "list instances in {zone}", "the instances of one zone"),
    Template("gcloud-agent", "list_disks", "list unattached disks", "disks billed for nothing"),
    Template("gcloud-agent", "describe_instance", "describe instance {instance}", "one instance's details and price"),
    Template("gcloud-agent", "estimate_monthly_cost", "monthly cost per instance", "the monthly bill per instance"),
    Template("monitoring-agent", "list_metrics", "list metrics", "what utilization can be queried"),
)  # read-only on purpose: an example is one click away, a change to the cloud never is

Inventory = list[dict]
FetchInventory = Callable[[str, str], Awaitable[Inventory | None]]  # (agent, action) -> rows, None if refused


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


def _fill(template: Template, inventory: Inventory) -> str | None:
    if not inventory:
        return None
    running = [i for i in inventory if i.get("state") == "RUNNING"] or inventory
    # A stable pick per day, not always the first name: the examples show the inventory's variety.
    rng = random.Random(f"{template.prompt}:{time.strftime('%Y-%m-%d')}")
    values = {}
    if "{instance}" in template.prompt:
        values["instance"] = rng.choice(running)["name"]
    if "{zone}" in template.prompt:
        zones = sorted({i["zone"] for i in inventory if i.get("zone")})
        if not zones:
            return None
        values["zone"] = rng.choice(zones)
    return template.prompt.format(**values)


class Suggestions:
    """Per user, cached for `ttl` seconds: the inventory and the policy change rarely, a page loads often."""

    def __init__(self, permissions: ActionPermissions, fetch: FetchInventory, ttl: float = 60.0, limit: int = 8):
        self.permissions = permissions
        self.fetch = fetch
        self.ttl = ttl
        self.limit = limit
        self._cache: dict[tuple, tuple[float, list[dict]]] = {}
        self._lock = asyncio.Lock()

    async def _inventory(self, allowed: set[tuple[str, str]]) -> Inventory:
        for agent, action in (("gcloud-agent", "list_instances"), ("monitoring-agent", "list_monitored_instances")):
            if (agent, action) in allowed:
                rows = await self.fetch(agent, action)
                if rows:
                    return rows
        return []

    async def for_user(self, user: str, groups: list[str]) -> list[dict]:
        key = (user, tuple(sorted(groups)))
        cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        wanted = {(t.agent, t.action) for t in TEMPLATES} | {
            ("gcloud-agent", "list_instances"), ("monitoring-agent", "list_monitored_instances")}
        allowed = {pair for pair in wanted if self.permissions.allowed(user, groups, *pair)}
        inventory = await self._inventory(allowed) if any("{" in t.prompt for t in TEMPLATES) else []
        out = []
        for t in TEMPLATES:
            if (t.agent, t.action) not in allowed:
                continue
            prompt = _fill(t, inventory) if "{" in t.prompt else t.prompt
            if prompt:
                out.append({"prompt": prompt, "agent": t.agent, "action": t.action, "description": t.description,
                            "mutates": False})
        out = out[: self.limit]
        self._cache[key] = (time.monotonic(), out)
        if len(self._cache) > 1000:  # users come and go; keep the memory bounded
            self._cache.pop(next(iter(self._cache)))
        return out
