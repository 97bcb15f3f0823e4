"""What both agents are made of: actions exposed as `POST /v1/actions/<action>` (so the gateway's policy
sees what is asked), each served by a tool on the agent's own tool server, reached over MCP via the mesh."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
from fastapi import Body, FastAPI, Header, HTTPException

from finopti.services.common import CONFIRMATION_HEADER, ServiceSettings, create_service_app
from finopti.services.mcp_tools import ToolError, call_tool, list_tools
from finopti.services.meshclient import unanswered
from finopti.telemetry import current_request

ERROR_STATUS = {"NotFound": 404, "InvalidArgument": 400, "AlreadyExists": 409}

audit_log = logging.getLogger("finopti.audit")
# Actions every agent serves besides its own.
COMMON_ACTIONS = ("describe_actions",)


def plural(count: int, noun: str) -> str:
    """"1 day", "3 days": answers read as sentences, never "3 day(s)"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass(frozen=True)
class Action:
    """An agent action: the tool that serves it, a one-line summary of its result, and how the chat shows the
    result (`view`, the presentation contract of docs/console.md; a dict, or a function of data and arguments)."""

    tool: str
    description: str
    summarize: Callable[[Any, dict], str]
    view: dict | Callable[[Any, dict], dict | None] | None = None
    explain: Callable[[Any, dict], str] | None = None
    # Arguments the tool always gets for this action (several actions may share one tool).
    fixed: dict = field(default_factory=dict)
    # A change to the cloud: every attempt is written to the audit trail.
    mutates: bool = False
    # Served by the agent itself instead of a tool (the platform's own logs, read from the log store through
    # the mesh): called with the agent's settings and the arguments; it raises HTTPException on failure.
    handler: Callable[[ServiceSettings, dict], Awaitable[Any]] | None = None
    # The JSON Schema of its arguments when no tool has one (a handler's); a tool's comes from its server.
    schema: dict | None = None


def _difference(before: dict | None, after: dict | None) -> str:
    if before and after is None:
        return "deleted"
    if not before or not after:
        return "no change"
    changed = [f"{k} {before[k]} → {after[k]}" for k in before if k in after and before[k] != after[k]]
    return ", ".join(changed) or "no change"


def audit(agent: str, action: str, args: dict, confirmation: str | None, outcome: str, data: Any = None,
          error: str | None = None) -> None:
    """One audit record per attempted change: who, what, before and after, under which confirmation.
    The log line carries the trace and request ids, so the logs API and the console find it by either."""
    user = current_request().user or "(no user)"
    before = data.get("before") if isinstance(data, dict) else None
    after = data.get("after") if isinstance(data, dict) else None
    target = args.get("name") or args.get("instance") or ""
    what = _difference(before, after) if outcome == "succeeded" else error
    audit_log.info(
        f"audit: {user} {action} {target} {outcome} ({what})",
        extra={"event": "audit", "audit": {
            "who": user, "agent": agent, "action": action, "target": target, "arguments": args,
            "outcome": outcome, "before": before, "after": after, "error": error, "confirmation": confirmation,
        }},
    )


def _explained(parts: Any) -> str | None:
    """{"data": ..., "period": ..., "filter": ..., "method": ...} -> "Data: .... Period: .... ..."."""
    if isinstance(parts, str) or parts is None:
        return parts
    return " ".join(f"{key.capitalize()}: {str(value).rstrip('.')}." for key, value in parts.items() if value)


def _root_cause(exc: BaseException) -> BaseException:
    """The failure that explains a call's exception group: an answer from the gateway first, then a transport
    error, then whatever came first (a closed stream says nothing of why)."""
    leaves = list(_leaves(exc))
    for kind in (httpx.HTTPStatusError, httpx.HTTPError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _mesh_failure(tool_route: str, exc: BaseException) -> HTTPException:
    """A failed MCP call: the gateway's answer (a policy denial, an open circuit) keeps its status, error and
    message, which say which component failed and why."""
    cause = _root_cause(exc)
    if isinstance(cause, httpx.HTTPStatusError):
        status = cause.response.status_code
        try:
            body = cause.response.json()
        except (ValueError, httpx.ResponseNotRead):
            body = {}
        body = body if isinstance(body, dict) else {}
        message = body.get("message") or (f"{tool_route} answered {status} {HTTPStatus(status).phrase} without "
                                          "saying why")
        return HTTPException(status, {**body, "error": body.get("error") or "tool_call_failed", "message": message})
    status, error, message = unanswered(tool_route, cause)
    return HTTPException(status, {"error": error, "message": message})


def create_agent_app(
    settings: ServiceSettings, title: str, tool_route: str, actions: dict[str, Action]
) -> FastAPI:
    app = create_service_app(settings, title)
    tools_url = f"{settings.mesh_url.rstrip('/')}/{tool_route}/mcp"
    mesh_tls = settings.mesh_ssl()

    @app.get("/v1/actions")
    async def list_actions() -> dict:
        return {"agent": settings.service, "actions": {n: a.description for n, a in actions.items()}}

    async def describe_actions(_: ServiceSettings, __: dict) -> dict:
        """Every action a planner may call, with its arguments' JSON Schema as the tool server declares it
        (arguments the agent fixes itself are left out)."""
        try:
            tools = await list_tools(tools_url, verify=mesh_tls, source=settings.mesh_source)
        except Exception as exc:
            raise _mesh_failure(tool_route, exc) from None
        out = {}
        for name, spec in actions.items():
            if name in ("describe_actions", "inventory") or spec.fixed:
                continue
            schema = spec.schema or (tools.get(spec.tool) or {}).get("input_schema")
            if schema is not None:
                out[name] = {"description": spec.description, "mutates": spec.mutates, "input_schema": schema}
        return out

    actions = {**actions, "describe_actions": Action(
        "", "The actions with their arguments' schemas (for a planner)",
        lambda data, _: f"{len(data)} actions", handler=describe_actions)}

    @app.post("/v1/actions/{action}")
    async def run_action(
        action: str, arguments: dict[str, Any] = Body(default_factory=dict),
        confirmation: str | None = Header(default=None, alias=CONFIRMATION_HEADER),
    ) -> dict:
        spec = actions.get(action)
        if spec is None:
            raise HTTPException(
                404, {"error": "unknown_action", "message": f"{settings.service} has no action '{action}'",
                      "actions": sorted(actions)},
            )
        args = {k: v for k, v in arguments.items() if v is not None}
        try:
            if spec.handler is not None:
                data = await spec.handler(settings, args)
            else:
                data = await call_tool(tools_url, spec.tool, {**args, **spec.fixed}, verify=mesh_tls,
                                       source=settings.mesh_source)
        except HTTPException:
            raise
        except ToolError as exc:
            status = ERROR_STATUS.get(exc.kind, 502)
            if spec.mutates:
                audit(settings.service, action, args, confirmation, "failed", error=exc.message)
            raise HTTPException(status, {"error": exc.kind, "message": exc.message}) from None
        except Exception as exc:  # the MCP client wraps transport failures in exception groups
            failure = _mesh_failure(tool_route, exc)
            if spec.mutates:
                audit(settings.service, action, args, confirmation, "failed", error=failure.detail["message"])
            raise failure from None
        if spec.mutates:
            audit(settings.service, action, args, confirmation, "succeeded", data)
        # A tool that shows its work returns `explanation` ({data, period, filter, method}); the chat shows it as
        # sentences beside the data (docs/console.md), the data keeps the parts.
        explanation = _explained(data.get("explanation")) if isinstance(data, dict) else None
        answer = {
            "agent": settings.service,
            "version": settings.version,
            "action": action,
            "arguments": args,
            "summary": spec.summarize(data, args),
            "data": data,
        }
        view = spec.view(data, args) if callable(spec.view) else spec.view
        if view is not None:
            answer["view"] = view
        if explanation is None and spec.explain is not None:
            explanation = spec.explain(data, args)
        if explanation is not None:
            answer["explanation"] = explanation
        return answer

    return app
