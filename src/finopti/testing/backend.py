"""A backend whose failures the caller controls and whose hits it counts.

`/echo` is the traffic endpoint (any method): it answers with the request headers a gateway sets (identity,
request id, trace context), so a test sees what reached the backend. `/control`, `/hits` and `/reset` are for
the test harness, which calls them directly with the gateway's certificate so they never count as traffic."""

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from finopti.services.common import ServiceSettings, create_service_app

# What a gateway puts on a request, or must take off it; the token's scheme only, never the token.
ECHOED_HEADERS = ("x-user-email", "x-user-groups", "x-finopti-source", "x-jwt-payload", "x-request-id",
                  "x-client-request-id", "traceparent", "authorization")


def echoed_headers(request: Request) -> dict[str, str]:
    seen = {name: request.headers[name] for name in ECHOED_HEADERS if name in request.headers}
    if "authorization" in seen:
        seen["authorization"] = seen["authorization"].split(" ", 1)[0]
    return seen


class Control(BaseModel):
    fail_next: int = Field(default=0, ge=0, description="answer this many requests with fail_status")
    fail_always: bool = False
    fail_status: int = Field(default=503, ge=400, le=599)
    delay_ms: int = Field(default=0, ge=0)
    hold: bool = Field(default=False, description="keep every request waiting until hold is set false again")


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, "test backend")
    state = {"control": Control(), "hits": {}, "in_flight": 0}

    @app.api_route("/echo", methods=["GET", "POST", "PUT", "DELETE"])
    @app.api_route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def echo(request: Request, rest: str = "") -> JSONResponse:
        state["hits"]["echo"] = state["hits"].get("echo", 0) + 1
        state["in_flight"] += 1
        try:
            while state["control"].hold:
                await asyncio.sleep(0.02)
        finally:
            state["in_flight"] -= 1
        control: Control = state["control"]
        if control.delay_ms:
            await asyncio.sleep(control.delay_ms / 1000)
        if control.fail_always or control.fail_next > 0:
            if control.fail_next > 0:
                state["control"] = control.model_copy(update={"fail_next": control.fail_next - 1})
            return JSONResponse({"error": "injected by the test", "version": settings.version},
                                control.fail_status)
        return JSONResponse({"service": settings.service, "version": settings.version, "path": rest,
                             "headers": echoed_headers(request)})

    @app.post("/control")
    async def set_control(control: Control) -> dict:
        state["control"] = control
        return control.model_dump()

    @app.get("/hits")
    async def hits() -> dict:
        return {"version": settings.version, "in_flight": state["in_flight"], **state["hits"]}

    @app.post("/reset")
    async def reset() -> dict:
        state.update(control=Control(), hits={})  # requests held now are let go
        return {"reset": True}

    return app
