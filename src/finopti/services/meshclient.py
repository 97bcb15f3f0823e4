"""The only way a service calls another: through the gateway's mesh listener, carrying the request's
trace context, request id and the end user's token. No retries or breakers here: the gateway owns them."""

import ssl

import httpx

from finopti.telemetry import outgoing_headers


async def _add_context(request: httpx.Request) -> None:
    for name, value in outgoing_headers().items():
        request.headers.setdefault(name, value)


def mesh_client(mesh_url: str, verify: ssl.SSLContext | bool = True, timeout: float = 30.0) -> httpx.AsyncClient:
    """`verify` is the service's mesh TLS context (its certificate plus the mesh CA)."""
    return httpx.AsyncClient(
        base_url=mesh_url, verify=verify, timeout=timeout, event_hooks={"request": [_add_context]}
    )
