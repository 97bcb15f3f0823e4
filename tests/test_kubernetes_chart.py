"""The Kubernetes package (deploy/kubernetes, a Helm chart): committed render without drift, rendered and linted
by Helm's own Go SDK (helm-python-sdk, no binary, no cluster), every manifest strictly valid for Kubernetes'
OpenAPI schemas and cert-manager's CRDs, the values that reach the gateway, and parity with compose: the same
routes, policies, rules, dashboards and log pipeline. No cluster here: validated, not run."""

import copy
import json
import re

import pytest
import typer
import yaml
from conftest import REPO
from meshes import EVERY_POLICY, MESHES, policies_used
from typer.testing import CliRunner

from finopti.deploy import CHART_DIR, helm
from finopti.deploy.apisix_checks import check_loadable
from finopti.deploy.commands import render_kubernetes_cmd
from finopti.deploy.compose import render_compose_bundle, rendered_files, write_bundle
from finopti.deploy.edge_controls import EDGE_RULE, guard_hosts
from finopti.deploy.kube_validate import validate_manifest, validate_manifests
from finopti.deploy.kube_workloads import REDIS, REDIS_PORT
from finopti.deploy.kubernetes import render_kubernetes_chart
from finopti.deploy.topology import plan
from finopti.mesh.model import load_mesh, parse_mesh
from finopti.mesh.resolved import resolve

CHART = REPO / CHART_DIR
SECRETS = {"identity": {"publicKey": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"},
           "grafana": {"adminPassword": "change-me"}}


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return render_kubernetes_chart(load_mesh(REPO / "mesh.yaml"), REPO)


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return helm.template(CHART, SECRETS)


@pytest.fixture(scope="module")
def compose() -> dict[str, str]:
    return render_compose_bundle(load_mesh(REPO / "mesh.yaml"), REPO)


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def config_data(docs: list[dict], name: str) -> dict[str, str]:
    return find(docs, "ConfigMap", name)["data"]


def chart_from(tmp_path, mesh_text: str):
    """A chart rendered from another mesh.yaml (the repository's policies), written to tmp_path."""
    files = render_kubernetes_chart(parse_mesh(yaml.safe_load(mesh_text)), REPO)
    write_bundle(files, tmp_path)
    return tmp_path


# --- drift --------------------------------------------------------------------------------------------


def test_committed_chart_is_a_fresh_render(rendered, update_golden):
    """Fix with `finopti render kubernetes --out deploy/kubernetes` (or this test with --update-golden)."""
    if update_golden:
        write_bundle(rendered, CHART)
    on_disk = rendered_files(CHART)
    assert on_disk == set(rendered), (
        f"deploy/kubernetes is stale: missing {sorted(set(rendered) - on_disk)}, extra "
        f"{sorted(on_disk - set(rendered))}; run `finopti render kubernetes --out deploy/kubernetes`")
    stale = [rel for rel, text in rendered.items() if (CHART / rel).read_text() != text]
    assert not stale, f"deploy/kubernetes differs from mesh.yaml's render in {stale}; run `finopti render kubernetes`"


def test_render_command_writes_a_chart_helm_lints_clean(tmp_path):
    app = typer.Typer()
    app.command()(render_kubernetes_cmd)
    out = tmp_path / "chart"
    result = CliRunner().invoke(app, ["--out", str(out), "--mesh", str(REPO / "mesh.yaml")])
    assert result.exit_code == 0, result.output
    assert (out / "Chart.yaml").is_file() and (out / "values.yaml").is_file()
    assert helm.lint(out, SECRETS) == []  # --strict: warnings count too
    assert helm.lint(out, SECRETS, kube_version="v1.29.0") == []


def test_a_bad_mesh_is_named_and_nothing_is_written(tmp_path):
    app = typer.Typer()
    app.command()(render_kubernetes_cmd)
    bad = tmp_path / "mesh.yaml"
    bad.write_text((REPO / "mesh.yaml").read_text().replace("backend: gcloud-agent,", "backend: billing-agent,"))
    result = CliRunner().invoke(app, ["--out", str(tmp_path / "out"), "--mesh", str(bad)])
    assert result.exit_code != 0 and "billing-agent" in result.output
    assert not (tmp_path / "out").exists()


# --- Kubernetes' schemas ---------------------------------------------------------------------------------


def test_every_manifest_validates_strictly_for_kubernetes_and_cert_manager(manifests):
    kinds = {d["kind"] for d in manifests}
    assert {"Deployment", "StatefulSet", "DaemonSet", "Service", "NetworkPolicy", "Certificate", "Issuer",
            "PodDisruptionBudget", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "ConfigMap"} <= kinds
    assert validate_manifests(manifests) == []


def test_strict_validation_refuses_unknown_fields_and_wrong_types(manifests):
    deployment = copy.deepcopy(find(manifests, "Deployment", "apisix"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    assert any("runAsNonroot" in p for p in validate_manifest(deployment))
    policy = copy.deepcopy(find(manifests, "NetworkPolicy", "backends"))
    policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabel"] = {}
    assert any("matchLabel" in p for p in validate_manifest(policy))
    certificate = copy.deepcopy(find(manifests, "Certificate", "finopti-gateway-tls"))
    certificate["spec"]["dnsName"] = ["x"]
    assert any("dnsName" in p for p in validate_manifest(certificate))
    certificate = copy.deepcopy(find(manifests, "Certificate", "finopti-gateway-tls"))
    certificate["spec"]["privateKey"]["size"] = "256"
    assert any("privateKey/size" in p for p in validate_manifest(certificate))


@pytest.mark.parametrize("overrides", [
    {"ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["finopti.example.com"],
                                                                  "secretName": "finopti-edge"}]},
     "gateway": {"hosts": ["finopti.example.com", "10.1.2.3"]}},
    {"storageClass": "fast-ssd", "gateway": {"autoscaling": {"enabled": False}, "service": {"type": "LoadBalancer"}},
     "services": {"ui": {"replicas": 5, "autoscaling": {"enabled": False}}}},
    {"image": {"repository": "registry.example.com/finopti", "tag": "1.2.3"},
     "imagePullSecrets": [{"name": "registry"}]},
])
def test_the_values_a_user_changes_still_render_valid_manifests(overrides):
    values = copy.deepcopy(SECRETS)
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    docs = helm.template(CHART, values)
    assert validate_manifests(docs) == []
    if "ingress" in overrides:
        ingress = find(docs, "Ingress", "apisix")
        assert [r["host"] for r in ingress["spec"]["rules"]] == ["finopti.example.com"]  # no IP address
    if "storageClass" in overrides:
        claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        assert claims and all(c["spec"]["storageClassName"] == "fast-ssd" for c in claims)
        assert not any(d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "ui-v1" for d in docs)
        assert find(docs, "Deployment", "ui-v1")["spec"]["replicas"] == 5
    if "image" in overrides:
        images = {c["image"] for d in docs if d["kind"] == "Deployment"
                  for c in d["spec"]["template"]["spec"]["containers"]}
        assert "registry.example.com/finopti:1.2.3" in images


def test_secrets_an_operator_must_give_are_required_by_name():
    with pytest.raises(helm.HelmError, match="identity.publicKey"):
        helm.template(CHART, {"grafana": SECRETS["grafana"]})
    with pytest.raises(helm.HelmError, match="grafana.adminPassword"):
        helm.template(CHART, {"identity": SECRETS["identity"]})
    docs = helm.template(CHART, {"identity": {"existingSecret": "my-idp"}, "grafana": {"existingSecret": "my-gf"}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    env = find(docs, "Deployment", "apisix")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "FINOPTI_JWT_PUBLIC_KEY", "valueFrom": {"secretKeyRef": {"name": "my-idp",
                                                                             "key": "public-key.pem"}}} in env


# --- what the values set reaches the gateway ---------------------------------------------------------------


def test_host_names_and_issuer_from_the_values_reach_apisix(manifests):
    values = {**SECRETS, "gateway": {"hosts": ["finopti.example.com", "[::1]"]},
              "identity": {**SECRETS["identity"], "issuer": "https://login.example.com/realms/finopti"}}
    apisix = yaml.safe_load(config_data(helm.template(CHART, values), "apisix-config")["apisix.yaml"])
    guard = next(r for r in apisix["global_rules"] if r["id"] == EDGE_RULE)
    function = guard["plugins"]["serverless-pre-function"]["functions"][0]
    assert "finopti-edge-hosts.invalid" not in function
    assert re.search(r'^local HOSTS = \{\["finopti.example.com"\] = true, \["\[::1\]"\] = true\}$', function, re.M)
    assert apisix["consumers"][0]["plugins"]["jwt-auth"]["key"] == "https://login.example.com/realms/finopti"
    # Defaults: mesh.yaml's own host names and issuer, and the guard is exactly the one compose renders.
    default = yaml.safe_load(config_data(manifests, "apisix-config")["apisix.yaml"])
    function = next(r for r in default["global_rules"] if r["id"] == EDGE_RULE)["plugins"][
        "serverless-pre-function"]["functions"][0]
    assert guard_hosts(function) == load_mesh(REPO / "mesh.yaml").gateway.edge.hosts


@pytest.mark.parametrize("values", [
    {"gateway": {"hosts": ['evil"] = true} os.execute("id") --']}},
    {"gateway": {"hosts": ["Finopti.Example.com"]}},
    {"identity": {"issuer": "https://idp.example.com/\n  plugins: {}"}},
    {"gateway": {"hosts": ["a.example.com"], "port": 1}},
])
def test_values_that_would_change_the_gateway_config_are_refused_by_the_schema(values):
    merged = copy.deepcopy(SECRETS)
    for key, value in values.items():
        merged[key] = {**merged.get(key, {}), **value}
    with pytest.raises(helm.HelmError, match="values don't meet the specifications|schema"):
        helm.template(CHART, merged)


def test_the_gateway_config_passes_apisixs_load_time_checks(manifests):
    data = config_data(manifests, "apisix-config")
    assert data["apisix.yaml"].rstrip().endswith("#END")
    doc = yaml.safe_load(data["apisix.yaml"])
    assert check_loadable(doc) == []
    config = yaml.safe_load(data["config.yaml"])
    used = {name for section in ("routes", "plugin_configs", "global_rules", "consumers")
            for item in doc.get(section) or [] for name in item.get("plugins") or {}}
    assert used <= set(config["plugins"])


def test_callers_are_known_by_their_certificate_on_a_tls_mesh_listener(manifests):
    data = config_data(manifests, "apisix-config")
    config, doc = yaml.safe_load(data["config.yaml"]), yaml.safe_load(data["apisix.yaml"])
    assert config["apisix"]["ssl"] == {"enable": True, "listen": [{"ip": "0.0.0.0", "port": 9081}]}
    assert 9081 not in [item["port"] for item in config["apisix"]["node_listen"]]
    snippet = config["nginx_config"]["http_configuration_snippet"]
    assert "geo $finopti_caller" not in snippet
    assert '"~^SUCCESS:(.*,)?CN=(?<caller>[a-z0-9-]+)(,.*)?$" $caller;' in snippet
    server = next(s for s in doc["ssls"] if s["id"] == "gateway-server")
    assert server["snis"] == ["apisix"] and server["client"]["ca"] == "$env://FINOPTI_MESH_CA_PEM"
    assert "FINOPTI_MESH_CA_PEM" in config["nginx_config"]["envs"]
    # Each service's certificate names it (common name and SPIFFE id) and is issued by the mesh CA, which is the
    # CA the gateway's listener trusts; the gateway's own comes from the callers' CA, the one services trust.
    for backend in plan(load_mesh(REPO / "mesh.yaml")).backends:
        cert = find(manifests, "Certificate", f"finopti-{backend.name}-tls")["spec"]
        assert cert["commonName"] == backend.service
        assert cert["uris"] == [f"spiffe://finopti.local/svc/{backend.service}"]
        assert cert["issuerRef"]["name"] == "finopti-mesh" and backend.name in cert["dnsNames"]
    assert find(manifests, "Certificate", "finopti-gateway-tls")["spec"]["issuerRef"]["name"] == "finopti-callers"
    assert "apisix.finopti.svc" in find(manifests, "Certificate", "finopti-gateway-tls")["spec"]["dnsNames"]


def test_rate_limits_share_one_counter_store_across_gateway_replicas(tmp_path):
    mesh = (REPO / "mesh.yaml").read_text().replace(
        "  - {name: gcloud-agent, listener: mesh, path: /gcloud-agent/, rewrite: /, backend: gcloud-agent,\n"
        "     allowed_callers: [orchestrator]}",
        "  - {name: gcloud-agent, listener: mesh, path: /gcloud-agent/, rewrite: /, backend: gcloud-agent,\n"
        "     allowed_callers: [orchestrator], policy: {rate_limit: {requests: 100, per: 1m, key: user}}}")
    assert "rate_limit: {requests: 100" in mesh
    docs = helm.template(chart_from(tmp_path, mesh), SECRETS)
    apisix = yaml.safe_load(config_data(docs, "apisix-config")["apisix.yaml"])
    limit = next(r for r in apisix["routes"] if r["id"] == "gcloud-agent")["plugins"]["limit-count"]
    assert limit["count"] == 100 and limit["time_window"] == 60
    assert (limit["policy"], limit["redis_host"], limit["redis_port"]) == ("redis", "redis", 6379)
    assert limit["group"] == "finopti.gcloud-agent"  # one counter name for every replica
    assert limit["allow_degradation"] is False  # no store, no request (fail closed)
    assert find(docs, "Deployment", "redis") and find(docs, "NetworkPolicy", "redis")
    assert validate_manifests(docs) == []
    # Without a rate limit on a route APISIX serves, no store is rendered (mesh.yaml ships some: take them out).
    raw = yaml.safe_load((REPO / "mesh.yaml").read_text())
    for item in (*raw["services"], *raw["routes"]):
        if item.get("backend") != "llm":  # an external service: APISIX does not serve it
            item.get("policy", {}).pop("rate_limit", None)
    unlimited = helm.template(chart_from(tmp_path / "unlimited", yaml.safe_dump(raw, sort_keys=False)), SECRETS)
    assert not [d for d in unlimited if d["metadata"]["name"] == "redis"]


def test_an_oidc_mesh_renders_without_a_key_and_lets_the_gateway_reach_the_provider(tmp_path):
    mesh = (REPO / "mesh.yaml").read_text().replace("  provider: dev\n", "  provider: oidc\n").replace(
        "  dev_sign_in: true\n", "  dev_sign_in: false\n")
    docs = helm.template(chart_from(tmp_path, mesh), {"grafana": SECRETS["grafana"],
                                                      "identity": {"issuer": "https://accounts.example.com"}})
    assert validate_manifests(docs) == []
    apisix = yaml.safe_load(config_data(docs, "apisix-config")["apisix.yaml"])
    ask = next(r for r in apisix["routes"] if r["id"] == "ask")["plugins"]["openid-connect"]
    assert ask["discovery"] == "https://accounts.example.com/.well-known/openid-configuration"
    gateway = find(docs, "NetworkPolicy", "gateway")["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]} in gateway


# --- workloads ---------------------------------------------------------------------------------------------


def test_each_service_version_runs_the_compose_image_and_environment_with_mtls_both_ways(manifests, compose):
    services = yaml.safe_load(compose["docker-compose.yml"])["services"]
    spec = load_mesh(REPO / "mesh.yaml")
    for backend in plan(spec).backends:
        deployment = find(manifests, "Deployment", backend.name)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        theirs = services[backend.name]["environment"]
        same = {k for k in theirs if k not in ("FINOPTI_MESH_URL", "FINOPTI_TLS_CALLERS")}
        assert {k: env[k] for k in same} == {k: str(theirs[k]) for k in same}
        assert env["FINOPTI_MESH_URL"] == "https://apisix:9081"  # the only address it knows, over mTLS
        assert env["FINOPTI_TLS_CALLERS"] == "/pki/callers-ca.crt:/pki/tls.crt"
        assert container["image"] == "finopti/platform:0.1.0"
        assert container["readinessProbe"]["exec"]["command"] == ["python", "-m", "finopti.deploy.healthcheck"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert pod["serviceAccountName"] == backend.name and pod["enableServiceLinks"] is False
        stateful = spec.service(backend.service).state == "persistent"
        hpa = [d for d in manifests if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == backend.name]
        claims = [d for d in manifests if d["kind"] == "PersistentVolumeClaim"
                  and d["metadata"]["name"] == f"{backend.name}-state"]
        budget = find(manifests, "PodDisruptionBudget", backend.name)["spec"]
        if stateful:  # one writer of its volume: one replica, replaced (not rolled), no autoscaler
            assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
            assert not hpa and claims and budget["maxUnavailable"] == 1
            # The volume outlives the release (helm uninstall keeps it).
            assert claims[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        else:
            assert hpa and not claims and budget["minAvailable"] == 1
            assert hpa[0]["spec"]["scaleTargetRef"]["name"] == backend.name
    # What outlives an uninstall can be found by the release's label: cert-manager's Secrets too.
    for certificate in (d for d in manifests if d["kind"] == "Certificate"):
        assert certificate["spec"]["secretTemplate"]["labels"] == {"app.kubernetes.io/instance": "finopti"}


def test_the_gateway_and_opa_scale_and_load_the_same_files_as_compose(manifests, compose):
    for name in ("apisix", "opa"):
        assert find(manifests, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"] >= 2
        assert find(manifests, "PodDisruptionBudget", name)["spec"]["minAvailable"] == 1
    opa = config_data(manifests, "opa-policies")
    assert opa["authz.rego"] == (REPO / "policies" / "authz.rego").read_text()
    assert opa["data.json"] == (REPO / "policies" / "data.json").read_text()
    assert opa["routes.json"] == compose["opa/routes.json"]
    gateway = find(manifests, "Deployment", "apisix")["spec"]["template"]
    # A change of the route file rolls the gateway's pods (a checksum of the ConfigMap in the pod template).
    assert re.fullmatch(r"[0-9a-f]{64}", gateway["metadata"]["annotations"]["checksum/config"])


# --- parity with compose -------------------------------------------------------------------------------------


def _mesh_values(spec) -> dict:
    """The values that give the chart the mesh's own host names and issuer (the compose render has them)."""
    return {**SECRETS, "gateway": {"hosts": list(spec.gateway.edge.hosts)},
            "identity": {**SECRETS["identity"], "issuer": spec.identity.issuer}}


def _shared_counters(route: str, theirs: dict, ours: dict) -> None:
    """The one difference a route may have: the chart's rate limits count in the store every gateway replica
    shares (fail closed without it), compose's in its one gateway."""
    assert theirs.pop("policy") == "local"
    shared = ("policy", "redis_host", "redis_port", "redis_timeout", "allow_degradation", "group")
    assert {k: ours.pop(k) for k in shared} == {
        "policy": "redis", "redis_host": REDIS, "redis_port": REDIS_PORT, "redis_timeout": 500,
        "allow_degradation": False, "group": f"finopti.{route}"}


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_every_route_and_policy_of_mesh_yaml_is_rendered_as_in_compose(mesh, tmp_path):
    """The same renderer for a Kubernetes site: every route (path, listener vars, rewrite, authentication, OPA,
    timeouts, retries, breaker, rate limit, canary, fault) and upstream equals compose's, and every difference
    left is a fact of where the gateway runs. Over mesh.yaml and the test meshes, which together have every kind
    of policy."""
    spec = MESHES[mesh]()
    chart = CHART if mesh == "platform" else _chart_of(spec, tmp_path)
    docs = helm.template(chart, _mesh_values(spec))
    compose = render_compose_bundle(spec, REPO)
    kube = yaml.safe_load(config_data(docs, "apisix-config")["apisix.yaml"])
    theirs = yaml.safe_load(compose["apisix/apisix.yaml"])
    served = [r for r in resolve(spec).routes if not r.external]
    ours, them = ({r["id"]: copy.deepcopy(r) for r in doc["routes"]} for doc in (kube, theirs))
    for route in served:
        if route.policy.rate_limit is not None:
            _shared_counters(route.name, them[route.name]["plugins"]["limit-count"],
                             ours[route.name]["plugins"]["limit-count"])
        assert ours[route.name] == them[route.name], route.name
    upstreams = ({u["id"]: u for u in doc["upstreams"]} for doc in (kube, theirs))
    ours_up, them_up = upstreams
    for upstream, body in ours_up.items():
        assert body == them_up[upstream], upstream
    for section in ("plugin_configs", "consumers", "global_rules", "plugin_metadata"):
        assert kube[section] == theirs[section], section
    # What differs is where it runs: compose's Prometheus scrapes through a metrics listener; Kubernetes adds the
    # TLS listener's certificate and the readiness route lists what this site loads.
    assert set(them) - set(ours) == {r for r in them if r.startswith("metrics.")}
    assert set(ours) - set(them) == set()
    assert [s["id"] for s in kube["ssls"]] == ["gateway-client", "gateway-server"]
    assert [s["id"] for s in theirs["ssls"]] == ["gateway-client"]
    # The same route table for OPA, and a counter store exactly when a route APISIX serves is rate limited.
    assert config_data(docs, "opa-policies")["routes.json"] == compose["opa/routes.json"]
    limited = any(r.policy.rate_limit is not None for r in served)
    assert bool([d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == REDIS]) == limited
    if mesh == "fault-variant":
        assert set().union(*(policies_used(MESHES[m]()) for m in MESHES)) >= EVERY_POLICY


def _chart_of(spec, tmp_path):
    write_bundle(render_kubernetes_chart(spec, REPO), tmp_path)
    return tmp_path


def test_rules_dashboards_loki_and_the_log_pipeline_are_compose_s(manifests, compose):
    prometheus = config_data(manifests, "prometheus")
    for name in ("recording_rules.yml", "alert_rules.yml"):
        assert yaml.safe_load(prometheus[name]) == yaml.safe_load(compose[f"prometheus/{name}"]), name
    dashboards = config_data(manifests, "grafana-dashboards")
    theirs = {k.split("/")[-1]: v for k, v in compose.items() if k.startswith("grafana/dashboards/")}
    assert dashboards == theirs and dashboards
    datasources = config_data(manifests, "grafana-datasources")["datasources.yml"]
    assert datasources == compose["grafana/provisioning/datasources/datasources.yml"]
    assert yaml.safe_load(config_data(manifests, "loki")["config.yml"]) == yaml.safe_load(compose["loki/config.yml"])
    alloy = config_data(manifests, "alloy")["config.alloy"]

    def pipeline(text: str) -> str:
        return text[text.index('loki.process "finopti"'):]

    ours, theirs = pipeline(alloy), pipeline(compose["alloy/config.alloy"])
    # The same stages (multiline, redaction, JSON, labels, structured metadata); Kubernetes unwraps the
    # container runtime's line format first and pushes to the logstore over mTLS.
    assert "stage.cri {}" in ours and "stage.cri" not in theirs
    for stage in re.findall(r"  stage\.(?:multiline|json|labels|structured_metadata|replace) \{.*?\n  \}", theirs,
                            re.S):
        assert stage in ours
    assert 'url = "https://apisix:9081/logstore/loki/api/v1/push"' in ours and "tls_config" in ours


def test_prometheus_scrapes_every_pod_itself_with_its_own_identity(manifests):
    config = yaml.safe_load(config_data(manifests, "prometheus")["prometheus.yml"])
    gateway, services = config["scrape_configs"]
    assert (gateway["job_name"], services["job_name"]) == ("gateway", "finopti-services")
    assert services["scheme"] == "https" and services["tls_config"]["server_name"] == "finopti-service"
    assert services["kubernetes_sd_configs"][0]["selectors"] == [{"role": "pod", "label": "finopti.dev/role=backend"}]
    targets = {r["target_label"] for r in services["relabel_configs"] if "target_label" in r}
    assert {"service", "version", "instance"} <= targets
    assert config["rule_files"] == ["/etc/prometheus/recording_rules.yml", "/etc/prometheus/alert_rules.yml"]
    cert = find(manifests, "Certificate", "finopti-prometheus-tls")["spec"]
    assert cert["issuerRef"]["name"] == "finopti-callers"  # services accept it
    for backend in plan(load_mesh(REPO / "mesh.yaml")).backends:
        assert "finopti-service" in find(manifests, "Certificate", f"finopti-{backend.name}-tls")["spec"]["dnsNames"]


def test_values_schema_and_chart_metadata(rendered):
    schema = json.loads(rendered["values.schema.json"])
    values = yaml.safe_load(rendered["values.yaml"])
    assert set(schema["properties"]) == set(values)
    chart = yaml.safe_load(rendered["Chart.yaml"])
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == "0.1.0"
