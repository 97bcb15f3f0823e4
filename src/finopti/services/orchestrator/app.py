"""orchestrator: understands a prompt, delegates it to one agent through the mesh, assembles the answer.

No retries and no authorization here: the gateway owns both (it authorizes every hop for the user)."""

from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from finopti.services.common import ServiceSettings, create_service_app, error_body
from finopti.services.meshclient import mesh_client
from finopti.services.orchestrator.intents import capabilities, parse_intent
from finopti.telemetry import current_request
from finopti.telemetry.context import trace_ids


class AskRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    project: str | None = Field(default=None, max_length=100)


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, "orchestrator")
    mesh = mesh_client(settings.mesh_url, verify=settings.mesh_ssl(), source=settings.mesh_source)

    @app.get("/capabilities")
    async def list_capabilities() -> dict:
        return {"capabilities": capabilities()}

    @app.post("/ask")
    async def ask(request: AskRequest) -> Any:
        intent = parse_intent(request.prompt)
        trace_id, _ = trace_ids()
        ids = {"trace_id": trace_id, "request_id": current_request().request_id}
        if intent is None:
            body = error_body(422, "unrecognised_prompt", f"I cannot map this prompt to an action: {request.prompt!r}",
                              capabilities=capabilities(), **ids)
            return JSONResponse(body, 422)
        try:
            response = await mesh.post(f"/{intent.agent}/v1/actions/{intent.action}", json=intent.arguments)
        except httpx.HTTPError as exc:
            raise HTTPException(502, {"error": "agent_unreachable", "message": f"{intent.agent}: {exc}"}) from None
        try:
            result = response.json()
        except ValueError:
            result = {"message": response.text[:300]}
        if not response.is_success:
            # The gateway's or the agent's own error (a policy denial, an unknown instance) goes back as is.
            body = {**result, "agent": intent.agent, "action": intent.action, **ids}
            body.setdefault("status", response.status_code)
            return JSONResponse(body, response.status_code)
        return {
            "answer": result.get("summary", ""),
            "agent": intent.agent,
            "agent_version": result.get("version"),
            "action": intent.action,
            "arguments": intent.arguments,
            "data": result.get("data"),
            **ids,
        }

    return app
