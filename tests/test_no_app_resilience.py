"""Retries, breakers and rate limits belong to the gateway: application code must not grow its own."""

import io
import re
import tokenize
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "src" / "finopti" / "services"
FORBIDDEN_IMPORTS = re.compile(r"^\s*(from|import)\s+(tenacity|backoff|stamina|retrying|pybreaker|circuitbreaker|"
                               r"aiobreaker|limits|slowapi|ratelimit|aiolimiter)\b", re.M)
FORBIDDEN_NAMES = re.compile(r"retr(y|ies|ying)|backoff|breaker|rate_?limit|throttl", re.I)


def _code_names(source: str) -> list[str]:
    """Identifiers in the code, leaving out comments and strings (where the words may explain why not)."""
    return [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.NAME]


def test_services_have_no_retry_breaker_or_rate_limit_code():
    offenders = []
    for path in sorted(SERVICES.rglob("*.py")):
        source = path.read_text()
        if FORBIDDEN_IMPORTS.search(source):
            offenders.append(f"{path.name}: imports a retry/breaker/rate-limit library")
        names = {n for n in _code_names(source) if FORBIDDEN_NAMES.search(n)}
        # A client library's own retries may only be turned off (the LLM planner's openai client).
        if "max_retries" in names and re.findall(r"max_retries\s*=\s*(\w+)", source) == ["0"] * source.count(
                "max_retries"):
            names.discard("max_retries")
        if names:
            offenders.append(f"{path.name}: {sorted(names)}")
    assert not offenders, "resilience logic belongs in mesh.yaml, not in services:\n" + "\n".join(offenders)


def test_the_check_catches_a_retry_loop(tmp_path):
    sample = "async def call(client):\n    for retry_attempt in range(3):\n        await client.get('/x')\n"
    assert {n for n in _code_names(sample) if FORBIDDEN_NAMES.search(n)} == {"retry_attempt"}
    assert FORBIDDEN_IMPORTS.search("import tenacity\n")
    client = "openai.AsyncOpenAI(max_retries=3)"
    assert re.findall(r"max_retries\s*=\s*(\w+)", client) != ["0"]
