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
    def list_metrics() -> list[dict]:
        """The metrics that can be queried, with unit and description."""
        return cloud.list_metrics()

    return create_tool_server_app(settings, server, "monitoring-tools")
