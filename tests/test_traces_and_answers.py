"""The trace list (finopti.logs.trace_search), hop matching by span id whatever the clocks say, and an answer's
rows as the CLI prints them (finopti.presentation): pure functions over a real LogStore / real answer shapes."""

import time
import uuid

import orjson
import pytest
from test_logs_store import MS, entry, push

from finopti.logs.store import LogStore
from finopti.logs.trace_search import TraceFilter, search_traces, status_matches
from finopti.presentation import answer_stats, answer_table, answer_tables, format_value
from finopti.services.gcloud_agent import finops_views

# A minute ago: the store refuses lines older than its retention and dates lines from the future at arrival.
T0 = time.time_ns() - 60_000 * MS


def access(ts_ms: int, *, listener: str = "edge", route: str = "ask", upstream: str = "orchestrator.v1",
           status: int = 200, duration: int = 40, user: str = "erin@finopti.dev", trace_id: str | None = None,
           span_id: str = "", path: str = "/api/ask") -> tuple[dict, list]:
    trace_id = trace_id or uuid.uuid4().hex
    obj = {"ts": "", "level": "info", "service": "gateway", "message": "access", "listener": listener,
           "method": "POST", "path": path, "route": route, "upstream_service": upstream, "status": status,
           "duration_ms": duration, "request_id": f"req-{trace_id[:6]}", "trace_id": trace_id, "user": user,
           "span_id": span_id}
    return ({"job": "finopti", "service": "gateway", "level": "info"},
            [str(T0 + ts_ms * MS), orjson.dumps(obj).decode(), {"trace_id": trace_id}])


@pytest.fixture
def store(tmp_path):
    s = LogStore(tmp_path / "logs.db")
    yield s
    s.close()


def test_the_trace_list_filters_by_user_route_status_traffic_and_prefix(store):
    mine = uuid.uuid4().hex
    push(store,
         access(1, trace_id=mine),
         entry(T0 + 30 * MS, "orchestrator", "ask", trace_id=mine, event="ask", prompt="find idle instances"),
         access(2, user="bob@finopti.dev", status=403),
         access(3, route="ui-static", upstream="ui.v1", path="/static/chat.js"),
         access(4, route="logs-tail", upstream="logstore.v1", path="/api/logs/tail"),
         access(5, listener="mesh", route="gcloud-agent", upstream="gcloud-agent.v1"),
         access(6, status=503, upstream=""))
    everything = search_traces(store, TraceFilter(traffic="all"))["traces"]
    assert len(everything) == 5  # edge requests only: the mesh hop is part of a trace, not a request
    assert [t["ts_ns"] for t in everything] == sorted((t["ts_ns"] for t in everything), reverse=True)
    users = search_traces(store, TraceFilter())["traces"]  # user traffic by default: no console asset, no tail
    assert {t["route"] for t in users} == {"ask"} and len(users) == 3
    (found,) = search_traces(store, TraceFilter(user="ERIN@finopti.dev", status="2xx"))["traces"]
    assert found["trace_id"] == mine and found["prompt"] == "find idle instances"
    assert [t["status"] for t in search_traces(store, TraceFilter(status="error"))["traces"]] == [503, 403]
    assert search_traces(store, TraceFilter(prefix=mine[:10]))["traces"][0]["trace_id"] == mine
    assert {t["route"] for t in search_traces(store, TraceFilter(traffic="platform"))["traces"]} == {
        "ui-static", "logs-tail"}


@pytest.mark.parametrize(("status", "wanted", "matches"), [
    (200, "2xx", True), (503, "5xx", True), (503, "error", True), (404, "error", True), (200, "error", False),
    (None, "5xx", True), (429, "429", True), (429, "4xx", True), (302, "4xx", False)])
def test_status_filters(status, wanted, matches):
    assert status_matches(status, wanted) is matches


def test_a_service_line_finds_its_hop_by_span_whatever_the_clocks_say(store):
    """The service's clock and its own timing are not the gateway's: under load its `request completed` line
    falls outside the hop's window. The parent span id it logs names the hop exactly."""
    t = uuid.uuid4().hex
    push(store,
         access(0, trace_id=t, duration=100, span_id="a" * 16),
         access(10, listener="mesh", route="gcloud-tools", upstream="gcloud-tools.v1", path="/gcloud-tools/mcp",
                duration=5, trace_id=t, span_id="b" * 16),
         access(16, listener="mesh", route="gcloud-tools", upstream="gcloud-tools.v1", path="/gcloud-tools/mcp",
                duration=5, trace_id=t, span_id="c" * 16),
         # Written 9 ms after its hop ended (the first hop ends at 15): outside any window, before the second hop.
         entry(T0 + 24 * MS, "gcloud-tools", "request completed", trace_id=t, span_id="1" * 16,
               event="request_completed", path="/mcp", status=200, duration_ms=11.0, parent_span_id="b" * 16,
               mcp_method="initialize"),
         entry(T0 + 23 * MS, "gcloud-tools", "tool ran", trace_id=t, span_id="1" * 16),
         entry(T0 + 30 * MS, "gcloud-tools", "request completed", trace_id=t, span_id="2" * 16,
               event="request_completed", path="/mcp", status=200, duration_ms=9.0, parent_span_id="c" * 16,
               mcp_method="tools/call", mcp_tool="list_instances"))
    hops = [h for h in store.trace(t)["hops"] if h["service"] == "gcloud-tools"]
    assert [(h["served"] or {}).get("mcp_method") for h in hops] == ["initialize", "tools/call"]
    assert hops[1]["served"]["mcp_tool"] == "list_instances"
    assert "tool ran" in [line["line"]["message"] for line in hops[0]["lines"]]


# --- an answer's rows as the CLI prints them ------------------------------------------------------------------

COST = {
    "answer": "…", "action": "estimate_monthly_cost",
    "data": {"currency": "USD", "totals": {"total": 30.5}, "groups": [
        {"key": "data", "compute": 10.0, "disks": 2.25, "total": 12.25},
        {"key": "search", "compute": 15.0, "disks": 3.25, "total": 18.25}]},
    "view": {"type": "bar", "rows": "groups", "x": "key", "y": ["compute", "disks"], "unit": "USD",
             "columns": [{"key": "key", "label": "Team"}, {"key": "compute", "unit": "USD"},
                         {"key": "total", "unit": "USD"}],
             "totals": True, "sort": {"key": "total", "desc": True}},
}


def test_rows_follow_the_view_columns_order_units_and_totals():
    table = answer_table(COST)
    assert [c.label for c in table.columns] == ["Team", "Compute", "Total"]
    assert table.rows == [["search", "$15.00", "$18.25"], ["data", "$10.00", "$12.25"]]
    assert table.numeric == [False, True, True]
    assert table.totals == ["Total (2)", "$25.00", "$30.50"]


def test_rows_without_a_view_are_inferred_and_read_as_text():
    payload = {"data": [
        {"name": "a", "monthly_cost_usd": 4.0, "created": "2026-05-04T10:00:00Z", "labels": {"team": "x"},
         "avg_cpu": 2.5, "unattached": True},
        {"name": "b", "monthly_cost_usd": 1234.5, "created": None, "labels": {}, "avg_cpu": None, "unattached": False}]}
    table = answer_table(payload)
    labels = [c.label for c in table.columns]
    assert labels[0] == "Name" and labels[-1] == "Labels"  # nested objects last
    row = dict(zip(labels, table.rows[1], strict=True))
    assert row["Monthly cost"] == "$1,234.50" and row["Unattached"] == "no" and row["Created"] == ""
    first = dict(zip(labels, table.rows[0], strict=True))
    assert first["Created"] == "2026-05-04 10:00" and first["Avg cpu"] == "2.50%" and first["Labels"] == "team=x"
    assert answer_table({"data": {"note": "no rows"}}) is None


def test_detail_views_list_the_fields():
    table = answer_table({"data": {"name": "web-1", "monthly_compute_usd": 30.0, "disks": [{"name": "d"}]},
                          "view": {"type": "detail"}})
    assert table.rows == [["Name", "web-1"], ["Monthly compute", "$30.00"]]


@pytest.mark.parametrize(("value", "unit", "text"), [
    (-3.5, "USD", "-$3.50"), (12, "%", "12%"), (1.234, "GB", "1.23 GB"), (1500, "", "1,500"), (None, "USD", ""),
    ("2026-01-02T03:04:05Z", "datetime", "2026-01-02 03:04")])
def test_values_read_as_text(value, unit, text):
    assert format_value(value, unit) == text


def test_billing_views_as_the_cli_prints_them_nested_columns_stated_totals_further_tables():
    """The view builders of gcloud-agent's billing answers, read by the CLI's side of the contract."""
    data = {"currency": "USD", "total_net": 100.0, "share": 0.0883, "unlabeled": {"net": 10.01},
            "by_service": [{"key": "Compute Engine", "net": 6.667}, {"key": "BigQuery", "net": 3.337}],
            "resources": [
                {"resource": "disk-a", "service": "Compute Engine", "project": "p", "missing": ["team", "env"],
                 "net": 6.667},
                {"resource": "(BigQuery)", "service": "BigQuery", "project": "p", "missing": ["team"], "net": 3.337}]}
    by_service, resources = answer_tables({"data": data, "view": finops_views.unlabeled_spend(data, {})})
    # The totals row states the answer's own figure ($10.01), not the sum of the rows ($10.00).
    assert by_service.totals == ["Total (2)", "$10.01"] and resources.totals[-1] == "$10.01"
    assert resources.title == "Resources without labels" and resources.rows[0][3] == "team, env"
    plans = {"currency": "USD", "commitments": [], "total_monthly_saving": {"TWELVE_MONTH": 587.48,
                                                                          "THIRTY_SIX_MONTH": 873.29},
             "recommendations": [{"key": "N2 us-central1", "vcpus": {"recommended": 42},
                                  "memory_gb": {"recommended": 200}, "on_demand_monthly": 1587.8,
                                  "plans": {"THIRTY_SIX_MONTH": {"monthly_saving": 873.29}},
                                  "monthly_saving_1y": 587.48, "reason": "steady"}]}
    (table,) = answer_tables({"data": plans, "view": finops_views.commitment_recommendations(plans, {})})
    assert table.rows == [["N2 us-central1", "42", "200 GB", "$1,587.80", "$587.48", "$873.29", "steady"]]
    assert table.totals == ["Total (1)", "", "", "$1,587.80", "$587.48", "$873.29", ""]
    assert format_value(0.0883, "percentunit") == "8.83%"
    assert answer_stats({"data": data, "view": finops_views.unlabeled_spend(data, {})}) == [
        ("Without labels", "$10.01"), ("Share of spend", "8.83%"), ("All spend", "$100.00")]
    assert answer_stats({"data": plans, "view": finops_views.commitment_recommendations(plans, {})}) == [
        ("Saving per month, 1 year", "$587.48"), ("Saving per month, 3 years", "$873.29")]
