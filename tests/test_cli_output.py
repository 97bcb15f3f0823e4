"""What the CLI prints, as a person or a pipe gets it: never cut when piped, whole trace ids that `trace` takes
back (prefixes too), an explicit empty result, `status` when the platform is down, an answer's rows."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import FINOPTI, REPO


def piped(platform, *args: str, columns: str = "80") -> subprocess.CompletedProcess:
    """As `finopti ... | cat` in an 80-column terminal: stdout is a pipe, COLUMNS says 80."""
    env = {**os.environ, "FINOPTI_HOME": str(platform.home), "FINOPTI_EDGE_PORT": str(platform.edge_port),
           "COLUMNS": columns}
    return subprocess.run([FINOPTI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_piped_tables_are_never_cut(platform):
    routes = json.loads(piped(platform, "mesh", "show", "--json").stdout)["routes"]
    table = piped(platform, "mesh", "show").stdout
    for row in routes:
        line = next(x for x in table.splitlines() if f" {row['route']} " in x)
        for key in row["policy"]:
            assert f"{key}=" in line, (row["route"], key, line)
    assert max(len(x) for x in table.splitlines()) > 80  # wider than the terminal it claims: not cut to it
    certificates = json.loads(piped(platform, "pki", "show", "-o", "json").stdout)
    shown = piped(platform, "pki", "show").stdout
    assert all(c["serial"] in shown and (c["spiffe_id"] or "(CA)") in shown for c in certificates)


def test_logs_print_whole_trace_ids_that_trace_takes_back_even_shortened(platform):
    trace_id = platform.ask("list buckets", "erin@finopti.dev").json()["trace_id"]
    deadline = time.monotonic() + 15
    while True:
        lines = piped(platform, "logs", "--trace", trace_id, "--since", "5m").stdout
        if f"trace={trace_id}" in lines or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert f"trace={trace_id}" in lines, lines
    whole = piped(platform, "trace", trace_id)
    assert whole.returncode == 0 and trace_id in whole.stdout
    short = piped(platform, "trace", trace_id[:12])
    assert short.returncode == 0 and f"trace {trace_id}" in short.stdout, short.stderr
    assert piped(platform, "logs", "--trace", trace_id[:12], "--since", "5m").stdout.count(trace_id) >= 3
    unknown = piped(platform, "trace", "f" * 32)
    assert unknown.returncode != 0 and "not found" in unknown.stderr
    assert "not a trace id" in piped(platform, "trace", "xyz").stderr
    listed = httpx.get(f"{platform.edge}/api/traces/", headers=platform.headers("carol@finopti.dev"), timeout=30,
                       params={"since": "1d", "traffic": "all", "limit": 200}).json()["traces"]
    first = {}
    for t in listed:
        first.setdefault(t["trace_id"][0], set()).add(t["trace_id"])
    shared = next((c for c, ids in first.items() if len(ids) > 1), None)
    if shared is not None:
        ambiguous = piped(platform, "trace", shared)
        assert ambiguous.returncode != 0 and "give more digits" in ambiguous.stderr, ambiguous.stderr


def test_logs_say_when_no_line_matched(platform):
    result = piped(platform, "logs", "--grep", "nothing logs this qqzx", "--since", "5m")
    assert result.returncode == 0 and result.stdout == ""
    assert "no lines matched (text 'nothing logs this qqzx', in the last 5m)" in result.stderr


def test_ask_prints_the_rows_with_money_and_totals(platform):
    result = piped(platform, "ask", "monthly cost by team", "--user", "bob@finopti.dev")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"Team\s+Compute\s+Disks\s+Storage\s+Total", out), out
    assert re.search(r"Total \(\d+\)\s+\$[\d,]+\.\d\d", out) and "search" in out
    assert re.search(r"request [0-9a-f-]{36} · trace [0-9a-f]{32}", out)


def test_status_lists_stopped_components_when_the_platform_is_down(tmp_path):
    env = {**os.environ, "FINOPTI_HOME": str(tmp_path)}
    result = subprocess.run([FINOPTI, "status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not running" in result.stdout, result.stdout + result.stderr
    for component in ("gateway", "orchestrator", "gcloud-agent", "gcloud-agent-v2", "policy", "collector"):
        assert re.search(rf"\b{component}\s+│\s+stopped\b", result.stdout), (component, result.stdout)
    as_json = json.loads(subprocess.run([FINOPTI, "status", "--json"], cwd=REPO, env=env, capture_output=True,
                                        text=True, timeout=60).stdout)
    assert as_json["running"] is False and {c["state"] for c in as_json["components"]} == {"stopped"}


def test_simple_commands_import_no_renderer_or_http_client(tmp_path):
    """Start-up time: `--help` and `status` of a stopped platform load neither httpx nor the Envoy renderer,
    the PKI or the identity provider (benchmarks/bench_cli.py times them)."""
    env = {**os.environ, "FINOPTI_HOME": str(tmp_path)}
    probe = ("import sys, runpy; sys.argv = ['finopti', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('finopti.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('httpx', 'finopti.mesh.envoy', 'finopti.pki', 'finopti.idp',"
             " 'grafana_foundation_sdk', 'finopti.observability') if m in sys.modules]\n"
             "print('HEAVY', heavy, file=sys.stderr)")
    for args in (["--help"], ["status"]):
        result = subprocess.run([sys.executable, "-c", probe, *args], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=60)
        assert "HEAVY []" in result.stderr, (args, result.stderr[-500:])
    assert Path(FINOPTI).exists()
