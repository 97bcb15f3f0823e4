"""ui: the chat page and the built-in console (Platform Overview, Trace View, Debug Console), served through
the gateway's edge listener. The HTML shells are public; the pages call the data APIs (`/api/ask`,
`/api/logs`, `/api/traces/…`, `/api/metrics/…`) on the same origin with the user's bearer token.

Development sign-in: `/auth/dev-users` lists the users of the role data and `/auth/dev-token` mints a token
with the development identity provider, for loopback development only: `identity.dev_sign_in: false` in
mesh.yaml (the compose bundle's setting) switches both off. Production signs users in with OIDC instead.

Every response carries the browser security headers of `finopti.services.security_headers`."""

import html
import json
import re
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from finopti.dashboards import console_model
from finopti.services.common import ServiceSettings, create_service_app
from finopti.services.security_headers import SecurityHeadersMiddleware

STATIC = Path(__file__).parent / "static"
_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

PAGES = {
    "chat": ("Ask", "chat.js"),
    "overview": ("Platform Overview", "overview.js"),
    "trace": ("Trace View", "trace.js"),
    "traces": ("Traces", "traces.js"),
    "live": ("Live logs", "live.js"),
}
NAV = (("chat", "/", "Ask"), ("overview", "/console", "Overview"), ("traces", "/console/traces", "Traces"),
       ("live", "/console/live", "Live logs"))
# What each console area reads, to tell which roles it needs (the route serving it, from the running mesh).
CONSOLE_AREAS = {"trace": "/api/traces/x", "logs": "/api/logs/tail", "metrics": "/api/metrics/query"}


def page(kind: str, version: str, **data: str) -> str:
    """The HTML shell of a page: no inline script, style or handler (a strict Content-Security-Policy holds)."""
    title, script = PAGES[kind]
    attrs = " ".join(f'data-{k.replace("_", "-")}="{html.escape(v)}"' for k, v in data.items())
    current = "traces" if kind == "trace" else kind
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == current else ""}>{label}</a>' for key, href, label in NAV
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · FinOptiAgents</title>
<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css?v={version}">
<link rel="stylesheet" href="/static/style.css?v={version}">
<link rel="icon" href="data:,">
</head>
<body data-page="{kind}" {attrs}>
<header class="top">
  <a class="brand" href="/"><span class="logo">◆</span> FinOptiAgents</a>
  <button id="menu-toggle" class="menu-toggle" type="button" aria-expanded="false" aria-controls="menu"
    aria-label="menu">☰</button>
  <div id="menu" class="menu">
    <nav>{nav}</nav>
    <div id="signin" class="signin"></div>
  </div>
</header>
<main id="app"><p class="muted">Loading…</p></main>
<footer class="foot">ui {html.escape(version)} · served through the gateway ·
development sign-in; production uses OIDC</footer>
<script type="module" src="/static/{script}?v={version}"></script>
</body></html>"""


class TokenRequest(BaseModel):
    email: str


def role_users(policy_dir: Path) -> dict[str, list[str]]:
    data = json.loads((policy_dir / "data.json").read_text())
    return dict(data.get("finopti", {}).get("roles", {}).get("users", {}))


def console_access(mesh_file: Path) -> dict[str, list[str] | None]:
    """area -> roles of the edge route that serves it (None: the policy's own rules, or no running mesh)."""
    from finopti.mesh.model import load_mesh
    from finopti.policy.envoy import match_route

    if not mesh_file.exists():
        return dict.fromkeys(CONSOLE_AREAS)
    spec = load_mesh(mesh_file)
    routes = {r.name: r for r in spec.routes}
    out: dict[str, list[str] | None] = {}
    for area, path in CONSOLE_AREAS.items():
        name = match_route(spec.routes, "edge", path)
        out[area] = list(routes[name].roles) if name and routes[name].roles else None
    return out


def running_identity(settings: ServiceSettings):
    """The identity section of the mesh the platform runs (it may change with `finopti mesh apply`)."""
    from finopti.mesh.model import load_mesh

    running = settings.home / "mesh.running.yaml"
    if not running.exists():
        raise HTTPException(503, detail={"error": "unavailable",
                                         "message": "the platform's running mesh is missing; is it up?"})
    return load_mesh(running).identity


def dev_sign_in_identity(settings: ServiceSettings):
    if settings.dev_sign_in is False:
        identity = None
    else:
        identity = running_identity(settings)
    if identity is None or not identity.dev_sign_in:
        raise HTTPException(404, detail={"error": "dev_sign_in_off",
                                         "message": "development sign-in is switched off (identity.dev_sign_in in "
                                         "mesh.yaml); sign in with your organisation's identity provider"})
    return identity


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, "ui")
    app.add_middleware(SecurityHeadersMiddleware)
    version = settings.version

    @app.get("/", response_class=HTMLResponse)
    async def chat() -> str:
        return page("chat", version)

    @app.get("/console", response_class=HTMLResponse)
    @app.get("/console/", response_class=HTMLResponse, include_in_schema=False)
    async def overview() -> str:
        return page("overview", version)

    @app.get("/console/live", response_class=HTMLResponse)
    async def live() -> str:
        return page("live", version)

    @app.get("/console/traces", response_class=HTMLResponse)
    async def traces() -> str:
        return page("traces", version)

    @app.get("/console/trace/{trace_id}", response_class=HTMLResponse)
    async def trace(trace_id: str) -> str:
        if not _TRACE_ID.match(trace_id):
            raise HTTPException(400, detail={"error": "bad_request", "message": "invalid trace id"})
        return page("trace", version, trace_id=trace_id)

    @app.get("/console/model.json")
    async def model() -> JSONResponse:
        return JSONResponse(console_model(), headers={"Cache-Control": "no-cache"})

    @app.get("/console/access.json")
    async def access() -> JSONResponse:
        """Roles each console area needs (the route serving it in the running mesh), so pages link only where
        the user may follow; the gateway still decides every request."""
        return JSONResponse(console_access(settings.home / "mesh.running.yaml"), headers={"Cache-Control": "no-cache"})

    @app.get("/auth/dev-users")
    async def dev_users() -> dict:
        dev_sign_in_identity(settings)
        users = role_users(settings.policy_dir)
        return {
            "users": [{"email": email, "roles": roles} for email, roles in users.items()],
            "note": "Development sign-in: tokens from the development identity provider. Production uses OIDC.",
        }

    @app.post("/auth/dev-token")
    async def dev_token(request: TokenRequest) -> JSONResponse:
        identity = dev_sign_in_identity(settings)
        users = role_users(settings.policy_dir)
        email = request.email.strip().lower()
        if email not in users:
            raise HTTPException(400, detail={"error": "unknown_user",
                                             "message": f"{request.email!r} is not a user of the role data "
                                             f"(known: {', '.join(users)})"})
        from finopti.idp import DevIdentityProvider

        token = await run_in_threadpool(DevIdentityProvider(settings.home / "idp", identity).issue, email)
        # A token is a credential: no cache, shared or private, may keep it.
        return JSONResponse({"token": token, "email": email, "roles": users[email]},
                            headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # uPlot is 145 kB as text, 40 kB compressed
    return app
