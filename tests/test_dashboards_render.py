"""Dashboards: the Grafana files (golden + structure), every LogQL against Loki's grammar, every PromQL
against promtool, and the console's JSON model.

No JSON schema of Grafana dashboards is available offline (@grafana/schema ships TypeScript types only,
grafana-foundation-sdk ships typed builders and models): the dashboards are built with the SDK's builders,
read back with its models, and checked structurally here.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from grafana_foundation_sdk.models.dashboard import Dashboard as SdkDashboard

from finopti.dashboards import (
    LOKI_UID,
    PROMETHEUS_UID,
    TRACE_VIEW_UID,
    console_model,
    dashboards,
    interpolate,
    render_grafana,
)
from finopti.dashboards.grafana import CONTAINER_DASHBOARDS

GOLDEN = Path(__file__).parent / "golden" / "grafana"
OUT = Path("deploy/compose/grafana")
# Values a person would pick, to turn templated queries into what the data source receives.
SAMPLE = {"service": ["orchestrator", "gateway"], "version": ".*", "route": ".*", "level": ".*", "traffic": "user",
          "text": "timeout", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "__range": "1h",
          "__interval": "1m"}
GRAFANA_GLOBALS = {"__range", "__interval", "__rate_interval"}
LOKI_STREAM_LABELS = {"job", "service", "level"}


def _files() -> dict[str, str]:
    return {str(path.relative_to(OUT)): content for path, content in render_grafana(OUT).items()}


def _dashboard_json() -> dict[str, dict]:
    """The provisioned dashboards (dashboards/), as Grafana loads them from the compose bundle."""
    return {path: json.loads(c) for path, c in _files().items() if path.startswith("dashboards/")}


def _exported_json() -> dict[str, dict]:
    """The dashboards to import into another Grafana (export/)."""
    return {path: json.loads(c) for path, c in _files().items() if path.startswith("export/")}


def _targets(kind: str):
    for path, d in _dashboard_json().items():
        for panel in d["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == kind:
                    yield path, panel["title"], target["expr"]


def test_grafana_rendering_matches_golden_files(update_golden):
    """Regenerate with `pytest tests/test_dashboards_render.py --update-golden` and review the diff."""
    files = _files()
    if update_golden:
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, content in files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(content)
    assert sorted(str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*") if p.is_file()) == sorted(files)
    for rel, content in files.items():
        assert (GOLDEN / rel).read_text() == content, f"{rel} differs from tests/golden/grafana/{rel}"


def test_layout_is_the_compose_grafana_directory():
    assert sorted(_files()) == [
        "dashboards/finopti-debug-console.json",
        "dashboards/finopti-overview.json",
        "dashboards/finopti-trace-view.json",
        "export/finopti-debug-console.json",
        "export/finopti-overview.json",
        "export/finopti-trace-view.json",
        "provisioning/dashboards/dashboards.yml",
        "provisioning/datasources/datasources.yml",
    ]
    provider = yaml.safe_load(_files()["provisioning/dashboards/dashboards.yml"])["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == CONTAINER_DASHBOARDS


def test_datasources_have_fixed_uids_and_trace_id_links_to_the_trace_view():
    provisioned = yaml.safe_load(_files()["provisioning/datasources/datasources.yml"])
    sources = {d["type"]: d for d in provisioned["datasources"]}
    assert sources["prometheus"]["uid"] == PROMETHEUS_UID and sources["loki"]["uid"] == LOKI_UID
    (field,) = sources["loki"]["jsonData"]["derivedFields"]
    # `$$` because Grafana expands environment variables in provisioning files.
    assert field["url"] == f"/d/{TRACE_VIEW_UID}?var-trace_id=$${{__value.raw}}"
    access_line = '{"ts":"2026-01-01T00:00:00.000Z","service":"gateway","trace_id":"%s","status":"200"}'
    service_line = '{"message": "request completed", "trace_id": "%s", "level": "info"}'
    for line in (access_line, service_line):
        match = re.search(field["matcherRegex"], line % SAMPLE["trace_id"])
        assert match and match.group(1) == SAMPLE["trace_id"]
    assert not re.search(field["matcherRegex"], service_line % "")  # lines outside a request: no link
    trace_view = _dashboard_json()[f"dashboards/{TRACE_VIEW_UID}.json"]
    assert "trace_id" in {v["name"] for v in trace_view["templating"]["list"]}


def test_dashboards_are_structurally_valid_grafana():
    for path, d in _dashboard_json().items():
        model = SdkDashboard.from_json(d)  # the SDK's own model reads it back
        assert model.uid == d["uid"] and len(model.panels or []) == len(d["panels"]), path
        assert d["schemaVersion"] >= 39 and d["title"] and d["uid"] == Path(path).stem
        variables = {v["name"] for v in d["templating"]["list"]}
        cells: set[tuple[int, int]] = set()
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{path}: panel ids repeat"
        for panel in d["panels"]:
            where = f"{path}: {panel['title']}"
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
            area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}
            assert not area & cells, f"{where} overlaps another panel"
            cells |= area
            assert panel["datasource"]["uid"] in {PROMETHEUS_UID, LOKI_UID}, where
            assert panel["targets"], f"{where} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"] or panel["type"] != "logs", where
                used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
                assert used <= variables | GRAFANA_GLOBALS, f"{where}: undefined variables {used - variables}"


def test_loki_queries_use_only_the_three_stream_labels_and_never_trace_id_as_one():
    exprs = [expr for _, _, expr in _targets("loki")]
    assert exprs
    for expr in exprs:
        # Stream selectors only: label_format's Go templates (in backquotes) have braces too.
        for selector in re.findall(r"\{([^}]*)\}", re.sub(r"`[^`]*`", "", expr)):
            labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
            assert labels <= LOKI_STREAM_LABELS, (expr, labels)
            assert 'job="finopti"' in selector, expr
    trace_queries = [e for e in exprs if "$trace_id" in e]
    assert trace_queries and all("| json | trace_id=\"$trace_id\"" in e for e in trace_queries)


# --- Loki's grammar (node + @grafana/lezer-logql) -------------------------------------------------------


def _logql_checker() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node/npm not installed: cannot run Loki's LogQL grammar (@grafana/lezer-logql)")
    if not (REPO / "node_modules" / "@grafana" / "lezer-logql").is_dir():
        install = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=REPO, capture_output=True, text=True,
                                 timeout=300)
        assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    return [node, str(REPO / "tests" / "logql_check.mjs")]


def _parse_logql(queries: list[str]) -> dict[str, str | None]:
    result = subprocess.run(_logql_checker(), input=json.dumps(queries), capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return {r["query"]: r["error"] for r in json.loads(result.stdout)}


def test_logql_checker_reports_a_broken_query():
    errors = _parse_logql(['{job="finopti"} | json', "{job=finopti}", '{job="finopti"} |= '])
    assert errors['{job="finopti"} | json'] is None
    assert errors["{job=finopti}"] and errors['{job="finopti"} |= ']


def test_every_logql_parses_with_lokis_grammar():
    queries = {interpolate(expr, SAMPLE): (path, title) for path, title, expr in _targets("loki")}
    errors = {q: e for q, e in _parse_logql(list(queries)).items() if e}
    assert errors == {}, [(queries[q], q, e) for q, e in errors.items()]


# --- PromQL (promtool) ----------------------------------------------------------------------------------


def test_every_promql_parses(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; `make system-deps`)")
    exprs = sorted({interpolate(expr, SAMPLE) for _, _, expr in _targets("prometheus")})
    assert exprs
    # promtool parses rule expressions offline: each query becomes a recording rule.
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"finopti:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(tmp_path / "queries.yml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the console's model ----------------------------------------------------------------------------------


def test_console_model_is_plain_json_and_mirrors_the_dashboards():
    model = console_model()
    assert json.loads(json.dumps(model)) == model
    assert [d["uid"] for d in model["dashboards"]] == [d.uid for d in dashboards()]
    for d in model["dashboards"]:
        for panel in d["panels"]:
            assert panel["kind"] in {"timeseries", "stat", "table", "logs", "trace", "graph"}
            assert "expected_empty_reason" in panel and panel["queries"]
            for q in panel["queries"]:
                assert q["type"] in {"metric", "log", "graph"}
                if q["type"] == "metric":
                    assert q["promql"]
                elif q["type"] == "log":
                    assert q["logql"].startswith(("{", "topk(", "sum by ("))
        assert {link["uid"] for link in d["links"]} == {x.uid for x in dashboards()} - {d["uid"]}
    names = {v["name"] for d in model["dashboards"] for v in d["variables"]}
    assert {"service", "route", "version", "trace_id", "level", "text", "traffic"} <= names


# --- what the overview shows (the complaints, each as a property of the model) ----------------------


def _overview() -> dict:
    return next(d for d in console_model()["dashboards"] if d["uid"] == "finopti-overview")


def _promql(panel: dict) -> list[str]:
    return [q["promql"] for q in panel["queries"] if q["type"] == "metric"]


def test_user_traffic_by_default_and_streams_never_in_latency():
    overview = _overview()
    traffic = next(v for v in overview["variables"] if v["name"] == "traffic")
    assert traffic["default"] == "user" and set(traffic["options"]) == {"user", "platform"}
    for panel in overview["panels"]:
        for expr in _promql(panel):
            if "finopti:route_" in expr or "finopti:service_" in expr:
                assert 'traffic=~"$traffic"' in expr, (panel["title"], expr)
            if "latency_seconds" in expr:
                assert 'traffic!="stream"' in expr, (panel["title"], expr)


def test_counts_of_events_are_whole_numbers():
    for panel in _overview()["panels"]:
        for expr in _promql(panel):
            if "increase(" in expr:
                assert expr.startswith("round("), (panel["title"], expr)


def test_error_panel_counts_the_gateways_own_5xx():
    """Injected faults and open circuits are answered by the gateway, not a backend: the listener series."""
    panel = next(p for p in _overview()["panels"] if p["title"] == "Error ratio")
    assert any("finopti:listener_errors:ratio_rate1m" in e for e in _promql(panel))


def test_top_errors_leave_out_request_completed_lines():
    panel = next(p for p in _overview()["panels"] if p["title"] == "Top error messages")
    (query,) = panel["queries"]
    assert query["drop_events"] == ["request_completed"] and 'event!="request_completed"' in query["logql"]


def test_service_graph_queries_edges_from_access_lines():
    panel = next(p for p in _overview()["panels"] if p["kind"] == "graph")
    (query,) = panel["queries"]
    assert set(query["logql"]) == {"requests", "errors", "p95_ms"}
    assert "ui" in query["exclude_services"] and "orchestrator" not in query["exclude_services"]
    grafana = _dashboard_json()["dashboards/finopti-overview.json"]
    table = next(p for p in grafana["panels"] if p["title"] == "Service graph")
    assert [t["expr"] for t in table["targets"]] == list(query["logql"].values())


def test_exported_dashboards_ask_for_their_data_sources_at_import():
    """Grafana's import reads __inputs, asks for a data source per input and replaces ${DS_...} with it."""
    for path, d in _exported_json().items():
        names = {i["name"] for i in d["__inputs"]}
        assert names and names <= {"DS_PROMETHEUS", "DS_LOKI"}, path
        assert all(i["type"] == "datasource" and i["pluginId"] in ("prometheus", "loki") for i in d["__inputs"])
        text = json.dumps(d)
        assert PROMETHEUS_UID not in text and LOKI_UID not in text, f"{path} still names our data sources"
        used = set(re.findall(r'"uid": "\$\{(DS_\w+)\}"', text))
        assert used == names, path
        provisioned = _dashboard_json()[path.replace("export/", "dashboards/")]
        assert d["panels"][0]["title"] == provisioned["panels"][0]["title"] and d["links"] == provisioned["links"]


def test_dashboards_link_to_each_other():
    uids = {d.uid for d in dashboards()}
    for path, d in _dashboard_json().items():
        assert {link["url"] for link in d["links"]} == {f"/d/{uid}" for uid in uids - {d["uid"]}}, path


def test_overview_has_every_signal_the_platform_promises():
    overview = next(d for d in dashboards() if d.uid == "finopti-overview")
    text = " ".join(q.promql for p in overview.panels for q in p.queries if hasattr(q, "promql"))
    for needle in ("finopti:route_requests:rate1m", "finopti:route_errors:ratio_rate1m",
                   "finopti:route_latency_seconds:p99", "finopti:service_requests:rate1m",
                   "finopti:service_latency_seconds:p50", "envoy_cluster_upstream_rq_retry",
                   "envoy_cluster_outlier_detection_ejections_enforced_total",
                   "envoy_http_local_rate_limit_rate_limited", "envoy_http_fault_aborts_injected",
                   "finopti:upstream_requests:rate1m", "finopti:circuit_open", "finopti:upstream_overflows:rate1m",
                   "finopti:circuit_refused:rate1m"):
        assert needle in text, needle
    assert any(p.kind == "table" and p.queries[0].top_by for p in overview.panels)  # top error messages
