"""FinOps actions end to end on the running platform: the gateway (real Envoy and the policy service) decides
who may see costs and who may create budgets, the gcloud-agent calls gcloud-tools over MCP through the mesh,
the numbers are the documented sandbox's, and budget thresholds become Prometheus alerts."""

import shutil
import time

import httpx
import pytest

ACTIONS = "/gcloud-agent/v1/actions/"
VIEWS = {"timeseries", "bar", "table"}


def act(platform, action: str, arguments: dict | None = None, user: str = "bob@finopti.dev") -> httpx.Response:
    """An agent action through the gateway's mesh listener, called as the orchestrator calls it."""
    return platform.mesh("orchestrator", "POST", ACTIONS + action, user, json=arguments or {})


# (action, arguments, a documented figure: path into data -> value)
DOCUMENTED = [
    ("cost_report", {"period": "this_month"}, ("totals", "net"), 5755.49),
    ("cost_report", {"period": "last_month", "group_by": "team"}, ("groups", 0, "key"), "platform"),
    ("compare_costs", {"period": "last_week"}, ("change",), 989.91),
    ("forecast_costs", {}, ("month_end", "forecast"), 10610.44),
    ("forecast_costs", {"team": "payments"}, ("next_month", "forecast"), 1786.23),
    ("detect_cost_anomalies", {"period": "last_30_days"}, ("anomalies", 1, "service"), "Networking"),
    ("unlabeled_spend", {}, ("unlabeled", "net"), 939.44),
    ("budget_status", {"amount": 5000, "team": "payments"}, ("forecast_percent",), 35.5),
    ("commitment_recommendations", {}, ("total_monthly_saving", "TWELVE_MONTH"), 1871.08),
    ("find_unused_resources", {}, ("monthly_cost_by_kind", "old_snapshots"), 170.25),
    ("billing_export_rows", {"start": "2026-11-12", "end": "2026-11-12", "limit": 1},
     ("rows", 0, "resource", "name"), "search-frontend-prod-01"),
]


@pytest.mark.parametrize(("action", "arguments", "path", "expected"), DOCUMENTED,
                         ids=[f"{a}-{'-'.join(map(str, p))}" for a, _, p, _ in DOCUMENTED])
def test_finops_action_through_the_gateway_gives_the_documented_figure(platform, action, arguments, path,
                                                                       expected):
    response = act(platform, action, arguments)
    assert response.status_code == 200, response.text
    answer = response.json()
    value = answer["data"]
    for key in path:
        value = value[key]
    assert value == expected
    assert answer["summary"] and answer["action"] == action
    assert answer["view"]["type"] in VIEWS
    assert_shows_its_work(answer)


def assert_shows_its_work(answer: dict) -> None:
    """The explanation is sentences for the chat; the data keeps its parts."""
    for part in ("Data: ", "Period: ", "Filter: ", "Method: "):
        assert part in answer["explanation"], answer["explanation"]
    assert set(answer["data"]["explanation"]) == {"data", "period", "filter", "method"}


def test_list_budgets_shows_the_seeded_budgets_as_a_bar_chart(platform):
    answer = act(platform, "list_budgets").json()
    seeded = {b["name"]: b["state"] for b in answer["data"] if b["created_by"] == "seed"}
    assert seeded == {"monthly-total": "forecast_over", "payments": "on_track", "search-prod": "forecast_over"}
    view = answer["view"]
    assert (view["type"], view["x"], view["unit"]) == ("bar", "name", "USD")
    assert view["y"] == ["actual", "forecast", "amount"]
    assert {c["key"]: c.get("unit") for c in view["columns"]}["amount"] == "USD"
    for part in ("Data: ", "Period: ", "Filter: ", "Method: "):
        assert part in answer["explanation"], answer["explanation"]


def test_forecast_view_is_a_time_series_with_intervals(platform):
    answer = act(platform, "forecast_costs").json()
    assert answer["view"]["type"] == "timeseries" and answer["view"]["rows"] == "series"
    rows = answer["data"][answer["view"]["rows"]]
    assert {"date", "actual"} <= set(rows[0]) and {"forecast", "lower_80", "upper_95"} <= set(rows[-1])
    assert "November 2026 should end at $10,610.44" in answer["summary"]


@pytest.mark.parametrize(("user", "action", "words"), [
    ("carol@finopti.dev", "cost_report", ["carol@finopti.dev", "cost_report"]),
    ("carol@finopti.dev", "forecast_costs", ["forecast_costs"]),
    ("dave@finopti.dev", "list_budgets", ["has no role"]),
    ("bob@finopti.dev", "create_budget", ["finops_admin", "create_budget"]),
    ("alice@finopti.dev", "create_budget", ["finops_admin"]),
    ("alice@finopti.dev", "delete_budget", ["finops_admin"]),
])  # fmt: skip
def test_policy_decides_who_sees_costs_and_who_makes_budgets(platform, user, action, words):
    response = act(platform, action, {"name": "never-made", "amount": 1}, user=user)
    assert response.status_code == 403
    body = response.json()
    assert body["error"] and all(w in body["message"] for w in words), body


def test_a_finops_admin_creates_and_deletes_a_budget(platform):
    created = act(platform, "create_budget", {"name": "e2e-lifecycle", "amount": 2500, "team": "data"},
                  user="fiona@finopti.dev")
    assert created.status_code == 200, created.text
    data = created.json()["data"]
    assert data["created_by"] == "fiona@finopti.dev"  # the verified user, as the gateway forwarded it
    assert data["filter"] == {"labels": {"team": "data"}} and data["status"]["actual"] == 1290.95
    again = act(platform, "create_budget", {"name": "e2e-lifecycle", "amount": 1}, user="fiona@finopti.dev")
    assert again.status_code == 409 and again.json()["error"] == "AlreadyExists"
    assert "e2e-lifecycle" in {b["name"] for b in act(platform, "list_budgets").json()["data"]}
    deleted = act(platform, "delete_budget", {"name": "e2e-lifecycle"}, user="fiona@finopti.dev")
    assert deleted.status_code == 200 and deleted.json()["data"]["deleted"] is True
    gone = act(platform, "budget_status", {"name": "e2e-lifecycle"})
    assert gone.status_code == 404 and "not found" in gone.json()["message"]


def test_bad_finops_arguments_get_a_clear_400(platform):
    response = act(platform, "cost_report", {"period": "last_fortnight"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "InvalidArgument" and "unknown period 'last_fortnight'" in body["message"]


def _alerts(platform, budget: str) -> list[dict]:
    query = f'ALERTS{{alertname="FinoptiBudgetThresholdCrossed",budget="{budget}",alertstate="firing"}}'
    response = httpx.get(f"{platform.edge}/api/metrics/query", params={"query": query},
                         headers=platform.headers("carol@finopti.dev"), timeout=20)
    assert response.status_code == 200, response.text
    return [r["metric"] for r in response.json()["data"]["result"]]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Prometheus is not installed (Debian package "
                    "`prometheus`; make test installs it where apt-get exists)")
@pytest.mark.timeout(180)
def test_a_budget_over_its_thresholds_fires_prometheus_alerts(platform):
    """finopti-dev spent 671.37 this month: a 500 budget is past 50, 90 and 100 % of actual and of forecast."""
    created = act(platform, "create_budget", {"name": "e2e-dev-over", "amount": 500, "project": "finopti-dev"},
                  user="fiona@finopti.dev")
    assert created.status_code == 200, created.text
    try:
        wanted = {("actual", "50"), ("actual", "90"), ("actual", "100"), ("forecast", "100")}
        deadline, firing = time.monotonic() + 120, set()
        while time.monotonic() < deadline:
            firing = {(a["basis"], a["threshold"]) for a in _alerts(platform, "e2e-dev-over")}
            if firing == wanted:
                break
            time.sleep(1)
        assert firing == wanted
    finally:
        assert act(platform, "delete_budget", {"name": "e2e-dev-over"}, user="fiona@finopti.dev").status_code == 200
    deadline = time.monotonic() + 120
    while _alerts(platform, "e2e-dev-over") and time.monotonic() < deadline:
        time.sleep(1)
    assert _alerts(platform, "e2e-dev-over") == []  # deleted budget, no alert


@pytest.mark.parametrize(("prompt", "action", "path", "expected"), [
    ("why did our bill go up last week", "compare_costs", ("change",), 989.91),
    ("are we going to stay under the 5k budget for payments", "budget_status", ("forecast_percent",), 35.5),
    ("what isn't labeled", "unlabeled_spend", ("unlabeled", "net"), 939.44),
    ("should we buy a commitment", "commitment_recommendations", ("total_monthly_saving", "TWELVE_MONTH"), 1871.08),
    ("where will we end the month?", "forecast_costs", ("month_end", "forecast"), 10610.44),
    # red team (docs/performance.md): said another way, the same documented figures
    ("how did spend change week on week", "compare_costs", ("change",), 989.91),
    ("is the search budget on track", "budget_status", ("forecast",), 2300.15),
    ("eom forecast", "forecast_costs", ("month_end", "forecast"), 10610.44),
    ("what isn't tagged with an env", "unlabeled_spend", ("unlabeled", "net"), 743.64),
    # a team with no resources costs 0, never everyone's spend
    ("costs for the marketing team last month", "cost_report", ("totals", "net"), 0.0),
])  # fmt: skip
def test_the_questions_of_the_issue_asked_in_plain_english(platform, prompt, action, path, expected):
    """Through the edge: the orchestrator's parser picks the action, the answer keeps its view and explanation."""
    response = platform.ask(prompt, user="bob@finopti.dev")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["kind"], answer["action"]) == ("answer", action), answer
    value = answer["data"]
    for key in path:
        value = value[key]
    assert value == expected
    assert answer["view"]["type"] in VIEWS
    assert_shows_its_work(answer)


def test_a_budget_made_in_the_chat_is_a_plan_until_a_finops_admin_confirms(platform):
    prompt = 'create a budget "e2e-chat" of 700 for the data team'
    viewer_plan = platform.ask(prompt, user="bob@finopti.dev")  # seeing the plan needs only cost access
    assert viewer_plan.status_code == 200 and viewer_plan.json()["kind"] == "plan", viewer_plan.text
    refused = platform.confirm(viewer_plan, user="bob@finopti.dev")
    assert refused.status_code == 403 and "finops_admin" in refused.json()["message"]

    plan = platform.ask(prompt, user="fiona@finopti.dev")
    body = plan.json()
    assert body["kind"] == "plan" and body["plan"]["after"]["filter"] == {"labels": {"team": "data"}}
    assert "create budget e2e-chat: $700.00 a month for team=data" in body["answer"]
    assert "e2e-chat" not in {b["name"] for b in act(platform, "list_budgets").json()["data"]}  # nothing yet
    done = platform.confirm(plan, user="fiona@finopti.dev")
    assert done.status_code == 200, done.text
    assert done.json()["data"]["status"]["actual"] == 1290.95
    records = platform.wait_for_log("gcloud-agent", lambda line: line.get("event") == "audit" and (
        line["audit"]["target"], line["audit"]["action"]) == ("e2e-chat", "create_budget"))
    assert records and records[-1]["audit"]["who"] == "fiona@finopti.dev"
    assert records[-1]["audit"]["outcome"] == "succeeded"

    again = platform.ask(prompt, user="fiona@finopti.dev")  # the name is taken: the plan says it cannot be done
    assert again.status_code == 409 and again.json()["error"] == "change_blocked"
    delete = platform.ask('delete budget "e2e-chat"', user="fiona@finopti.dev")
    assert delete.json()["kind"] == "plan" and platform.confirm(delete, user="fiona@finopti.dev").status_code == 200
    assert "e2e-chat" not in {b["name"] for b in act(platform, "list_budgets").json()["data"]}
