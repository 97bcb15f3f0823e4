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
UNAUTHORIZED = Reply(401, "unauthorized", "a valid bearer token is required", fixed=False)
FORBIDDEN = Reply(403, "forbidden", "the request is not allowed", fixed=False)
NOT_FOUND = Reply(404, "not_found", "no route matches this path")
PAYLOAD_TOO_LARGE = Reply(413, "payload_too_large", "request body is larger than the gateway accepts")
UPGRADE_REQUIRED = Reply(426, "upgrade_required", "HTTP/1.0 is not served: use HTTP/1.1 or later")
RATE_LIMITED = Reply(429, "rate_limited", "too many requests; retry after the time in Retry-After")
BAD_GATEWAY = Reply(502, "bad_gateway", "the backend could not be reached", fixed=False)
CIRCUIT_OPEN = Reply(503, "circuit_open", "circuit open: the backend is taken out after consecutive failures; "
                     "retry later")
OVERLOADED = Reply(503, "overloaded", "too many requests in flight to the backend; retry after the time in "
                   "Retry-After", retry_after=1)
FAULT_INJECTED = Reply(503, "fault_injected", "fault injected by the gateway")
POLICY_UNAVAILABLE = Reply(503, "policy_unavailable", "the authorization policy could not be asked; the request "
                           "is refused (fail closed)")
UNAVAILABLE = Reply(503, "unavailable", "the backend is unavailable", fixed=False)
TIMEOUT = Reply(504, "timeout", "the backend did not answer in time")

# The reply for a status when nothing more specific is known.
BY_STATUS = {r.status: r for r in (BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, PAYLOAD_TOO_LARGE,
                                   UPGRADE_REQUIRED, RATE_LIMITED, BAD_GATEWAY, UNAVAILABLE, TIMEOUT)}
