"""A deterministic intent parser: a prompt in plain English -> (agent, action, arguments).

Rules are tried in order; the first whose pattern matches wins. An LLM planner may replace this later
behind the same `parse_intent` signature.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

ZONE = r"(?P<zone>[a-z]+-[a-z]+\d+-[a-z])"
NAME = r"(?P<name>[a-z][a-z0-9-]*[a-z0-9])"
MACHINE_TYPE = r"(?P<machine_type>[a-z]\d?[a-z]?-[a-z]+-?\d*)"


@dataclass(frozen=True)
class Intent:
    agent: str
    action: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern
    agent: str
    action: str
    example: str
    arguments: Callable[[re.Match, str], dict] = lambda m, p: {}


def _number(pattern: str, prompt: str, cast=float):
    match = re.search(pattern, prompt)
    return cast(match.group(1)) if match else None


def _days(prompt: str) -> int | None:
    if re.search(r"\b(last|past) (week|7 days)\b", prompt):
        return 7
    return _number(r"(\d+)\s*days?\b", prompt, int)


def _list_instance_args(match: re.Match, prompt: str) -> dict:
    args: dict = {}
    zone = re.search(ZONE, prompt)
    if zone:
        args["zone"] = zone.group("zone")
    if re.search(r"\b(stopped|terminated)\b", prompt):
        args["state"] = "TERMINATED"
    elif re.search(r"\brunning\b", prompt):
        args["state"] = "RUNNING"
    label = re.search(r"\b(?:label|labelled|labeled|with)\s+([a-z_]+)\s*[=:]\s*([a-z0-9_-]+)", prompt)
    if label:
        args["label"] = f"{label.group(1)}={label.group(2)}"
    return args


def _idle_args(_: re.Match, prompt: str) -> dict:
    args: dict = {}
    threshold = _number(r"(\d+(?:\.\d+)?)\s*%", prompt)
    if threshold is not None:
        args["cpu_threshold"] = threshold
    days = _days(prompt)
    if days is not None:
        args["days"] = days
    return args


def _cost_args(_: re.Match, prompt: str) -> dict:
    label = re.search(r"\bby (team|env|app|label (\w+))\b", prompt)
    if re.search(r"\b(per|by) instance\b", prompt):
        return {"group_by": "instance"}
    if label:
        return {"group_by": "label", "label_key": label.group(2) or label.group(1)}
    return {"group_by": "total"}


def _series_args(match: re.Match, prompt: str) -> dict:
    args = {"instance": match.group("name"), "metric": "memory" if "memory" in prompt else "cpu"}
    days = _days(prompt)
    if days is not None:
        args["days"] = days
    return args


def _name(match: re.Match, _: str) -> dict:
    return {"name": match.group("name")}


RULES = [
    Rule(re.compile(rf"\b(?:resize|change)\s+(?:instance\s+)?{NAME}\s+to\s+{MACHINE_TYPE}"),
         "gcloud-agent", "resize_instance", "resize web-dev-01 to e2-small",
         lambda m, p: {"name": m.group("name"), "machine_type": m.group("machine_type")}),
    *[
        Rule(re.compile(rf"\b{verb}\s+(?:the\s+)?(?:instance|vm|server)?\s*{NAME}\s*$"),
             "gcloud-agent", f"{verb}_instance", f"{verb} instance web-dev-01", _name)
        for verb in ("start", "stop", "delete")
    ],
    Rule(re.compile(rf"\b(?:describe|show|details of)\s+(?:the\s+)?instance\s+{NAME}"),
         "gcloud-agent", "describe_instance", "describe instance web-dev-01", _name),
    Rule(re.compile(r"\b(idle|unused|underused|underutili[sz]ed)\b.*\b(instances?|vms?|servers?)\b"
                    r"|\b(instances?|vms?)\b.*\bidle\b"),
         "gcloud-agent", "find_idle_instances", "find idle instances below 5% cpu over 7 days", _idle_args),
    Rule(re.compile(r"\b(rightsiz\w*|right-siz\w*|downsiz\w*|oversized|over-provisioned)\b"),
         "gcloud-agent", "rightsizing_recommendations", "rightsizing recommendations",
         lambda m, p: {"days": d} if (d := _days(p)) else {}),
    Rule(re.compile(r"\b(cost|costs|spend|spending|bill)\b"),
         "gcloud-agent", "estimate_monthly_cost", "monthly cost by team", _cost_args),
    Rule(re.compile(rf"\b(cpu|memory)\b.*\b(?:of|for|on)\s+(?:instance\s+)?{NAME}"),
         "monitoring-agent", "query_time_series", "cpu utilization of web-prod-01 over 3 days", _series_args),
    Rule(re.compile(r"\b(which|list|what)\b.*\bmetrics\b"),
         "monitoring-agent", "list_metrics", "list metrics"),
    Rule(re.compile(r"\b(unattached|orphan\w*|detached)\b.*\bdisks?\b"),
         "gcloud-agent", "list_disks", "list unattached disks", lambda m, p: {"unattached_only": True}),
    Rule(re.compile(r"\bdisks?\b"), "gcloud-agent", "list_disks", "list disks"),
    Rule(re.compile(r"\bbuckets?\b"), "gcloud-agent", "list_buckets", "list buckets"),
    Rule(re.compile(r"\b(instances?|vms?|servers?)\b"),
         "gcloud-agent", "list_instances", "list instances in us-central1-a", _list_instance_args),
]


def capabilities() -> list[str]:
    """What the orchestrator understands, as example prompts."""
    return [rule.example for rule in RULES]


def parse_intent(prompt: str) -> Intent | None:
    text = " ".join(prompt.lower().split())
    for rule in RULES:
        match = rule.pattern.search(text)
        if match:
            return Intent(rule.agent, rule.action, rule.arguments(match, text))
    return None
