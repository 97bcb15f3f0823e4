"""Prometheus config and rules rendered from mesh.yaml: golden files, shape, and promtool's checks."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from finopti.mesh.model import load_mesh
from finopti.mesh.resolved import resolve
from finopti.observability import (
    ScrapeTargets,
    ScrapeTls,
    prometheus_command,
    render_alert_rules,
    render_prometheus_config,
    render_recording_rules,
)
from finopti.observability.traffic import classify_routes
from finopti.pki import ensure_pki

GOLDEN = Path(__file__).parent / "golden" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus'; `make system-deps`)"
)


def _targets(spec) -> ScrapeTargets:
    port = iter(range(10001, 20000))
    return ScrapeTargets(
        gateway_admin="127.0.0.1:9901",
        services={s.name: {v: f"127.0.0.1:{next(port)}" for v in s.versions} for s in spec.services},
    )


def _render(pki_dir: Path = Path("/state/pki"), rules_dir: Path = Path("/state/prometheus")) -> dict[str, dict]:
    spec = load_mesh(REPO / "mesh.yaml")
    tls = ScrapeTls(pki_dir / "ca.crt", pki_dir / "prometheus.crt", pki_dir / "prometheus.key")
    rule_files = [str(rules_dir / "recording_rules.yml"), str(rules_dir / "alert_rules.yml")]
    return {
        "prometheus.yml": render_prometheus_config(spec, _targets(spec), tls=tls, rule_files=rule_files),
        "recording_rules.yml": render_recording_rules(resolve(spec)),
        "alert_rules.yml": render_alert_rules(resolve(spec)),
    }


def test_prometheus_rendering_matches_golden_files(update_golden):
    """Regenerate with `pytest tests/test_prometheus_render.py --update-golden` and review the diff."""
    documents = _render()
    if update_golden:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, doc in documents.items():
            (GOLDEN / name).write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
    assert sorted(p.name for p in GOLDEN.glob("*.yml")) == sorted(documents)
    for name, doc in documents.items():
        assert yaml.safe_load((GOLDEN / name).read_text()) == doc, f"{name} differs from tests/golden/prometheus/{name}"


def test_one_target_per_service_version_labelled_and_scraped_over_mtls():
    config = _render()["prometheus.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["gateway"]["metrics_path"] == "/stats/prometheus"
    services = jobs["finopti-services"]
    assert services["scheme"] == "https"
    assert services["tls_config"] == {"ca_file": "/state/pki/ca.crt", "cert_file": "/state/pki/prometheus.crt",
                                      "key_file": "/state/pki/prometheus.key"}
    spec = load_mesh(REPO / "mesh.yaml")
    labelled = [c["labels"] for c in services["static_configs"]]
    assert labelled == [{"service": s.name, "version": v} for s in spec.services for v in s.versions]


def test_plain_http_without_pki_and_targets_must_match_the_mesh():
    spec = load_mesh(REPO / "mesh.yaml")
    config = render_prometheus_config(spec, _targets(spec))
    services = config["scrape_configs"][1]
    assert "tls_config" not in services and "scheme" not in services
    missing = ScrapeTargets("127.0.0.1:9901", {"ui": {"v1": "127.0.0.1:1"}})
    with pytest.raises(ValueError, match="no scrape target for service 'orchestrator' version 'v1'"):
        render_prometheus_config(spec, missing)
    extra = _targets(spec)
    extra.services["billing"] = {"v1": "127.0.0.1:2"}
    with pytest.raises(ValueError, match="not in the mesh: billing/v1"):
        render_prometheus_config(spec, extra)


def test_rules_cover_red_per_route_and_service_and_the_alerts():
    spec = load_mesh(REPO / "mesh.yaml")
    records = {r["record"] for g in render_recording_rules(resolve(spec), interval="1s")["groups"] for r in g["rules"]}
    for level in ("route", "listener", "upstream", "service"):
        assert {f"finopti:{level}_requests:rate1m", f"finopti:{level}_errors:ratio_rate1m"} <= records
        assert {f"finopti:{level}_latency_seconds:{q}" for q in ("p50", "p95", "p99")} <= records
    alerts = [r for g in render_alert_rules(resolve(spec))["groups"] for r in g["rules"]]
    names = {a["alert"] for a in alerts}
    assert {"FinoptiRouteErrorRatioHigh", "FinoptiServiceErrorRatioHigh", "FinoptiCircuitOpened",
            "FinoptiRateLimitingSpike", "FinoptiTargetDown", "FinoptiTargetMissing"} <= names
    # Rendered from the mesh: a latency alert per route with a timeout, at 80% of it; a stream (the live tail's
    # hour) ends when its watcher leaves, so it has none.
    near = {a["expr"] for a in alerts if a["alert"] == "FinoptiRouteLatencyNearTimeout"}
    traffic = classify_routes(resolve(spec))
    assert traffic["logs-tail"] == "stream" and traffic["ask"] == "user" and traffic["ui-static"] == "platform"
    for route in spec.routes:
        timeout = spec.effective_policy(route).timeout
        selector = f'{{listener="{route.listener}",route="{route.name}"}}'
        if timeout and traffic[route.name] != "stream":
            assert f"finopti:route_latency_seconds:p99{selector} > {timeout * 0.8:g}" in near
        else:  # no timeout declared (the ui route), or a stream: nothing to be near
            assert not any(selector in e for e in near)


def test_prometheus_command_line():
    cmd = prometheus_command(Path("/s/prometheus.yml"), Path("/s/tsdb"), listen="127.0.0.1:9090")
    assert cmd[0] == "prometheus"
    assert "--storage.tsdb.path=/s/tsdb" in cmd and "--web.listen-address=127.0.0.1:9090" in cmd


@needs_promtool
def test_promtool_accepts_the_rendered_config_and_rules(tmp_path):
    """Full check, TLS files included: the PKI is real (finopti.pki), the rule files are the rendered ones."""
    pki = ensure_pki(tmp_path / "pki", ["prometheus"])
    documents = _render(pki_dir=pki.pki_dir, rules_dir=tmp_path)
    for name, doc in documents.items():
        (tmp_path / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    config = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "recording_rules.yml" in config.stdout and "alert_rules.yml" in config.stdout  # both rule files read
    rules = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "recording_rules.yml"),
                            str(tmp_path / "alert_rules.yml")], capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout


@needs_promtool
def test_budget_thresholds_become_alerts_with_the_spend_ratio(tmp_path):
    """promtool's rule unit test on the rendered rules: one alert per budget, basis and threshold crossed, valued
    at the spend ratio; two scraped versions of the tool server exporting the same budget make no duplicates."""
    documents = _render(rules_dir=tmp_path)
    for name in ("recording_rules.yml", "alert_rules.yml"):
        (tmp_path / name).write_text(yaml.safe_dump(documents[name], sort_keys=False))
    series = []
    for version in ("v1", "v2"):
        target = f'service="gcloud-tools",version="{version}"'
        series += [
            {"series": f'finopti_budget_amount{{budget="team-a",currency="USD",{target}}}', "values": "1000x10"},
            {"series": f'finopti_budget_spend{{budget="team-a",basis="actual",currency="USD",{target}}}',
             "values": "600x10"},
            {"series": f'finopti_budget_spend{{budget="team-a",basis="forecast",currency="USD",{target}}}',
             "values": "1150x10"},
            *({"series": f'finopti_budget_threshold_ratio{{budget="team-a",basis="{basis}",threshold="{t}",'
                         f'{target}}}', "values": f"{int(t) / 100}x10"}
              for basis, t in (("actual", "50"), ("actual", "90"), ("forecast", "100"))),
        ]
    alert = "FinoptiBudgetThresholdCrossed"
    summary = "Budget team-a: {} spend is {} of its amount, past the {}% threshold"
    expected = [
        {"exp_labels": {"severity": "warning", "budget": "team-a", "basis": "actual", "threshold": "50"},
         "exp_annotations": {"summary": summary.format("actual", "60%", "50")}},
        {"exp_labels": {"severity": "warning", "budget": "team-a", "basis": "forecast", "threshold": "100"},
         "exp_annotations": {"summary": summary.format("forecast", "115%", "100")}},
    ]
    test = {"rule_files": ["recording_rules.yml", "alert_rules.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series,
                       "alert_rule_test": [{"eval_time": "5m", "alertname": alert, "exp_alerts": expected}]}]}
    (tmp_path / "budgets_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", "budgets_test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
