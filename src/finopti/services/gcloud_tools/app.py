"""gcloud-tools: an MCP server exposing compute, storage and billing tools over the cloud backend (the sandbox)."""

from fastapi import FastAPI

from finopti.cloud.backend import open_backend
from finopti.services.common import ServiceSettings
from finopti.services.gcloud_tools.budget_metrics import BudgetCollector, register
from finopti.services.mcp_tools import create_tool_server_app, new_tool_server, reports_errors
from finopti.telemetry import current_request


def create_app(settings: ServiceSettings) -> FastAPI:
    cloud = open_backend(settings.home)
    server = new_tool_server("gcloud-tools")
    budget_metrics = BudgetCollector(cloud.budget_alert_states)
    register(budget_metrics)

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
    def plan_change(action: str, name: str, machine_type: str | None = None) -> dict:
        """What start/stop/resize/delete_instance would do to an instance (before, after, undo, monthly cost
        change, whether it is blocked), without doing it."""
        return cloud.plan_change(action, name, machine_type=machine_type)

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

    # -- billing export: periods are names (last_week, this_month, last_30_days, 2026-10, ...) or dates

    @server.tool()
    @reports_errors
    def billing_export_rows(period: str | None = None, start: str | None = None, end: str | None = None,
                            project: str | None = None, service: str | None = None, team: str | None = None,
                            env: str | None = None, label: str | None = None, limit: int = 20) -> dict:
        """Raw rows of the billing export (BigQuery schema), costliest first."""
        return cloud.billing_export_rows(period, start, end, project, service, team, env, label, limit)

    @server.tool()
    @reports_errors
    def cost_report(period: str | None = None, start: str | None = None, end: str | None = None,
                    group_by: str = "service", label_key: str | None = None, project: str | None = None,
                    service: str | None = None, team: str | None = None, env: str | None = None,
                    label: str | None = None, top: int = 20) -> dict:
        """Cost, credits and net cost over a period, grouped by service, project, sku, region, resource, day,
        month, team, env, app or label:<key>."""
        return cloud.cost_report(period, start, end, group_by, label_key, project, service, team, env, label, top)

    @server.tool()
    @reports_errors
    def compare_costs(period: str | None = None, start: str | None = None, end: str | None = None,
                      compare_to: str | None = None, compare_start: str | None = None,
                      compare_end: str | None = None, group_by: str = "service", label_key: str | None = None,
                      project: str | None = None, service: str | None = None, team: str | None = None,
                      env: str | None = None, label: str | None = None, top: int = 5) -> dict:
        """Net cost of a period against the one before it (or another), with the top drivers of the change."""
        return cloud.compare_costs(period, start, end, compare_to, compare_start, compare_end, group_by, label_key,
                                   project, service, team, env, label, top)

    @server.tool()
    @reports_errors
    def forecast_costs(project: str | None = None, service: str | None = None, team: str | None = None,
                       env: str | None = None, label: str | None = None, lookback_days: int = 28) -> dict:
        """Month-end and next-month cost forecast with 80 % and 95 % intervals."""
        return cloud.forecast_costs(project, service, team, env, label, lookback_days)

    @server.tool()
    @reports_errors
    def detect_cost_anomalies(period: str | None = None, start: str | None = None, end: str | None = None,
                              project: str | None = None, service: str | None = None, team: str | None = None,
                              env: str | None = None, label: str | None = None, threshold: float = 3.5,
                              min_excess: float = 5.0) -> dict:
        """Days on which a service cost unusually much, how unusual, and the lines that drove it."""
        return cloud.detect_cost_anomalies(period, start, end, project, service, team, env, label, threshold,
                                           min_excess)

    @server.tool()
    @reports_errors
    def unlabeled_spend(period: str | None = None, start: str | None = None, end: str | None = None,
                        keys: list[str] | str = "team,env", project: str | None = None, service: str | None = None,
                        top: int = 20) -> dict:
        """Spend on resources missing any of the label keys (default team and env)."""
        return cloud.unlabeled_spend(period, start, end, keys, project, service, top)

    @server.tool()
    @reports_errors
    def create_budget(name: str, amount: float, project: str | None = None, service: str | None = None,
                      team: str | None = None, labels: dict | str | None = None,
                      thresholds: list | None = None) -> dict:
        """Create a monthly budget for a slice of spend, with alert thresholds on actual or forecast spend."""
        created = cloud.create_budget(name, amount, project, service, team, labels, thresholds,
                                      created_by=current_request().user or None)
        budget_metrics.invalidate()
        return created

    @server.tool()
    @reports_errors
    def delete_budget(name: str) -> dict:
        """Delete a budget."""
        deleted = cloud.delete_budget(name)
        budget_metrics.invalidate()
        return deleted

    @server.tool()
    @reports_errors
    def plan_budget_change(action: str, name: str, amount: float | None = None, project: str | None = None,
                           service: str | None = None, team: str | None = None, labels: dict | str | None = None,
                           thresholds: list | None = None) -> dict:
        """What create_budget or delete_budget would do, without doing it."""
        return cloud.plan_budget_change(action, name, amount, project, service, team, labels, thresholds)

    @server.tool()
    @reports_errors
    def list_budgets() -> list[dict]:
        """Every budget with this month's actual and forecast spend and the thresholds crossed."""
        return cloud.list_budgets()

    @server.tool()
    @reports_errors
    def budget_status(name: str | None = None, amount: float | None = None, project: str | None = None,
                      service: str | None = None, team: str | None = None,
                      labels: dict | str | None = None) -> dict:
        """Where a budget stands: a saved one by name, or an amount for a slice of spend (not saved)."""
        return cloud.budget_status(name, amount, project, service, team, labels)

    @server.tool()
    @reports_errors
    def commitment_recommendations(lookback_days: int = 30) -> dict:
        """Committed use discounts to buy from steady usage, and how the existing ones are used."""
        return cloud.commitment_recommendations(lookback_days)

    @server.tool()
    @reports_errors
    def find_unused_resources(min_snapshot_age_days: int = 90) -> dict:
        """Unattached disks, idle static IPs and old snapshots with their monthly cost and the total saving."""
        return cloud.find_unused_resources(min_snapshot_age_days)

    return create_tool_server_app(settings, server, "gcloud-tools")
