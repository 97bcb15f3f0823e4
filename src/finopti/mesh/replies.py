"""The answers a gateway gives itself (no route, no token, body too large, circuit open...), the same for every
data plane: Envoy's local replies (`finopti.mesh.envoy`) and APISIX's own answers (`finopti.deploy.apisix`)
carry the project's error body `{"error", "message", "status", "trace_id", "request_id"}` with these codes."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    error: str
    message: str
    fixed: bool = True  # False: the cause's own message wins when there is one (a token's, a policy's reason)
    retry_after: int | None = None  # seconds, sent as Retry-After: the request was shed, not refused


BAD_REQUEST = Reply(400, "bad_request", "the request is malformed", fixed=False)
# Refused while the request is read, before it has a route (HTTP parsing, limits on headers, slow clients).
MALFORMED = Reply(400, "malformed_request", "the request is not valid HTTP/1.1 and was not read; `reason` names "
                  "what the gateway could not parse")
HEADER_WITH_UNDERSCORE = Reply(400, "header_with_underscore", "header names with an underscore are refused: some "
                               "servers read `x_user_email` as `x-user-email`, so it could pass for a header the "
                               "gateway strips; use '-' in header names")
UNSUPPORTED_TRANSFER_ENCODING = Reply(501, "unsupported_transfer_encoding", "the request's Transfer-Encoding is "
                                      "not one the gateway reads: send the body with Content-Length or "
                                      "Transfer-Encoding: chunked")
REQUEST_TIMEOUT = Reply(408, "request_timeout", "the request did not arrive in time: its headers or its body "
                        "came too slowly, and the gateway closed the connection")
# What the edge accepts of a request's headers (Envoy's defaults, stated).
MAX_HEADERS = 100
MAX_HEADERS_KB = 60
HEADERS_TOO_LARGE = Reply(431, "headers_too_large", "the request's headers are too many or too large for the "
                          f"gateway (at most {MAX_HEADERS} headers, {MAX_HEADERS_KB} KiB in all)")
UNAUTHORIZED = Reply(401, "unauthorized", "a valid bearer token is required", fixed=False)
FORBIDDEN = Reply(403, "forbidden", "the request is not allowed", fixed=False)
NOT_FOUND = Reply(404, "not_found", "no route matches this path")
PAYLOAD_TOO_LARGE = Reply(413, "payload_too_large", "request body is larger than the gateway accepts")
UPGRADE_REQUIRED = Reply(426, "upgrade_required", "this HTTP version is not served (HTTP/1.0 and 0.9 are not): "
                         "use HTTP/1.1")
# A protocol upgrade or a tunnel on a route that does not take one (WebSocket, CONNECT).
UPGRADE_REFUSED = Reply(403, "upgrade_refused", "protocol upgrades and tunnels (WebSocket, CONNECT) are not served "
                        "here: send plain HTTP/1.1 requests")
RATE_LIMITED = Reply(429, "rate_limited", "too many requests; retry after the time in Retry-After")
BAD_GATEWAY = Reply(502, "bad_gateway", "the backend could not be reached", fixed=False)
# Envoy also answers this when its active health check has taken the backend out (no healthy host).
CIRCUIT_OPEN = Reply(503, "circuit_open", "circuit open: the backend is taken out of service after consecutive "
                     "failures or failed health checks; retry later")
OVERLOADED = Reply(503, "overloaded", "too many requests in flight to the backend; retry after the time in "
                   "Retry-After", retry_after=1)
FAULT_INJECTED = Reply(503, "fault_injected", "fault injected by the gateway")
POLICY_UNAVAILABLE = Reply(503, "policy_unavailable", "authorization service unavailable: the policy service did "
                           "not answer in time, so the request is refused (fail closed)")
UNAVAILABLE = Reply(503, "unavailable", "the backend is unavailable", fixed=False)
TIMEOUT = Reply(504, "timeout", "the backend did not answer in time")

# The reply for a status when nothing more specific is known.
BY_STATUS = {r.status: r for r in (BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, PAYLOAD_TOO_LARGE,
                                   UPGRADE_REQUIRED, RATE_LIMITED, UNSUPPORTED_TRANSFER_ENCODING, BAD_GATEWAY,
                                   UNAVAILABLE, TIMEOUT)}
