"""Shared shape of the MCP tool servers: a FastMCP server (streamable HTTP at /mcp) inside a service app,
and the client side the agents use to call a tool through the mesh."""

import asyncio
import contextlib
import functools
import itertools
import json
import re
import ssl
import weakref
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import httpx
from fastapi import FastAPI
from mcp.server.fastmcp import FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import LATEST_PROTOCOL_VERSION, CallToolResult, InitializeResult, ListToolsResult

from finopti.cloud import SandboxError
from finopti.services.common import ServiceSettings, create_service_app
from finopti.services.meshclient import mesh_transport
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


class McpClient:
    """An agent's MCP client for its tool server: one session, initialized once, over one keep-alive
    connection to the gateway, and one `POST /mcp` per tool call carrying that request's trace and identity
    headers. The tool servers are stateless (`new_tool_server`): no session id to keep, every call stands
    alone at the gateway, which authorizes it for the user of the request it serves."""

    def __init__(self, url: str, verify: ssl.SSLContext | bool = True, timeout: float = 20.0,
                 source: str | None = None):
        self.url = url
        self._client = httpx.AsyncClient(verify=verify, timeout=timeout, transport=mesh_transport(verify, source))
        self._ids = itertools.count(1)
        self._protocol: str | None = None
        self._lock = asyncio.Lock()

    async def _post(self, message: dict) -> dict | None:
        headers = {**outgoing_headers(), "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": self._protocol or LATEST_PROTOCOL_VERSION}
        response = await self._client.post(self.url, json=message, headers=headers)
        response.raise_for_status()  # the gateway's refusal (401/403/503) keeps its status and JSON body
        if "id" not in message:
            return None
        reply = response.json()
        if "error" in reply:
            raise ToolError("ToolError", str(reply["error"].get("message") or reply["error"]))
        return reply["result"]

    async def _initialize(self) -> None:
        async with self._lock:
            if self._protocol is not None:
                return
            result = await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "initialize", "params": {
                "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
                "clientInfo": {"name": "finopti-agent", "version": "1"}}})
            self._protocol = InitializeResult.model_validate(result).protocolVersion
            await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> Any:
        if self._protocol is None:
            await self._initialize()
        result = await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call",
                                   "params": {"name": tool, "arguments": arguments}})
        return _tool_result(CallToolResult.model_validate(result))

    async def list_tools(self) -> dict[str, dict]:
        if self._protocol is None:
            await self._initialize()
        result = ListToolsResult.model_validate(
            await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/list", "params": {}}))
        return {t.name: {"description": t.description or "", "input_schema": t.inputSchema} for t in result.tools}

    async def aclose(self) -> None:
        await self._client.aclose()


# One client per tool server URL and TLS context, per event loop (an httpx client belongs to its loop).
_CLIENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mcp_client(url: str, verify: ssl.SSLContext | bool = True, timeout: float = 20.0,
               source: str | None = None) -> McpClient:
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
    key = (url, id(verify), timeout, source)
    if key not in clients:
        clients[key] = McpClient(url, verify, timeout, source)
    return clients[key]


async def list_tools(url: str, verify: ssl.SSLContext | bool = True, timeout: float = 20.0,
                     source: str | None = None) -> dict[str, dict]:
    """The tools a server offers, over MCP: name -> {description, input_schema} (JSON Schema)."""
    return await mcp_client(url, verify, timeout, source).list_tools()


async def call_tool(
    url: str, tool: str, arguments: dict[str, Any], verify: ssl.SSLContext | bool = True, timeout: float = 20.0,
    source: str | None = None,
) -> Any:
    """Call one tool over MCP (streamable HTTP) at `url`, carrying the request's trace and identity;
    `verify` is the caller's mesh TLS context, `source` its source address (`meshclient.mesh_transport`). The
    session and its connection are reused across calls."""
    return await mcp_client(url, verify, timeout, source).call_tool(tool, arguments)


def _tool_result(result: CallToolResult) -> Any:
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
