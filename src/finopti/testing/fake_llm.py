"""A local server that speaks OpenAI's chat-completions API faithfully, for the LLM planner's tests: the same
request and response shapes (tool definitions in, `tool_calls` out, `usage`), the same error bodies
(`{"error": {"message", "type", "param", "code"}}`) and status codes, an API key it checks.

What it answers is scripted by the test through `/control` (never reachable through the gateway's `/llm/`
route, which only maps onto `/v1/`): rules matched on the user's message, each a tool call or a text reply,
or a failure mode (an error status, a delay longer than the caller waits). Every request it receives is kept,
with its headers, for the test to inspect (`/requests`)."""

import asyncio
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


class Call(BaseModel):
    tool: str
    arguments: dict = Field(default_factory=dict)


class Rule(BaseModel):
    when: str = Field(description="a substring of the last user message (lower case)")
    tool: str | None = None
    arguments: dict = Field(default_factory=dict)
    text: str | None = None
    raw_arguments: str | None = Field(default=None, description="sent as the arguments string, unparsed")
    more_calls: list[Call] = Field(default_factory=list, description="further tool calls in the same message")


class Control(BaseModel):
    rules: list[Rule] = Field(default_factory=list)
    fail_status: int | None = Field(default=None, ge=400, le=599)
    delay_s: float = Field(default=0.0, ge=0)


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def create_app(api_key: str = "test-key") -> FastAPI:
    app = FastAPI(title="fake OpenAI-compatible API")
    state: dict = {"control": Control(), "requests": []}

    @app.post("/control")
    async def control(new: Control) -> dict:
        state["control"] = new
        return new.model_dump()

    @app.get("/requests")
    async def requests() -> list[dict]:
        return state["requests"]

    @app.post("/reset")
    async def reset() -> dict:
        state.update(control=Control(), requests=[])
        return {"reset": True}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        raw = await request.body()
        state["requests"].append({"headers": dict(request.headers), "body": json.loads(raw or b"{}"),
                                  "path": request.url.path})
        if request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        model, messages, tools = body.get("model"), body.get("messages"), body.get("tools") or []
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter", "invalid_request_error")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant", "tool") for m in messages):
            return _error(400, "'messages' must be a non-empty array of messages", "invalid_request_error",
                          "invalid_value")
        for tool in tools:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name") or \
                    not isinstance(fn.get("parameters", {}), dict):
                return _error(400, "Invalid 'tools': each must be {type: function, function: {name, parameters}}",
                              "invalid_request_error", "invalid_value")
        control: Control = state["control"]
        if control.delay_s:
            await asyncio.sleep(control.delay_s)
        if control.fail_status is not None:
            kinds = {429: ("Rate limit reached for requests", "requests", "rate_limit_exceeded")}
            message, kind, code = kinds.get(control.fail_status, ("The server had an error while processing your "
                                                                 "request.", "server_error", None))
            return _error(control.fail_status, message, kind, code)
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        rule = next((r for r in control.rules if r.when in str(user).lower()), None)
        names = {t["function"]["name"] for t in tools}
        message: dict = {"role": "assistant", "content": None}
        finish = "stop"
        if rule is not None and rule.tool is not None:
            if rule.tool not in names and rule.raw_arguments is None and rule.tool != "no_such_tool":
                return _error(400, f"tool {rule.tool!r} was not offered", "invalid_request_error")
            arguments = rule.raw_arguments if rule.raw_arguments is not None else json.dumps(rule.arguments)
            calls = [(rule.tool, arguments), *((c.tool, json.dumps(c.arguments)) for c in rule.more_calls)]
            message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                      "function": {"name": name, "arguments": args}} for name, args in calls]
            finish = "tool_calls"
        else:
            message["content"] = rule.text if rule is not None and rule.text else "Which instance do you mean?"
        prompt_tokens = _tokens(json.dumps(messages)) + _tokens(json.dumps(tools))
        completion_tokens = _tokens(json.dumps(message))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": "fp_finopti_fake",
        }

    return app
