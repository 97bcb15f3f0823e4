"""The optional LLM planner: any OpenAI-compatible chat-completions API with tool calling (Gemini's
OpenAI-compatible endpoint, Ollama, vLLM, OpenAI), through the official `openai` client.

Its calls leave through the gateway: the base URL is the mesh listener's `/llm/` route, which mesh.yaml
declares towards the external `llm` service with a timeout, retries, a circuit breaker and a rate limit; the
client retries nothing itself. The request carries the trace context and the API key, never the user's token.

The tools are the catalogue's actions, their parameters the JSON Schemas the agents report from their MCP
tool servers (`describe_actions`). One tool call is an intent (its arguments checked against that schema);
text instead of a tool call is the model's question back; anything else — an error, a timeout, the gateway's
429 or open circuit, a tool that does not exist, arguments that do not fit — is a `PlannerError`, and the
orchestrator falls back to the deterministic parser.

Turned on with FINOPTI_PLANNER=llm, FINOPTI_LLM_MODEL and FINOPTI_LLM_API_KEY (README)."""

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import jsonschema
from prometheus_client import Counter, Histogram

from finopti.services.meshclient import mesh_transport
from finopti.services.orchestrator.catalog import ACTIONS, SLOT_KINDS, ActionSpec
from finopti.services.orchestrator.inventory import Inventory
from finopti.services.orchestrator.parser import Intent, Option, Understanding, render_prompt
from finopti.telemetry import outgoing_headers

if TYPE_CHECKING:
    import openai

log = logging.getLogger("finopti.orchestrator.planner")

LLM_REQUESTS = Counter("finopti_llm_requests_total", "Calls to the LLM planner's API, by outcome", ["outcome"])
LLM_TOKENS = Counter("finopti_llm_tokens_total", "Tokens the LLM API reported using", ["kind"])
LLM_SECONDS = Histogram("finopti_llm_request_seconds", "Time for one call to the LLM API",
                        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30))

SYSTEM = """You plan requests for FinOptiAgents, a FinOps assistant for one Google Cloud project.
Answer with exactly one tool call that does what the user asks, with arguments taken from the request.
Use the names below exactly as written; leave out arguments the user did not ask for.
If the request is ambiguous, needs a name you cannot find, or no tool can do it, do not call a tool:
reply with one short question instead.
Instances: {instances}
Zones: {zones}
Machine types: {machine_types}
Platform services (for questions about the platform's own logs): {services}"""


class PlannerError(Exception):
    """The LLM could not plan this prompt; `reason` is short enough to show ("timeout", "HTTP 429")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PlannerSettings:
    model: str
    api_key: str
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env=os.environ) -> "PlannerSettings | None":
        """None unless FINOPTI_PLANNER=llm (the deterministic parser is the default)."""
        if env.get("FINOPTI_PLANNER", "parser").lower() != "llm":
            return None
        model = env.get("FINOPTI_LLM_MODEL")
        if not model:
            raise ValueError("FINOPTI_PLANNER=llm needs FINOPTI_LLM_MODEL (the model's name at the API)")
        key = env.get("FINOPTI_LLM_API_KEY", "")
        if not key and env.get("FINOPTI_LLM_API_KEY_FILE"):
            with open(env["FINOPTI_LLM_API_KEY_FILE"]) as fh:
                key = fh.read().strip()
        return cls(model=model, api_key=key or "none", timeout=float(env.get("FINOPTI_LLM_TIMEOUT", "30")))


async def _trace_headers(request: httpx.Request) -> None:
    """The trace and request ids travel to the LLM call; the user's token does not (the API key does)."""
    for name, value in outgoing_headers().items():
        if name != "authorization":
            request.headers[name] = value


def _fallback_schema(spec: ActionSpec) -> dict:
    """Parameters from the catalogue's slots, for an agent whose tool schemas could not be read."""
    props = {}
    for slot in spec.slots:
        if slot.kind == "group_by":
            props["group_by"] = {"type": "string"}
            props["label_key"] = {"type": "string"}
        else:
            kind = {"percent": "number", "days": "integer", "unattached": "boolean"}.get(slot.kind, "string")
            props[slot.arg] = {"type": kind, "description": SLOT_KINDS.get(slot.kind, slot.kind)}
    required = [s.arg for s in spec.slots if s.required]
    return {"type": "object", "properties": props, **({"required": required} if required else {})}


def tool_definitions(schemas: dict[str, dict]) -> dict[str, tuple[ActionSpec, dict]]:
    """tool name -> (catalogue action, JSON Schema of its arguments)."""
    out = {}
    for spec in ACTIONS:
        reported = schemas.get(spec.agent, {}).get(spec.name)
        out[spec.name] = (spec, reported["input_schema"] if reported else _fallback_schema(spec))
    return out


class LLMPlanner:
    def __init__(self, base_url: str, settings: PlannerSettings, verify,
                 schemas: Callable[[], Awaitable[dict[str, dict]]], source: str | None = None):
        import openai  # only when the LLM planner is on: it costs the orchestrator ~0.6 s of every (re)start

        self.settings = settings
        self.schemas = schemas
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=settings.api_key, max_retries=0, timeout=settings.timeout,
            http_client=httpx.AsyncClient(verify=verify, event_hooks={"request": [_trace_headers]},
                                          transport=mesh_transport(verify, source)),
        )

    async def plan(self, prompt: str, inventory: Inventory) -> Understanding:
        tools = tool_definitions(await self.schemas())
        messages = [{"role": "system", "content": SYSTEM.format(
            instances=", ".join(i.name for i in inventory.instances) or "(unknown)",
            zones=", ".join(inventory.zones) or "(unknown)",
            machine_types=", ".join(inventory.machine_types) or "(unknown)",
            services=", ".join(inventory.services) or "(unknown)")},
                    {"role": "user", "content": prompt}]
        definitions = [{"type": "function", "function": {"name": name, "description": spec.summary,
                                                           "parameters": schema}}
                       for name, (spec, schema) in tools.items()]
        import openai

        started = time.perf_counter()
        try:
            response = await self.client.chat.completions.create(
                model=self.settings.model, messages=messages, tools=definitions, tool_choice="auto")
        except openai.APITimeoutError:
            raise self._failed("timeout", "timeout", started) from None
        except openai.APIStatusError as exc:
            raise self._failed(f"http_{exc.status_code}", f"HTTP {exc.status_code}", started,
                               _error_text(exc)) from None
        except openai.APIError as exc:
            raise self._failed("connection", type(exc).__name__, started, str(exc)) from None
        seconds = time.perf_counter() - started
        usage = response.usage
        if usage is not None:
            LLM_TOKENS.labels("prompt").inc(usage.prompt_tokens or 0)
            LLM_TOKENS.labels("completion").inc(usage.completion_tokens or 0)
        try:
            understanding = self._read(response, tools)
        except PlannerError as exc:
            raise self._failed("unusable", "unusable answer", started, exc.reason) from None
        LLM_REQUESTS.labels("planned").inc()
        LLM_SECONDS.observe(seconds)
        log.info("llm planned", extra={
            "event": "llm_call", "outcome": "planned", "model": self.settings.model,
            "duration_ms": round(seconds * 1000, 1), "kind": understanding.kind,
            "action": understanding.intent.action if understanding.intent else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None})
        return understanding

    def _failed(self, label: str, reason: str, started: float, detail: str = "") -> PlannerError:
        """Count and log a failed call (`label`: a bounded metric label), for the fallback to the parser."""
        seconds = time.perf_counter() - started
        LLM_REQUESTS.labels(label).inc()
        LLM_SECONDS.observe(seconds)
        log.warning("llm planner failed: %s%s", reason, f" ({detail})" if detail else "", extra={
            "event": "llm_call", "outcome": label, "model": self.settings.model,
            "duration_ms": round(seconds * 1000, 1)})
        return PlannerError(f"{reason}: {detail}" if detail else reason)

    def _read(self, response, tools: dict[str, tuple[ActionSpec, dict]]) -> Understanding:
        if not response.choices:
            raise PlannerError("no choices")
        message = response.choices[0].message
        calls = [c for c in (message.tool_calls or []) if getattr(c, "type", "function") == "function"]
        if not calls:
            text = (message.content or "").strip()
            if not text:
                raise PlannerError("neither a tool call nor text")
            return Understanding(question=text)
        intents = [self._intent(call, tools) for call in calls]
        if len(intents) == 1:
            return Understanding(intent=intents[0])
        options = tuple(Option(i.action, i, render_prompt(i)) for i in intents)
        return Understanding(question="I can do one thing at a time; which one?", options=options)

    @staticmethod
    def _intent(call, tools: dict[str, tuple[ActionSpec, dict]]) -> Intent:
        name = call.function.name
        if name not in tools:
            raise PlannerError(f"unknown tool {name!r}")
        spec, schema = tools[name]
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            raise PlannerError(f"arguments of {name} are not JSON") from None
        if not isinstance(arguments, dict):
            raise PlannerError(f"arguments of {name} are not an object")
        arguments = {k: v for k, v in arguments.items() if v is not None}
        unknown = set(arguments) - set(schema.get("properties", {}))
        if unknown:
            raise PlannerError(f"{name} has no argument {', '.join(sorted(unknown))}")
        try:
            jsonschema.validate(arguments, schema)
        except jsonschema.ValidationError as exc:
            raise PlannerError(f"arguments of {name}: {exc.message}") from None
        return Intent(spec.agent, spec.name, arguments)


def _error_text(exc: "openai.APIStatusError") -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or body.get("error") or exc.message)[:200]
