"""The compose bundle's telemetry: Loki, the log collectors (Alloy by default, Promtail as a profile) and
Prometheus, rendered so they label logs and metrics the way the local platform does.

Logs: stream labels are only `job="finopti"`, `service` and `level` (what the dashboards select on);
`trace_id`, `span_id`, `request_id`, `user` and `route` travel as structured metadata, never as labels. The
`logs:` section of mesh.yaml gives Loki its retention and creation grace period, and Alloy and Promtail the same
multiline rule as the local collector.
"""

from finopti.deploy.apisix import metrics_path
from finopti.deploy.edge_controls import alloy_redaction_stages, promtail_redaction_stages
from finopti.deploy.topology import EXPORT_PORT, GATEWAY, LISTENERS, MESH_URL, PROJECT
from finopti.mesh.model import Logs, MeshSpec
from finopti.mesh.resolved import ResolvedMesh
from finopti.observability import (
    ScrapeTargets,
    render_alert_rules,
    render_prometheus_config,
    render_recording_rules,
)

JOB = "finopti"
LOKI_PUSH = "http://loki:3100/loki/api/v1/push"
LABELS = ("service", "level")
METADATA = ("trace_id", "span_id", "request_id", "user", "route")
DOCKER_SOCKET = "unix:///var/run/docker.sock"
COMPOSE_SERVICE_LABEL = "__meta_docker_container_label_com_docker_compose_service"
RULE_FILES = ("recording_rules.yml", "alert_rules.yml")


def _go_duration(seconds: float) -> str:
    """Seconds -> a Go duration (`168h`, `10m`, `500ms`), as Loki, Alloy and Promtail read them."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def render_loki(logs: Logs) -> dict:
    """Single binary, filesystem storage, structured metadata on (needs the tsdb index, schema v13)."""
    return {
        "auth_enabled": False,
        "server": {"http_listen_port": 3100, "grpc_listen_port": 9096, "log_level": "warn"},
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": "/loki",
            "storage": {"filesystem": {"chunks_directory": "/loki/chunks", "rules_directory": "/loki/rules"}},
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "schema_config": {"configs": [{
            "from": "2024-01-01", "store": "tsdb", "object_store": "filesystem", "schema": "v13",
            "index": {"prefix": "index_", "period": "24h"},
        }]},
        "limits_config": {
            "allow_structured_metadata": True,
            "retention_period": _go_duration(logs.retention),
            "reject_old_samples": True,
            "reject_old_samples_max_age": _go_duration(logs.retention),
            # Loki refuses lines dated further ahead (the local store keeps them at their arrival time instead).
            "creation_grace_period": _go_duration(logs.future_grace),
        },
        # Retention is applied by the compactor.
        "compactor": {"working_directory": "/loki/compactor", "retention_enabled": True,
                      "delete_request_store": "filesystem"},
        "analytics": {"reporting_enabled": False},
    }


def logstore_push_path(spec: MeshSpec) -> str | None:
    """The mesh route the `collector` may push logs to (the logstore service): its path on the gateway."""
    for route in spec.routes_on("mesh"):
        if "collector" in (route.allowed_callers or []) and route.path.endswith("/loki/api/v1/push"):
            return route.path
    return None


def logstore_push_url(spec: MeshSpec, mesh_url: str = MESH_URL) -> str | None:
    """That route as an URL on the gateway's mesh listener."""
    path = logstore_push_path(spec)
    return None if path is None else mesh_url + path


def push_urls(spec: MeshSpec) -> list[str]:
    """Loki itself, and the logstore service through the gateway (what the console and CLI read)."""
    return [LOKI_PUSH] + ([url] if (url := logstore_push_url(spec)) else [])


def _alloy_map(names: tuple[str, ...], same: bool = False) -> str:
    return "{" + ", ".join(f'{n} = "{n if same else ""}"' for n in names) + "}"


def _alloy_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alloy_endpoint(url: str, tls: dict[str, str] | None = None) -> str:
    """A `loki.write` endpoint; `tls`: Alloy's tls_config fields (ca_file, cert_file, key_file, server_name)."""
    block = "".join(f"      {k} = {_alloy_string(v)}\n" for k, v in (tls or {}).items())
    return f'  endpoint {{\n    url = "{url}"\n' + (f"    tls_config {{\n{block}    }}\n" if tls else "") + "  }\n"


def alloy_pipeline(spec: MeshSpec, endpoints: list[str], first_stages: str = "") -> str:
    """`loki.process "finopti"` and `loki.write "finopti"`: the parsing, labels and structured metadata every
    rendering of the collector shares (compose reads containers, Kubernetes pod log files; `first_stages`
    unwraps what the source adds, e.g. the container runtime's line format)."""
    fields = (*LABELS, *METADATA)
    multiline = spec.logs.multiline
    return f"""loki.process "{PROJECT}" {{
{first_stages}  // A traceback (any line the first-line rule does not match) joins the entry before it.
  stage.multiline {{
    firstline     = {_alloy_string(multiline.firstline)}
    max_wait_time = "{_go_duration(multiline.max_wait)}"
    max_lines     = {multiline.max_lines}
  }}
{alloy_redaction_stages(JOB)}  stage.json {{
    expressions = {_alloy_map(fields, same=True)}
  }}
  // Few streams: only service and level are labels.
  stage.labels {{
    values = {_alloy_map(LABELS)}
  }}
  // Unbounded values travel per line, as structured metadata.
  stage.structured_metadata {{
    values = {_alloy_map(METADATA)}
  }}
  forward_to = [loki.write.{PROJECT}.receiver]
}}

loki.write "{PROJECT}" {{
{"".join(endpoints)}}}
"""


def render_alloy(spec: MeshSpec) -> str:
    """Alloy's configuration language: discover this project's containers, join multiline entries, parse JSON,
    label, push."""
    endpoints = [alloy_endpoint(url) for url in push_urls(spec)]
    return f"""// Rendered from mesh.yaml by finopti; do not edit.
// Containers of the compose project `{PROJECT}` only, read through the Docker socket (mounted read-only).
discovery.docker "{PROJECT}" {{
  host = "{DOCKER_SOCKET}"
  filter {{
    name   = "label"
    values = ["com.docker.compose.project={PROJECT}"]
  }}
}}

// Every stream gets job="{JOB}" and, until its JSON says otherwise, the compose service as `service`.
discovery.relabel "{PROJECT}" {{
  targets = discovery.docker.{PROJECT}.targets
  rule {{
    source_labels = ["{COMPOSE_SERVICE_LABEL}"]
    target_label  = "service"
  }}
  rule {{
    target_label = "job"
    replacement  = "{JOB}"
  }}
}}

loki.source.docker "{PROJECT}" {{
  host          = "{DOCKER_SOCKET}"
  targets       = discovery.docker.{PROJECT}.targets
  relabel_rules = discovery.relabel.{PROJECT}.rules
  forward_to    = [loki.process.{PROJECT}.receiver]
}}

""" + alloy_pipeline(spec, endpoints)


def render_promtail(spec: MeshSpec) -> dict:
    """The same pipeline for Promtail (end of life 2026-03-02), kept as the `promtail` compose profile."""
    return {
        "server": {"http_listen_port": 9080, "grpc_listen_port": 0, "log_level": "warn"},
        "positions": {"filename": "/var/lib/promtail/positions.yaml"},
        "clients": [{"url": url} for url in push_urls(spec)],
        "scrape_configs": [{
            "job_name": PROJECT,
            "docker_sd_configs": [{
                "host": DOCKER_SOCKET,
                "refresh_interval": "5s",
                "filters": [{"name": "label", "values": [f"com.docker.compose.project={PROJECT}"]}],
            }],
            "relabel_configs": [
                {"source_labels": [COMPOSE_SERVICE_LABEL], "target_label": "service"},
                {"target_label": "job", "replacement": JOB},
            ],
            "pipeline_stages": [
                {"multiline": {"firstline": spec.logs.multiline.firstline,
                               "max_wait_time": _go_duration(spec.logs.multiline.max_wait),
                               "max_lines": spec.logs.multiline.max_lines}},
                *promtail_redaction_stages(JOB),
                {"json": {"expressions": {n: n for n in (*LABELS, *METADATA)}}},
                {"labels": {n: None for n in LABELS}},
                {"structured_metadata": {n: None for n in METADATA}},
            ],
        }],
    }


def render_prometheus(spec: MeshSpec, mesh: ResolvedMesh) -> dict[str, dict]:
    """prometheus.yml plus the same recording and alert rules as the local platform.

    Every service version is scraped through the gateway's metrics listener (Prometheus has no route to a
    service); the gateway job reads APISIX's own exporter.
    """
    metrics = f"{GATEWAY}:{LISTENERS['metrics']}"
    targets = ScrapeTargets(
        gateway_admin=f"{GATEWAY}:{EXPORT_PORT}",
        services={s.name: {v: metrics for v in s.versions} for s in spec.services},
    )
    config = render_prometheus_config(spec, targets, rule_files=list(RULE_FILES))
    gateway, services = config["scrape_configs"]
    gateway["metrics_path"] = "/apisix/prometheus/metrics"
    gateway.pop("metric_relabel_configs")  # Envoy's tag names; APISIX labels by route name already
    for group in services["static_configs"]:
        labels = group["labels"]
        labels["__metrics_path__"] = metrics_path(labels["service"], labels["version"])
    return {
        "prometheus.yml": config,
        "recording_rules.yml": render_recording_rules(mesh),
        "alert_rules.yml": render_alert_rules(mesh),
    }
