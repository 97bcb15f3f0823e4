"""Shared shape of the MCP tool servers: a FastMCP server (streamable HTTP at /mcp) inside a service app,
and the client side the agents use to call a tool through the mesh."""

import contextlib
import functools
import json
import re
import ssl
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.server.fastmcp import FastMCP
from mcp.server.transport_security import TransportSecuritySettings

from finopti.cloud import SandboxError
from finopti.services.common import ServiceSettings, create_service_app
from finopti.telemetry import outgoing_headers
from finopti.telemetry.context import add_log_fields


class ToolError(Exception):
    """A tool answered with an error; `kind` is NotFound / InvalidArgument / ToolError."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def new_tool_server(name: str) -> FastMCP:
    # Stateless JSON responses: every call stands alone, so the gateway sees one request per call.
    # DNS-rebinding checks are the gateway's job; requests arrive with the mesh listener's Host.
    return FastMCP(
        name,
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


MAX_PEEK_BYTES = 1 << 20


class McpLogFields:
    """Reads each JSON-RPC request (it is small and whole: stateless JSON mode) before the MCP app does, and
    puts its method and tool name on the request's `request completed` line: without them every hop to a tool
    server reads "POST /mcp". The body is handed to the app unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more, size = [], True, 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False) and size <= MAX_PEEK_BYTES
        body = b"".join(chunks)
        add_log_fields(mcp_fields(body))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        await self.app(scope, replay, send)


def mcp_fields(body: bytes) -> dict:
    """{"mcp_method": "tools/call", "mcp_tool": "list_instances"} from a JSON-RPC request (or a batch's first)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if not isinstance(doc, dict) or not isinstance(doc.get("method"), str):
        return {}
    fields = {"mcp_method": doc["method"][:100]}
    params = doc.get("params")
    if doc["method"] == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
        fields["mcp_tool"] = params["name"][:100]
    return fields


def create_tool_server_app(settings: ServiceSettings, server: FastMCP, title: str) -> FastAPI:
    mcp_app = McpLogFields(server.streamable_http_app())
    app = create_service_app(settings, title)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        async with server.session_manager.run():
            yield

    app.router.lifespan_context = lifespan
    app.mount("/", mcp_app)
    return app


def reports_errors(fn: Callable) -> Callable:
    """Wrap a tool so a sandbox error reaches the caller as 'Kind: message', parsed back by `call_tool`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SandboxError as exc:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def _client_factory(verify: ssl.SSLContext | bool) -> Callable[..., httpx.AsyncClient]:
    def factory(headers=None, timeout=None, auth=None) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=verify)

    return factory


async def call_tool(
    url: str, tool: str, arguments: dict[str, Any], verify: ssl.SSLContext | bool = True, timeout: float = 20.0
) -> Any:
    """Call one tool over MCP (streamable HTTP) at `url`, carrying the request's trace and identity;
    `verify` is the caller's mesh TLS context."""
    async with (
        streamablehttp_client(
            url, headers=outgoing_headers(), timeout=timeout, httpx_client_factory=_client_factory(verify)
        ) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool(tool, arguments)
    if result.isError:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        text = re.sub(r"^Error executing tool [\w-]+: ", "", text)
        kind, _, message = text.partition(": ")
        if not message or not kind.isidentifier():
            kind, message = "ToolError", text
        raise ToolError(kind, message)
    if result.structuredContent is not None:
        content = result.structuredContent
        # FastMCP wraps non-object results as {"result": ...}.
        return content.get("result", content) if set(content) == {"result"} else content
    return json.loads(result.content[0].text) if result.content else None
