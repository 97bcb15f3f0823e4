"""What the CLI prints for log lines and traces (the lead wires these into `finopti logs` / `finopti trace`)."""

import pytest
from rich.console import Console
from test_logs_store import MS, T0, completed, entry, gateway

from finopti.logs.cli_support import format_line, parse_since, render_trace
from finopti.logs.store import LogStore


def query_line(**fields) -> dict:
    return {"ts": "2026-11-26T12:07:55.548000Z", "service": "gcloud-tools", "level": "error", "metadata": {},
            "line": {"message": "request completed", "trace_id": "7b9d9a84ac17954beab8a847935d44dc",
                     "route": "/mcp", "status": 500, "duration_ms": 2.6, "span_id": "x", "version": "v1", **fields}}


def test_format_line_plain_and_colored():
    plain = format_line(query_line(), color=False)
    assert plain.startswith("12:07:55.548 gcloud-tools")
    assert "ERROR" in plain and "request completed" in plain
    assert "route=/mcp status=500 duration_ms=2.6ms" in plain
    assert plain.endswith("trace=7b9d9a84ac17954beab8a847935d44dc")  # whole: `finopti trace` takes it as printed
    assert "span_id" not in plain and "version" not in plain and "\x1b[" not in plain
    colored = format_line(query_line(), color=True)
    assert "\x1b[31m" in colored  # the level in red
    text = format_line({"ts": "2026-11-26T12:07:55.548000Z", "service": "supervisord", "level": "info",
                        "line": "spawned: 'ui'", "metadata": {}}, color=False)
    assert text.endswith("INFO     spawned: 'ui'")
    skewed = format_line({**query_line(), "metadata": {"original_ts": "2099-01-01T00:00:00.000000Z"}}, color=False)
    assert skewed.startswith("12:07:55.548 [dated 2099-01-01T00:00:00.000000Z] gcloud-tools")
    long = format_line(query_line(error="x" * 500), color=False)
    assert "error=" + "x" * 79 + "…" in long


@pytest.mark.parametrize(("text", "seconds"), [
    ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("90s", 90), ("500ms", 0.5), ("45", 45), ("1w", 604800),
])
def test_parse_since(text, seconds):
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "m15", "15 minutes", "1h 30m", "abc", "nan", "inf", "-5", "9" * 400 + "s"])
def test_parse_since_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_since(text)


def test_render_trace(tmp_path):
    store = LogStore(tmp_path / "t.db", clock=lambda: T0 + 10**9)
    t = "ab" * 16
    lines = [
        gateway(5, "mesh", "/gcloud-tools/mcp", "gcloud-tools", "gcloud-tools.v1", 6, 500, t),
        gateway(0, "edge", "/api/ask", "ask", "orchestrator.v1", 20, 502, t),
        entry(T0 + 7 * MS, "gcloud-tools", "sandbox exploded", level="error", trace_id=t, request_id="req-1"),
        completed(10.5, "gcloud-tools", "/mcp", "/mcp", 500, 4.9, t),
        completed(19.5, "orchestrator", "/ask", "/ask", 502, 19.0, t),
    ]
    store.push([(labels, [value]) for labels, value in lines])
    console = Console(width=200, record=True, color_system=None)
    console.print(render_trace(store.trace(t)))
    out = console.export_text().splitlines()
    assert out[0] == f"trace {t}  20 ms · 2 hops · 3 errors"
    edge = next(i for i, line in enumerate(out) if "edge POST /api/ask → orchestrator /ask  502  20 ms" in line)
    tool = next(i for i, line in enumerate(out) if "mesh POST /gcloud-tools/mcp → gcloud-tools /mcp  500  6 ms" in line)
    boom = next(i for i, line in enumerate(out) if "sandbox exploded" in line)
    assert edge < tool < boom  # in order, the error under its hop
    assert out[tool].index("mesh") > out[edge].index("edge")  # nested deeper
    store.close()
