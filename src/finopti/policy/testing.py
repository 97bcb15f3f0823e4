"""`finopti policy test`: run the Rego unit tests (``test_*`` rules of ``*_test.rego`` files).

regorus has no test runner, so this is a small one with `opa test`'s rules: every rule whose name
starts with ``test_`` is evaluated on its own; it passes only when its value is ``true``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import regorus

from finopti.policy.engine import PolicyError, error_text, is_test_file, load_data, load_policies


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest class

    name: str  # e.g. "finopti.authz_test.test_admin_may_stop_instance", or a file that failed to load
    passed: bool
    error: str | None = None
    duration_ms: float = 0.0


def _ref_text(ref: dict) -> str | None:
    """``finopti.authz_test`` from regorus' AST of a package ref (Var / RefDot chain)."""
    if "Var" in ref:
        return ref["Var"]["value"]
    if "RefDot" in ref:
        parent = _ref_text(ref["RefDot"]["refr"])
        return parent and f"{parent}.{ref['RefDot']['field'][-1]}"
    return None


def _test_rules(module: dict) -> tuple[str | None, list[str]]:
    """Package and ``test_*`` rule names (first-definition order) of one module's AST."""
    package = _ref_text(module["package"]["refr"])
    names: list[str] = []
    for rule in module.get("rules", []):
        head = rule.get("Spec", {}).get("head", {})
        if "Func" in head:  # a function is a helper, never a test
            continue
        for kind in head.values():
            name = _ref_text(kind.get("refr", {})) if isinstance(kind, dict) else None
            if name and name.startswith("test_") and "." not in name and name not in names:
                names.append(name)
    return package, names


def run_policy_tests(policy_dir: Path) -> list[TestResult]:
    """One result per test rule, plus a failed result for each file that does not load."""
    policy_dir = Path(policy_dir)
    results: list[TestResult] = []
    engine = regorus.Engine()
    try:
        engine.add_data(load_data(policy_dir))
    except PolicyError as exc:
        results.append(TestResult("data", False, str(exc)))
    test_files: list[str] = []
    for path, text in load_policies(policy_dir, tests=True):
        try:
            engine.add_policy(path, text)
        except Exception as exc:
            results.append(TestResult(Path(path).name, False, error_text(exc)))
            continue
        if is_test_file(Path(path)):
            test_files.append(path)

    for module in json.loads(engine.get_ast_as_json()):
        path = module["source"]["file"]
        if path not in test_files:
            continue
        package, names = _test_rules(module["ast"])
        if not names:
            results.append(TestResult(Path(path).name, False, "no test_ rules found"))
        for name in names:
            results.append(_run_one(engine, f"{package}.{name}"))
    return results


def _run_one(engine: regorus.Engine, name: str) -> TestResult:
    started = time.perf_counter()
    try:
        value = engine.clone().eval_rule(f"data.{name}")
    except Exception as exc:
        error = error_text(exc)
    else:
        error = None if value is True else ("undefined" if value is None else f"returned {value!r}")
    return TestResult(name, error is None, error, round((time.perf_counter() - started) * 1000, 2))


def main(argv: list[str] | None = None) -> int:
    """``python -m finopti.policy [policy_dir]``: one line per test, then the totals."""
    args = sys.argv[1:] if argv is None else argv
    results = run_policy_tests(Path(args[0] if args else "policies"))
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'} {r.name}" + (f": {r.error}" if r.error else ""))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0
