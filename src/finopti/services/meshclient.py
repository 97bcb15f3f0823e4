"""The only way a service calls another: through the gateway's mesh listener, carrying the request's
trace context, request id and the end user's token. No retries or breakers here: the gateway owns them."""

import ssl

import httpx

from finopti.telemetry import outgoing_headers


async def _add_context(request: httpx.Request) -> None:
    for name, value in outgoing_headers().items():
        request.headers.setdefault(name, value)


def describe(exc: BaseException) -> str:
    """An exception as a message that is never empty (httpx's timeouts and anyio's closed streams say nothing)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unanswered(target: str, exc: BaseException) -> tuple[int, str, str]:
    """(status, error, message) for a call through the mesh that got no answer at all, naming what failed."""
    if isinstance(exc, httpx.TimeoutException):
        return 504, "timeout", f"{target} did not answer in time ({describe(exc)})"
    if isinstance(exc, httpx.ConnectError):
        return 502, "mesh_unreachable", f"the gateway's mesh listener could not be reached to call {target} " \
                                        f"({describe(exc)})"
    return 502, "bad_gateway", f"the call to {target} failed before an answer came ({describe(exc)})"


def mesh_transport(verify: ssl.SSLContext | bool, source: str | None) -> httpx.AsyncHTTPTransport | None:
    """A transport whose connections leave from `source`, when set: a gateway that knows its callers by address
    (compose's one network per service; loopback stand-ins when the bundle runs on one machine) sees ours."""
    return httpx.AsyncHTTPTransport(verify=verify, local_address=source) if source else None


def mesh_client(mesh_url: str, verify: ssl.SSLContext | bool = True, timeout: float = 30.0,
                source: str | None = None) -> httpx.AsyncClient:
    """`verify` is the service's mesh TLS context (its certificate plus the mesh CA); `source` its source address."""
    return httpx.AsyncClient(
        base_url=mesh_url, verify=verify, timeout=timeout, event_hooks={"request": [_add_context]},
        transport=mesh_transport(verify, source),
    )
