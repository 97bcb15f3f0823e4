"""`finopti`: a thin command line over the platform library.

Start-up time matters for a command people type: only typer is imported up front; each command imports what
it uses (`python -X importtime -m finopti.cli --help` shows it; benchmarks/bench_cli.py times it).
Output: tables fit a terminal; piped (or `-o wide`) they are never cut; `-o json` / `--json` for machines.
"""

import sys
from pathlib import Path
from typing import Annotated

import typer

from finopti.deploy import commands as deploy_commands
from finopti.errors import FinoptiError, PlatformNotRunning, PlatformStateError
from finopti.paths import state_dir

app = typer.Typer(help="FinOptiAgents: a FinOps assistant behind a strict service mesh.", no_args_is_help=True)
render_app = typer.Typer(help="Render configuration from mesh.yaml without starting anything.")
app.add_typer(render_app, name="render")
policy_app = typer.Typer(help="The Rego policies in policies/.")
app.add_typer(policy_app, name="policy")
pki_app = typer.Typer(help="The mesh's certificates (mTLS identities).")
app.add_typer(pki_app, name="pki")
mesh_app = typer.Typer(help="Routes and policies of the running platform.")
app.add_typer(mesh_app, name="mesh")
fault_app = typer.Typer(help="Fault-injection drills, applied live.")
app.add_typer(fault_app, name="fault")
canary_app = typer.Typer(help="Canary weights, applied live.")
app.add_typer(canary_app, name="canary")

# Wide enough that no table column is ever cut: what a pipe, a file or `-o wide` gets.
UNLIMITED_WIDTH = 100_000


class _Output:
    """A rich Console made on first use (rich costs ~0.1 s to import): the terminal's width on a terminal,
    unlimited when piped or asked for (`-o wide`)."""

    def __init__(self, stderr: bool = False):
        self.stderr = stderr
        self.wide = False
        self._console = None

    def __getattr__(self, name):
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self.stderr else sys.stdout
            width = UNLIMITED_WIDTH if self.wide or not stream.isatty() else None
            self._console = Console(stderr=self.stderr, soft_wrap=True, width=width)
        return getattr(self._console, name)


console = _Output()
err = _Output(stderr=True)

MeshOption = Annotated[Path, typer.Option("--mesh", "-m", help="The mesh spec.", envvar="FINOPTI_MESH")]
PolicyOption = Annotated[Path, typer.Option("--policies", help="Rego policies and role data.")]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table (fits the terminal), wide (never cut) "
                                           "or json.", metavar="table|wide|json")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output (same as -o json).")]


def _output(output: str, as_json: bool) -> str:
    """The output format asked for; `wide` makes every console unlimited."""
    if output not in ("table", "wide", "json"):
        _fail(FinoptiError(f"--output must be table, wide or json, not {output!r}"))
    if output == "wide":
        console.wide = err.wide = True
    return "json" if as_json else output


def _table(*columns: str):
    from rich.table import Table

    return Table(*columns)


def _fail(exc: FinoptiError) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(exc.exit_code)


def _load_mesh(path: Path):
    from finopti.mesh.model import load_mesh

    return load_mesh(path)


@app.command()
def up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Return once healthy; stop with `finopti down`.")]
    = False,
    mesh: MeshOption = Path("mesh.yaml"),
    policies: PolicyOption = Path("policies"),
) -> None:
    """Render configs from mesh.yaml, start the gateway and every service, wait until all are healthy."""
    import signal
    import time

    from finopti import platform

    state = state_dir()
    console.print(f"starting FinOptiAgents from [bold]{mesh}[/] (state in {state.root})")
    if platform.prometheus_binary() is None:
        console.print("[yellow]note:[/] no `prometheus` binary found (Debian package `prometheus`; `make up` "
                      "installs it where apt-get exists): running without metrics history")
    started = time.monotonic()

    def interrupted(*_):
        raise KeyboardInterrupt  # SIGTERM while starting, like Ctrl-C: `up` stops what it started

    signal.signal(signal.SIGTERM, interrupted)
    try:
        rt = platform.up(
            mesh, policies, state,
            on_healthy=lambda name, t: console.print(f"  [green]✓[/] {name:<20} healthy after {t:4.1f}s"),
            on_note=lambda note: console.print(f"[yellow]note:[/] {note}", highlight=False),
        )
    except FinoptiError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: the platform was stopped")
        raise typer.Exit(130) from None
    console.print(f"[bold green]all healthy[/] in {time.monotonic() - started:.1f}s")
    console.print(f"  chat UI      {rt.edge_url}/")
    console.print(f"  ask API      {rt.edge_url}/api/ask")
    console.print(f"  mesh         {rt.mesh_url}  (east-west, services only)")
    console.print(f"  gateway admin {rt.admin_url}")
    console.print(f"  logs         {state.logs}  (finopti logs, finopti trace ID)")
    if "prometheus" in rt.aux_ports:
        console.print(f"  prometheus   http://127.0.0.1:{rt.aux_ports['prometheus']}")
    if detach:
        console.print("running in the background; stop it with [bold]finopti down[/]")
        return
    console.print("press Ctrl-C to stop")
    stop = {"requested": False}

    def request_stop(*_):
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop["requested"] and platform.supervisor_pid(state):
        time.sleep(0.3)
    console.print("stopping…")
    count = platform.down(state)
    console.print(f"stopped {count} processes")


@app.command()
def down() -> None:
    """Stop every process of the platform started from this state dir."""
    from finopti import platform

    count = platform.down(state_dir())
    console.print(f"stopped {count} processes" if count else "the platform was not running")


@app.command()
def status(
    as_json: JsonOption = False,
    output: OutputOption = "table",
    mesh: MeshOption = Path("mesh.yaml"),
) -> None:
    """Each component with its state (healthy / starting / down / stopped), pid and address; when the platform is
    not running, every component mesh.yaml declares, stopped."""
    from finopti import platform

    fmt = _output(output, as_json)
    running, why = True, ""
    try:
        statuses = platform.platform_status(state_dir())
    except PlatformNotRunning as exc:
        running, why = False, str(exc)
        try:
            statuses = platform.stopped_status(_load_mesh(mesh))
        except FinoptiError as exc:
            _fail(exc)
    except FinoptiError as exc:
        _fail(exc)
    if fmt == "json":
        import json

        print(json.dumps({"running": running, "components": [s.__dict__ for s in statuses]}, indent=2))
    else:
        table = _table("component", "state", "pid", "address")
        colours = {"healthy": "green", "starting": "yellow", "restarting": "yellow", "unhealthy": "red", "down": "red",
                   "stopped": "dim"}
        for s in statuses:
            table.add_row(s.name, f"[{colours[s.state]}]{s.state}[/]", str(s.pid or "-"), s.address)
        console.print(table)
        if not running:
            console.print(why, highlight=False)
    if any(s.state != "healthy" for s in statuses):
        raise typer.Exit(1)


@app.command()
def token(
    email: str,
    groups: Annotated[str, typer.Option("--groups", help="Comma-separated groups.")] = "",
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds.")] = None,
    mesh: MeshOption = Path("mesh.yaml"),
) -> None:
    """Print a JWT for EMAIL from the local development identity provider."""
    from finopti.idp import DevIdentityProvider

    try:
        spec = _load_mesh(mesh)
    except FinoptiError as exc:
        _fail(exc)
    idp = DevIdentityProvider(state_dir().idp, spec.identity)
    try:
        print(idp.issue(email, [g for g in groups.split(",") if g], ttl))
    except OSError as exc:  # the state dir is a file, or not ours to write
        _fail(FinoptiError(f"{exc.filename or state_dir().idp}: {exc.strerror or exc}: the development identity "
                           "provider keeps its key there (FINOPTI_HOME names another state dir)"))


@app.command()
def ask(
    prompt: str,
    user: Annotated[str, typer.Option("--user", "-u", help="Ask as this development user (email).")],
    groups: Annotated[str, typer.Option("--groups", help="Comma-separated groups for the token.")] = "",
    project: Annotated[str | None, typer.Option(help="Cloud project to ask about.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm a planned change without asking.")] = False,
    output: OutputOption = "table",
) -> None:
    """Send PROMPT through the gateway's edge as USER and print the answer and its rows. A change (stop, start,
    resize, delete) is first a plan: confirm it when asked, or with --yes."""
    import json

    import httpx

    from finopti.idp import DevIdentityProvider
    from finopti.platform import Runtime

    fmt = _output(output, as_json)
    state = state_dir()
    try:
        rt = Runtime.load(state)
        spec = _load_mesh(rt.mesh_file)
    except FinoptiError as exc:
        _fail(exc)
    jwt_token = DevIdentityProvider(state.idp, spec.identity).issue(user, [g for g in groups.split(",") if g])

    def post(path: str, body: dict) -> tuple[httpx.Response, dict]:
        try:
            response = httpx.post(f"{rt.edge_url}{path}", json=body,
                                  headers={"authorization": f"Bearer {jwt_token}"}, timeout=60)
        except httpx.HTTPError as exc:
            _fail(PlatformStateError(f"cannot reach the gateway at {rt.edge_url}: {exc}"))
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": "bad_gateway_response", "message": response.text[:500],
                       "status": response.status_code}
        payload.setdefault("request_id", response.headers.get("x-request-id"))
        return response, payload

    body: dict = {"prompt": prompt}
    if project:
        body["project"] = project
    response, payload = post("/api/ask", body)
    if response.is_success and payload.get("kind") == "plan":
        if fmt != "json":
            _show_answer(response, payload)
        if yes:
            verb = "confirm"
        elif fmt == "json":
            print(json.dumps(payload, indent=2))
            err.print("not confirmed: nothing changed (run again with --yes to confirm)")
            return
        else:
            try:
                verb = "confirm" if typer.confirm("Confirm this change?", default=False) else "cancel"
            except (typer.Abort, EOFError):
                verb = "cancel"
        response, payload = post(f"/api/ask/{verb}", {"token": payload["confirmation"]["token"]})
    if fmt == "json":
        print(json.dumps(payload, indent=2))
        raise typer.Exit(0 if response.is_success else 1)
    _show_answer(response, payload)


def _show_answer(response, payload: dict) -> None:
    """The answer, its rows (as the chat draws them), a plan's facts, or a refusal with what to try instead;
    always the request and trace ids."""
    ids = f"request {payload.get('request_id')} · trace {payload.get('trace_id')}"
    if not response.is_success:
        err.print(f"[bold red]{response.status_code}[/] {payload.get('message', payload)}", highlight=False)
        suggestions = [s["prompt"] for s in payload.get("suggestions") or [] if isinstance(s, dict) and "prompt" in s]
        if suggestions:
            err.print("try, for example:")
        for prompt_text in suggestions or payload.get("capabilities", []):
            err.print(f"  • {prompt_text}", highlight=False)
        err.print(f"[dim]{ids}[/]", highlight=False)
        raise typer.Exit(1)
    for note in payload.get("notes", []):
        console.print(f"[dim]({note})[/]", highlight=False)
    if payload.get("kind") == "clarification":
        console.print(payload.get("question", ""), highlight=False)
        for option in payload.get("options", []):
            console.print(f"  • finopti ask \"{option['prompt']}\"", highlight=False)
        return
    console.print(payload.get("answer", ""), highlight=False)
    if payload.get("kind") == "plan":
        plan = payload.get("plan", {})
        for change in plan.get("changes", []):
            console.print(f"  • {change}", highlight=False)
        console.print(f"  can be undone: {'yes, ' + plan['undo'] if plan.get('reversible') else 'no'}",
                      highlight=False)
        console.print(f"  monthly bill: {plan.get('monthly_cost_change_usd', 0):+,.2f} USD ({plan.get('cost_note')})",
                      highlight=False)
        console.print(f"  the confirmation expires at {payload['confirmation']['expires_at']}", highlight=False)
        return
    _print_rows(payload)
    console.print(f"[dim]agent {payload.get('agent')} · action {payload.get('action')} · {ids}[/]", highlight=False)
    console.print(f"[dim]see the request's lifecycle: finopti trace {payload.get('trace_id')}[/]", highlight=False)


def _print_rows(payload: dict) -> None:
    """The answer as the chat shows it (its view): the headline figures, the rows (columns, units, order,
    totals), then its further tables, each under its title."""
    from rich import box

    from finopti.presentation import answer_stats, answer_tables

    stats = answer_stats(payload)
    if stats:
        console.print("  ·  ".join(f"{label} [bold]{text}[/]" for label, text in stats), highlight=False)
    for rows in answer_tables(payload):
        if rows.title:
            console.print(f"[bold]{rows.title}[/]", highlight=False)
        table = _table()
        table.box = box.SIMPLE_HEAD
        for column, numeric in zip(rows.columns, rows.numeric, strict=True):
            table.add_column(column.label, justify="right" if numeric else "left")
        for row in rows.rows:
            table.add_row(*row)
        if rows.totals:
            table.show_footer = True
            for column, total in zip(table.columns, rows.totals, strict=True):
                column.footer = total
        console.print(table)


@render_app.command("envoy")
def render_envoy_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the Envoy configuration to.")],
    mesh: MeshOption = Path("mesh.yaml"),
    policies: PolicyOption = Path("policies"),
) -> None:
    """Write the Envoy bootstrap and xDS files (ports as declared; 0 becomes a placeholder)."""
    import dataclasses

    from finopti.mesh.envoy import render_envoy
    from finopti.platform import gateway_runtime, plan_placeholder_runtime, resolve_for, write_envoy_files

    try:
        spec = _load_mesh(mesh)
        rt = dataclasses.replace(plan_placeholder_runtime(spec, mesh), policy_dir=str(policies))
        resolved = resolve_for(spec, rt)
    except FinoptiError as exc:
        _fail(exc)
    out = out.resolve()
    state = state_dir()
    try:
        grt = gateway_runtime(state, rt, spec.identity)
    except FinoptiError as exc:
        _fail(exc)
    grt = dataclasses.replace(grt, xds_dir=out / "xds")
    documents = render_envoy(resolved, grt)
    write_envoy_files(documents, out, out / "xds")
    console.print(f"wrote {len(documents)} files to {out}")


@app.command("verify-mesh")
def verify_mesh_cmd(as_json: JsonOption = False, output: OutputOption = "table") -> None:
    """Probe the running platform: prove that no service can be reached around the gateway and that a gateway
    whose policy is unreachable refuses (on a throwaway gateway: live traffic is never interrupted)."""
    import time

    from finopti.verify import CHECKS, verify_mesh
    from finopti.verify import as_json as checks_json

    fmt = _output(output, as_json)
    started = {"at": time.monotonic()}

    def progress(number: int, name: str, check=None) -> None:
        # On stderr, so `verify-mesh --json > file` stays JSON.
        if check is None:
            started["at"] = time.monotonic()
            err.print(f"[dim][{number}/{len(CHECKS)}][/] {name} …", highlight=False)
        else:
            mark = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
            err.print(f"[dim][{number}/{len(CHECKS)}][/] {mark} in {time.monotonic() - started['at']:.1f}s",
                      highlight=False)

    try:
        checks = verify_mesh(state_dir(), progress=progress)
    except FinoptiError as exc:
        _fail(exc)
    if fmt == "json":
        print(checks_json(checks))
    else:
        table = _table("#", "check", "result", "detail")
        for c in checks:
            table.add_row(str(c.number), c.name, "[green]pass[/]" if c.passed else "[bold red]FAIL[/]", c.detail)
        console.print(table)
    if not all(c.passed for c in checks):
        raise typer.Exit(1)


@policy_app.command("test")
def policy_test(policies: PolicyOption = Path("policies")) -> None:
    """Run the Rego unit tests (`test_` rules in `*_test.rego`) beside the policies."""
    from finopti.policy import run_policy_tests

    results = run_policy_tests(policies)
    for r in results:
        mark = "[green]PASS[/]" if r.passed else "[bold red]FAIL[/]"
        console.print(f"{mark} {r.name}" + (f"  [dim]{r.error}[/]" if r.error else ""))
    failed = sum(not r.passed for r in results)
    console.print(f"{len(results) - failed} passed, {failed} failed")
    if failed or not results:
        raise typer.Exit(1)


@pki_app.command("rotate")
def pki_rotate() -> None:
    """Re-issue every service and gateway certificate and roll them out without stopping the platform."""
    from finopti.rotation import rotate_certificates

    try:
        rotated = rotate_certificates(state_dir(), progress=lambda msg: console.print(f"  {msg}"))
    except FinoptiError as exc:
        _fail(exc)
    console.print(f"rotated {len(rotated)} certificates")


@pki_app.command("show")
def pki_show(as_json: JsonOption = False, output: OutputOption = "table") -> None:
    """Each mesh identity with its SPIFFE id, serial and expiry."""
    from finopti.pki import cert_info

    fmt = _output(output, as_json)
    state = state_dir()
    infos = [cert_info(p) for p in sorted(state.pki.glob("*.crt"))]
    if fmt == "json":
        import json

        print(json.dumps(infos, indent=2, default=str))
        return
    if not infos:
        err.print(f"no certificates in {state.pki} yet: `finopti up` makes the mesh CA and one per identity")
        return
    table = _table("file", "spiffe id", "serial", "expires")
    for i in infos:
        table.add_row(Path(i["path"]).name, i["spiffe_id"] or "(CA)", i["serial"], str(i["not_after"]))
    console.print(table)


@mesh_app.command("apply")
def mesh_apply(
    mesh: Annotated[Path | None, typer.Option("--mesh", "-m", help="Default: the running one.")] = None,
) -> None:
    """Re-read mesh.yaml, validate it, and update the running gateway live (no restart)."""
    from finopti.live import apply_mesh

    try:
        spec = apply_mesh(state_dir(), mesh)
    except FinoptiError as exc:
        _fail(exc)
    console.print(f"applied: {len(spec.routes)} routes live on the gateway")


@mesh_app.command("show")
def mesh_show(as_json: JsonOption = False, output: OutputOption = "table") -> None:
    """The effective policy of every route (mesh.yaml, service defaults and drills combined)."""
    import json

    from finopti.live import effective_spec, policy_table

    fmt = _output(output, as_json)
    try:
        rows = policy_table(effective_spec(state_dir()))
    except FinoptiError as exc:
        _fail(exc)
    if fmt == "json":
        print(json.dumps({"routes": rows}, indent=2))
        return
    table = _table("route", "listener", "path", "backend", "policy")
    for row in rows:
        policy = "; ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in row["policy"].items())
        table.add_row(row["route"], row["listener"], row["path"], row["backend"], policy or "-")
    console.print(table)


@fault_app.command("inject")
def fault_inject(
    route: str,
    delay: Annotated[str | None, typer.Option(help="Fixed delay, e.g. 300ms or 2s.")] = None,
    abort: Annotated[int | None, typer.Option(help="HTTP status to answer instead, e.g. 503.")] = None,
    percent: Annotated[float, typer.Option(help="Share of requests affected (0-100).")] = 100.0,
    header: Annotated[str | None, typer.Option(help="Only requests with this header, as name=value.")] = None,
) -> None:
    """Inject a delay and/or an abort on ROUTE, live."""
    import json

    from finopti.live import inject_fault

    if delay is None and abort is None:
        _fail(FinoptiError("give --delay, --abort or both"))
    fault: dict = {}
    if delay is not None:
        fault["delay"] = {"duration": delay, "percent": percent}
    if abort is not None:
        fault["abort"] = {"status": abort, "percent": percent}
    if header is not None:
        name, sep, value = header.partition("=")
        if not sep:
            _fail(FinoptiError(f"--header must be name=value, got {header!r}"))
        fault["header"] = {"name": name.strip().lower(), "value": value.strip()}
    try:
        spec = inject_fault(state_dir(), route, fault)
    except FinoptiError as exc:
        _fail(exc)
    console.print(f"fault on route {route}: {json.dumps(fault)}")
    if header is not None:
        from finopti.telemetry.context import CARRIED_HEADERS, DRILL_HEADER

        on_mesh = next(r for r in spec.routes if r.name == route).listener == "mesh"
        if on_mesh and fault["header"]["name"] not in CARRIED_HEADERS:
            console.print(f"[yellow]note:[/] services carry only {' and '.join(CARRIED_HEADERS)} on to the next hop: "
                          f"a request marked with {fault['header']['name']} at the edge never meets this fault; "
                          f"mark drills with --header {DRILL_HEADER}=VALUE")


@fault_app.command("clear")
def fault_clear(route: Annotated[str | None, typer.Argument(help="Default: every route.")] = None) -> None:
    """Remove injected faults (on ROUTE, or everywhere)."""
    from finopti.live import clear_faults

    try:
        clear_faults(state_dir(), route)
    except FinoptiError as exc:
        _fail(exc)
    console.print(f"faults cleared on {route or 'every route'}")


@canary_app.command("set")
def canary_set(
    service: str,
    weights: Annotated[list[str], typer.Argument(help="version=percent, e.g. v2=10 (the rest: first version).")],
    pin_header: Annotated[str, typer.Option(help="Header whose value pins a version.")] = "x-canary",
) -> None:
    """Split SERVICE's traffic between its versions, live."""
    from finopti.live import set_canary

    parsed: dict[str, int] = {}
    for item in weights:
        version, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            _fail(FinoptiError(f"weights are version=percent, got {item!r}"))
        parsed[version.strip()] = int(value)
    try:
        spec = set_canary(state_dir(), service, parsed, pin_header)
    except FinoptiError as exc:
        _fail(exc)
    canary = next(spec.effective_policy(r).canary for r in spec.routes if r.backend == service)
    console.print(f"canary for {service}: {canary.weights} (pin with header {canary.pin_header})")


UserOption = Annotated[
    str, typer.Option("--user", "-u", envvar="FINOPTI_USER", help="Read as this user (needs observability_admin).")
]
TRACE_ID_LENGTH = 32


def _log_api(user: str):
    """(edge URL, headers) for the log API: read through the gateway like any user, as `user`."""
    from finopti.idp import DevIdentityProvider
    from finopti.platform import running_runtime

    state = state_dir()
    rt = running_runtime(state)
    jwt_token = DevIdentityProvider(state.idp, _load_mesh(rt.mesh_file).identity).issue(user)
    return rt.edge_url, {"authorization": f"Bearer {jwt_token}"}


def _api_get(url: str, **kwargs):
    """GET on the platform's API; a gateway that does not answer is a FinoptiError naming it, not a traceback."""
    import httpx

    try:
        return httpx.get(url, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise PlatformStateError(f"cannot reach the gateway at {url.split('/api/')[0]}: {exc}; "
                                 "`finopti status` shows each component") from None


def _api_error(response) -> FinoptiError:
    try:
        message = response.json().get("message") or response.text[:300]
    except ValueError:
        message = response.text[:300]
    return FinoptiError(f"{response.status_code}: {message}")


def _log_params(service: list[str] | None, level: str | None, trace: str | None, grep: str | None,
                since: str | None) -> list[tuple[str, str]]:
    import time

    from finopti.logs.times import since_ns

    params: list[tuple[str, str]] = [("service", s) for s in service or []]
    for key, value in (("level", level), ("trace_id", trace), ("q", grep)):
        if value:
            params.append((key, value))
    if since:
        params.append(("start", str(since_ns(since, time.time_ns()))))
    return params


def _describe_filters(service, level, trace, grep, since) -> str:
    parts = [f"service {', '.join(service)}" if service else "", f"level {level}" if level else "",
             f"trace {trace}" if trace else "", f"text {grep!r}" if grep else "",
             f"in the last {since}" if since else ""]
    return ", ".join(p for p in parts if p) or "no filter"


@app.command()
def logs(
    service: Annotated[list[str] | None, typer.Option("--service", "-s", help="Only these services.")] = None,
    level: Annotated[str | None, typer.Option("--level", "-l", help="Only this level (info, error, ...).")] = None,
    trace: Annotated[str | None, typer.Option("--trace", help="Only this trace id (or its unique prefix).")] = None,
    grep: Annotated[str | None, typer.Option("--grep", help="Lines with these words, in order (any case).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="How far back, e.g. 15m, 2h.")] = "15m",
    limit: Annotated[int, typer.Option("-n", help="How many lines (the newest).", min=1)] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON lines.")] = False,
    user: UserOption = "carol@finopti.dev",
) -> None:
    """Search every process's logs (oldest first), or follow them live. Trace ids are printed whole."""
    import json

    import httpx

    from finopti.logs.cli_support import format_line, newest_lines

    try:
        edge, headers = _log_api(user)
        if trace and len(trace) < TRACE_ID_LENGTH:
            trace = _unique_trace(edge, headers, trace)
        params = _log_params(service, level, trace, grep, since)
    except (FinoptiError, ValueError) as exc:
        _fail(exc if isinstance(exc, FinoptiError) else FinoptiError(str(exc)))
    color = sys.stdout.isatty() and not as_json

    def show(line: dict) -> None:
        print(json.dumps(line) if as_json else format_line(line, color), flush=follow)

    def fetch(page_params: list[tuple[str, str]]) -> dict:
        try:
            response = _api_get(f"{edge}/api/logs", params=page_params, headers=headers)
        except FinoptiError as exc:
            _fail(exc)
        if not response.is_success:
            _fail(_api_error(response))
        return response.json()

    lines = newest_lines(fetch, params, limit)
    if not lines and not follow:
        err.print(f"no lines matched ({_describe_filters(service, level, trace, grep, since)})", highlight=False)
        return
    for line in lines:
        show(line)
    if not follow:
        return
    # The live tail resumes after the newest line shown: every line stored since comes once, none is missed.
    resume = {"last-event-id": str(max(line["id"] for line in lines))} if lines else {}
    try:
        with httpx.stream("GET", f"{edge}/api/logs/tail", params=params, headers={**headers, **resume},
                          timeout=None) as r:
            if not r.is_success:
                r.read()
                _fail(_api_error(r))
            for raw in r.iter_lines():
                if raw.startswith("data:"):
                    show(json.loads(raw[5:]))
    except KeyboardInterrupt:
        return


def _unique_trace(edge: str, headers: dict, prefix: str) -> str:
    """The one trace id starting with `prefix` among the requests of the last week; an error naming the
    candidates when several do, or none."""
    if not prefix or any(c not in "0123456789abcdefABCDEF" for c in prefix):
        raise FinoptiError(f"{prefix!r} is not a trace id: expected {TRACE_ID_LENGTH} hex digits, or the first few")
    response = _api_get(f"{edge}/api/traces/", headers=headers,
                        params={"prefix": prefix, "since": "7d", "traffic": "all", "limit": "10"})
    if not response.is_success:
        raise _api_error(response)
    found = sorted({t["trace_id"] for t in response.json()["traces"]})
    if len(found) == 1:
        return found[0]
    if not found:
        raise FinoptiError(f"no trace id starts with {prefix!r} in the last 7 days (give the whole id for older ones)")
    raise FinoptiError(f"{len(found)} trace ids start with {prefix!r}: {', '.join(found)} — give more digits")


def _newest_trace(edge: str, headers: dict) -> str:
    response = _api_get(f"{edge}/api/traces/", headers=headers,
                        params={"since": "1d", "traffic": "user", "limit": "1"})
    if not response.is_success:
        raise _api_error(response)
    traces = response.json()["traces"]
    if not traces:
        raise FinoptiError("no request came in through the edge in the last day")
    return traces[0]["trace_id"]


@app.command()
def trace(
    trace_id: Annotated[str | None, typer.Argument(help="A trace id, or its first digits when they are unique.")]
    = None,
    last: Annotated[bool, typer.Option("--last", help="The newest request that came in through the edge.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The whole trace as JSON.")] = False,
    user: UserOption = "carol@finopti.dev",
) -> None:
    """A request's lifecycle: each hop in order with service, route, status, duration and its log lines."""
    import json

    from finopti.logs.cli_support import render_trace

    if (trace_id is None) == (not last):
        _fail(FinoptiError("give a trace id (or its first digits), or --last"))
    try:
        edge, headers = _log_api(user)
        if last:
            trace_id = _newest_trace(edge, headers)
        elif len(trace_id) < TRACE_ID_LENGTH:
            trace_id = _unique_trace(edge, headers, trace_id)
    except FinoptiError as exc:
        _fail(exc)
    try:
        response = _api_get(f"{edge}/api/traces/{trace_id}", headers=headers)
    except FinoptiError as exc:
        _fail(exc)
    if response.status_code == 404:
        _fail(FinoptiError(f"trace {trace_id} not found: no component logged a line with it (lines are kept "
                           "for the log store's retention, 7 days by default)"))
    if not response.is_success:
        _fail(_api_error(response))
    if as_json:
        print(json.dumps(response.json(), indent=2))
    else:
        console.print(render_trace(response.json()))


# The bundles' commands, declared once in finopti.deploy.commands (light to import; each loads its renderer).
render_app.command("compose")(deploy_commands.render_compose_cmd)
app.command("verify-compose")(deploy_commands.verify_compose_cmd)
render_app.command("kubernetes")(deploy_commands.render_kubernetes_cmd)
app.command("verify-kubernetes")(deploy_commands.verify_kubernetes_cmd)


def main() -> None:
    try:
        app()
    except FinoptiError as exc:  # a library error that a command did not catch
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
