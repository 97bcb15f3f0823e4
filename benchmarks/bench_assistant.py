"""The assistant's parser on its evaluation set: accuracy (agent, action, arguments) per part, and its speed.

    .venv/bin/python -m benchmarks.bench_assistant [--failures]

The held-out part is only ever scored: its failures are not printed (tune on the tune part, `--failures`)."""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from finopti.services.orchestrator.evaluation import PARTS, accuracy, evaluate, load, sandbox_inventory
from finopti.services.orchestrator.parser import understand


def describe(verdict) -> str:
    got = verdict.got
    if got.intent:
        said = f"{got.intent.action} {got.intent.arguments}"
    elif got.question:
        said = f"asks {got.question!r} about {got.about} missing={got.missing} options=" + \
            str([o.intent.arguments for o in got.options])
    else:
        said = "422"
    expected = {k: v for k, v in verdict.expected.items() if k != "prompt"}
    return f"  {verdict.prompt!r}\n    expected {expected}\n    got      {said}  ranking={got.ranking[:3]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", action="store_true", help="list the tune part's failures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inventory = sandbox_inventory(Path(tmp))
        print(f"inventory: {len(inventory.instances)} instances, {len(inventory.disks)} disks, "
              f"{len(inventory.buckets)} buckets, {len(inventory.zones)} zones, "
              f"{len(inventory.machine_types)} machine types, {len(inventory.services)} platform services")
        print(f"{'part':<10} {'prompts':>7} {'agent':>8} {'action':>8} {'arguments':>10}")
        for part in PARTS:
            verdicts = evaluate(load(part), inventory)
            acc = accuracy(verdicts)
            print(f"{part:<10} {acc['prompts']:>7} {acc['agent']:>8.1%} {acc['action']:>8.1%} "
                  f"{acc['arguments']:>10.1%}")
            if part == "tune" and args.failures:
                for verdict in verdicts:
                    if not verdict.arguments:
                        print(describe(verdict))
        rows = load("tune") + load("held_out")
        timings = []
        for row in rows:
            started = time.perf_counter()
            understand(row["prompt"], inventory)
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        print(f"parse time per prompt over {len(rows)} prompts: median {statistics.median(timings):.2f} ms, "
              f"p95 {timings[int(0.95 * len(timings)) - 1]:.2f} ms, max {timings[-1]:.2f} ms")


if __name__ == "__main__":
    main()
