"""What every service is built from: settings from the environment and an app with the shared parts."""

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from finopti.telemetry.middleware import TelemetryMiddleware

log = logging.getLogger("finopti.service")


class ServiceSettings(BaseSettings):
    """A service knows its own name, version and port, and only the gateway's mesh URL."""

    model_config = SettingsConfigDict(env_prefix="FINOPTI_")

    service: str = "service"
    version: str = "v1"
    port: int = 0
    mesh_url: str = "http://127.0.0.1:8081"
    # The address mesh calls leave from, for a gateway that knows callers by address (unset: the system's choice).
    mesh_source: str | None = None
    home: Path = Path(".finopti")
    policy_dir: Path = Path("policies")
    # mTLS (set by the platform; unset in in-process tests): our identity, who may call us, the mesh CA.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_callers: Path | None = None
    mesh_ca: Path | None = None
    # The ui's development sign-in: None follows the running mesh.yaml (identity.dev_sign_in); the compose
    # bundle sets false.
    dev_sign_in: bool | None = None

    def mesh_ssl(self):
        """The client TLS context for calls to the gateway's mesh listener, or True (system default)."""
        if not (self.tls_cert and self.tls_key and self.mesh_ca):
            return True
        from finopti.meshtls import client_context

        return client_context(self.tls_cert, self.tls_key, self.mesh_ca)


def error_body(status: int, error: str, message: str, **details) -> dict:
    return {"error": error, "message": message, "status": status, **details}


def create_service_app(settings: ServiceSettings, title: str, quiet_paths: frozenset[str] = frozenset()) -> FastAPI:
    """`quiet_paths`: requests that are not traffic (no log line, no metric), beyond /healthz and /metrics."""
    app = FastAPI(title=title, version=settings.version, docs_url=None, redoc_url=None)
    app.state.settings = settings

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok", "service": settings.service, "version": settings.version}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body(400, "bad_request", "request body is not valid JSON"), 400)
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]} for e in errors
        ]
        return JSONResponse(error_body(422, "invalid_request", "request body is invalid", problems=problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        body = {"status": exc.status_code, "error": detail.pop("error", "error"), **detail}
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return JSONResponse(error_body(500, "internal", f"{type(exc).__name__}: {exc}"), 500)

    app.add_middleware(
        TelemetryMiddleware, service=settings.service, version=settings.version, quiet_paths=quiet_paths,
        router=app.router,
    )
    return app
