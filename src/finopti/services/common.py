"""What every service is built from: settings from the environment and an app with the shared parts."""

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from finopti.telemetry.context import current_request, trace_ids
from finopti.telemetry.middleware import TelemetryMiddleware
from finopti.telemetry.traceparent import parse_traceparent

log = logging.getLogger("finopti.service")

# The orchestrator passes the id of the confirmation that authorised a change to the agent, for its audit record.
CONFIRMATION_HEADER = "x-finopti-confirmation"


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


# The `error` code of an answer that names no code of its own (the project's codes, as the gateway's replies).
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 409: "conflict", 410: "gone", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited", 500: "internal",
               502: "bad_gateway", 503: "unavailable", 504: "timeout"}


def error_code(status: int) -> str:
    return ERROR_CODES.get(status, f"http_{status}")


def request_ids(request: Request | None = None) -> dict:
    """The ids an error body carries: the request's, from its context, else from its headers (an error handled
    outside the telemetry middleware, a 500), else None."""
    trace_id, _ = trace_ids()
    request_id = current_request().request_id
    if request is not None:
        if not trace_id:
            parent = parse_traceparent(request.headers.getlist("traceparent"))
            trace_id = parent.trace_id if parent else ""
        request_id = request_id or request.headers.get("x-request-id", "")
    return {"request_id": request_id or None, "trace_id": trace_id or None}


class Health:
    """Whether a service can do its job, not only answer. `probe` raises when it cannot (a store that cannot
    write); `failed` records a failure seen in traffic, `recovered` clears it. While either holds, /healthz
    answers 503 with the problem, so the gateway takes the service out of its pool and `finopti status` shows it
    unhealthy; a service that stays so for `restart_after` seconds exits, and the process manager starts it
    again (with backoff while it still cannot start)."""

    def __init__(self, probe: Callable[[], None], restart_after: float = 10.0, every: float = 1.0):
        self.probe, self.restart_after, self.every = probe, restart_after, every
        self.probe_problem: str | None = None
        self.traffic_problem: str | None = None
        self.since: float | None = None

    @property
    def problem(self) -> str | None:
        return self.probe_problem or self.traffic_problem

    def _mark(self) -> None:
        self.since = (self.since or time.monotonic()) if self.problem else None

    def check(self) -> str | None:
        try:
            self.probe()
            self.probe_problem = None
        except Exception as exc:  # whatever keeps it from its job
            self.probe_problem = f"{type(exc).__name__}: {exc}"
        self._mark()
        return self.problem

    def failed(self, problem: str) -> None:
        self.traffic_problem = problem
        self._mark()

    def recovered(self) -> None:
        self.traffic_problem = None
        self._mark()

    async def watch(self, service: str) -> None:
        while True:
            await asyncio.sleep(self.every)
            await asyncio.to_thread(self.check)
            if self.since is not None and time.monotonic() - self.since >= self.restart_after:
                log.error("%s cannot do its job for %.0fs (%s): exiting, to be started again", service,
                          time.monotonic() - self.since, self.problem, extra={"event": "unhealthy_exit"})
                os.kill(os.getpid(), signal.SIGTERM)  # a graceful stop; the process manager restarts it
                stuck = threading.Timer(self.restart_after, os._exit, args=(70,))  # unless the stop hangs
                stuck.daemon = True
                stuck.start()
                return


def error_body(status: int, error: str, message: str, **details) -> dict:
    """The project's error body; ids of the current request unless `details` names them."""
    return {"error": error, "message": message or HTTPStatus(status).phrase, "status": status, **request_ids(),
            **details}


def _is_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _unreadable_body(exc: BaseException | None) -> str:
    """Why FastAPI could not read a JSON body it took for JSON (it says only "There was an error parsing the
    body")."""
    if isinstance(exc, UnicodeDecodeError):
        return f"request body is not UTF-8 (byte {exc.start}): JSON must be UTF-8"
    if isinstance(exc, RecursionError):
        return "request body nests arrays or objects too deeply to be read"
    return f"request body could not be read as JSON: {type(exc).__name__}: {exc}" if exc else ""


def create_service_app(settings: ServiceSettings, title: str, quiet_paths: frozenset[str] = frozenset()) -> FastAPI:
    """`quiet_paths`: requests that are not traffic (no log line, no metric), beyond /healthz and /metrics."""
    app = FastAPI(title=title, version=settings.version, docs_url=None, redoc_url=None)
    app.state.settings = settings

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        health: Health | None = getattr(app.state, "health", None)
        body = {"status": "ok", "service": settings.service, "version": settings.version}
        if health is not None and health.problem:
            return JSONResponse({**body, "status": "unhealthy", "problem": health.problem}, 503)
        return JSONResponse(body)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        invalid = [e for e in errors if e.get("type") == "json_invalid"]
        if invalid:
            problem = invalid[0].get("ctx", {}).get("error", "JSON decode error")
            where = f"{problem} at character {invalid[0]['loc'][-1]}"
            return JSONResponse(error_body(400, "bad_request", f"request body is not valid JSON: {where}"), 400)
        content_type = request.headers.get("content-type", "")
        if content_type and not _is_json(content_type) and any(e["loc"][:1] == ("body",) for e in errors):
            message = f"request body must be JSON (Content-Type: application/json), not {content_type}"
            return JSONResponse(error_body(415, "unsupported_media_type", message), 415)
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]} for e in errors
        ]
        # The message names the first problem ("prompt: String should have at most 2000 characters"): a chat
        # or a CLI shows the message, not the list.
        first = problems[0] if problems else {"field": "", "problem": "not what this endpoint takes"}
        message = f"request body is invalid: {first['field'] or 'body'}: {first['problem']}"
        return JSONResponse(error_body(422, "invalid_request", message, problems=problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        detail = dict(exc.detail) if isinstance(exc.detail, dict) else {"message": str(exc.detail or "")}
        if status == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            detail["message"] = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed or 'none'}"
        elif status == 404 and "error" not in detail:
            detail["message"] = f"{settings.service} has no route for {request.url.path}"
        elif status == 400 and "error" not in detail:
            detail["message"] = _unreadable_body(exc.__cause__) or detail["message"]
        body = {**error_body(status, detail.pop("error", error_code(status)), detail.pop("message", "")),
                **request_ids(request), **detail}
        return JSONResponse(body, status, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        text = f": {exc}" if str(exc) else " (no message)"
        return JSONResponse(error_body(500, "internal", f"{settings.service} failed: {type(exc).__name__}{text}",
                                       **request_ids(request)), 500)

    app.add_middleware(
        TelemetryMiddleware, service=settings.service, version=settings.version, quiet_paths=quiet_paths,
        router=app.router,
    )
    return app
