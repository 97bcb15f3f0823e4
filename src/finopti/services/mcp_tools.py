"""Shared shape of the MCP tool servers: a FastMCP server (streamable HTTP at /mcp) inside a service app,
and the client side the agents use to call a tool through the mesh."""

import contextlib
import functools
import json
import re
import ssl
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import httpx
from fastapi import FastAPI
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.server.fastmcp import FastMCP
from mcp.server.transport_security import TransportSecuritySettings

from finopti.cloud import SandboxError
from finopti.services.common import ServiceSettings, create_service_app
from finopti.services.meshclient import mesh_transport
from finopti.telemetry import outgoing_headers


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


def create_tool_server_app(settings: ServiceSettings, server: FastMCP, title: str) -> FastAPI:
    mcp_app = server.streamable_http_app()
    app = create_service_app(settings, title)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        async with server.session_manager.run():
            yield

    app.router.lifespan_context = lifespan
    app.mount("/", mcp_app)
    return app


def reports_errors(fn: Callable) -> Callable:
    """Wrap a tool so a sandbox error reaches the caller as 'Kind: message', parsed back by `call_tool`.

    The tool runs in a worker thread (with the request's context: its user, its trace): a slow analysis
    must not hold the event loop, or the gateway's 1 s health checks would find the server dead."""

    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SandboxError as exc:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        return await anyio.to_thread.run_sync(functools.partial(guarded, *args, **kwargs))

    return wrapper


def _client_factory(verify: ssl.SSLContext | bool, source: str | None) -> Callable[..., httpx.AsyncClient]:
    def factory(headers=None, timeout=None, auth=None) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=verify,
                                 transport=mesh_transport(verify, source))

    return factory


async def call_tool(
    url: str, tool: str, arguments: dict[str, Any], verify: ssl.SSLContext | bool = True, timeout: float = 20.0,
    source: str | None = None,
) -> Any:
    """Call one tool over MCP (streamable HTTP) at `url`, carrying the request's trace and identity;
    `verify` is the caller's mesh TLS context, `source` its source address (`meshclient.mesh_transport`)."""
    async with (
        streamablehttp_client(
            url, headers=outgoing_headers(), timeout=timeout, httpx_client_factory=_client_factory(verify, source)
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
