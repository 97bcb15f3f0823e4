"""What both agents are made of: actions exposed as `POST /v1/actions/<action>` (so the gateway's policy
sees what is asked), each served by a tool on the agent's own tool server, reached over MCP via the mesh."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Body, FastAPI, HTTPException

from finopti.services.common import ServiceSettings, create_service_app
from finopti.services.mcp_tools import ToolError, call_tool

ERROR_STATUS = {"NotFound": 404, "InvalidArgument": 400, "AlreadyExists": 409}


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


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _mesh_failure(tool_route: str, exc: BaseException) -> HTTPException:
    """A failed MCP call: the gateway's answer (a policy denial, an open circuit) keeps its status."""
    cause = _root_cause(exc)
    if isinstance(cause, httpx.HTTPStatusError):
        status = cause.response.status_code
        try:
            body = cause.response.json()
        except (ValueError, httpx.ResponseNotRead):
            body = {}
        message = body.get("message") or f"{tool_route} answered {status}"
        return HTTPException(status, {**body, "error": body.get("error", "tool_call_failed"), "message": message})
    return HTTPException(502, {"error": "tool_server_unavailable",
                               "message": f"{tool_route}: {type(cause).__name__}: {cause}"})


def create_agent_app(
    settings: ServiceSettings, title: str, tool_route: str, actions: dict[str, Action]
) -> FastAPI:
    app = create_service_app(settings, title)
    tools_url = f"{settings.mesh_url.rstrip('/')}/{tool_route}/mcp"
    mesh_tls = settings.mesh_ssl()

    @app.get("/v1/actions")
    async def list_actions() -> dict:
        return {"agent": settings.service, "actions": {n: a.description for n, a in actions.items()}}

    @app.post("/v1/actions/{action}")
    async def run_action(action: str, arguments: dict[str, Any] = Body(default_factory=dict)) -> dict:
        spec = actions.get(action)
        if spec is None:
            raise HTTPException(
                404, {"error": "unknown_action", "message": f"{settings.service} has no action '{action}'",
                      "actions": sorted(actions)},
            )
        args = {k: v for k, v in arguments.items() if v is not None}
        try:
            data = await call_tool(tools_url, spec.tool, args, verify=mesh_tls)
        except ToolError as exc:
            status = ERROR_STATUS.get(exc.kind, 502)
            raise HTTPException(status, {"error": exc.kind, "message": exc.message}) from None
        except Exception as exc:  # the MCP client wraps transport failures in exception groups
            raise _mesh_failure(tool_route, exc) from None
        # A tool that shows its work returns `explanation` (data, period, method); it travels beside the data.
        explanation = data.pop("explanation", None) if isinstance(data, dict) else None
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
