"""Render the dashboard model to Grafana: dashboard JSON plus provisioning files.

Built with the official grafana-foundation-sdk builders (targeting Grafana 11.6, schemaVersion 41);
`render_grafana` is pure, the CLI writes what it returns. Layout under `out_dir` (deploy/compose/grafana):

    provisioning/datasources/datasources.yml   Prometheus + Loki with fixed uids
    provisioning/dashboards/dashboards.yml     a file provider for the dashboards folder
    dashboards/<uid>.json                      provisioned: data sources by their fixed uids
    export/<uid>.json                          to import into another Grafana: `__inputs` name the two data
                                               sources (${DS_PROMETHEUS}, ${DS_LOKI}), chosen at import
"""

import json
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import logs, loki, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LogsSortOrder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    VariableOption,
    VariableRefresh,
)

from finopti.dashboards.catalog import TRACE_VIEW_UID, dashboards
from finopti.dashboards.logql import graph_logql, logql
from finopti.dashboards.model import Dashboard, GraphQuery, LogQuery, MetricQuery, Panel, Variable

PROMETHEUS_UID = "finopti-prometheus"
LOKI_UID = "finopti-loki"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
LOKI = DataSourceRef(type_val="loki", uid=LOKI_UID)
# Where the compose file mounts `dashboards/` inside the Grafana container.
CONTAINER_DASHBOARDS = "/var/lib/grafana/dashboards"
ALL = ".*"  # what "All" stands for in a regex matcher
PANEL_HEIGHT = {"stat": 5, "logs": 14, "table": 10, "trace": 10, "timeseries": 8, "graph": 8}
# Data sources as an exported dashboard names them (Grafana's "export for sharing externally").
INPUTS = {PROMETHEUS_UID: ("DS_PROMETHEUS", "Prometheus", "prometheus"), LOKI_UID: ("DS_LOKI", "Loki", "loki")}


def _variable(v: Variable):
    label = v.label or v.name
    if v.kind == "text":
        return gd.TextBoxVariable(v.name).label(label).default_value(v.default)
    if v.kind == "custom":
        var = gd.CustomVariable(v.name).label(label).values(",".join(v.options))
    else:
        source = v.values_label or v.name
        var = (
            gd.QueryVariable(v.name).label(label)
            .datasource(LOKI if v.values_from == "logs" else PROMETHEUS)
            .query(f"label_values({v.selector}, {source})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(1)  # alphabetical
        )
    if v.multi:
        var = var.multi(True).include_all(True).all_value(ALL)
    if v.default:
        var = var.current(VariableOption(selected=True, text=[v.default], value=[v.default]))
    return var


def _targets(panel: Panel) -> list:
    instant = panel.kind in ("stat", "table")
    targets = []
    for index, q in enumerate(panel.queries):
        ref = chr(ord("A") + index)
        if isinstance(q, GraphQuery):
            # One instant query per figure; the panel merges them into one row per edge.
            for sub, (name, expr) in enumerate(graph_logql(q).items()):
                targets.append(loki.Dataquery().expr(expr).ref_id(chr(ord("A") + sub)).datasource(LOKI)
                               .legend_format(name).query_type("instant"))
            continue
        if isinstance(q, MetricQuery):
            t = prometheus.Dataquery().expr(q.promql).ref_id(ref).datasource(PROMETHEUS)
            if q.legend:
                t = t.legend_format(q.legend)
            targets.append(t.instant() if instant else t.range())
        else:
            t = loki.Dataquery().expr(logql(q)).ref_id(ref).datasource(LOKI)
            if q.volume_by:
                t = t.legend_format(" ".join(f"{{{{{label}}}}}" for label in q.volume_by))
            targets.append(t.query_type("instant" if q.top_by else "range"))
    return targets


def _log_fields_table(columns: tuple[str, ...]) -> list[DataTransformerConfig]:
    """A table of JSON log lines: extract the line's fields, keep and order the chosen ones."""
    steps = [DataTransformerConfig(id_val="extractFields",
                                   options={"source": "Line", "format": "json", "replace": True})]
    if columns:
        steps += [
            DataTransformerConfig(id_val="filterFieldsByName", options={"include": {"names": list(columns)}}),
            DataTransformerConfig(id_val="organize",
                                  options={"indexByName": {name: i for i, name in enumerate(columns)}}),
        ]
    return steps


def _panel(p: Panel, panel_id: int):
    logs_only = all(isinstance(q, LogQuery | GraphQuery) for q in p.queries)
    if p.kind == "timeseries":
        b = timeseries.Panel()
    elif p.kind == "stat":
        b = stat.Panel()
    elif p.kind == "logs":
        b = (logs.Panel().show_time(True).wrap_log_message(True).enable_log_details(True)
             .sort_order(LogsSortOrder.DESCENDING))
    elif p.kind == "graph":
        # Grafana's node graph wants nodes and edges frames that LogQL cannot shape: a table of the edges.
        b = table.Panel()
        b = b.with_transformation(DataTransformerConfig(id_val="merge", options={}))
        b = b.with_transformation(DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "renameByName": {"Value #A": "requests", "Value #B": "errors (5xx)", "Value #C": "p95 (ms)"},
        }))
    else:
        # "trace" is a list of hops: Grafana's traces panel needs a tracing data source, we have log lines.
        b = table.Panel()
        if logs_only and any(isinstance(q, LogQuery) and q.top_by for q in p.queries):
            b = b.with_transformation(DataTransformerConfig(id_val="labelsToFields", options={"mode": "columns"}))
            b = b.with_transformation(DataTransformerConfig(id_val="merge", options={}))
        elif logs_only:
            for step in _log_fields_table(p.columns):
                b = b.with_transformation(step)
    b = b.id(panel_id).title(p.title).datasource(LOKI if logs_only else PROMETHEUS)
    b = b.span(p.width).height(PANEL_HEIGHT[p.kind])
    description = p.description
    if p.expected_empty_reason:
        description = f"{description}\n\nExpected empty: {p.expected_empty_reason}".strip()
    if description:
        b = b.description(description)
    if p.unit and p.kind in ("timeseries", "stat"):
        b = b.unit(p.unit)
    for target in _targets(p):
        b = b.with_target(target)
    return b


def grafana_dashboard(d: Dashboard) -> dict:
    """One dashboard as the JSON object Grafana loads."""
    b = (
        gd.Dashboard(d.title).uid(d.uid).description(d.description).tags(list(d.tags))
        .time(d.time_from, "now").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable()
    )
    if d.refresh:
        b = b.refresh(d.refresh)
    for v in d.variables:
        b = b.with_variable(_variable(v))
    for link in d.links:
        b = b.link(gd.DashboardLink(link.title).type(DashboardLinkType.LINK).url(f"/d/{link.uid}")
                   .include_vars(False).keep_time(True).icon("dashboard"))
    for index, p in enumerate(d.panels, start=1):
        b = b.with_panel(_panel(p, index))
    # Through JSON once: the SDK's models become plain dicts and lists.
    return json.loads(json.dumps(b.build(), cls=JSONEncoder))


def _datasources(prometheus_url: str, loki_url: str) -> dict:
    # `$$`: Grafana expands $VAR in provisioning files; `$${__value.raw}` reaches Grafana as `${__value.raw}`.
    trace_link = f"/d/{TRACE_VIEW_UID}?var-trace_id=$${{__value.raw}}"
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus", "uid": PROMETHEUS_UID, "type": "prometheus", "access": "proxy",
                "url": prometheus_url, "isDefault": True, "editable": False,
                "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
            },
            {
                "name": "Loki", "uid": LOKI_UID, "type": "loki", "access": "proxy", "url": loki_url,
                "editable": False,
                "jsonData": {
                    "maxLines": 1000,
                    "derivedFields": [{
                        "name": "trace_id",
                        "matcherType": "regex",
                        "matcherRegex": r'"trace_id":\s*"([0-9a-f]{32})"',
                        "url": trace_link,
                        "urlDisplayLabel": "Open in Trace View",
                    }],
                },
            },
        ],
    }


def _provider() -> dict:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "finopti",
            "folder": "FinOptiAgents",
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": CONTAINER_DASHBOARDS},
        }],
    }


def render_grafana(
    out_dir: Path | str,
    *,
    prometheus_url: str = "http://prometheus:9090",
    loki_url: str = "http://loki:3100",
) -> dict[Path, str]:
    """Path -> file content for Grafana's provisioning and the dashboards (URLs as seen from Grafana)."""
    out = Path(out_dir)
    files = {
        out / "provisioning/datasources/datasources.yml": yaml.safe_dump(
            _datasources(prometheus_url, loki_url), sort_keys=False),
        out / "provisioning/dashboards/dashboards.yml": yaml.safe_dump(_provider(), sort_keys=False),
    }
    for d in dashboards():
        rendered = grafana_dashboard(d)
        files[out / "dashboards" / f"{d.uid}.json"] = json.dumps(rendered, indent=2) + "\n"
        files[out / "export" / f"{d.uid}.json"] = json.dumps(for_import(rendered), indent=2) + "\n"
    return files


def for_import(dashboard: dict) -> dict:
    """The dashboard as Grafana exports it for another Grafana: `__inputs` ask for a Prometheus and a Loki data
    source at import, and every reference to ours becomes `${DS_PROMETHEUS}` / `${DS_LOKI}`."""
    text = json.dumps(dashboard)
    used = [uid for uid in INPUTS if f'"uid": "{uid}"' in text]
    for uid in used:
        text = text.replace(f'"uid": "{uid}"', f'"uid": "${{{INPUTS[uid][0]}}}"')
    exported = json.loads(text)
    exported.pop("id", None)
    inputs = [{"name": INPUTS[uid][0], "label": INPUTS[uid][1], "description": "", "type": "datasource",
               "pluginId": INPUTS[uid][2], "pluginName": INPUTS[uid][1]} for uid in used]
    requires = [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "11.6.0"}] + [
        {"type": "datasource", "id": INPUTS[uid][2], "name": INPUTS[uid][1], "version": "1.0.0"} for uid in used]
    return {"__inputs": inputs, "__requires": requires, **exported}
