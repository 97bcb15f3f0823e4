"""The Kubernetes package: a Helm chart rendered from mesh.yaml, `policies/` and the dashboard model.

`render_kubernetes_chart` is pure (path relative to the chart -> text); the CLI writes it with
`compose.write_bundle`. The chart is committed under deploy/kubernetes/ and a test re-renders it to catch drift.

What is the compose bundle's, unchanged: the APISIX route file and config (same renderer, for a Kubernetes
`ApisixSite`), OPA's Rego, role data and route table, Loki's config, Alloy's pipeline, Prometheus's rules, the
Grafana dashboards and datasources, the platform image and each service's environment. What a user changes
(image, replicas, host names, the identity provider's issuer and key, storage class) is in `values.yaml`; the
host names and the issuer reach APISIX's config through two placeholders the chart replaces.
"""

import json
from pathlib import Path, PurePosixPath

from finopti.dashboards.grafana import render_grafana
from finopti.deploy.apisix import (
    OPA_URL,
    ApisixSite,
    CallerCertificates,
    apisix_yaml_text,
    dump_yaml,
    readiness_probe,
    render_apisix_yaml,
    render_config_yaml,
)
from finopti.deploy.helm_template import Block, Value, documents_text
from finopti.deploy.kube_mesh import identities, network_policies
from finopti.deploy.kube_observability import (
    alloy,
    alloy_config,
    config_map,
    files_config,
    grafana,
    loki,
    prometheus,
    prometheus_files,
)
from finopti.deploy.kube_values import chart_yaml, helpers, notes, values_schema, values_yaml
from finopti.deploy.kube_workloads import (
    MESH_CA_ENV,
    MESH_CA_FILE,
    REDIS,
    REDIS_PORT,
    backend_workload,
    gateway_workload,
    ingress,
    metadata,
    opa_workload,
    redis_workload,
)
from finopti.deploy.observability import render_loki
from finopti.deploy.topology import (
    ENGINES,
    EXPORT_PORT,
    GATEWAY,
    LISTENERS,
    READY_PORT,
    SERVICE_PORT,
    STATUS_PORT,
    Topology,
    plan,
)
from finopti.mesh.model import MeshSpec
from finopti.mesh.policy_data import render_route_data
from finopti.mesh.resolved import ResolvedMesh, resolve

# Placeholders in the rendered APISIX files for what the chart's values set (valid values of mesh.yaml, so
# the same renderer takes them; `.invalid` is a reserved domain, never a real host).
HOSTS_PLACEHOLDER = "finopti-edge-hosts.invalid"
ISSUER_PLACEHOLDER = "https://finopti-issuer.invalid"


def kubernetes_site(mesh: ResolvedMesh, topo: Topology) -> ApisixSite:
    """APISIX in a pod: services by their Service name, callers by their certificate (pod addresses change),
    rate-limit counters in the store every replica shares."""
    nodes = {b.name: (b.name, SERVICE_PORT) for b in topo.backends}
    nodes.update({e.container: (e.container, e.port) for e in ENGINES.values()})
    listen = {"edge": ("0.0.0.0", LISTENERS["edge"]), "mesh": ("0.0.0.0", LISTENERS["mesh"]),
              "ready": ("127.0.0.1", READY_PORT)}
    return ApisixSite(
        listen=listen,
        status=("127.0.0.1", STATUS_PORT),
        export=("0.0.0.0", EXPORT_PORT),
        nodes=nodes,
        callers={},
        ca_file=MESH_CA_FILE,
        opa_url=OPA_URL,
        caller_certificates=CallerCertificates(listeners=("mesh",), snis=(GATEWAY,), ca_env=MESH_CA_ENV),
        rate_limit_store=(REDIS, REDIS_PORT) if rate_limited(mesh) else None,
    )


def rate_limited(mesh: ResolvedMesh) -> bool:
    """Whether a route APISIX serves has a rate limit (external routes are not rendered for APISIX)."""
    return any(r.policy.rate_limit is not None for r in mesh.routes if not r.external)


def gateway_spec(spec: MeshSpec) -> MeshSpec:
    """mesh.yaml with the placeholders for what the values set."""
    edge = spec.gateway.edge.model_copy(update={"hosts": [HOSTS_PLACEHOLDER]})
    return spec.model_copy(update={
        "gateway": spec.gateway.model_copy(update={"edge": edge}),
        "identity": spec.identity.model_copy(update={"issuer": ISSUER_PLACEHOLDER}),
    })


def _manifests(spec: MeshSpec, mesh: ResolvedMesh, site: ApisixSite) -> dict[str, str]:
    topo = plan(spec)
    persistent = {s.name for s in spec.services if s.state == "persistent"}
    # The gateway's files with the values' host names and issuer in place of the placeholders.
    apisix = config_map("apisix-config", GATEWAY, "gateway", Block(
        'dict "apisix.yaml" (include "finopti.apisixYaml" .) "config.yaml" (.Files.Get "files/apisix/config.yaml")'))
    templates = {
        "apisix-config.yaml": [(apisix, None)],
        "opa-policies.yaml": [(files_config("opa-policies", ENGINES["policy"].container, "policy", "files/opa/*"),
                               None)],
        "gateway.yaml": gateway_workload(spec.identity, readiness_probe(site)),
        "ingress.yaml": [ingress()],
        "opa.yaml": opa_workload(),
        "network-policies.yaml": network_policies(spec.identity, site.rate_limit_store is not None),
        "identities.yaml": identities(topo.backends),
        "loki.yaml": loki(),
        "alloy.yaml": alloy(),
        "prometheus.yaml": prometheus(),
        "grafana.yaml": grafana(),
    }
    if spec.identity.provider == "dev":
        templates["identity-secret.yaml"] = [secret(
            "finopti-identity", "gateway", "public-key.pem",
            "identity.publicKey: the identity provider's PEM public key (or identity.existingSecret)",
            ".Values.identity.publicKey", ".Values.identity.existingSecret")]
    templates["grafana-secret.yaml"] = [secret(
        "finopti-grafana", "grafana", "admin-password",
        "grafana.adminPassword: Grafana's admin password (or grafana.existingSecret)",
        ".Values.grafana.adminPassword", ".Values.grafana.existingSecret")]
    if site.rate_limit_store is not None:
        templates["rate-limit-store.yaml"] = redis_workload()
    for backend in topo.backends:
        templates[f"service-{backend.name}.yaml"] = backend_workload(backend, backend.service in persistent)
    return {f"templates/{name}": documents_text(docs) for name, docs in templates.items()}


def secret(name: str, component: str, key: str, missing: str, value: str, existing: str) -> tuple[dict, str]:
    """A Secret from one value, required unless the values name an existing Secret instead."""
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata(name, component, "secret"), "type": "Opaque",
           "stringData": {key: Value(f'required "{missing}" {value}', quote=True)}}
    return doc, f"not {existing}"


def render_kubernetes_chart(spec: MeshSpec, repo_root: Path | str) -> dict[str, str]:
    """Path relative to the chart directory -> file content."""
    policies = Path(repo_root) / "policies"
    topo = plan(spec)
    mesh = resolve(gateway_spec(spec))  # the policy reads its role data from data.json itself
    site = kubernetes_site(mesh, topo)
    files = {
        "Chart.yaml": chart_yaml(),
        "values.yaml": values_yaml(spec),
        "values.schema.json": json.dumps(values_schema(spec), indent=2) + "\n",
        "templates/_helpers.tpl": helpers(HOSTS_PLACEHOLDER, ISSUER_PLACEHOLDER),
        "templates/NOTES.txt": notes(),
        "files/apisix/apisix.yaml": apisix_yaml_text(render_apisix_yaml(mesh, topo, site)),
        "files/apisix/config.yaml": dump_yaml(render_config_yaml(mesh, topo, site)),
        "files/opa/authz.rego": (policies / "authz.rego").read_text(),
        "files/opa/data.json": (policies / "data.json").read_text(),
        "files/opa/routes.json": json.dumps(render_route_data(resolve(spec)), indent=2) + "\n",
        "files/loki/config.yml": dump_yaml(render_loki(spec.logs)),
        "files/alloy/config.alloy": alloy_config(spec),
        **{f"files/prometheus/{name}": dump_yaml(doc) for name, doc in prometheus_files(spec, resolve(spec)).items()},
        **_manifests(spec, mesh, site),
    }
    for path, text in render_grafana("files/grafana").items():
        files[PurePosixPath(path).as_posix()] = text
    return files
