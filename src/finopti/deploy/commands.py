"""Typer commands for the CLI; `cli.py` registers them:

    render_app.command("compose")(render_compose_cmd)
    app.command("verify-compose")(verify_compose_cmd)
"""

from pathlib import Path
from typing import Annotated

import typer

from finopti.deploy.compose import BUNDLE_DIR, render_compose_bundle, write_bundle
from finopti.deploy.validate import default_apisix_schemas
from finopti.deploy.verify import verify_compose
from finopti.errors import FinoptiError
from finopti.mesh.model import load_mesh


def render_compose_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the compose bundle to.")] = Path(BUNDLE_DIR),
    mesh: Annotated[Path, typer.Option("--mesh", "-m", help="The mesh spec.", envvar="FINOPTI_MESH")] = Path(
        "mesh.yaml"),
) -> None:
    """Write the docker compose bundle (APISIX, OPA, services, Loki, Alloy, Prometheus, Grafana)."""
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
