"""Render and lint the chart with Helm itself, offline: Helm's Go SDK (v4) through PyPI's `helm-python-sdk`
(`helm_python`, a ctypes binding to a build of Helm's official SDK; no `helm` binary, no cluster).

`template` is `helm template`: the manifests a release would apply, as parsed documents.
"""

from pathlib import Path

import yaml

from finopti.errors import FinoptiError

RELEASE = "finopti"
NAMESPACE = "finopti"


class HelmUnavailable(FinoptiError):
    """helm-python-sdk is not installed (pip install 'finopti[kubernetes]')."""

    exit_code = 2


class HelmError(FinoptiError):
    """Helm refused the chart or its values."""

    exit_code = 1


def _helm():
    try:
        import helm_python
    except ImportError:
        raise HelmUnavailable("rendering the chart needs helm-python-sdk (pip install 'finopti[kubernetes]'), or "
                              "pipe `helm template` output instead: helm template finopti CHART | finopti "
                              "verify-kubernetes -") from None
    return helm_python


def template(chart: Path | str, values: dict | None = None, release: str = RELEASE,
             namespace: str = NAMESPACE) -> list[dict]:
    """Every manifest of the chart rendered with `values` (over values.yaml), in template file order."""
    helm = _helm()
    try:
        with helm.Chart.load(str(chart)) as loaded:
            rendered = loaded.render(values or {}, name=release, namespace=namespace)
    except helm.HelmError as exc:
        raise HelmError(f"{chart}: helm template failed: {exc}") from None
    docs = []
    for name in sorted(rendered):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(rendered[name]):
            if doc:
                docs.append(doc)
    return docs


def lint(chart: Path | str, values: dict | None = None, kube_version: str | None = None) -> list[str]:
    """`helm lint --strict`: every warning and error (informational notes left out)."""
    helm = _helm()
    report = helm.lint(str(chart), values=values, strict=True, kube_version=kube_version)
    return [f"{m.get('path')}: {m.get('error')}" for m in report.get("messages", []) if m.get("severity", 0) > 1] + [
        str(e) for e in report.get("errors", [])]
