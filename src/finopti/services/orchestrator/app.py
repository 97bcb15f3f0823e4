"""orchestrator: understands a prompt, delegates it to one agent through the mesh, assembles the answer.

Understanding is entity-first (`parser.py`) over the cloud's inventory, read through the agents as the user
and cached (`inventory.py`). No retries and no authorization here: the gateway owns both (it authorizes every
hop for the user)."""

import logging
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from finopti.services.common import ServiceSettings, create_service_app, error_body
from finopti.services.meshclient import mesh_client
from finopti.services.orchestrator import examples, suggestions
from finopti.services.orchestrator.catalog import action
from finopti.services.orchestrator.inventory import Inventory, InventoryCache, platform_services
from finopti.services.orchestrator.parser import Intent, Understanding, capabilities, understand
from finopti.services.orchestrator.suggestions import ActionPermissions
from finopti.telemetry import current_request
from finopti.telemetry.context import trace_ids

log = logging.getLogger("finopti.orchestrator")

# Where the inventory is read, in order: the gcloud agent, or for a monitoring-only role the monitoring agent.
INVENTORY_SOURCES = ("gcloud-agent", "monitoring-agent")


class AskRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    project: str | None = Field(default=None, max_length=100)


def _ids() -> dict:
    trace_id, _ = trace_ids()
    return {"trace_id": trace_id, "request_id": current_request().request_id}


def _option(option) -> dict:
    return {"prompt": option.prompt, "description": option.label, "agent": option.intent.agent,
            "action": option.intent.action, "arguments": option.intent.arguments}


def clarification_body(understanding: Understanding) -> dict:
    return {
        "kind": "clarification",
        "answer": understanding.question,
        "question": understanding.question,
        "about": understanding.about,
        "missing": understanding.missing,
        "options": [_option(o) for o in understanding.options],
        "notes": list(understanding.notes),
    }


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, "orchestrator")
    mesh = mesh_client(settings.mesh_url, verify=settings.mesh_ssl())

    async def fetch_inventory() -> dict:
        """The names the parser knows, read as the current user from the first agent that lets them."""
        problems = []
        for agent in INVENTORY_SOURCES:
            response = await mesh.post(f"/{agent}/v1/actions/inventory", json={})
            if response.is_success:
                return response.json()["data"]
            problems.append(f"{agent}: {response.status_code}")
        raise RuntimeError("no agent gave the inventory (" + ", ".join(problems) + ")")

    # The running platform's mesh: its services are what platform log questions can be about.
    inventory = InventoryCache(fetch_inventory, platform_services(settings.home / "mesh.running.yaml"))
    app.state.inventory = inventory

    permissions = ActionPermissions(settings.policy_dir)

    @app.get("/capabilities")
    async def list_capabilities() -> dict:
        return {"capabilities": capabilities(), "examples": examples.examples(await inventory.get())}

    @app.get("/suggestions")
    async def list_suggestions() -> dict:
        """Example prompts naming what exists, limited to what the user's roles allow (docs/console.md)."""
        ctx = current_request()
        found = examples.examples(await inventory.get())
        return {"user": ctx.user, "suggestions": suggestions.for_user(found, permissions, ctx.user, ctx.groups)}

    @app.post("/ask")
    async def ask(request: AskRequest) -> JSONResponse:
        known = await inventory.get()
        understanding = understand(request.prompt, known)
        response = await answer(request, understanding, known)
        intent = understanding.intent
        log.info("ask", extra={"event": "ask", "prompt": request.prompt, "status": response.status_code,
                               "outcome": understanding.kind, "agent": intent.agent if intent else None,
                               "action": intent.action if intent else None})
        return response

    async def answer(request: AskRequest, understanding: Understanding, known: Inventory) -> JSONResponse:
        if understanding.kind == "unknown":
            suggested = examples.suggestions(known, list(understanding.mentioned))
            body = error_body(
                422, "unrecognised_prompt",
                f"I cannot map this prompt to something I can do: “{request.prompt}”. Try one of the suggestions.",
                capabilities=[e["prompt"] for e in examples.examples(known)] or [c["description"]
                                                                                for c in capabilities()],
                suggestions=suggested, **_ids())
            return JSONResponse(body, 422)
        if understanding.kind == "clarify":
            return JSONResponse({**clarification_body(understanding), **_ids()})
        return await run(understanding.intent, understanding)

    async def run(intent: Intent, understanding: Understanding) -> JSONResponse:
        try:
            response = await mesh.post(f"/{intent.agent}/v1/actions/{intent.action}", json=intent.arguments)
        except httpx.HTTPError as exc:
            return JSONResponse(error_body(502, "agent_unreachable", f"{intent.agent}: {exc}", **_ids()), 502)
        try:
            result: dict[str, Any] = response.json()
        except ValueError:
            result = {"message": response.text[:300]}
        if not response.is_success:
            # The gateway's or the agent's own error (a policy denial, an unknown instance) goes back as is.
            body = {**result, "agent": intent.agent, "action": intent.action, **_ids()}
            body.setdefault("status", response.status_code)
            body.setdefault("error", "agent_error")
            body.setdefault("message", f"{intent.agent} answered {response.status_code}")
            return JSONResponse(body, response.status_code)
        if action(intent.action).mutates:
            inventory.invalidate()
        return JSONResponse({
            "kind": "answer",
            "answer": result.get("summary", ""),
            "agent": intent.agent,
            "agent_version": result.get("version"),
            "action": intent.action,
            "arguments": intent.arguments,
            "data": result.get("data"),
            # How the chat draws `data` and how the figure was computed (docs/console.md), when the agent says.
            **{k: result[k] for k in ("view", "explanation") if result.get(k) is not None},
            "notes": list(understanding.notes),
            **_ids(),
        })

    return app

