"""What the Envoy renderer must add so the gateway's Prometheus metrics carry service, version and route.

Verified against Envoy 1.40 (`GET /stats/prometheus`):

- Clusters are named `<service>.<version>`. Envoy's default tag for the cluster name stops at the first
  dot, so `cluster.gcloud-agent.v1.upstream_rq_total` becomes `envoy_cluster_v1_upstream_rq_total
  {envoy_cluster_name="gcloud-agent"}`: the version leaks into the metric *name*. The extra tag below
  takes the version out of the name into `finopti_version`, giving
  `envoy_cluster_upstream_rq_total{envoy_cluster_name="gcloud-agent",finopti_version="v1"}`.
  (A custom tag named `envoy.cluster_name` cannot replace the default: Envoy applies defaults first and
  skips a second extractor of the same name.)
- A route with `stat_prefix: <route name>` emits `envoy_vhost_route_upstream_rq_total`,
  `_upstream_rq_xx`, `_upstream_rq_time_bucket` with labels `envoy_virtual_host` (our listener name,
  since each listener has one virtual host named after it) and `envoy_route` (the prefix).
"""

from finopti.mesh.resolved import ResolvedRoute

VERSION_TAG = "finopti.version"  # Prometheus label: finopti_version
# Versions look like v1, v2, v2-canary; the service part has no dots (see NAME_PATTERN in the model).
_VERSION_REGEX = r"^cluster\.[^.]+\.((v[0-9][a-z0-9-]*)\.)"


def envoy_stats_config() -> dict:
    """The bootstrap's `stats_config`: keep Envoy's default tags and add the cluster version tag."""
    return {"stats_tags": [{"tag_name": VERSION_TAG, "regex": _VERSION_REGEX}]}


def route_stat_prefix(route: ResolvedRoute) -> str:
    """The `stat_prefix` to set on the Envoy route for `route`: its mesh name (unique across listeners)."""
    return route.name
