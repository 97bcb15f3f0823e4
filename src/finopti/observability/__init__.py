"""Metrics side of the platform: Prometheus config and rules from the mesh, and what Envoy must emit."""

from finopti.observability.envoy_stats import envoy_stats_config, route_stat_prefix
from finopti.observability.prometheus import (
    ScrapeTargets,
    ScrapeTls,
    prometheus_command,
    render_alert_rules,
    render_prometheus_config,
    render_recording_rules,
)

__all__ = [
    "ScrapeTargets",
    "ScrapeTls",
    "envoy_stats_config",
    "prometheus_command",
    "render_alert_rules",
    "render_prometheus_config",
    "render_recording_rules",
    "route_stat_prefix",
]
