"""Traffic policies of mesh.yaml in Envoy's words: retries, circuit breaking, rate limits, faults.

Each function maps one policy to the Envoy fragment that carries it; `envoy.py` places the fragments.
Where Envoy's default would silently do nothing, the fragment says so in a comment.
"""

from finopti.mesh.model import (
    SAFE_FOR_MUTATIONS,
    CircuitBreaker,
    Fault,
    RateLimit,
    Retries,
)

RATE_LIMIT_STAT_PREFIX = "finopti_ratelimit"
FAULT_FILTER = "envoy.filters.http.fault"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# The header a rate limit is keyed on: the verified user (set by jwt_authn) or the calling service's
# certificate details (set by the mesh listener from the verified client certificate).
RATE_LIMIT_KEYS = {"user": "x-user-email", "caller": "x-forwarded-client-cert"}


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _percent(value: float) -> dict:
    # A millionth is fine-grained enough for any percentage written in mesh.yaml.
    return {"numerator": int(round(value * 10_000)), "denominator": "MILLION"}


def retry_policy(retries: Retries, per_try_timeout: float | None, mutations: bool) -> dict | None:
    """`mutations`: the policy for requests that may change state, retried only when nothing reached the
    backend. None when no condition is left."""
    conditions = [c for c in retries.conditions if not mutations or c in SAFE_FOR_MUTATIONS]
    if not conditions:
        return None
    codes = sorted(int(c) for c in conditions if c.isdigit())
    retry_on = [c for c in conditions if not c.isdigit()] + (["retriable-status-codes"] if codes else [])
    policy: dict = {
        "retry_on": ",".join(retry_on),
        "num_retries": retries.attempts,
        "retry_back_off": {"base_interval": _seconds(retries.backoff.base),
                           "max_interval": _seconds(retries.backoff.max)},
    }
    if codes:
        policy["retriable_status_codes"] = codes
    if per_try_timeout is not None:
        policy["per_try_timeout"] = _seconds(per_try_timeout)
    return policy


def outlier_detection(breaker: CircuitBreaker) -> dict:
    # `failures: unreachable`: no answer opens the circuit. The service relays its dependencies' failures (a
    # tool server's 503, a drill's injected 503), and counting them would take a healthy agent out for every
    # user because of one tool server or one drill. Like every service, it is taken out when it stops answering,
    # by the active health check.
    enforced = 100 if breaker.failures == "5xx" else 0
    return {
        "consecutive_5xx": breaker.consecutive_failures,
        "consecutive_gateway_failure": breaker.consecutive_failures,
        "enforcing_consecutive_5xx": enforced,
        "enforcing_consecutive_gateway_failure": enforced,
        "enforcing_success_rate": 0,
        # The breaker counts what the backend answers (5xx, and 502/503/504 it relays). What keeps a request
        # from reaching it (refused connection, reset, timeout: "local origin") opens no circuit: a crashed
        # or hung backend fails the gateway's active health check instead, which takes it out of the pool
        # within two checks and puts it back at the first check it passes. An ejection would outlast a
        # crash by `open_for` (a restart takes 1-3 s), and a passing health check cannot end an ejection
        # early without also ending one for bad answers.
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": breaker.consecutive_failures,
        "enforcing_consecutive_local_origin_failure": 0,
        "enforcing_local_origin_success_rate": 0,
        "interval": "1s",  # how often Envoy checks whether an open period has ended
        # The open period is base_ejection_time times the number of trips, up to max_ejection_time.
        "base_ejection_time": _seconds(breaker.open_for),
        "max_ejection_time": _seconds(breaker.max_open),
        # Envoy's default (10%) would never eject the only host of a service.
        "max_ejection_percent": 100,
        # A passing active health check must not close the circuit early: the backend may answer
        # /healthz while failing real requests.
        "successful_active_health_check_uneject_host": False,
    }


def circuit_breakers(breaker: CircuitBreaker | None, retry_budget_percent: float | None) -> dict:
    threshold: dict = {"priority": "DEFAULT"}
    if breaker is not None:
        # Services speak HTTP/1.1 to the gateway: a request in flight holds a connection. With as many connections
        # as requests, a request over max_requests waits (max_pending of them) instead of opening a connection and
        # failing when it finds no request slot; past max_pending it is shed at once (503 overloaded, flag UO).
        threshold["max_connections"] = breaker.max_requests
        threshold["max_requests"] = breaker.max_requests
        threshold["max_pending_requests"] = breaker.max_pending
    if retry_budget_percent is not None:
        # Retries in flight stay under this share of active requests, so a failing backend is not flooded.
        threshold["retry_budget"] = {"budget_percent": {"value": retry_budget_percent},
                                     "min_retry_concurrency": 3}
    return {"thresholds": [threshold]}


def fault_filter() -> dict:
    """The listener-level filter; it does nothing until a route carries a fault."""
    return {
        "name": FAULT_FILTER,
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
    }


def route_fault(fault: Fault) -> dict:
    config: dict = {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}
    if fault.delay is not None:
        config["delay"] = {"fixed_delay": _seconds(fault.delay.duration), "percentage": _percent(fault.delay.percent)}
    if fault.abort is not None:
        config["abort"] = {"http_status": fault.abort.status, "percentage": _percent(fault.abort.percent)}
    if fault.header is not None:
        regex = fault.header.member_regex()
        match = {"safe_regex": {"regex": regex}} if regex else {"exact": fault.header.value}
        config["headers"] = [{"name": fault.header.name, "string_match": match}]
    return config


def rate_limit_filter() -> dict:
    """The listener-level filter: no bucket of its own, so only routes with a rate limit are limited."""
    return {
        "name": RATE_LIMIT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": RATE_LIMIT_STAT_PREFIX,
        },
    }


def route_rate_limit(limit: RateLimit) -> dict:
    """The per-route filter config: one token bucket per user or caller."""
    bucket = {"max_tokens": limit.requests, "tokens_per_fill": limit.requests,
              "fill_interval": _seconds(limit.per)}
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": RATE_LIMIT_STAT_PREFIX,
        # Requests without the key share this bucket (in practice none: the key is a verified identity).
        "token_bucket": dict(bucket),
        # Envoy's local_ratelimit does nothing unless enabled and enforced: both at 100%.
        "filter_enabled": {**always, "runtime_key": "finopti.ratelimit.enabled"},
        "filter_enforced": {**always, "runtime_key": "finopti.ratelimit.enforced"},
        # An empty value makes the descriptor dynamic: one bucket per distinct user (or caller).
        "descriptors": [{"entries": [{"key": limit.key, "value": ""}], "token_bucket": dict(bucket)}],
        "max_dynamic_descriptors": 10000,
        # Envoy's default also drains the shared bucket above on every request, so one user would use up
        # everyone's tokens.
        "always_consume_default_token_bucket": False,
        # The descriptor's value is the key header of each request (set by the gateway, never the client).
        "rate_limits": [{"actions": [{"request_headers": {"header_name": RATE_LIMIT_KEYS[limit.key],
                                                          "descriptor_key": limit.key}}]}],
        "response_headers_to_add": [{
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            "header": {"key": "retry-after", "value": str(max(1, round(limit.per)))},
        }],
    }
    return config
