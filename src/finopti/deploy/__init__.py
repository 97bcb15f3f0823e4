"""The production bundles rendered from mesh.yaml: docker compose (`deploy.compose`) and a Helm chart
(`deploy.kubernetes`), with Apache APISIX, OPA, Loki, Alloy/Promtail, Prometheus and Grafana (docs/deploy.md).

Kept light on purpose: the CLI registers `deploy.commands` at start-up, and importing a renderer costs time."""

from pathlib import PurePosixPath

BUNDLE_DIR = PurePosixPath("deploy/compose")
CHART_DIR = PurePosixPath("deploy/kubernetes")
