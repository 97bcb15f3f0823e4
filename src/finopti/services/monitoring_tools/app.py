"""monitoring-tools: an MCP server exposing utilization metrics of the cloud backend (the sandbox)."""

from fastapi import FastAPI

from finopti.cloud.backend import open_backend
from finopti.services.common import ServiceSettings
from finopti.services.mcp_tools import create_tool_server_app, new_tool_server, reports_errors


def create_app(settings: ServiceSettings) -> FastAPI:
    cloud = open_backend(settings.home)
    server = new_tool_server("monitoring-tools")

    @server.tool()
    @reports_errors
    def query_time_series(instance: str, metric: str = "cpu", days: int = 1, step_hours: int = 1) -> dict:
        """Utilization of one instance (metric cpu or memory, percent) over the last `days`."""
        return cloud.query_time_series(instance, metric, days=days, step_hours=step_hours)

    @server.tool()
    @reports_errors
    def inventory() -> dict:
        """Names of every instance, disk, bucket, zone and machine type (with instances' zone, type, state, labels)."""
        return cloud.inventory()

    @server.tool()
    @reports_errors
    def query_instance_logs(
        instance: str | None = None, zone: str | None = None, label: str | None = None,
        min_severity: str | None = None, window: str = "24h", text: str | None = None, limit: int = 100,
    ) -> dict:
        """The instances' log entries in a window (30m, 6h, 2d, today, yesterday, this_morning, this_week), of
        one instance, zone or labels ('env=prod'), at `min_severity` (WARNING, ERROR, CRITICAL...) or worse,
        containing `text`; newest first, with counts per severity and per instance."""
        return cloud.query_instance_logs(instance=instance, zone=zone, label=label, min_severity=min_severity,
                                         window=window, text=text, limit=limit)

    @server.tool()
    @reports_errors
    def list_metrics() -> list[dict]:
        """The metrics that can be queried, with unit and description."""
        return cloud.list_metrics()

    return create_tool_server_app(settings, server, "monitoring-tools")
