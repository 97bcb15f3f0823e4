"""Scoring the parser on an evaluation set (benchmarks/assistant_eval/*.yaml): one row per prompt, each
right or wrong on agent, action and arguments. Used by benchmarks/bench_assistant.py and the tests."""

from dataclasses import dataclass
from pathlib import Path

import yaml

from finopti.services.orchestrator.inventory import Inventory
from finopti.services.orchestrator.parser import Understanding, understand

EVAL_DIR = Path(__file__).resolve().parents[4] / "benchmarks" / "assistant_eval"
PARTS = ("tune", "held_out")


@dataclass(frozen=True)
class Verdict:
    prompt: str
    expected: dict
    got: Understanding
    agent: bool
    action: bool
    arguments: bool


def load(part: str, directory: Path = EVAL_DIR) -> list[dict]:
    rows = yaml.safe_load((directory / f"{part}.yaml").read_text()) or []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "prompt" not in row:
            raise ValueError(f"{part}.yaml row {i}: expected a mapping with a prompt")
    return rows


def _clarify_right(expected: dict, got: Understanding) -> bool:
    if got.kind != "clarify":
        return False
    offered_actions = {o.intent.action for o in got.options} | ({got.about} if got.about else set())
    if "action" in expected and got.about != expected["action"]:
        return False
    if not set(expected.get("actions", [])) <= offered_actions:
        return False
    if "missing" in expected and got.missing != expected["missing"]:
        return False
    offered_values = {str(v) for o in got.options for v in o.intent.arguments.values()}
    return set(map(str, expected.get("candidates", []))) <= offered_values


def judge(row: dict, got: Understanding) -> Verdict:
    prompt = row["prompt"]
    if row.get("out_of_scope"):
        right = got.kind == "unknown"
        return Verdict(prompt, row, got, right, right, right)
    if "clarify" in row:
        right = _clarify_right(row["clarify"], got)
        return Verdict(prompt, row, got, right, right, right)
    intent = got.intent
    agent = intent is not None and intent.agent == row["agent"]
    act = agent and intent.action == row["action"]
    args = act and intent.arguments == (row.get("arguments") or {})
    return Verdict(prompt, row, got, agent, act, args)


def evaluate(rows: list[dict], inventory: Inventory) -> list[Verdict]:
    return [judge(row, understand(row["prompt"], inventory)) for row in rows]


def accuracy(verdicts: list[Verdict]) -> dict[str, float]:
    n = len(verdicts) or 1
    return {
        "prompts": len(verdicts),
        "agent": sum(v.agent for v in verdicts) / n,
        "action": sum(v.action for v in verdicts) / n,
        "arguments": sum(v.arguments for v in verdicts) / n,
    }


def sandbox_inventory(directory: Path) -> Inventory:
    """The inventory a fresh sandbox gives, with the platform's services from the repository's mesh.yaml."""
    from finopti.cloud import SandboxCloud
    from finopti.services.orchestrator.inventory import platform_services

    cloud = SandboxCloud(directory / "sandbox.db")
    return Inventory.from_tool(cloud.inventory(), platform_services(EVAL_DIR.parents[1] / "mesh.yaml"))
