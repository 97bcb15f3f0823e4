"""ui: the page users open through the gateway's edge (a minimal one for now)."""

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from finopti.services.common import ServiceSettings, create_service_app

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FinOptiAgents</title>
<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#1f2933}
code{background:#eef2f7;padding:.1rem .3rem;border-radius:4px}</style></head>
<body><h1>FinOptiAgents</h1>
<p>A FinOps assistant behind a strict service mesh. Ask from the command line:</p>
<p><code>finopti ask "list instances in us-central1-a" --user alice@finopti.dev</code></p>
<p>or call <code>POST /api/ask</code> with a bearer token from <code>finopti token EMAIL</code>.</p>
<p style="color:#52606d">Served by <b>ui</b> {version} through the gateway.</p></body></html>"""


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, "ui")

    @app.get("/", response_class=HTMLResponse)
    async def home() -> str:
        return PAGE.replace("{version}", settings.version)

    return app
