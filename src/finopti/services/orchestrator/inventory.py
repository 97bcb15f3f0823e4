"""What exists, by name: the cloud's inventory (read through the tool servers, cached) and the platform's own
services. The parser recognises these names first, then works out what is asked about them.

The cache is shared by every user: it holds names only (no prices, no metrics), refreshed when older than
`ttl` and dropped after a change is executed. A refresh that fails keeps the last good copy."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger("finopti.orchestrator.inventory")

# The platform's own components whose logs can be asked about, beyond the mesh services.
PLATFORM_COMPONENTS = ("gateway", "collector")


@dataclass(frozen=True)
class Instance:
    name: str
    zone: str
    machine_type: str
    state: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Inventory:
    instances: tuple[Instance, ...] = ()
    disks: tuple[dict, ...] = ()
    buckets: tuple[str, ...] = ()
    zones: dict[str, str] = field(default_factory=dict)  # zone -> region
    machine_types: dict[str, dict] = field(default_factory=dict)  # name -> {downsize_to, upsize_to}
    services: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    fetched_at: float = 0.0

    @classmethod
    def from_tool(cls, data: dict, services: tuple[str, ...] = (), fetched_at: float | None = None) -> "Inventory":
        """From the `inventory` tool's answer (SandboxCloud.inventory)."""
        return cls(
            instances=tuple(
                Instance(i["name"], i["zone"], i["machine_type"], i["state"], dict(i.get("labels") or {}))
                for i in data.get("instances", [])
            ),
            disks=tuple(dict(d) for d in data.get("disks", [])),
            buckets=tuple(b["name"] for b in data.get("buckets", [])),
            zones={z["name"]: z["region"] for z in data.get("zones", [])},
            machine_types={m["name"]: m for m in data.get("machine_types", [])},
            services=tuple(services),
            projects=tuple(data.get("projects", [])),
            fetched_at=time.time() if fetched_at is None else fetched_at,
        )

    def instance(self, name: str) -> Instance | None:
        return next((i for i in self.instances if i.name == name), None)

    @property
    def labels(self) -> dict[str, set[str]]:
        """label key -> values seen on instances (the labels people filter instances by)."""
        out: dict[str, set[str]] = {}
        for inst in self.instances:
            for key, value in inst.labels.items():
                out.setdefault(key, set()).add(value)
        return out

    def regions(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for zone, region in self.zones.items():
            out.setdefault(region, []).append(zone)
        return out


Fetch = Callable[[], Awaitable[dict]]


class InventoryCache:
    """One inventory for the orchestrator, refreshed at most every `ttl` seconds (one refresh at a time)."""

    def __init__(self, fetch: Fetch, services: tuple[str, ...], ttl: float = 30.0):
        self.fetch = fetch
        self.services = services
        self.ttl = ttl
        self._current: Inventory | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """After a change: refresh on the next `get`, keeping the old names should that refresh fail."""
        if self._current is not None:
            self._current = replace(self._current, fetched_at=0.0)

    async def get(self) -> Inventory:
        current = self._current
        if current is not None and time.time() - current.fetched_at < self.ttl:
            return current
        async with self._lock:
            current = self._current
            if current is not None and time.time() - current.fetched_at < self.ttl:
                return current
            try:
                self._current = Inventory.from_tool(await self.fetch(), self.services)
            except Exception as exc:  # the tool servers may be down or refuse this user: keep what we had
                log.warning("inventory refresh failed: %s", exc, extra={"event": "inventory_refresh_failed"})
                if self._current is None:
                    return Inventory(services=self.services)
            return self._current



def platform_services(mesh_file: Path) -> tuple[str, ...]:
    """The platform's services whose logs can be asked about: mesh.yaml's services and the gateway, collector."""
    from finopti.errors import FinoptiError
    from finopti.mesh.model import load_mesh

    try:
        names = [s.name for s in load_mesh(mesh_file).services]
    except FinoptiError:
        names = []
    return tuple(dict.fromkeys([*names, *PLATFORM_COMPONENTS]))
