"""The policy service: Envoy's HTTP ext_authz backend and a small OPA-compatible REST API.

- ``ANY /authz/<original path>``: Envoy's ext_authz (``path_prefix: /authz``) with the original
  method and the allowed headers, plus ``x-finopti-listener: edge|mesh``. 200 allows; otherwise
  the decision's status (401/403) with a JSON error body, which Envoy relays to the client.
- ``POST /v1/data/<path>`` with ``{"input": ...}``: ``{"result": ..., "decision_id": ...}`` as OPA
  answers, so tools written for OPA (and APISIX's ``opa`` plugin) can ask this service too.

Every decision is logged as one line on the ``finopti.decision`` logger, never with credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from finopti.policy import (
    UNDEFINED,
    Decision,
    PolicyEngine,
    PolicyError,
    RouteIndex,
    build_input_from_envoy,
    load_route_table,
    source_from_xfcc,
)
from finopti.services.common import create_service_app, error_body
from finopti.telemetry.traceparent import parse_traceparent

decision_log = logging.getLogger("finopti.decision")

AUTHZ_PREFIX = "/authz"
LISTENERS = {"edge", "mesh"}
# Bounded labels: route names of mesh.yaml (or "none"), and the decision.
DECISIONS = Counter("finopti_authz_decisions_total", "Rego decisions of the policy service's ext_authz check",
                    ["route", "allow"])
ERRORS = {401: "unauthorized", 403: "forbidden"}


def trace_id_from(traceparent: str | list[str] | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (every value the request carried), None if absent or invalid."""
    parent = parse_traceparent(traceparent)
    return parent.trace_id if parent else None


def _identity(policy_input: Any) -> dict:
    """user/source/route/listener for the log line, from `finopti` or APISIX's shape."""
    if not isinstance(policy_input, dict):
        return {"user": None, "source": None, "route": None, "listener": None}
    fin = policy_input.get("finopti") if isinstance(policy_input.get("finopti"), dict) else {}
    request = policy_input.get("request") if isinstance(policy_input.get("request"), dict) else {}
    headers = request.get("headers") if isinstance(request.get("headers"), dict) else {}
    route = policy_input.get("route") if isinstance(policy_input.get("route"), dict) else {}
    return {
        "user": fin.get("user", headers.get("x-user-email")),
        "source": fin.get("source", headers.get("x-finopti-source")),
        "route": fin.get("route", route.get("name")),
        "listener": fin.get("listener", headers.get("x-finopti-listener")),
    }


def _log_decision(traceparents: list[str], request_id: str | None, decision_id: str, started: float,
                  policy_input: Any, **fields) -> None:
    decision_log.info(
        "authz decision",
        extra={
            "event": "authz_decision",
            "decision_id": decision_id,
            "trace_id": trace_id_from(traceparents),
            "request_id": request_id,
            **_identity(policy_input),
            **fields,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )


class PolicyDirWatcher:
    """Reload the policies and the route table when a file in the directory changes (`finopti mesh
    apply` rewrites routes.json), looking at most once a second so a decision costs no extra I/O."""

    def __init__(self, policy_dir: Path, engine: PolicyEngine, routes: list | None):
        self.policy_dir = policy_dir
        self.engine = engine
        self.fixed_routes = routes
        self.routes = routes or load_route_table(policy_dir)
        self.index = RouteIndex(self.routes)
        self._snapshot = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> dict[str, float]:
        return {p.name: p.stat().st_mtime for p in self.policy_dir.iterdir() if p.suffix in (".rego", ".json")}

    def refresh(self) -> None:
        if time.monotonic() - self._checked < 1.0:
            return
        self._checked = time.monotonic()
        snapshot = self._stat()
        if snapshot == self._snapshot:
            return
        try:
            self.engine.reload()
            self.routes = self.fixed_routes or load_route_table(self.policy_dir)
            self.index = RouteIndex(self.routes)
            self._snapshot = snapshot
            decision_log.info("policies reloaded", extra={"event": "policy_reload"})
        except (PolicyError, OSError, ValueError) as exc:  # keep deciding with the old policy
            decision_log.error("policy reload failed, keeping the previous policy: %s", exc)


class PolicySourceWatcher:
    """On a local platform (`finopti up`), the policies directory it was started with (`--policies`) is the
    source: when its data.json or a .rego file changes, the platform's copy and the gateway's own rules are
    re-rendered from it (`finopti.live.refresh_policies`), so decisions change live in both tiers."""

    def __init__(self, home: Path):
        from finopti.paths import StateDir

        self.state = StateDir(Path(home))
        self.source: Path | None = None
        self._snapshot: dict[str, float] = {}

    def _stat(self) -> dict[str, float]:
        assert self.source is not None
        return {p.name: p.stat().st_mtime for p in self.source.iterdir()
                if p.suffix == ".rego" or p.name == "data.json"}

    def start(self) -> bool:
        from finopti.platform import Runtime

        if not self.state.runtime_file.exists():
            return False  # not part of a local platform (tests, compose): nothing to re-render
        self.source = Path(Runtime.load(self.state).policy_dir)
        self._snapshot = self._stat()
        return True

    async def run(self) -> None:
        from finopti.live import refresh_policies

        while True:
            await asyncio.sleep(1.0)
            try:
                snapshot = self._stat()
            except OSError:
                continue
            if snapshot == self._snapshot:
                continue
            self._snapshot = snapshot
            try:
                await asyncio.to_thread(refresh_policies, self.state)
                decision_log.info("gateway rules re-rendered from %s", self.source, extra={"event": "policy_render"})
            except Exception as exc:  # a broken file: the rules in force stay
                decision_log.error("policies in %s not applied, keeping the rules in force: %s", self.source, exc)


def create_app(settings):
    policy_dir = Path(getattr(settings, "policy_dir", Path("policies")))
    engine = PolicyEngine(policy_dir)
    # The route table comes from mesh.yaml when the platform passes it, else from routes.json.
    watcher = PolicyDirWatcher(policy_dir, engine, getattr(settings, "routes", None))
    source = PolicySourceWatcher(getattr(settings, "home", Path(".finopti")))

    app = create_service_app(settings, title="FinOptiAgents policy")
    app.state.engine = engine

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        task = asyncio.create_task(source.run()) if source.start() else None
        yield
        if task is not None:
            task.cancel()

    app.router.lifespan_context = lifespan

    async def check(scope: dict, receive, send) -> None:
        """Envoy's ext_authz check, served below FastAPI (no routing, no middleware, no body): the decision
        and its log line are the whole work of a request."""
        started = time.perf_counter()
        decision_id = str(uuid.uuid4())
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        listener = headers.get("x-finopti-listener")
        listener = listener if listener in LISTENERS else None  # unknown listener: no route, deny
        # The raw path, as Envoy matched it (a decoded %2F would move segment boundaries), plus query.
        raw = scope.get("raw_path") or scope["path"].encode()
        original = raw.decode("latin-1")[len(AUTHZ_PREFIX):] or "/"
        if scope.get("query_string"):
            original += "?" + scope["query_string"].decode("latin-1")
        # Only the mesh listener sets x-forwarded-client-cert from a verified client certificate.
        source = source_from_xfcc(headers.get("x-forwarded-client-cert")) if listener == "mesh" else None
        watcher.refresh()
        route = watcher.index.match(listener, original) if listener else None
        policy_input = build_input_from_envoy(scope["method"], original, headers, route, listener, source)
        decision: Decision = engine.decide(policy_input)
        traceparents = [v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"]
        _log_decision(traceparents, headers.get("x-request-id"), decision_id, started, policy_input,
                      allow=decision.allow, reason=decision.reason, status=decision.status)
        DECISIONS.labels(route=route or "none", allow=str(decision.allow).lower()).inc()
        reply = [(b"x-finopti-authz", b"allow" if decision.allow else b"deny"),
                 (b"x-finopti-decision-id", decision_id.encode())]
        body = b""
        if not decision.allow:
            if decision.status == 401:
                reply.append((b"www-authenticate", b'Bearer realm="finopti"'))
            error = ERRORS.get(decision.status, "policy_error")
            body = json.dumps(error_body(decision.status, error, decision.reason, decision_id=decision_id,
                                         request_id=headers.get("x-request-id"),
                                         trace_id=trace_id_from(traceparents))).encode()
            reply.append((b"content-type", b"application/json"))
        reply.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200 if decision.allow else decision.status,
                    "headers": reply})
        await send({"type": "http.response.body", "body": body})

    @app.post("/v1/data", include_in_schema=False)
    @app.post("/v1/data/{path:path}", include_in_schema=False)
    async def data_api(request: Request, path: str = "") -> JSONResponse:
        started = time.perf_counter()
        decision_id = str(uuid.uuid4())
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            message = f"request body is not valid JSON: {exc}"
            return JSONResponse(error_body(400, "bad_request", message, code="invalid_parameter"), 400)
        policy_input = body.get("input", UNDEFINED)
        watcher.refresh()
        try:
            result = engine.query(path, policy_input)
        except PolicyError as exc:
            return JSONResponse(error_body(500, "policy_error", str(exc), code="internal_error"), 500)
        fields: dict[str, Any] = {"query": path}
        if isinstance(result, dict) and {"allow", "reason", "status"} <= result.keys():
            fields.update(allow=result["allow"], reason=result["reason"], status=result["status"])
        elif isinstance(result, bool):
            fields["allow"] = result
        logged_input = None if policy_input is UNDEFINED else policy_input
        _log_decision(request.headers.getlist("traceparent"), request.headers.get("x-request-id"), decision_id,
                      started, logged_input, **fields)
        if result is UNDEFINED:  # OPA leaves "result" out when the document is undefined
            return JSONResponse({"decision_id": decision_id})
        return JSONResponse({"result": result, "decision_id": decision_id})

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(AUTHZ_PREFIX + "/"):
            await check(scope, receive, send)
        else:
            await app(scope, receive, send)

    asgi.state = app.state  # type: ignore[attr-defined]  (tests read the engine from here)
    return asgi
