"""The dashboard model as plain JSON, for the built-in console (the ui service renders it)."""

from dataclasses import asdict

from finopti.dashboards.catalog import dashboards
from finopti.dashboards.logql import graph_logql, logql
from finopti.dashboards.model import Dashboard, GraphQuery, LogQuery, MetricQuery, Panel, Query

CONSOLE_MODEL_VERSION = 2


def _query(q: Query) -> dict:
    if isinstance(q, MetricQuery):
        return {"type": "metric", "promql": q.promql, "legend": q.legend}
    if isinstance(q, GraphQuery):
        return {"type": "graph", "exclude_services": list(q.exclude_services), "logql": graph_logql(q)}
    assert isinstance(q, LogQuery)
    return {
        "type": "log",
        "services": list(q.services),
        "level": q.level,
        "trace_var": q.trace_var,
        "text": q.text,
        "top_by": list(q.top_by),
        "limit": q.limit,
        "drop_events": list(q.drop_events),
        "volume_by": list(q.volume_by),
        "logql": logql(q),  # the same filter for a Loki backend
    }


def _panel(p: Panel) -> dict:
    return {
        "title": p.title,
        "kind": p.kind,
        "unit": p.unit,
        "width": p.width,
        "description": p.description,
        "expected_empty_reason": p.expected_empty_reason,
        "columns": list(p.columns),
        "queries": [_query(q) for q in p.queries],
    }


def _dashboard(d: Dashboard) -> dict:
    variables = []
    for v in d.variables:
        item = asdict(v)
        item["options"] = list(v.options)
        variables.append(item)
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "refresh": d.refresh,
        "time_from": d.time_from,
        "variables": variables,
        "links": [{"title": link.title, "uid": link.uid} for link in d.links],
        "panels": [_panel(p) for p in d.panels],
    }


def console_model() -> dict:
    """Every dashboard with its variables, PromQL and log filters; plain JSON types only."""
    return {
        "version": CONSOLE_MODEL_VERSION,
        "interpolation": {
            "variables": "$name in a query; a multi-value variable is a regex alternation (a|b), All is .*",
            "$__range": "the dashboard's time window as a duration, e.g. 1h",
            "log text": "case-insensitive regex on the raw line",
            "log trace_var": "the line's trace_id field equals the variable's value",
            "log drop_events": "lines whose event field is one of these are left out",
            "graph": "gateway access lines of the window: one edge per (source identity or 'clients', upstream "
            "service) with requests, 5xx and p95 duration_ms; exclude_services unless traffic includes platform",
        },
        "dashboards": [_dashboard(d) for d in dashboards()],
    }
