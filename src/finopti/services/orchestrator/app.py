"""orchestrator: understands a prompt, delegates it to one agent through the mesh, assembles the answer.

No retries and no authorization here: the gateway owns both (it authorizes every hop for the user)."""

import logging

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from finopti.services.common import ServiceSettings, create_service_app, error_body
from finopti.services.meshclient import mesh_client
from finopti.services.orchestrator.intents import capabilities, parse_intent
from finopti.services.orchestrator.suggestions import ActionPermissions, Suggestions
from finopti.telemetry import current_request
from finopti.telemetry.context import trace_ids

log = logging.getLogger("finopti.orchestrator")


class AskRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    project: str | None = Field(default=None, max_length=100)


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, "orchestrator")
    mesh = mesh_client(settings.mesh_url, verify=settings.mesh_ssl())

    async def inventory(agent: str, action: str) -> list | None:
        """Rows of a listing action, asked as the current user through the mesh; None when refused or down."""
        try:
            response = await mesh.post(f"/{agent}/v1/actions/{action}", json={})
        except httpx.HTTPError:
            return None
        data = response.json().get("data") if response.is_success else None
        return data if isinstance(data, list) else None

    suggestions = Suggestions(ActionPermissions(settings.policy_dir), inventory)

    async def user_suggestions() -> list[dict]:
        ctx = current_request()
        return await suggestions.for_user(ctx.user, ctx.groups)

    @app.get("/capabilities")
    async def list_capabilities() -> dict:
        return {"capabilities": capabilities()}

    @app.get("/suggestions")
    async def list_suggestions() -> dict:
        """Example prompts naming what exists, limited to what the user's roles allow (docs/console.md)."""
        return {"user": current_request().user, "suggestions": await user_suggestions()}

    @app.post("/ask")
    async def ask(request: AskRequest) -> JSONResponse:
        intent = parse_intent(request.prompt)
        response = await answer(request, intent)
        # One line per question: the trace view's header shows the prompt and how it ended.
        log.info("ask", extra={"event": "ask", "prompt": request.prompt, "status": response.status_code,
                               "agent": intent.agent if intent else None, "action": intent.action if intent else None})
        return response

    async def answer(request: AskRequest, intent) -> JSONResponse:
        trace_id, _ = trace_ids()
        ids = {"trace_id": trace_id, "request_id": current_request().request_id}
        if intent is None:
            body = error_body(422, "unrecognised_prompt", f"I cannot map this prompt to an action: “{request.prompt}”",
                              capabilities=capabilities(), suggestions=await user_suggestions(), **ids)
            return JSONResponse(body, 422)
        try:
            response = await mesh.post(f"/{intent.agent}/v1/actions/{intent.action}", json=intent.arguments)
        except httpx.HTTPError as exc:
            return JSONResponse(error_body(502, "agent_unreachable", f"{intent.agent}: {exc}", **ids), 502)
        try:
            result = response.json()
        except ValueError:
            result = {"message": response.text[:300]}
        if not response.is_success:
            # The gateway's or the agent's own error (a policy denial, an unknown instance) goes back as is.
            body = {**result, "agent": intent.agent, "action": intent.action, **ids}
            body.setdefault("status", response.status_code)
            return JSONResponse(body, response.status_code)
        return JSONResponse({
            "answer": result.get("summary", ""),
            "agent": intent.agent,
            "agent_version": result.get("version"),
            "action": intent.action,
            "arguments": intent.arguments,
            "data": result.get("data"),
            # How the chat draws `data` and how the figure was computed (docs/console.md), when the agent says.
            **{k: result[k] for k in ("view", "explanation") if result.get(k) is not None},
            **ids,
        })

    return app
