"""The chart's observability: Alloy as a DaemonSet reading the pods' log files, Loki, Prometheus and Grafana as
manifests, with the compose bundle's configuration (the same Loki config, the same Alloy pipeline, the same
recording and alert rules, the same dashboards and datasources); only discovery differs (Kubernetes pods).
"""

from finopti.deploy.helm_template import Block, Fragment, Raw, Value
from finopti.deploy.kube_mesh import COLLECTOR, GRAFANA_PORT, LOKI_PORT, PROMETHEUS_PORT, SERVICE_SAN
from finopti.deploy.kube_workloads import (
    COMPONENT,
    MESH_URL,
    PKI_DIR,
    ROLE,
    SERVICE,
    VERSION,
    ca_certificate,
    cluster_service,
    container,
    deployment,
    empty_dir,
    identity_volume,
    image,
    labels,
    metadata,
    pod_spec,
    selector,
    service_account,
)
from finopti.deploy.observability import (
    JOB,
    LOKI_PUSH,
    RULE_FILES,
    alloy_endpoint,
    alloy_pipeline,
    logstore_push_url,
)
from finopti.deploy.topology import GATEWAY
from finopti.mesh.model import MeshSpec
from finopti.mesh.resolved import ResolvedMesh
from finopti.observability import render_alert_rules, render_prometheus_config, render_recording_rules
from finopti.observability.prometheus import GATEWAY_JOB, SERVICES_JOB, ScrapeTargets

POD_LOGS = "/var/log/pods"
NAMESPACE_ENV = "FINOPTI_NAMESPACE"
NODE_ENV = "FINOPTI_NODE"


def config_map(name: str, component: str, role: str, data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name, component, role), "data": data}


def files_config(name: str, component: str, role: str, pattern: str) -> dict:
    """A ConfigMap of the chart's files matching `pattern`, each under its base name."""
    return config_map(name, component, role, Raw(f'(.Files.Glob "{pattern}").AsConfig'))


def _pod_reader(component: str, role: str) -> list[dict]:
    """Read access to the namespace's pods (discovery), nothing else."""
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata(component, component, role),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": metadata(component, component, role),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": component},
         "subjects": [{"kind": "ServiceAccount", "name": component, "namespace": Value(".Release.Namespace")}]},
    ]


def _claim_template(size: str) -> dict:
    return {"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": Value(size, quote=True)}},
                     **_storage_class()}}


def _storage_class() -> dict:
    return {Fragment("finopti.storageClass"): None}


def stateful_set(component: str, role: str, pod: dict, size: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(component, component, role),
        "spec": {
            "serviceName": component,
            "replicas": 1,
            "selector": {"matchLabels": selector(component)},
            "template": {"metadata": {"labels": labels(component, role)}, "spec": pod},
            "volumeClaimTemplates": [_claim_template(size)],
        },
    }


def _http_probe(path: str, port: int) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": 10, "timeoutSeconds": 3}


# ---------------------------------------------------------------- Loki


def loki() -> list[tuple[dict, str | None]]:
    main = container(
        "loki", image("loki"), args=["-config.file=/etc/loki/config.yml"],
        ports=[{"name": "http", "containerPort": LOKI_PORT, "protocol": "TCP"}],
        readinessProbe=_http_probe("/ready", LOKI_PORT), resources=Block(".Values.loki.resources"),
        volumeMounts=[{"name": "config", "mountPath": "/etc/loki", "readOnly": True},
                      {"name": "data", "mountPath": "/loki"}, {"name": "tmp", "mountPath": "/tmp"}],
    )
    pod = pod_spec("loki", image("loki").uid, [main], [{"name": "config", "configMap": {"name": "loki"}},
                                                        empty_dir("tmp")])
    return [
        (files_config("loki", "loki", "observability", "files/loki/*"), None),
        (service_account("loki", "observability"), None),
        (stateful_set("loki", "observability", pod, ".Values.loki.storage"), None),
        (cluster_service("loki", "loki", "observability", {"http": LOKI_PORT}), None),
    ]


# ---------------------------------------------------------------- Alloy


def alloy_config(spec: MeshSpec) -> str:
    """Pods of this release's namespace on this node, their log files, then the compose pipeline (after the
    container runtime's line format is unwrapped)."""
    tls = {"ca_file": f"{PKI_DIR}/callers-ca.crt", "cert_file": f"{PKI_DIR}/tls.crt",
           "key_file": f"{PKI_DIR}/tls.key", "server_name": GATEWAY}
    endpoints = [alloy_endpoint(LOKI_PUSH)]
    if (url := logstore_push_url(spec, MESH_URL)) is not None:
        endpoints.append(alloy_endpoint(url, tls))
    rule = "  rule {{\n{}  }}\n".format
    relabel = "".join(rule(body) for body in (
        '    source_labels = ["__meta_kubernetes_pod_uid", "__meta_kubernetes_pod_container_name"]\n'
        '    separator     = "/"\n    target_label  = "__path__"\n'
        f'    replacement   = "{POD_LOGS}/*$1/*.log"\n',
        f'    source_labels = ["{_label(COMPONENT)}"]\n'
        '    target_label  = "service"\n',
        f'    target_label = "job"\n    replacement  = "{JOB}"\n',
    ))
    return f"""// Rendered from mesh.yaml by finopti; do not edit.
// This release's pods on this node (the namespace and node come from the pod's environment).
discovery.kubernetes "pods" {{
  role = "pod"
  namespaces {{
    names = [sys.env("{NAMESPACE_ENV}")]
  }}
  selectors {{
    role  = "pod"
    field = "spec.nodeName=" + sys.env("{NODE_ENV}")
  }}
}}

// Every stream gets job="{JOB}" and, until its JSON says otherwise, the pod's component as `service`.
discovery.relabel "pods" {{
  targets = discovery.kubernetes.pods.targets
{relabel}}}

local.file_match "pods" {{
  path_targets = discovery.relabel.pods.output
}}

loki.source.file "pods" {{
  targets    = local.file_match.pods.targets
  forward_to = [loki.process.finopti.receiver]
}}

""" + alloy_pipeline(spec, endpoints, first_stages="  // The container runtime's line format (time, stream, "
                     "partial flag) around each line.\n  stage.cri {}\n")


def alloy() -> list[tuple[dict, str | None]]:
    env = [{"name": NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": NODE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    main = container(
        "alloy", image("alloy"),
        args=["run", "--server.http.listen-addr=127.0.0.1:12345", "--storage.path=/var/lib/alloy/data",
              "/etc/alloy/config.alloy"],
        env=env, resources=Block(".Values.alloy.resources"),
        volumeMounts=[{"name": "config", "mountPath": "/etc/alloy", "readOnly": True},
                      {"name": "pods", "mountPath": POD_LOGS, "readOnly": True},
                      {"name": "data", "mountPath": "/var/lib/alloy/data"},
                      {"name": "pki", "mountPath": PKI_DIR, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}],
    )
    volumes = [{"name": "config", "configMap": {"name": COLLECTOR}},
               # Read-only, and only the pods' log directory of the node.
               {"name": "pods", "hostPath": {"path": POD_LOGS, "type": "Directory"}},
               # Positions per node, so a restarted collector goes on where it stopped.
               {"name": "data", "hostPath": {"path": "/var/lib/finopti-alloy", "type": "DirectoryOrCreate"}},
               identity_volume("collector", {"callers-ca.crt": ca_certificate("callers")}), empty_dir("tmp")]
    pod = pod_spec(COLLECTOR, image("alloy").uid, [main], volumes, automount=True)
    daemon_set = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata(COLLECTOR, COLLECTOR, "collector"),
        "spec": {"selector": {"matchLabels": selector(COLLECTOR)},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                 "template": {"metadata": {"labels": labels(COLLECTOR, "collector")}, "spec": pod}},
    }
    return [
        (files_config(COLLECTOR, COLLECTOR, "collector", "files/alloy/*"), None),
        (service_account(COLLECTOR, "collector"), None),
        *((doc, None) for doc in _pod_reader(COLLECTOR, "collector")),
        (daemon_set, None),
    ]


# ---------------------------------------------------------------- Prometheus


def _pods(role: str, port: str) -> dict:
    """Scrape every pod of a role in this namespace, on its named port."""
    return {
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"own_namespace": True},
                                   "selectors": [{"role": "pod", "label": f"{ROLE}={role}"}]}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port, "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "instance"},
        ],
    }


def _label(pod_label: str) -> str:
    return "__meta_kubernetes_pod_label_" + pod_label.replace(".", "_").replace("/", "_").replace("-", "_")


def prometheus_files(spec: MeshSpec, mesh: ResolvedMesh) -> dict[str, dict]:
    """prometheus.yml, with every pod found by the Kubernetes API, and the same rules as everywhere."""
    # The compose config's shape (jobs, labels), with discovery in place of fixed targets.
    targets = ScrapeTargets("", {s.name: {v: "" for v in s.versions} for s in spec.services})
    config = render_prometheus_config(spec, targets, rule_files=[f"/etc/prometheus/{f}" for f in RULE_FILES])
    gateway, services = config["scrape_configs"]
    assert gateway["job_name"] == GATEWAY_JOB and services["job_name"] == SERVICES_JOB
    gateway.pop("static_configs")
    gateway.pop("metric_relabel_configs")  # Envoy's tag names; APISIX labels by route name already
    gateway.update({"metrics_path": "/apisix/prometheus/metrics", **_pods("gateway", "export")})
    services.pop("static_configs")
    services.update(_pods("backend", "mesh"))
    services["relabel_configs"] += [
        {"source_labels": [_label(SERVICE)], "target_label": "service"},
        {"source_labels": [_label(VERSION)], "target_label": "version"},
    ]
    # Each pod itself, over mTLS with Prometheus's identity (services accept it, as on the local platform).
    services["scheme"] = "https"
    services["tls_config"] = {"ca_file": f"{PKI_DIR}/mesh-ca.crt", "cert_file": f"{PKI_DIR}/tls.crt",
                              "key_file": f"{PKI_DIR}/tls.key", "server_name": SERVICE_SAN}
    return {
        "prometheus.yml": config,
        "recording_rules.yml": render_recording_rules(mesh),
        "alert_rules.yml": render_alert_rules(mesh),
    }


def prometheus() -> list[tuple[dict, str | None]]:
    main = container(
        "prometheus", image("prometheus"),
        args=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
              Value('printf "--storage.tsdb.retention.time=%s" .Values.prometheus.retention', quote=True)],
        ports=[{"name": "http", "containerPort": PROMETHEUS_PORT, "protocol": "TCP"}],
        readinessProbe=_http_probe("/-/ready", PROMETHEUS_PORT), resources=Block(".Values.prometheus.resources"),
        volumeMounts=[{"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
                      {"name": "data", "mountPath": "/prometheus"},
                      {"name": "pki", "mountPath": PKI_DIR, "readOnly": True}],
    )
    volumes = [{"name": "config", "configMap": {"name": "prometheus"}},
               identity_volume("prometheus", {"mesh-ca.crt": ca_certificate("mesh")})]
    pod = pod_spec("prometheus", image("prometheus").uid, [main], volumes, automount=True)
    return [
        (files_config("prometheus", "prometheus", "observability", "files/prometheus/*"), None),
        (service_account("prometheus", "observability"), None),
        *((doc, None) for doc in _pod_reader("prometheus", "observability")),
        (stateful_set("prometheus", "observability", pod, ".Values.prometheus.storage"), None),
        (cluster_service("prometheus", "prometheus", "observability", {"http": PROMETHEUS_PORT}), None),
    ]


# ---------------------------------------------------------------- Grafana

GRAFANA_DASHBOARDS = "/var/lib/grafana/dashboards"


def grafana() -> list[tuple[dict, str | None]]:
    password = {"secretKeyRef": {"name": Value('include "finopti.grafanaSecret" .'), "key": "admin-password"}}
    main = container(
        "grafana", image("grafana"),
        env=[{"name": "GF_SECURITY_ADMIN_PASSWORD", "valueFrom": password},
             {"name": "GF_USERS_ALLOW_SIGN_UP", "value": "false"},
             {"name": "GF_ANALYTICS_REPORTING_ENABLED", "value": "false"}],
        ports=[{"name": "http", "containerPort": GRAFANA_PORT, "protocol": "TCP"}],
        readinessProbe=_http_probe("/api/health", GRAFANA_PORT), resources=Block(".Values.grafana.resources"),
        volumeMounts=[
            {"name": "datasources", "mountPath": "/etc/grafana/provisioning/datasources", "readOnly": True},
            {"name": "providers", "mountPath": "/etc/grafana/provisioning/dashboards", "readOnly": True},
            {"name": "data", "mountPath": "/var/lib/grafana"},
            {"name": "dashboards", "mountPath": GRAFANA_DASHBOARDS, "readOnly": True},
            {"name": "logs", "mountPath": "/var/log/grafana"}, {"name": "tmp", "mountPath": "/tmp"},
        ],
    )
    volumes = [{"name": "datasources", "configMap": {"name": "grafana-datasources"}},
               {"name": "providers", "configMap": {"name": "grafana-providers"}},
               {"name": "dashboards", "configMap": {"name": "grafana-dashboards"}},
               empty_dir("data"), empty_dir("logs"), empty_dir("tmp")]
    pod = pod_spec("grafana", image("grafana").uid, [main], volumes)
    return [
        (files_config("grafana-datasources", "grafana", "console", "files/grafana/provisioning/datasources/*"), None),
        (files_config("grafana-providers", "grafana", "console", "files/grafana/provisioning/dashboards/*"), None),
        (files_config("grafana-dashboards", "grafana", "console", "files/grafana/dashboards/*"), None),
        (service_account("grafana", "console"), None),
        (deployment("grafana", "console", pod, 1), None),
        (cluster_service("grafana", "grafana", "console", {"http": GRAFANA_PORT}), None),
    ]

