"""Typer commands for the CLI; `cli.py` registers them (`render compose`, `verify-compose`, `render kubernetes`,
`verify-kubernetes`). Each imports its renderer or verifier when it runs: `finopti --help` stays fast."""

from pathlib import Path
from typing import Annotated

import typer

from finopti.deploy import BUNDLE_DIR, CHART_DIR
from finopti.errors import FinoptiError

MeshOption = Annotated[Path, typer.Option("--mesh", "-m", help="The mesh spec.", envvar="FINOPTI_MESH")]


def render_compose_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the compose bundle to.")] = Path(BUNDLE_DIR),
    mesh: MeshOption = Path("mesh.yaml"),
) -> None:
    """Write the docker compose bundle (APISIX, OPA, services, Loki, Alloy, Prometheus, Grafana)."""
    from finopti.deploy.compose import render_compose_bundle, write_bundle
    from finopti.deploy.validate import default_apisix_schemas
    from finopti.deploy.verify import verify_compose
    from finopti.mesh.model import load_mesh

    try:
        spec = load_mesh(mesh)
    except FinoptiError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(exc.exit_code) from None
    files = render_compose_bundle(spec, repo_root=mesh.absolute().parent, out_dir=out)
    write_bundle(files, out)
    typer.echo(f"wrote {len(files)} files to {out}")
    problems = verify_compose(out, default_apisix_schemas())
    for problem in problems:
        typer.secho(f"problem: {problem}", fg="red", err=True)
    if problems:
        raise typer.Exit(1)


def verify_compose_cmd(
    bundle: Annotated[Path, typer.Argument(help="The bundle directory or its docker-compose.yml.")] = Path(BUNDLE_DIR),
    apisix_schemas: Annotated[Path | None, typer.Option(
        "--apisix-schemas", envvar="FINOPTI_APISIX_SCHEMAS",
        help="APISIX 3.18's schema.json (default: ../shared/apisix/schema.json when present).")] = None,
) -> None:
    """Prove the bundle statically: no backend publishes a port, each backend shares its network only with the
    gateway, every service-to-service URL points at the gateway, and APISIX would load its config whole (what
    APISIX checks in code at load; its JSON schemas too when available)."""
    from finopti.deploy.validate import default_apisix_schemas
    from finopti.deploy.verify import verify_compose

    schemas = apisix_schemas or default_apisix_schemas()
    if apisix_schemas is not None and not apisix_schemas.is_file():
        typer.secho(f"error: --apisix-schemas {apisix_schemas}: file not found", fg="red", err=True)
        raise typer.Exit(2)
    problems = verify_compose(bundle, schemas)
    for problem in problems:
        typer.secho(f"FAIL {problem}", fg="red")
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {bundle}")
        raise typer.Exit(1)
    checked = f"APISIX's load-time checks and schemas ({schemas})" if schemas else (
        "APISIX's load-time checks (schemas not found: --apisix-schemas)")
    typer.echo(f"ok: {bundle} keeps every backend behind the gateway; apisix.yaml passes {checked}")


def render_kubernetes_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the Helm chart to.")] = Path(CHART_DIR),
    mesh: MeshOption = Path("mesh.yaml"),
) -> None:
    """Write the Kubernetes package: a Helm chart (APISIX and OPA, a Deployment per service, NetworkPolicies,
    cert-manager identities, Alloy, Loki, Prometheus, Grafana)."""
    from finopti.deploy.compose import write_bundle
    from finopti.deploy.kubernetes import render_kubernetes_chart
    from finopti.mesh.model import load_mesh

    try:
        spec = load_mesh(mesh)
        files = render_kubernetes_chart(spec, repo_root=mesh.absolute().parent)
    except FinoptiError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(exc.exit_code) from None
    write_bundle(files, out)
    typer.echo(f"wrote {len(files)} files to {out}")


def verify_kubernetes_cmd(
    source: Annotated[str, typer.Argument(help="The chart directory, a file of rendered manifests (helm template "
                                               "output), or - for standard input.")] = str(CHART_DIR),
    values: Annotated[list[Path] | None, typer.Option("--values", "-f", help="Values files for the chart, as for "
                                                                               "helm (later ones win).")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The release's namespace.")] = "finopti",
) -> None:
    """Prove from the rendered manifests alone that no backend pod can be reached but by the gateway (and
    Prometheus, for /metrics) and that backends reach nothing but the gateway and DNS; check every pod's
    security context and every manifest against Kubernetes' schemas."""
    import yaml

    from finopti.deploy.kube_verify import load_manifests, verify_kubernetes

    try:
        layers = [yaml.safe_load(path.read_text()) or {} for path in values or []]
        docs = load_manifests(source, layers)
        problems = verify_kubernetes(docs, namespace)
    except FileNotFoundError as exc:
        typer.secho(f"error: {exc.filename}: file not found", fg="red", err=True)
        raise typer.Exit(2) from None
    except yaml.YAMLError as exc:
        typer.secho(f"error: not valid YAML: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    except FinoptiError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(exc.exit_code) from None
    for problem in problems:
        typer.secho(f"FAIL {problem}", fg="red")
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {source}")
        raise typer.Exit(1)
    pods = sum(1 for d in docs if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"))
    typer.echo(f"ok: {source}: {len(docs)} manifests valid for Kubernetes; of {pods} workloads, every backend is "
               "reachable only from the gateway (and Prometheus) and reaches only the gateway and DNS; every pod "
               "runs hardened")
