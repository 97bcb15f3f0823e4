"""Which traffic is the users' and which is the platform's own.

The platform's own: requests to the services that run the platform rather than answer users' questions — the
ui (pages, console assets, sign-in), the log store (the console's log queries and live tail, the collector's
pushes), Prometheus (the console's metric queries) and the policy service. Everything else (ask, the
orchestrator, agents, tool servers) is user traffic. Long-lived streams (Server-Sent Events: the live tail) are
a class of their own: their duration is how long someone watched, not a latency.

One definition, read by the Prometheus recording rules (a `traffic` label on route and service series), the
dashboards (user traffic by default), the trace search (user requests by default) and the service graph.
"""

from collections.abc import Iterable

PLATFORM_SERVICES = ("ui", "logstore", "prometheus", "policy", "collector")
USER, PLATFORM, STREAM = "user", "platform", "stream"
# A route whose timeout is at least this long is declared for a stream, not a request (mesh.yaml gives the live
# tail `timeout: 1h`); the gateway cannot tell a stream from a slow answer otherwise.
STREAM_TIMEOUT_SECONDS = 300.0


def route_traffic(backend: str, timeout: float | None) -> str:
    if timeout is not None and timeout >= STREAM_TIMEOUT_SECONDS:
        return STREAM
    return PLATFORM if backend in PLATFORM_SERVICES else USER


def classify_routes(mesh) -> dict[str, str]:
    """route name -> user | platform | stream, from the resolved mesh (finopti.mesh.resolved)."""
    return {r.name: route_traffic(r.backend, r.policy.timeout) for r in mesh.routes}


def service_traffic(service: str | None) -> str:
    """user | platform for a backend service (none: the gateway answered itself, on a user's request)."""
    return PLATFORM if service in PLATFORM_SERVICES else USER


def regex(names: Iterable[str]) -> str:
    """A PromQL/LogQL regex matching exactly these names (mesh names have no regex metacharacters); "^$" for
    none, which no name matches."""
    return "|".join(sorted(set(names))) or "^$"
