"""The APISIX rendering: valid for APISIX 3.18's own schemas, and the semantic twin of the Envoy rendering
(every policy of mesh.yaml appears in both, with the same numbers)."""

import json
import os
import re
from pathlib import Path

import pytest
import typer
import yaml
from conftest import REPO
from meshes import EVERY_POLICY, MESHES
from typer.testing import CliRunner

from finopti.deploy.apisix import (
    RATE_LIMIT_KEYS,
    READY_ROUTE,
    apisix_yaml_text,
    render_apisix_yaml,
    render_config_yaml,
    upstream_id,
)
from finopti.deploy.apisix_checks import check_loadable
from finopti.deploy.apisix_local import LocalPorts, local_site, overlay
from finopti.deploy.commands import verify_compose_cmd
from finopti.deploy.compose import render_compose_bundle, write_bundle
from finopti.deploy.topology import plan
from finopti.deploy.validate import load_apisix_schemas, validate_apisix, validate_apisix_text, validate_compose_schema
from finopti.deploy.verify import check_compose, verify_compose
from finopti.mesh.envoy import DEFAULT_TIMEOUT, GatewayRuntime, render_envoy
from finopti.mesh.envoy_traffic import FAULT_FILTER, RATE_LIMIT_FILTER
from finopti.mesh.model import MeshSpec
from finopti.mesh.resolved import load_authz_data, resolve
from finopti.pki import make_foreign_ca_cert

SCHEMAS = Path(os.environ.get("FINOPTI_APISIX_SCHEMAS", REPO.parent / "shared" / "apisix" / "schema.json"))
needs_schemas = pytest.mark.skipif(
    not SCHEMAS.is_file(),
    reason=f"APISIX 3.18 schemas not found at {SCHEMAS} (copy of ../shared/apisix; FINOPTI_APISIX_SCHEMAS moves it)",
)


@pytest.fixture(scope="module")
def schemas() -> dict:
    return load_apisix_schemas(SCHEMAS)


# --- APISIX's schemas ---------------------------------------------------------------------------------


@needs_schemas
@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_apisix_yaml_validates_against_apisix_schemas(schemas, mesh):
    spec = MESHES[mesh]()
    topo = plan(spec)
    enabled = render_config_yaml(resolve(spec), topo)["plugins"]
    assert validate_apisix_text(apisix_yaml_text(render_apisix_yaml(resolve(spec), topo)), schemas, enabled) == []


@needs_schemas
def test_the_committed_apisix_yaml_validates(schemas):
    bundle = REPO / "deploy" / "compose" / "apisix"
    enabled = yaml.safe_load((bundle / "config.yaml").read_text())["plugins"]
    assert validate_apisix_text((bundle / "apisix.yaml").read_text(), schemas, enabled) == []


@needs_schemas
def test_the_validator_catches_what_apisix_would_refuse(schemas):
    spec = MESHES["traffic"]()
    doc = render_apisix_yaml(resolve(spec), plan(spec))
    limited = next(r for r in doc["routes"] if r["id"] == "limited")
    limited["plugins"]["limit-count"]["count"] = 0
    limited["plugins"]["fault-injection"] = {"abort": {"http_status": 503, "percentage": 12.5}}
    doc["upstreams"][0]["timeout"] = {"connect": 1}
    doc["routes"][0]["upstream_id"] = "nowhere"
    problems = "\n".join(validate_apisix(doc, schemas, enabled_plugins=["limit-count"]))
    for expected in ("routes[limited]/plugins/limit-count/count", "percentage: 12.5 is not of type 'integer'",
                     "plugin 'fault-injection' is not enabled", "'send' is a required property",
                     "upstream_id 'nowhere' is not defined"):
        assert expected in problems
    assert validate_apisix_text("routes: []\n", schemas) == ["apisix.yaml does not end with the line '#END'"]


@needs_schemas
def test_defaults_are_filled_before_conditional_schemas_like_apisix_does(schemas):
    """limit-count's redis fields are required only `if policy == redis`: without defaults filled in first,
    a plain local limit would wrongly need them."""
    route = {"id": "r", "uri": "/r", "upstream": {"nodes": {"a:1": 1}},
             "plugins": {"limit-count": {"count": 1, "time_window": 1}}}
    assert validate_apisix({"routes": [route]}, schemas) == []
    route["plugins"]["limit-count"]["policy"] = "redis"
    assert any("redis_host" in p for p in validate_apisix({"routes": [route]}, schemas))


@pytest.mark.parametrize("mesh", ["traffic", "fault-variant"])
def test_bundles_of_other_meshes_are_valid_compose_files_and_isolated(mesh):
    files = render_compose_bundle(MESHES[mesh](), REPO)
    compose = yaml.safe_load(files["docker-compose.yml"])
    assert validate_compose_schema(compose) == []
    assert check_compose(compose) == []
    assert {"canary-v1", "canary-v2"} <= set(compose["services"])


# --- parity with Envoy -----------------------------------------------------------------------------------


def _envoy(spec: MeshSpec) -> dict[str, dict]:
    port = iter(range(20000, 30000))
    rt = GatewayRuntime(
        edge_host="127.0.0.1", edge_port=8080, mesh_host="127.0.0.1", mesh_port=8081, admin_port=9901,
        service_ports={s.name: {v: next(port) for v in s.versions} for s in spec.services},
        jwks_path=Path("/s/jwks.json"), xds_dir=Path("/s/xds"), pki_dir=Path("/s/pki"),
    )
    return render_envoy(resolve(spec, load_authz_data(REPO / "policies")), rt)


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _check_route(spec: MeshSpec, route, envoy: dict, apisix: dict, config: dict) -> set[str]:
    """Assert one route's policies in both renderings; return the policy kinds it exercised."""
    policy = spec.effective_policy(route)
    service = spec.service(route.backend)
    listener = "rds-edge.yaml" if route.listener == "edge" else "rds-mesh.yaml"
    entries = [e for e in envoy[listener]["resources"][0]["virtual_hosts"][0]["routes"] if e["name"] == route.name]
    clusters = {c["name"]: c for c in envoy["cds.yaml"]["resources"]}
    a_route = next(r for r in apisix["routes"] if r["id"] == route.name)
    plugins = a_route["plugins"]
    upstreams = {u["id"]: u for u in apisix["upstreams"] if u["id"].startswith(f"{route.name}.{service.name}.")}
    assert entries and len(upstreams) == len(service.versions)
    assert a_route["name"] == route.name  # the name the policy reads, like Envoy's route name
    assert a_route["vars"] == [["finopti_listener", "==", route.listener]]
    seen = set()

    # Timeouts: Envoy's route timeout covers retries; APISIX bounds tries by `timeout`, retries by retry_timeout.
    total = policy.timeout or DEFAULT_TIMEOUT
    per_try = policy.per_try_timeout or total
    assert all(e["route"]["timeout"] == f"{total}s" for e in entries)
    for up in upstreams.values():
        assert up["timeout"]["read"] == up["timeout"]["send"] == per_try
        assert up.get("retry_timeout", total) == total
    seen |= {"timeout"} if policy.timeout else set()
    if policy.per_try_timeout:
        seen.add("per_try_timeout")
        assert any(e["route"].get("retry_policy", {}).get("per_try_timeout") == _seconds(per_try) for e in entries)

    if policy.retries:
        seen.add("retries")
        retry = next(e["route"]["retry_policy"] for e in entries if "retry_policy" in e["route"])
        assert retry["num_retries"] == policy.retries.attempts
        assert all(u["retries"] == policy.retries.attempts for u in upstreams.values())
        codes = [c for c in policy.retries.conditions if c.isdigit()]
        assert sorted(retry.get("retriable_status_codes", [])) == sorted(int(c) for c in codes)
        next_upstream = config["nginx_config"]["http_server_location_configuration_snippet"]
        assert all(f"http_{c}" in next_upstream for c in codes)
    else:
        assert all(u["retries"] == 0 for u in upstreams.values())
        assert all("retry_policy" not in e["route"] for e in entries)

    if policy.circuit_breaker:
        seen.add("circuit_breaker")
        cb = policy.circuit_breaker
        for version in service.versions:
            cluster = clusters[f"{service.name}.{version}"]
            assert cluster["outlier_detection"]["consecutive_5xx"] == cb.consecutive_failures
            enforced = cluster["outlier_detection"]["enforcing_consecutive_5xx"]
            assert enforced == (100 if cb.failures == "5xx" else 0)
            assert cluster["outlier_detection"]["max_ejection_time"] == _seconds(cb.max_open)
            threshold = cluster["circuit_breakers"]["thresholds"][0]
            assert (threshold["max_requests"], threshold["max_pending_requests"]) == (cb.max_requests, cb.max_pending)
        breaker = plugins["api-breaker"]
        assert breaker["unhealthy"]["failures"] == cb.consecutive_failures
        assert breaker["unhealthy"]["http_statuses"] == ([500, 502, 503, 504] if cb.failures == "5xx" else [502, 504])
        assert breaker["max_breaker_sec"] == round(cb.max_open) and breaker["break_response_code"] == 503
        assert (plugins["limit-conn"]["conn"], plugins["limit-conn"]["burst"]) == (cb.max_requests, cb.max_pending)
    else:
        assert "api-breaker" not in plugins and "limit-conn" not in plugins

    if policy.rate_limit:
        seen.add("rate_limit")
        rl = policy.rate_limit
        for e in entries:
            envoy_rl = e["typed_per_filter_config"][RATE_LIMIT_FILTER]
            bucket = envoy_rl["descriptors"][0]["token_bucket"]
            assert (bucket["max_tokens"], bucket["fill_interval"]) == (rl.requests, _seconds(rl.per))
            assert envoy_rl["descriptors"][0]["entries"][0]["key"] == rl.key
        count = plugins["limit-count"]
        assert (count["count"], count["time_window"], count["rejected_code"]) == (rl.requests, round(rl.per), 429)
        assert count["key"] == RATE_LIMIT_KEYS[rl.key]
        assert plugins["response-rewrite"]["headers"]["set"]["retry-after"] == str(round(rl.per))
    else:
        assert "limit-count" not in plugins and all(RATE_LIMIT_FILTER not in e["typed_per_filter_config"]
                                                    for e in entries)

    if policy.canary:
        seen.add("canary")
        weights = policy.canary.weights
        split = next(e["route"]["weighted_clusters"]["clusters"] for e in entries
                     if "weighted_clusters" in e["route"])
        assert {c["name"]: c["weight"] for c in split if c["weight"]} == {
            f"{service.name}.{v}": w for v, w in weights.items() if w}
        pinned = {h["string_match"]["exact"] for e in entries for h in e["match"].get("headers", [])
                  if h["name"] == policy.canary.pin_header}
        assert pinned == set(weights)
        rules = plugins["traffic-split"]["rules"]
        default = rules[-1]["weighted_upstreams"]
        assert {w["upstream_id"]: w["weight"] for w in default} == {
            upstream_id(route.name, service.name, v): w for v, w in weights.items()}
        pins = {r["match"][0]["vars"][0][2]: r["weighted_upstreams"][0]["upstream_id"] for r in rules[:-1]}
        assert pins == {v: upstream_id(route.name, service.name, v) for v in weights}
        assert all(r["match"][0]["vars"][0][0] == "http_" + policy.canary.pin_header.replace("-", "_")
                   for r in rules[:-1])
    else:
        assert "traffic-split" not in plugins

    if policy.fault:
        seen.add("fault")
        f = policy.fault
        envoy_fault = entries[0]["typed_per_filter_config"][FAULT_FILTER]
        injection = plugins["fault-injection"]
        if f.delay:
            assert envoy_fault["delay"]["fixed_delay"] == _seconds(f.delay.duration)
            assert envoy_fault["delay"]["percentage"]["numerator"] == round(f.delay.percent * 10_000)
            assert injection["delay"]["duration"] == f.delay.duration
            assert injection["delay"]["percentage"] == int(f.delay.percent + 0.5)
        if f.abort:
            assert envoy_fault["abort"]["http_status"] == injection["abort"]["http_status"] == f.abort.status
            assert injection["abort"]["percentage"] == int(f.abort.percent + 0.5)
        if f.header:
            assert envoy_fault["headers"] == [{"name": f.header.name, "string_match": {"exact": f.header.value}}]
            for part in ("delay", "abort"):
                if part in injection:
                    assert injection[part]["vars"] == [[["http_" + f.header.name.replace("-", "_"), "==",
                                                         f.header.value]]]
    else:
        assert "fault-injection" not in plugins

    # Authentication and rewrites.
    jwt = entries[0]["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]
    assert ("jwt-auth" in plugins) == (route.auth == "required") == ("requirement_name" in jwt)
    if route.rewrite is not None:
        assert all(e["route"]["prefix_rewrite"] == route.rewrite for e in entries)
        rewrite = plugins["proxy-rewrite"]
        assert rewrite.get("uri") == route.rewrite or rewrite["regex_uri"][1] == route.rewrite + "$1"
    return seen


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_every_policy_renders_to_both_envoy_and_apisix(mesh):
    spec = MESHES[mesh]()
    topo = plan(spec)
    mesh = resolve(spec)
    envoy, apisix, config = _envoy(spec), render_apisix_yaml(mesh, topo), render_config_yaml(mesh, topo)
    seen = set()
    for route in spec.routes:
        if spec.is_external(route.backend):  # local-only (the console's Prometheus proxy)
            continue
        seen |= _check_route(spec, route, envoy, apisix, config)
    # Gateway-wide: the body limit, and the same policy for every route (ext_authz / opa, same Rego).
    hcm = next(f["typed_config"] for f in envoy["lds.yaml"]["resources"][0]["filter_chains"][0]["filters"]
               if f["name"] == "envoy.filters.network.http_connection_manager")
    buffer = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    assert buffer["typed_config"]["max_request_bytes"] == config["nginx_config"]["http"]["client_max_body_size"]
    assert apisix["plugin_configs"][0]["plugins"]["opa"]["policy"] == "finopti/authz"
    assert all(r.get("plugin_config_id") == "finopti-gateway" for r in apisix["routes"]
               if not r["id"].startswith("metrics.") and r["id"] != READY_ROUTE)
    if mesh == "fault-variant":  # together the meshes exercise every kind of policy
        assert seen >= EVERY_POLICY
    if mesh == "platform":
        assert "timeout" in seen


# --- what APISIX checks in code when it loads apisix.yaml (no schema file needed) ---------------------------


def _platform_doc() -> dict:
    spec = MESHES["platform"]()
    return render_apisix_yaml(resolve(spec), plan(spec))


def _pem_pair(tmp_path: Path) -> tuple[str, str]:
    cert, key = make_foreign_ca_cert(tmp_path, "gateway")
    return cert.read_text(), key.read_text()


def test_the_rendered_config_passes_apisix_load_checks():
    assert check_loadable(_platform_doc()) == []


def test_an_inline_upstream_client_certificate_reference_is_caught_as_apisix_rejects_it():
    """APISIX 3.18 parses an upstream's inline tls.client_cert as a PEM, without resolving `$env://`: every such
    upstream is rejected at load and its routes answer 502. The form the bundle used to render."""
    doc = _platform_doc()
    for upstream in doc["upstreams"]:
        if "tls" in upstream:
            upstream["tls"] = {"client_cert": "$env://FINOPTI_GATEWAY_CERT", "client_key": "$env://FINOPTI_GATEWAY_KEY"}
    problems = check_loadable(doc)
    with_tls = [u["id"] for u in doc["upstreams"] if "tls" in u]
    assert len(with_tls) > 10 and len(problems) == len(with_tls)
    assert all("failed to parse cert" in p and "tls.client_cert_id" in p for p in problems)
    assert problems[0].startswith(f"upstreams[{with_tls[0]}]: ")


def test_load_checks_cover_certificates_references_expressions_and_plugin_code(tmp_path):
    cert, key = _pem_pair(tmp_path)
    doc = _platform_doc()
    ups = {u["id"]: u for u in doc["upstreams"]}
    routes = {r["id"]: r for r in doc["routes"]}
    ups["ask.orchestrator.v1"]["tls"] = {"client_cert": cert, "client_key": key}  # a real PEM pair: fine
    ups["ui.ui.v1"]["tls"] = {"client_cert": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----",
                              "client_key": key}
    ups["ui-auth.ui.v1"]["tls"] = {"client_cert_id": "nobody"}
    ups["ui-static.ui.v1"]["upstream_host"] = "$env://SERVICE_HOST"
    ups["ui-console.ui.v1"]["upstream_host"] = ""
    doc["ssls"].append({"id": "junk", "type": "client", "cert": "x" * 200, "key": key})
    doc["ssls"].append({"id": "server", "type": "server", "snis": ["a"], "cert": cert, "key": key})
    ups["logstore.logstore.v1"]["tls"] = {"client_cert_id": "server"}
    routes["ui"]["vars"] = [["finopti_listener", "=~", "edge"]]
    routes["ui-static"]["vars"] = ["finopti_listener", "==", "edge"]
    routes["metrics.ui.v1"]["vars"] = [["remote_addr", "ipmatch", ["10.0.0.0/33"]]]
    routes["gcloud-agent"]["plugins"]["proxy-rewrite"]["regex_uri"] = ["^/gcloud-agent/(.*", "/$1"]
    routes["gcloud-tools"]["plugins"]["proxy-rewrite"]["regex_uri"] = ["^/x", "/y", "^/z"]
    routes["logs-api"]["plugins"]["fault-injection"] = {"abort": {"http_status": 503, "percentage": 5,
                                                                  "vars": [[["http_x", "~==", "1"]]]}}
    routes["traces-api"]["plugin_config_id"] = "missing"
    doc["consumers"][0]["plugins"]["jwt-auth"].pop("public_key")
    doc["global_rules"].append({"id": "extra", "plugins": {"serverless-post-function": {
        "phase": "log", "functions": ["return function() end"]}}})
    problems = "\n".join(check_loadable(doc))
    expected = [
        "upstreams[ui.ui.v1]: failed to parse cert",
        "upstreams[ui-auth.ui.v1]: tls.client_cert_id: ssl id [nobody] not exits",
        "upstreams[logstore.logstore.v1]: tls.client_cert_id: ssl [server] type should be 'client'",
        "upstreams[ui-static.ui.v1]/upstream_host: APISIX does not resolve the secret reference",
        "upstreams[ui-console.ui.v1]: `upstream_host` can't be empty when `pass_host` is `rewrite`",
        "ssls[junk]: failed to parse cert",
        "routes[ui]: failed to validate the 'vars' expression: invalid operator '=~'",
        "routes[ui-static]: failed to validate the 'vars' expression: rule should be wrapped inside brackets",
        "routes[metrics.ui.v1]: failed to validate the 'vars' expression: invalid ip address: 10.0.0.0/33",
        "routes[gcloud-agent]/plugins/proxy-rewrite: invalid regex_uri(^/gcloud-agent/(.*)",
        "routes[gcloud-tools]/plugins/proxy-rewrite: The length of regex_uri should be an even number",
        "routes[logs-api]/plugins/fault-injection: abort.vars: invalid operator '~=='",
        "routes[traces-api]: plugin_config_id 'missing' is not defined in plugin_configs",
        "consumers[finopti_idp]/plugins/jwt-auth: missing valid public key",
        "global_rules[extra]/plugins/serverless-post-function: also in global rule 'finopti'; APISIX then runs it",
    ]
    for line in expected:
        assert line in problems
    assert "ask.orchestrator.v1" not in problems and "ssls[server]" not in problems
    assert len(problems.splitlines()) == len(expected)


def test_verify_compose_fails_on_a_bundle_apisix_would_not_load_whole(tmp_path):
    """`verify-compose` checks the gateway's config too: the committed bundle passes, the broken client
    certificate form does not (named by file, item and APISIX's own error), with or without the schemas."""
    app = typer.Typer()
    app.command()(verify_compose_cmd)
    bundle = tmp_path / "bundle"
    write_bundle(render_compose_bundle(MESHES["platform"](), REPO, bundle), bundle)
    assert CliRunner().invoke(app, [str(bundle)]).exit_code == 0
    routes = bundle / "apisix" / "apisix.yaml"
    routes.write_text(routes.read_text().replace(
        "client_cert_id: gateway-client", "client_cert: $env://FINOPTI_GATEWAY_CERT\n    client_key: $env://KEY"))
    for args in ([str(bundle)], [str(bundle), "--apisix-schemas", str(SCHEMAS)] if SCHEMAS.is_file() else []):
        if not args:
            continue
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        assert ("FAIL service 'apisix': apisix/apisix.yaml: upstreams[ask.orchestrator.v1]: failed to parse cert"
                in result.output)
    assert [p for p in verify_compose(bundle) if p.service == "apisix"]
    routes.write_text(routes.read_text().removesuffix("#END\n"))
    assert any("does not end with the line '#END'" in str(p) for p in verify_compose(bundle))


# --- the local overlay: a run on one machine differs only in where things are ------------------------------

# Every value a local run of the bundle's gateway may change, and nothing else (docs/deploy.md).
OVERLAY_PATHS = [
    r"config\.yaml apisix/node_listen/\d+/(ip|port)",
    r"config\.yaml apisix/status/port",
    r"config\.yaml plugin_attr/prometheus/export_addr/(ip|port)",
    r"config\.yaml nginx_config/http_configuration_snippet",  # listener ports, caller addresses: lines below
    r"config\.yaml nginx_config/http_server_location_configuration_snippet",  # the CA's path: lines below
    r"apisix\.yaml upstreams/[\w.-]+/nodes/0/(host|port)",
    r"apisix\.yaml plugin_configs/finopti-gateway/plugins/opa/host",
    r"apisix\.yaml routes/finopti-ready/plugins/serverless-pre-function/functions/0",  # its node list: below
]
OVERLAY_LINES = [
    r"\s+\d+ (edge|mesh|metrics|ready);",  # map $server_port -> listener
    r"\s+[\d.]+/\d+ [\w-]+;",  # geo: caller network -> caller name
    r"proxy_ssl_trusted_certificate \S+;",
    r'\s+for _, node in ipairs\(\{(\{"[\w.-]+", \d+\}(, )?)+\}\) do',
]


def test_a_local_run_of_the_bundle_differs_only_where_the_gateway_runs():
    spec = MESHES["platform"]()
    topo = plan(spec)
    ports = LocalPorts(edge=20001, mesh=20002, metrics=20003, ready=20004, status=20005, export=20006)
    nodes = {b.name: 21000 + i for i, b in enumerate(topo.backends)}
    changes = overlay(resolve(spec), topo, local_site(topo, ports, nodes, Path("/tmp/pki/ca.crt"), 22000))
    where = {f"{c['file']} {c['path']}" for c in changes}
    unexpected = [w for w in where if not any(re.fullmatch(p, w) for p in OVERLAY_PATHS)]
    assert unexpected == []
    for change in (c for c in changes if c["path"].endswith(("snippet", "functions/0"))):
        for line in (change["compose"] + "\n" + change["local"]).splitlines():
            assert any(re.fullmatch(p, line) for p in OVERLAY_LINES), line
    # Every kind of fact did change (the test sees the overlay), and the local render names no compose host.
    assert {re.sub(r"/[\w.-]+/nodes/0/.*", "/*/nodes", w) for w in where} >= {
        "apisix.yaml upstreams/*/nodes", "apisix.yaml plugin_configs/finopti-gateway/plugins/opa/host",
        "config.yaml nginx_config/http_server_location_configuration_snippet"}
    local = json.dumps([c["local"] for c in changes])
    assert "opa" not in local and "/pki/" not in local.replace("/tmp/pki/", "")
