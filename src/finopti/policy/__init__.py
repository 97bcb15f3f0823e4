"""Gateway authorization: Rego policies (policies/*.rego) evaluated in-process with regorus.

The same .rego files run unchanged on OPA behind Apache APISIX's `opa` plugin.
"""

from finopti.policy.engine import DECISION_RULE, UNDEFINED, Decision, PolicyEngine, PolicyError
from finopti.policy.envoy import (
    Route,
    RouteIndex,
    as_route,
    build_input_from_envoy,
    load_route_table,
    match_route,
    source_from_xfcc,
)
from finopti.policy.testing import TestResult, run_policy_tests

__all__ = [
    "DECISION_RULE",
    "UNDEFINED",
    "Decision",
    "PolicyEngine",
    "PolicyError",
    "Route",
    "RouteIndex",
    "TestResult",
    "as_route",
    "build_input_from_envoy",
    "load_route_table",
    "match_route",
    "run_policy_tests",
    "source_from_xfcc",
]
