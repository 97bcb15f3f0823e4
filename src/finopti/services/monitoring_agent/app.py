"""monitoring-agent: utilization questions, served by monitoring-tools over MCP."""

from typing import Any

from fastapi import FastAPI

from finopti.services.agent import Action, create_agent_app, plural
from finopti.services.common import ServiceSettings
from finopti.services.monitoring_agent.platform_logs import PLATFORM_LOGS_SCHEMA, platform_logs
from finopti.services.views import col, stat, table, timeseries

METRIC_LABELS = {"cpu": "CPU", "memory": "memory"}


def _series(data: Any, _: dict) -> str:
    metric = METRIC_LABELS.get(data["metric"], data["metric"])
    return (f"{metric} utilization of {data['instance']} over {plural(data['days'], 'day')}: "
            f"average {data['avg']}%, p95 {data['p95']}%, max {data['max']}%")


def _series_view(data: Any, _: dict) -> dict:
    metric = METRIC_LABELS.get(data.get("metric"), data.get("metric", "value"))
    return timeseries(rows="points", x="ts", y=["value"], unit="%", labels={"value": f"{metric} %"},
                      columns=[col("ts", "Time", "datetime"), col("value", f"{metric} %".capitalize(), "%")],
                      stats=[stat("Average", "avg", "%"), stat("p95", "p95", "%"), stat("Max", "max", "%")])


def _explain_series(data: Any, _: dict) -> str:
    step = data.get("step_hours", 1)
    return (f"{plural(len(data.get('points', [])), 'point')} of the hourly average, one every "
            f"{plural(step, 'hour')}, from {data.get('start')} to {data.get('end')}; p95 is the nearest-rank 95th "
            "percentile of those points.")


def _metrics(data: Any, _: dict) -> str:
    return "available metrics: " + ", ".join(m["name"] for m in data)


def _inventory(data: Any, _: dict) -> str:
    return f"{len(data['instances'])} instances in {len(data['zones'])} zones"


PLURALS = {"entry": "entries", "log line": "log lines"}


def _counted(n: int, noun: str, data: dict) -> str:
    """"1 entry at WARNING or worse", "3 log lines" — answers read as sentences."""
    severity = data["filter"].get("min_severity")
    words = f"{n or 'no'} {noun if n == 1 else PLURALS[noun]}"
    return words + (f" at {severity} or worse" if severity and severity not in ("DEFAULT", "DEBUG") else "")


def _instance_logs(data: Any, _: dict) -> str:
    subject = data["filter"].get("instance") or "the instances"
    where = " ".join(f"{k} {v}" for k, v in data["filter"].items() if k in ("zone", "label"))
    scope = f"{subject}{' in ' + where if where else ''}"
    text = f' mentioning "{data["filter"]["text"]}"' if data["filter"].get("text") else ""
    window = f"{data['window']['description']} (sandbox clock {data['clock']})"
    if not data["total"]:
        return f"{_counted(0, 'entry', data)}{text} in the logs of {scope} {window}"
    counts = ", ".join(f"{i['instance']} {i['entries']} ({i['worst_severity']})" for i in data["instances"][:8])
    more = f" and {len(data['instances']) - 8} more" if len(data["instances"]) > 8 else ""
    return f"{_counted(data['total'], 'entry', data)}{text} in the logs of {scope} {window}: {counts}{more}"


def _platform_logs(data: Any, _: dict) -> str:
    service = data["filter"].get("service") or "the platform's services"
    text = f' mentioning "{data["filter"]["text"]}"' if data["filter"].get("text") else ""
    window = data["window"]["description"]
    if not data["total"]:
        return f"{_counted(0, 'log line', data)}{text} from {service} {window}"
    top = "; ".join(f"{m['service']} {m['level']} “{m['message']}” ×{m['count']}" for m in data["messages"][:3])
    at_least = "at least " if data["more"] else ""
    return f"{at_least}{_counted(data['total'], 'log line', data)}{text} from {service} {window}: {top}"


ENTRY_COLUMNS = {"type": "table", "rows": "entries", "columns": [
    {"key": "timestamp", "label": "Time", "unit": "datetime"}, {"key": "severity", "label": "Severity"},
    {"key": "instance", "label": "Instance"}, {"key": "message", "label": "Message"},
    {"key": "log_name", "label": "Log"}]}
PLATFORM_COLUMNS = {"type": "table", "rows": "entries", "columns": [
    {"key": "timestamp", "label": "Time", "unit": "datetime"}, {"key": "level", "label": "Level"},
    {"key": "service", "label": "Service"}, {"key": "message", "label": "Message"},
    {"key": "trace_id", "label": "Trace"}]}


ACTIONS = {
    "inventory": Action("inventory", "Names of every instance, disk, bucket, zone and machine type", _inventory),
    "query_time_series": Action("query_time_series", "CPU or memory utilization of an instance", _series,
                                view=_series_view, explain=_explain_series),
    "list_metrics": Action("list_metrics", "List the metrics that can be queried", _metrics,
                           view=table(columns=[col("name"), col("unit"), col("description"),
                                               col("gcp_metric", "Cloud Monitoring metric")])),
    "query_instance_logs": Action("query_instance_logs", "The instances' log entries (Cloud Logging)",
                                  _instance_logs, view=lambda data, args: ENTRY_COLUMNS),
    "query_platform_logs": Action("", "The platform's own log lines (from the log store)", _platform_logs,
                                  view=lambda data, args: PLATFORM_COLUMNS, handler=platform_logs,
                                  schema=PLATFORM_LOGS_SCHEMA),
}


def create_app(settings: ServiceSettings) -> FastAPI:
    return create_agent_app(settings, "monitoring-agent", "monitoring-tools", ACTIONS)
