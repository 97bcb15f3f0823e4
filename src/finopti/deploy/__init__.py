"""The production bundle: docker compose with Apache APISIX, OPA, Loki, Alloy/Promtail, Prometheus and
Grafana, every file rendered from mesh.yaml (see docs/deploy.md)."""

from finopti.deploy.compose import BUNDLE_DIR, render_compose_bundle, write_bundle
from finopti.deploy.verify import Problem, check_compose, verify_compose

__all__ = ["BUNDLE_DIR", "Problem", "check_compose", "render_compose_bundle", "verify_compose", "write_bundle"]
