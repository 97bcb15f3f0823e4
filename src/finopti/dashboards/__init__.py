"""The platform's dashboards: one model (Platform Overview, Trace View, Debug Console), two renderers."""

from finopti.dashboards.catalog import DEBUG_CONSOLE_UID, OVERVIEW_UID, TRACE_VIEW_UID, dashboards
from finopti.dashboards.console import console_model
from finopti.dashboards.grafana import LOKI_UID, PROMETHEUS_UID, grafana_dashboard, render_grafana
from finopti.dashboards.logql import logql
from finopti.dashboards.model import Dashboard, LogQuery, MetricQuery, Panel, Variable, interpolate

__all__ = [
    "DEBUG_CONSOLE_UID",
    "LOKI_UID",
    "OVERVIEW_UID",
    "PROMETHEUS_UID",
    "TRACE_VIEW_UID",
    "Dashboard",
    "LogQuery",
    "MetricQuery",
    "Panel",
    "Variable",
    "console_model",
    "dashboards",
    "grafana_dashboard",
    "interpolate",
    "logql",
    "render_grafana",
]
