"""gcloud-tools: an MCP server exposing compute and storage tools over the cloud backend (the sandbox)."""

from fastapi import FastAPI

from finopti.cloud import SandboxCloud
from finopti.services.common import ServiceSettings
from finopti.services.mcp_tools import create_tool_server_app, new_tool_server, reports_errors


def create_app(settings: ServiceSettings) -> FastAPI:
    cloud = SandboxCloud(settings.home / "sandbox.db")
    server = new_tool_server("gcloud-tools")

    @server.tool()
    @reports_errors
    def inventory() -> dict:
        """Names of every instance, disk, bucket, zone and machine type (with instances' zone, type, state, labels)."""
        return cloud.inventory()

    @server.tool()
    @reports_errors
    def list_instances(
        zone: str | None = None, state: str | None = None, label: str | None = None, machine_type: str | None = None
    ) -> list[dict]:
        """List VM instances, optionally in one zone, in one state (RUNNING/TERMINATED), with labels
        ('env=prod' or 'env=prod,team=payments') or of one machine type."""
        return cloud.list_instances(zone=zone, state=state, label=label, machine_type=machine_type)

    @server.tool()
    @reports_errors
    def describe_instance(name: str) -> dict:
        """Everything about one instance: machine type, state, labels, disks, hourly price."""
        return cloud.describe_instance(name)

    @server.tool()
    @reports_errors
    def start_instance(name: str) -> dict:
        """Start a stopped instance."""
        return cloud.start_instance(name)

    @server.tool()
    @reports_errors
    def stop_instance(name: str) -> dict:
        """Stop a running instance (compute billing stops; disks are still billed)."""
        return cloud.stop_instance(name)

    @server.tool()
    @reports_errors
    def resize_instance(name: str, machine_type: str) -> dict:
        """Change the machine type of a stopped instance."""
        return cloud.resize_instance(name, machine_type)

    @server.tool()
    @reports_errors
    def delete_instance(name: str) -> dict:
        """Delete an instance; its boot disk goes, its data disks stay as unattached disks."""
        return cloud.delete_instance(name)

    @server.tool()
    @reports_errors
    def list_disks(unattached_only: bool = False, zone: str | None = None, name: str | None = None) -> list[dict]:
        """List persistent disks (or the one called `name`); unattached_only finds disks billed but used by nothing."""
        return cloud.list_disks(unattached_only=unattached_only, zone=zone, name=name)

    @server.tool()
    @reports_errors
    def list_buckets(name: str | None = None) -> list[dict]:
        """List storage buckets (or the one called `name`) with location, class and size."""
        return cloud.list_buckets(name=name)

    @server.tool()
    @reports_errors
    def find_idle_instances(
        cpu_threshold: float = 5.0, days: int = 7, zone: str | None = None, label: str | None = None
    ) -> list[dict]:
        """Running instances (optionally of one zone / with labels 'key=value') whose average CPU over the last
        `days` is under `cpu_threshold` percent."""
        return cloud.find_idle_instances(cpu_threshold=cpu_threshold, days=days, zone=zone, label=label)

    @server.tool()
    @reports_errors
    def rightsizing_recommendations(days: int = 14, zone: str | None = None, label: str | None = None) -> list[dict]:
        """Machine type changes suggested by CPU and memory use over the last `days` (optionally of one zone /
        with labels 'key=value')."""
        return cloud.rightsizing_recommendations(days=days, zone=zone, label=label)

    @server.tool()
    @reports_errors
    def estimate_monthly_cost(
        group_by: str | None = None, label_key: str = "team", instance: str | None = None, label: str | None = None
    ) -> dict:
        """Monthly cost estimate: total, per instance, or per value of a label (`label_key`); `instance` gives
        one instance's cost, `label` ('team=payments') only the resources carrying it."""
        return cloud.estimate_monthly_cost(group_by=group_by, label_key=label_key, instance=instance, label=label)

    return create_tool_server_app(settings, server, "gcloud-tools")
