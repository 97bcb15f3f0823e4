"""orchestrator: understands a prompt, delegates it to one agent through the mesh, assembles the answer.

Understanding is entity-first (`parser.py`) over the cloud's inventory, read through the agents as the user
and cached (`inventory.py`). No retries and no authorization here: the gateway owns both (it authorizes every
hop for the user)."""

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from finopti.services.common import CONFIRMATION_HEADER, ServiceSettings, create_service_app, error_body, request_ids
from finopti.services.meshclient import mesh_client, unanswered
from finopti.services.orchestrator import examples, suggestions
from finopti.services.orchestrator.catalog import action
from finopti.services.orchestrator.confirmations import (
    DEFAULT_TTL,
    Confirmation,
    ConfirmationError,
    Confirmations,
    plan_digest,
)
from finopti.services.orchestrator.inventory import Inventory, InventoryCache, platform_services
from finopti.services.orchestrator.parser import Intent, Understanding, capabilities, understand
from finopti.services.orchestrator.planner import LLMPlanner, PlannerError, PlannerSettings
from finopti.services.orchestrator.suggestions import ActionPermissions
from finopti.telemetry import current_request

log = logging.getLogger("finopti.orchestrator")

# Where the inventory is read, in order: the gcloud agent, or for a monitoring-only role the monitoring agent.
INVENTORY_SOURCES = ("gcloud-agent", "monitoring-agent")


class AskRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    project: str | None = Field(default=None, max_length=100)


class ConfirmRequest(BaseModel):
    token: str = Field(min_length=1, max_length=8192)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ids = request_ids  # the request's ids, in answers as in errors


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


def _with(response: JSONResponse, extra: dict) -> JSONResponse:
    """The answer with how it was planned (`planner`, and why the LLM was not used when it failed)."""
    body = json.loads(response.body)
    return JSONResponse({**body, **extra}, response.status_code)


def create_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings, "orchestrator")
    mesh = mesh_client(settings.mesh_url, verify=settings.mesh_ssl(), source=settings.mesh_source)

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
    confirmations = Confirmations(settings.home / "orchestrator",
                                  ttl=float(os.environ.get("FINOPTI_CONFIRMATION_TTL", DEFAULT_TTL)))
    app.state.confirmations = confirmations

    schemas: dict[str, dict] = {}

    async def action_schemas() -> dict[str, dict]:
        """Each agent's actions with their MCP tool schemas, read once per agent (as the first user allowed)."""
        for agent in INVENTORY_SOURCES:
            if agent not in schemas:
                result, _ = await call(agent, "describe_actions", {})
                if result is not None:
                    schemas[agent] = result["data"]
        return schemas

    planner_settings = PlannerSettings.from_env()
    planner = None if planner_settings is None else LLMPlanner(
        f"{settings.mesh_url.rstrip('/')}/llm", planner_settings, settings.mesh_ssl(), action_schemas,
        settings.mesh_source)

    async def plan_prompt(prompt: str, known: Inventory) -> tuple[Understanding, dict]:
        """The LLM's plan when it is on and it works; otherwise the deterministic parser's."""
        if planner is None:
            return understand(prompt, known), {"planner": "parser"}
        try:
            return await planner.plan(prompt, known), {"planner": "llm"}
        except PlannerError as exc:
            return understand(prompt, known), {"planner": "parser", "planner_fallback": f"LLM planner: {exc.reason}"}

    async def call(agent: str, name: str, arguments: dict, headers: dict | None = None
                   ) -> tuple[dict | None, JSONResponse | None]:
        """An agent action through the mesh: (its result, None) or (None, the error answer to give back)."""
        try:
            response = await mesh.post(f"/{agent}/v1/actions/{name}", json=arguments, headers=headers or {})
        except httpx.HTTPError as exc:
            status, error, message = unanswered(agent, exc)
            return None, JSONResponse(error_body(status, error, message, agent=agent, action=name), status)
        try:
            result: dict[str, Any] = response.json()
        except ValueError:
            result = {"message": response.text[:300]}
        if not response.is_success:
            # The gateway's or the agent's own error (a policy denial, an unknown instance) goes back as is.
            body = {**result, "agent": agent, "action": name, **_ids()}
            body.setdefault("status", response.status_code)
            body.setdefault("error", "agent_error")
            if not body.get("message"):
                body["message"] = f"{agent} answered {response.status_code} without saying why"
            return None, JSONResponse(body, response.status_code)
        return result, None

    def refused(exc: ConfirmationError) -> JSONResponse:
        log.warning("confirmation refused: %s", exc.message, extra={"event": "confirmation_refused",
                                                                     "error": exc.error})
        return JSONResponse(error_body(exc.status, exc.error, exc.message, **_ids()), exc.status)

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
        understanding, how = await plan_prompt(request.prompt, known)
        response = await answer(request, understanding, known)
        intent = understanding.intent
        log.info("ask", extra={"event": "ask", "prompt": request.prompt, "status": response.status_code,
                               "outcome": understanding.kind, "agent": intent.agent if intent else None,
                               "action": intent.action if intent else None, **how})
        return _with(response, how)

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
        if action(understanding.intent.action).mutates:
            return await plan(understanding.intent, understanding)
        return await run(understanding.intent, understanding)

    async def plan(intent: Intent, understanding: Understanding) -> JSONResponse:
        """A change is first a plan: what it does, whether it can be undone, what it costs, and a token that
        only the asking user can use, once, before it expires."""
        result, failure = await call(intent.agent, f"plan_{intent.action}", intent.arguments)
        if failure is not None:
            return failure
        planned = result["data"]
        common = {"agent": intent.agent, "action": intent.action, "arguments": intent.arguments,
                  "notes": list(understanding.notes), **_ids()}
        if planned.get("blocked"):
            return JSONResponse({**error_body(409, "change_blocked", result.get("summary") or planned["blocked"]),
                                 "plan": planned, **common}, 409)
        if not planned.get("changed"):
            return JSONResponse({"kind": "answer", "answer": result.get("summary", ""), "data": planned, **common})
        token, confirmation = confirmations.issue(current_request().user, intent.agent, intent.action,
                                                  intent.arguments, planned)
        log.info("plan issued", extra={"event": "plan", "confirmation": confirmation.id,
                                       "plan_action": intent.action, "arguments": intent.arguments})
        return JSONResponse({
            "kind": "plan",
            "answer": result.get("summary", ""),
            "plan": planned,
            "data": planned,
            "view": {"type": "detail", "title": "What will change"},
            "confirmation": {"token": token, "id": confirmation.id, "expires_at": _iso(confirmation.expires_at),
                             "expires_in": int(confirmations.ttl)},
            **common,
        })

    @app.post("/ask/confirm")
    async def confirm(request: ConfirmRequest) -> JSONResponse:
        try:
            confirmation = confirmations.check(request.token, current_request().user)
        except ConfirmationError as exc:
            return refused(exc)
        # The plan must still hold: the instance may have changed since it was shown.
        replanned, failure = await call(confirmation.agent, f"plan_{confirmation.action}", confirmation.arguments)
        if failure is not None:
            return failure
        now = replanned["data"]
        digest = plan_digest(confirmation.agent, confirmation.action, confirmation.arguments, now)
        try:
            # A plan that can no longer be carried out ("budget X already exists" since) or would now change
            # nothing is no longer the plan that was confirmed, even where its before/after read the same.
            if digest != confirmation.plan_digest or now.get("blocked") or not now.get("changed", True):
                confirmations.spend(confirmation, "refused (plan changed)")
                raise ConfirmationError(409, "plan_changed", "what this plan would change is not as it was when "
                                        "the plan was made; ask again for a new plan (now: "
                                        f"{now.get('blocked') or replanned.get('summary', '')})")
            confirmations.spend(confirmation, "confirmed")
        except ConfirmationError as exc:
            return refused(exc)
        return await execute(confirmation)

    @app.post("/ask/cancel")
    async def cancel(request: ConfirmRequest) -> JSONResponse:
        try:
            confirmation = confirmations.check(request.token, current_request().user)
            confirmations.spend(confirmation, "cancelled")
        except ConfirmationError as exc:
            return refused(exc)
        log.info("plan cancelled", extra={"event": "plan_cancelled", "confirmation": confirmation.id})
        return JSONResponse({"kind": "cancelled", "answer": "Cancelled: nothing was changed.",
                             "agent": confirmation.agent, "action": confirmation.action,
                             "arguments": confirmation.arguments, "confirmation": {"id": confirmation.id},
                             **_ids()})

    async def execute(confirmation: Confirmation) -> JSONResponse:
        intent = Intent(confirmation.agent, confirmation.action, confirmation.arguments)
        response = await run(intent, Understanding(intent=intent), {CONFIRMATION_HEADER: confirmation.id})
        log.info("change confirmed", extra={"event": "change_confirmed", "confirmation": confirmation.id,
                                            "status": response.status_code})
        return response

    async def run(intent: Intent, understanding: Understanding, headers: dict | None = None) -> JSONResponse:
        result, failure = await call(intent.agent, intent.action, intent.arguments, headers)
        if action(intent.action).mutates:
            inventory.invalidate()
        if failure is not None:
            return failure
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

