"""The compose bundle (deploy/compose): committed render without drift, the Compose schema, the isolation
rules (`verify-compose`, fed broken variants), the telemetry configs and the image. No Docker engine here."""

import copy
import json
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from conftest import REPO
from typer.testing import CliRunner

from finopti.deploy import BUNDLE_DIR
from finopti.deploy.commands import render_compose_cmd, verify_compose_cmd
from finopti.deploy.compose import render_compose_bundle, rendered_files, write_bundle
from finopti.deploy.validate import validate_compose_schema
from finopti.deploy.verify import check_compose, verify_compose
from finopti.mesh.model import load_mesh
from finopti.mesh.policy_data import render_route_data
from finopti.mesh.resolved import resolve

BUNDLE = REPO / BUNDLE_DIR
PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return render_compose_bundle(load_mesh(REPO / "mesh.yaml"), REPO)


@pytest.fixture(scope="module")
def compose(rendered) -> dict:
    return yaml.safe_load(rendered["docker-compose.yml"])


# --- drift -------------------------------------------------------------------------------------------


def test_committed_bundle_is_a_fresh_render(rendered, update_golden):
    """Fix with `finopti render compose --out deploy/compose` (or this test with --update-golden)."""
    if update_golden:
        write_bundle(rendered, BUNDLE)
    on_disk = rendered_files(BUNDLE)
    assert on_disk == set(rendered), (
        f"deploy/compose is stale: missing {sorted(set(rendered) - on_disk)}, extra {sorted(on_disk - set(rendered))};"
        " run `finopti render compose --out deploy/compose`")
    stale = [rel for rel, text in rendered.items() if (BUNDLE / rel).read_text() != text]
    assert not stale, f"deploy/compose differs from mesh.yaml's render in {stale}; run `finopti render compose`"


def test_render_command_writes_the_bundle_and_checks_it(tmp_path):
    app = typer.Typer()
    app.command()(render_compose_cmd)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["--out", str(out), "--mesh", str(REPO / "mesh.yaml")])
    assert result.exit_code == 0, result.output
    assert (out / "docker-compose.yml").is_file() and (out / "apisix" / "apisix.yaml").is_file()
    # Relative references from wherever the bundle is written back to the repository.
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    context = (out / compose["services"]["pki"]["build"]["context"]).resolve()
    assert (context / "Dockerfile").is_file() and (context / "policies" / "authz.rego").is_file()


# --- compose file --------------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(compose):
    assert validate_compose_schema(compose) == []


def test_compose_schema_check_catches_a_broken_file(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["apisix"]["depends_on"]["opa"]["condition"] = "service_ready"
    broken["services"]["loki"]["helthcheck"] = broken["services"]["loki"].pop("healthcheck")
    assert validate_compose_schema(broken) == [
        "services/apisix/depends_on/opa/condition: 'service_ready' is not one of ['service_started', "
        "'service_healthy', 'service_completed_successfully']",
        "services/loki: Unevaluated properties are not allowed ('helthcheck' was unexpected)",
    ]


def test_every_service_is_pinned_and_health_checked_and_starts_in_order(compose):
    services = compose["services"]
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{name}: unpinned {image}"
        if name not in ("pki", "alloy", "promtail"):  # one-shot, or nothing waits for them
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services and cond["condition"].startswith("service_"), (name, dep)
    gateway_waits_for = services["apisix"]["depends_on"]
    backends = [n for n, s in services.items() if s["labels"]["finopti.role"] == "backend"]
    assert set(backends) | {"opa", "pki"} == set(gateway_waits_for)
    assert all(gateway_waits_for[b]["condition"] == "service_healthy" for b in backends)
    assert gateway_waits_for["pki"]["condition"] == "service_completed_successfully"
    assert services["grafana"]["depends_on"] == {"loki": {"condition": "service_healthy"},
                                                 "prometheus": {"condition": "service_healthy"}}


def test_each_service_version_runs_from_the_image_with_its_mesh_yaml_entrypoint(compose):
    spec = load_mesh(REPO / "mesh.yaml")
    services = compose["services"]
    expected = {(s.name, v): s.entrypoint for s in spec.services if s.name != "policy" for v in s.versions}
    found = {}
    for service in services.values():
        if service["labels"]["finopti.role"] == "backend":
            env = service["environment"]
            found[(env["FINOPTI_SERVICE"], env["FINOPTI_VERSION"])] = env["FINOPTI_ENTRYPOINT"]
            assert env["FINOPTI_MESH_URL"] == "http://apisix:9081"
            assert {"FINOPTI_PORT", "FINOPTI_HOME"} <= set(env)
            assert service["build"]["dockerfile"] == "Dockerfile" and "ports" not in service
    assert found == expected
    # The policy service is OPA itself in compose: the repository's Rego plus this mesh's route table.
    assert "../../policies/authz.rego:/policies/authz.rego:ro" in services["opa"]["volumes"]


def test_opa_gets_the_route_table_of_this_mesh(rendered):
    assert json.loads(rendered["opa/routes.json"]) == render_route_data(resolve(load_mesh(REPO / "mesh.yaml")))


# --- isolation (verify-compose) ---------------------------------------------------------------------------


def test_the_rendered_bundle_keeps_every_backend_behind_the_gateway(compose):
    assert check_compose(compose) == []
    assert verify_compose(BUNDLE) == []


def test_the_gateway_names_each_caller_by_the_network_it_comes_from(compose, rendered):
    """The nginx `geo` table in config.yaml and the compose networks' subnets agree, one caller each."""
    snippet = yaml.safe_load(rendered["apisix/config.yaml"])["nginx_config"]["http_configuration_snippet"]
    geo = dict(re.findall(r"^\s+(\d+\.\d+\.\d+\.\d+/\d+) ([\w-]+);$", snippet, re.M))
    services, networks = compose["services"], compose["networks"]
    expected = {}
    for name, network in networks.items():
        if "ipam" not in network:
            continue
        members = [s for s, svc in services.items() if name in (svc.get("networks") or [])]
        others = [m for m in members if m != "apisix"]
        roles = {services[m]["labels"]["finopti.role"] for m in others}
        caller = ("prometheus" if others == ["prometheus"] else "collector" if roles == {"collector"}
                  else services[others[0]]["environment"]["FINOPTI_SERVICE"])
        expected[network["ipam"]["config"][0]["subnet"]] = caller
    assert geo == expected
    assert {"prometheus", "collector", "orchestrator", "gcloud-agent"} <= set(geo.values())


def _broken(compose: dict, change) -> list[str]:
    doc = copy.deepcopy(compose)
    change(doc)
    return [str(p) for p in check_compose(doc)]


def test_a_published_backend_port_is_named(compose):
    problems = _broken(compose, lambda d: d["services"]["gcloud-tools-v1"].update(ports=["8443:8443"]))
    assert problems == ["service 'gcloud-tools-v1': publishes ports ['8443:8443']; only the gateway and Grafana may"]


def test_two_backends_on_one_network_are_named_with_the_network(compose):
    problems = _broken(compose, lambda d: d["services"]["gcloud-tools-v1"]["networks"].append("mesh-ui-v1"))
    assert "service 'gcloud-tools-v1', network 'mesh-ui-v1': shares the network with ui-v1; a backend's " \
           "network may hold only it and 'apisix'" in problems
    assert "service 'ui-v1', network 'mesh-ui-v1': shares the network with gcloud-tools-v1; a backend's " \
           "network may hold only it and 'apisix'" in problems


def test_another_member_on_a_backend_network_is_named(compose):
    problems = _broken(compose, lambda d: d["services"]["grafana"]["networks"].append("mesh-orchestrator-v1"))
    assert problems == ["service 'orchestrator-v1', network 'mesh-orchestrator-v1': shares the network with "
                        "grafana; a backend's network may hold only it and 'apisix'"]


def test_a_url_to_another_service_is_named(compose):
    def direct(d):
        d["services"]["orchestrator-v1"]["environment"]["FINOPTI_MESH_URL"] = "https://gcloud-agent-v1:8443"

    problems = _broken(compose, direct)
    assert problems == ["service 'orchestrator-v1': FINOPTI_MESH_URL=https://gcloud-agent-v1:8443 points at "
                        "'gcloud-agent-v1', not at the gateway 'apisix'"]


def test_default_network_host_mode_and_open_networks_are_refused(compose):
    def loosen(d):
        del d["services"]["ui-v1"]["networks"]
        d["services"]["monitoring-tools-v1"]["network_mode"] = "host"
        d["networks"]["mesh-gcloud-agent-v1"]["internal"] = False

    problems = _broken(compose, loosen)
    assert "service 'ui-v1', network 'default': the gateway 'apisix' is not on this network" in problems
    assert "service 'monitoring-tools-v1': network_mode 'host' bypasses the gateway" in problems
    assert "service 'gcloud-agent-v1', network 'mesh-gcloud-agent-v1': the network is not internal" in problems


def test_only_the_collector_reads_the_docker_socket_and_read_only(compose):
    def sockets(d):
        d["services"]["alloy"]["volumes"][1] = "/var/run/docker.sock:/var/run/docker.sock"
        d["services"]["gcloud-agent-v1"]["volumes"].append("/var/run/docker.sock:/var/run/docker.sock:ro")

    problems = _broken(compose, sockets)
    assert sorted(problems) == ["service 'alloy': mounts the Docker socket read-write; it must be read-only",
                        "service 'gcloud-agent-v1': mounts the Docker socket; only the log collector may"]


def test_verify_compose_command_exits_non_zero_naming_service_and_network(tmp_path, compose):
    doc = copy.deepcopy(compose)
    doc["services"]["ui-v1"]["networks"].append("mesh-orchestrator-v1")
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(doc))
    app = typer.Typer()
    app.command()(verify_compose_cmd)
    bad = CliRunner().invoke(app, [str(tmp_path)])
    assert bad.exit_code == 1
    assert "service 'ui-v1', network 'mesh-orchestrator-v1'" in bad.output
    good = CliRunner().invoke(app, [str(BUNDLE)])
    assert good.exit_code == 0, good.output
    missing = CliRunner().invoke(app, [str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "file not found" in missing.output


# --- telemetry -------------------------------------------------------------------------------------------


def _alloy_block(text: str, name: str) -> str:
    match = re.search(re.escape(name) + r"\s*\{(.*?)\n  \}", text, re.S)
    assert match, f"no {name} block"
    return match.group(1)


def test_alloy_discovers_this_project_parses_json_and_keeps_trace_ids_out_of_labels(rendered):
    alloy = rendered["alloy/config.alloy"]
    assert 'values = ["com.docker.compose.project=finopti"]' in alloy
    assert 'host = "unix:///var/run/docker.sock"' in alloy
    assert 'target_label = "job"\n    replacement  = "finopti"' in alloy
    labels = set(re.findall(r"(\w+) = ", _alloy_block(alloy, "stage.labels")))
    metadata = set(re.findall(r"(\w+) = ", _alloy_block(alloy, "stage.structured_metadata")))
    assert labels == {"values", "service", "level"}
    assert {"trace_id", "span_id", "request_id"} <= metadata and not metadata & {"service", "level"}
    assert "stage.json" in alloy and 'url = "http://loki:3100/loki/api/v1/push"' in alloy
    assert 'url = "http://apisix:9081/logstore/loki/api/v1/push"' in alloy
    blocks = re.sub(r'"(?:[^"\\]|\\.)*"', '""', alloy)  # braces outside strings (a regex has its own)
    assert blocks.count("{") == blocks.count("}")


def test_promtail_does_the_same_as_alloy(rendered):
    promtail = yaml.safe_load(rendered["promtail/config.yml"])
    job = promtail["scrape_configs"][0]
    assert job["docker_sd_configs"][0]["filters"] == [
        {"name": "label", "values": ["com.docker.compose.project=finopti"]}]
    stages = {next(iter(s)): s[next(iter(s))] for s in job["pipeline_stages"]}
    assert set(stages["labels"]) == {"service", "level"}
    assert {"trace_id", "span_id", "request_id"} <= set(stages["structured_metadata"])
    assert not {"trace_id", "span_id", "request_id"} & set(stages["labels"])
    assert {"target_label": "job", "replacement": "finopti"} in job["relabel_configs"]
    # Loki, and the logstore service through the gateway's mesh listener (what the console reads).
    assert promtail["clients"] == [{"url": "http://loki:3100/loki/api/v1/push"},
                                   {"url": "http://apisix:9081/logstore/loki/api/v1/push"}]


def test_loki_is_single_binary_on_the_filesystem_with_structured_metadata_and_retention(rendered):
    loki = yaml.safe_load(rendered["loki/config.yml"])
    assert loki["common"]["storage"]["filesystem"] and loki["common"]["ring"]["kvstore"]["store"] == "inmemory"
    schema = loki["schema_config"]["configs"][0]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "filesystem")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["compactor"]["retention_enabled"] is True and loki["limits_config"]["retention_period"]


def test_grafana_datasources_have_the_uids_the_dashboards_use(rendered):
    datasources = yaml.safe_load(rendered["grafana/provisioning/datasources/datasources.yml"])["datasources"]
    uids = {d["uid"] for d in datasources}
    assert {d["url"] for d in datasources} == {"http://prometheus:9090", "http://loki:3100"}
    dashboards = [t for p, t in rendered.items() if p.startswith("grafana/dashboards/")]
    assert dashboards
    for text in dashboards:
        assert "${DS_" not in text
        assert set(re.findall(r'"uid": "(finopti-(?:prometheus|loki))"', text)) <= uids


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus'; `make system-deps`)")
def test_promtool_accepts_the_bundles_prometheus_config_and_rules():
    directory = BUNDLE / "prometheus"
    config = subprocess.run([PROMTOOL, "check", "config", str(directory / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "recording_rules.yml" in config.stdout and "alert_rules.yml" in config.stdout
    rules = subprocess.run([PROMTOOL, "check", "rules", str(directory / "recording_rules.yml"),
                            str(directory / "alert_rules.yml")], capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_prometheus_scrapes_every_service_version_through_the_gateway(rendered):
    config = yaml.safe_load(rendered["prometheus/prometheus.yml"])
    gateway, services = config["scrape_configs"]
    assert gateway["static_configs"] == [{"targets": ["apisix:9091"]}]
    spec = load_mesh(REPO / "mesh.yaml")
    paths = {(g["labels"]["service"], g["labels"]["version"]): (g["targets"], g["labels"]["__metrics_path__"])
             for g in services["static_configs"]}
    assert paths == {(s.name, v): (["apisix:9092"], f"/metrics/{s.name}/{v}") for s in spec.services
                     for v in s.versions}


# --- image -------------------------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_health_checked_and_runs_the_service_runner():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+\.\d+-slim-\w+$", dockerfile, re.M)
    assert re.search(r"^USER finopti$", dockerfile, re.M)
    assert 'CMD ["python", "-m", "finopti.deploy.healthcheck"]' in dockerfile
    assert 'ENTRYPOINT ["python", "-m", "finopti.services.runner"]' in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".finopti", "tests"} <= set(ignored)


def _factory(settings):
    return lambda scope, receive, send: None


def test_the_service_runner_listens_on_the_address_compose_gives_it(monkeypatch):
    """In a container, 127.0.0.1 is unreachable from the gateway: the runner must honour FINOPTI_HOST."""
    from finopti.services import runner

    seen = {}

    class Server:
        def __init__(self, config):
            seen["host"] = config.host

        def run(self):
            pass

    monkeypatch.setattr(runner.uvicorn, "Server", Server)
    monkeypatch.setattr(runner, "configure_logging", lambda *a, **k: None)
    for key, value in {"FINOPTI_ENTRYPOINT": f"{__name__}:_factory", "FINOPTI_PORT": "8443",
                       "FINOPTI_HOST": "0.0.0.0"}.items():
        monkeypatch.setenv(key, value)
    runner.main()
    assert seen["host"] == "0.0.0.0", "finopti.services.runner ignores FINOPTI_HOST (see docs/deploy.md)"


def test_pki_gives_each_identity_only_its_own_files(tmp_path):
    from finopti.deploy.pki import distribute

    distribute(tmp_path, "gateway", ["ui-v1", "orchestrator-v1"], days=2)
    assert sorted(p.name for p in (tmp_path / "ui-v1").iterdir()) == ["ca.crt", "callers.pem", "tls.crt", "tls.key"]
    assert sorted(p.name for p in (tmp_path / "gateway").iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    callers = (tmp_path / "ui-v1" / "callers.pem").read_text()
    assert (tmp_path / "gateway" / "tls.crt").read_text() in callers
    assert (tmp_path / "ui-v1" / "tls.crt").read_text() in callers
    assert (tmp_path / "orchestrator-v1" / "tls.crt").read_text() not in callers
    assert (tmp_path / "ui-v1" / "tls.key").stat().st_mode & 0o077 == 0
    before = (tmp_path / "ui-v1" / "tls.crt").read_text()
    distribute(tmp_path, "gateway", ["ui-v1", "orchestrator-v1"], days=2)  # idempotent: a second `up`
    assert (tmp_path / "ui-v1" / "tls.crt").read_text() == before


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake in memory; raises ssl.SSLError when either side refuses."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"srv": False, "cli": False}
    for _ in range(20):
        for name, end, out, peer_in in (("cli", cli, c_out, s_in), ("srv", srv, s_out, c_in)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_pki_certificates_let_the_gateway_in_and_keep_other_services_out(tmp_path):
    """The service pins the gateway; the gateway checks the service's name (what nginx's proxy_ssl_name
    sends) against the mesh CA. Another service's certificate is refused."""
    from finopti.deploy.pki import distribute
    from finopti.meshtls import server_context

    distribute(tmp_path, "gateway", ["ui-v1", "orchestrator-v1"], days=2)
    ui, gateway, peer = tmp_path / "ui-v1", tmp_path / "gateway", tmp_path / "orchestrator-v1"
    server = server_context(ui / "tls.crt", ui / "tls.key", ui / "callers.pem")

    def client(identity: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(gateway / "ca.crt"))
        ctx.load_cert_chain(identity / "tls.crt", identity / "tls.key")
        return ctx

    _handshake(server, client(gateway), "ui-v1")
    with pytest.raises(ssl.SSLError):
        _handshake(server, client(gateway), "orchestrator-v1")  # wrong name: not the service asked for
    with pytest.raises(ssl.SSLError, match="certificate verify failed"):
        _handshake(server, client(peer), "ui-v1")  # a service calling another directly


def test_a_render_keeps_the_operators_env_file_and_removes_stale_files(tmp_path, rendered):
    (tmp_path / ".env").write_text("GRAFANA_ADMIN_PASSWORD=secret\n")
    (tmp_path / "apisix").mkdir()
    (tmp_path / "apisix" / "old.yaml").write_text("stale")
    write_bundle(rendered, tmp_path)
    assert (tmp_path / ".env").read_text() == "GRAFANA_ADMIN_PASSWORD=secret\n"
    assert not (tmp_path / "apisix" / "old.yaml").exists()
    assert rendered_files(tmp_path) == set(rendered)
