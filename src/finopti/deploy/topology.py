"""Who runs where in the compose bundle: one container per service version, each alone with the gateway
on its own network, and the addresses every renderer of the bundle agrees on."""

import ipaddress
import re
from dataclasses import dataclass

from finopti.mesh.model import MeshSpec

PROJECT = "finopti"  # the compose project name; the log collectors discover only its containers
GATEWAY = "apisix"
# APISIX listeners: north-south (published), east-west (what services call), metrics of services for
# Prometheus (through the gateway, like every other call), and APISIX's own Prometheus export.
LISTENERS = {"edge": 9080, "mesh": 9081, "metrics": 9092}
EXPORT_PORT = 9091
STATUS_PORT = 7085  # APISIX's status API (/status/ready), container-local
READY_PORT = 9095  # the gateway's own readiness route (/ready), container-local
SERVICE_PORT = 8443  # every service serves mTLS on this port inside its container
MESH_URL = f"http://{GATEWAY}:{LISTENERS['mesh']}"
OBSERVABILITY_NETWORK = "observability"
METRICS_NETWORK = "metrics"
COLLECTOR_NETWORK = "collector"
POLICY_NETWORK = "policy"
EDGE_NETWORK = "edge"
# Fixed subnets: the gateway names a caller by the network its request arrives from. One /28 per network:
# the `metrics` network (caller `prometheus`), the `collector` network (caller `collector`, the log
# collector pushing to the logstore service), then one per service version in mesh.yaml order.
SUBNET_POOL = ipaddress.ip_network("10.231.0.0/16")


@dataclass(frozen=True)
class Engine:
    """A mesh service that compose runs as a real engine instead of our image (same API, same contract)."""

    container: str
    port: int


# The policy service is the local stand-in for OPA (same Rego, same REST API): compose runs OPA itself.
ENGINES = {"policy": Engine("opa", 8181)}


@dataclass(frozen=True)
class Backend:
    """One container of our image: a service version."""

    service: str
    version: str
    entrypoint: str
    health: str
    subnet: ipaddress.IPv4Network

    @property
    def name(self) -> str:
        return f"{self.service}-{_label(self.version)}"

    @property
    def network(self) -> str:
        return f"mesh-{self.name}"


@dataclass(frozen=True)
class Topology:
    backends: tuple[Backend, ...]
    metrics_subnet: ipaddress.IPv4Network
    collector_subnet: ipaddress.IPv4Network

    def backend(self, service: str, version: str) -> Backend:
        return next(b for b in self.backends if (b.service, b.version) == (service, version))

    def callers(self) -> dict[str, str]:
        """Subnet -> the caller name the policy sees for requests arriving from it."""
        table = {str(self.metrics_subnet): "prometheus", str(self.collector_subnet): "collector"}
        table.update({str(b.subnet): b.service for b in self.backends})
        return table


def _label(value: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", value.lower())


def plan(spec: MeshSpec) -> Topology:
    subnets = SUBNET_POOL.subnets(new_prefix=28)
    metrics, collector = next(subnets), next(subnets)
    backends = tuple(
        Backend(s.name, v, s.entrypoint, s.health, next(subnets))
        for s in spec.services if s.name not in ENGINES
        for v in s.versions
    )
    return Topology(backends, metrics, collector)
