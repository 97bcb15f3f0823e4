"""FinOps answers in the chat, in a real headless Chromium through the gateway's edge listener, on a desktop
(1280×800) and a phone (390×844): trends, forecasts, anomalies and budgets as time series; breakdowns,
comparisons, commitments and budgets as bars; money in dollars with totals rows that state the answer's own
figures; each answer with how it was computed. Every figure on screen is checked against the same question asked
through the API (the documented sandbox's numbers are checked in test_finops_e2e.py)."""

import re

import httpx
import pytest
import test_ui_browser as ui

# The chat page's browser fixtures and helpers (Debian's Chromium; skipped with a reason without it).
browser, page = ui.browser, ui.page
SLOW_MS = 60_000  # a billing answer fits and sums on a shared, busy machine: wait generously for each


@pytest.fixture
def chat(page):
    """The chat page, waiting up to a minute for each answer."""
    page.set_default_timeout(SLOW_MS)
    return page
USER = "erin@finopti.dev"
MONEY = re.compile(r"^-?\$[\d,]+\.\d\d$")


def dollars(text: str) -> float:
    """"-$1,234.56" -> -1234.56 (what the page shows, back to a number)."""
    text = text.strip()
    assert MONEY.match(text), f"not an amount in dollars: {text!r}"
    return float(re.sub(r"[^\d.\-]", "", text))


def answered(platform, page, prompt: str, *, chip: bool = False):
    """The prompt asked in the chat, typed or by clicking its suggestion (its turn, answered 200), and through the
    API (its JSON, for the figures)."""
    if chip:
        page.locator("[data-testid=suggestions] button").filter(has_text=prompt).click()
        turn = ui.turn_of(page, prompt)
        turn.locator("xpath=self::*[@data-status]").wait_for()
    else:
        turn = ui.ask(page, prompt)
    assert turn.get_attribute("data-status") == "200", turn.inner_text()
    assert turn.locator("details.explanation summary:has-text('How this was computed')").count() == 1
    api = platform.ask(prompt, USER)
    assert api.status_code == 200, api.text
    return turn, api.json()["data"]


def stat(turn, label: str) -> str:
    box = turn.locator("[data-testid=answer-stats] .stat-box").filter(
        has=turn.page.locator(f"span:text-is('{label}')"))
    return box.locator("b").inner_text()


def totals(table, key: str) -> float:
    return dollars(table.locator(f"[data-testid=totals] td[data-key='{key}']").inner_text())


def money_cells(table, key: str) -> list[str]:
    return table.locator(f"tbody td[data-key='{key}'] .cell").all_inner_texts()


def hover_shows_dollars(turn) -> None:
    box = turn.locator("[data-chart=timeseries] .u-over").first.bounding_box()
    turn.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    tip = turn.locator("[data-chart=timeseries] .chart-tip")
    tip.wait_for(state="visible")
    assert "$" in tip.inner_text(), tip.inner_text()


def test_trends_forecasts_anomalies_and_budgets_are_time_series(platform, chat):
    ui.sign_in(chat, platform.edge, USER)
    turns = []

    # Daily cost: one line, its headline figures the answer's totals, the days behind a disclosure with a totals row.
    daily, data = answered(platform, chat, "daily cost last 30 days")
    chart = daily.locator("[data-chart=timeseries]")
    chart.locator("canvas").first.wait_for()
    assert chart.get_attribute("data-series") == "1"
    assert dollars(stat(daily, "Net cost")) == data["totals"]["net"]
    assert dollars(stat(daily, "Credits")) == data["totals"]["credits"]
    table = daily.locator("[data-testid=answer-table]")
    assert not table.is_visible()
    daily.locator("details.as-table summary").click()
    assert int(table.get_attribute("data-rows")) == len(data["groups"]) == 30
    assert totals(table, "net") == data["totals"]["net"]
    assert all(MONEY.match(t) for t in money_cells(table, "net"))
    hover_shows_dollars(daily)
    # How it was computed, part by part (like Amazon Q's "show the work"): data, period, filter, method.
    daily.locator("details.explanation summary").click()
    shown = daily.locator("[data-testid=explanation] dt").all_inner_texts()
    assert shown == ["Data", "Period", "Filter", "Method"], shown
    assert daily.locator("[data-testid=explanation] dd").nth(3).inner_text() == data["explanation"]["method"]
    turns.append(daily)

    # Forecast, from the chat's own suggestion (billing questions lead the chips of a user who may see costs):
    # actual and forecast lines with the 80 % and 95 % intervals; month-end and next month in dollars.
    offered = httpx.get(f"{platform.edge}/api/suggestions", headers=platform.headers(USER), timeout=30).json()
    chip = next(s["prompt"] for s in offered["suggestions"] if s["action"] == "forecast_costs")
    assert {"compare_costs", "forecast_costs"} <= {s["action"] for s in offered["suggestions"]}
    forecast, data = answered(platform, chat, chip, chip=True)
    chart = forecast.locator("[data-chart=timeseries]")
    chart.locator("canvas").first.wait_for()
    legend = chart.locator(".lg-name").all_inner_texts()
    assert legend[:2] == ["Actual", "Forecast"] and {"80% upper", "80% lower", "95% upper", "95% lower"} <= set(legend)
    assert dollars(stat(forecast, "Month-end forecast")) == data["month_end"]["forecast"]
    assert dollars(stat(forecast, "Spent so far")) == data["month_end"]["actual_to_date"]
    assert dollars(stat(forecast, "Next month")) == data["next_month"]["forecast"]
    hover_shows_dollars(forecast)
    turns.append(forecast)

    # Anomalies: a line per flagged service, each anomaly a marked point, and the list with why under the chart.
    anomalies, data = answered(platform, chat, "find cost anomalies")
    assert data["anomalies"], "the sandbox documents a spike and a new service"
    chart = anomalies.locator("[data-chart=timeseries]")
    chart.locator("canvas").first.wait_for()
    assert chart.get_attribute("data-series") == str(len({a["service"] for a in data["anomalies"]}))
    assert chart.get_attribute("data-markers") == str(len(data["anomalies"]))
    listed = anomalies.locator("[data-testid=further-table][data-rows-of=anomalies]")
    assert "Anomalies" in listed.locator("h3").inner_text()
    rows = listed.locator("tbody tr")
    assert rows.count() == len(data["anomalies"])
    reasons = listed.locator("tbody td[data-key=reason]").all_inner_texts()
    assert sorted(reasons) == sorted(a["reason"] for a in data["anomalies"])
    assert [dollars(t) for t in money_cells(listed, "excess")] == [a["excess"] for a in data["anomalies"]]
    unusual = listed.locator("tbody td[data-key=times_expected]").all_inner_texts()  # how unusual (none: new)
    assert unusual == [f"{a['times_expected']:.2f}" if a["times_expected"] else "" for a in data["anomalies"]]
    turns.append(anomalies)

    # A budget: spent, forecast and the budget line over the month, the chance of going over, its thresholds.
    budget, data = answered(platform, chat, "are we going to stay under the budget for payments")
    chart = budget.locator("[data-chart=timeseries]")
    chart.locator("canvas").first.wait_for()
    assert chart.locator(".lg-name").all_inner_texts() == ["Actual", "Forecast", "Budget"]
    assert dollars(stat(budget, "Spent")) == data["actual"] and dollars(stat(budget, "Budget")) == data["amount"]
    assert re.fullmatch(r"\d+(\.\d+)?%", stat(budget, "Chance of going over"))
    thresholds = budget.locator("[data-testid=further-table][data-rows-of=thresholds] tbody tr")
    assert thresholds.count() == len(data["thresholds"])
    assert [dollars(t) for t in budget.locator("[data-rows-of=thresholds] td[data-key=amount] .cell").all_inner_texts()
            ] == [t["amount"] for t in data["thresholds"]]
    turns.append(budget)
    ui.shot(chat, "finops-series")

    # On a phone: every chart, headline and table on screen, nothing scrolls sideways.
    ui.phone(chat)
    chat.evaluate("window.scrollTo(0, 0)")
    ui.assert_fits(chat, "[data-chart=timeseries] canvas", "[data-testid=answer-stats] .stat-box",
                   "[data-testid=explanation] dd",
                   "[data-rows-of=anomalies] td[data-key=reason]", "[data-rows-of=thresholds] td[data-key=amount]")
    for turn in turns:
        assert turn.locator("[data-chart=timeseries] canvas").first.bounding_box()["width"] > 250
    anomalies.scroll_into_view_if_needed()
    ui.shot(chat, "finops-series")


def test_breakdowns_comparisons_and_savings_are_bars_with_dollar_totals(platform, chat):
    ui.sign_in(chat, platform.edge, USER)

    # Cost by service: a bar per service, money in dollars, a totals row that is the answer's own total.
    by_service, data = answered(platform, chat, "cost by service last 30 days")
    chart = by_service.locator("[data-chart=bar]")
    chart.locator("canvas").wait_for()
    assert chart.get_attribute("data-bars") == str(len(data["groups"]))
    table = by_service.locator("[data-testid=answer-table]")
    assert table.locator("thead th[data-key=key]").inner_text() == "Service"
    for key in ("cost", "credits", "net"):
        assert totals(table, key) == data["totals"][key], key
        assert all(MONEY.match(t) for t in money_cells(table, key)), key
    assert table.locator("[data-testid=totals] td").first.inner_text() == f"Total ({len(data['groups'])})"
    assert dollars(stat(by_service, "Net cost")) == data["totals"]["net"]
    shares = table.locator("tbody td[data-key=share]").all_inner_texts()
    assert all(re.fullmatch(r"\d+(\.\d+)?%", s) for s in shares), shares

    # Why the bill went up: the two periods side by side per service, change and totals in dollars.
    compare, data = answered(platform, chat, "why did our bill go up last week")
    chart = compare.locator("[data-chart=bar]")
    chart.locator("canvas").wait_for()
    assert chart.get_attribute("data-series") == "2" and chart.get_attribute("data-bars") == str(len(data["drivers"]))
    table = compare.locator("[data-testid=answer-table]")
    assert totals(table, "previous") == data["previous"]["net"] and totals(table, "current") == data["current"]["net"]
    assert totals(table, "change") == data["change"] and dollars(stat(compare, "Change")) == data["change"]
    assert data["current"]["period"]["start"] in " ".join(chart.locator(".lg-name").all_inner_texts())

    # Untagged spend: by service with the unlabelled total, and every resource behind it.
    unlabeled, data = answered(platform, chat, "what isn't labeled")
    unlabeled.locator("[data-chart=bar] canvas").wait_for()
    assert totals(unlabeled.locator("[data-testid=answer-table]"), "net") == data["unlabeled"]["net"]
    resources = unlabeled.locator("[data-testid=further-table][data-rows-of=resources]")
    assert resources.locator("tbody tr").count() == data["resource_count"]
    assert totals(resources, "net") == data["unlabeled"]["net"]
    assert re.fullmatch(r"\d+(\.\d+)?%", stat(unlabeled, "Share of spend"))

    # Commitments: savings on 1- and 3-year plans per recommendation, nested figures as columns, the totals stated.
    commitments, data = answered(platform, chat, "should we buy a commitment")
    chart = commitments.locator("[data-chart=bar]")
    chart.locator("canvas").wait_for()
    assert chart.get_attribute("data-series") == "2"
    assert chart.get_attribute("data-bars") == str(min(30, len(data["recommendations"])))
    table = commitments.locator("[data-testid=answer-table]")
    three = "plans.THIRTY_SIX_MONTH.monthly_saving"
    assert totals(table, "monthly_saving_1y") == data["total_monthly_saving"]["TWELVE_MONTH"]
    assert totals(table, three) == data["total_monthly_saving"]["THIRTY_SIX_MONTH"]
    assert [dollars(t) for t in money_cells(table, three)] == [
        r["plans"]["THIRTY_SIX_MONTH"]["monthly_saving"] for r in data["recommendations"]]
    assert table.locator("tbody td[data-key='vcpus.recommended']").first.inner_text() == str(
        data["recommendations"][0]["vcpus"]["recommended"])
    assert "{" not in table.inner_text(), "no JSON in the cells"

    # Budgets: spent, forecast and amount per budget as bars; percentages and money in their units.
    budgets, data = answered(platform, chat, "list budgets")
    chart = budgets.locator("[data-chart=bar]")
    chart.locator("canvas").wait_for()
    assert chart.get_attribute("data-series") == "3" and chart.get_attribute("data-bars") == str(len(data))
    assert chart.locator(".lg-name").all_inner_texts() == ["Spent", "Forecast", "Budget"]
    table = budgets.locator("[data-testid=answer-table]")
    assert [dollars(t) for t in money_cells(table, "amount")] == [b["amount"] for b in data]

    # Unused resources: a table, costliest first, the saving total as the answer states it.
    unused, data = answered(platform, chat, "find unused resources")
    table = unused.locator("[data-testid=answer-table]")
    costs = [dollars(t) for t in money_cells(table, "monthly_cost_usd")]
    assert costs == sorted(costs, reverse=True) and len(costs) == len(data["items"])
    assert totals(table, "monthly_cost_usd") == data["monthly_saving_usd"]
    # The raw export rows: the nested BigQuery record read through its paths (no JSON in a cell), cost in dollars.
    rows, data = answered(platform, chat, "billing export rows for yesterday")
    table = rows.locator("[data-testid=answer-table]")
    assert table.locator("tbody td[data-key='service.description']").all_inner_texts() == [
        r["service"]["description"] for r in data["rows"]]
    assert all(MONEY.match(t) for t in money_cells(table, "cost")) and "{" not in table.inner_text()
    ui.shot(chat, "finops-bars")

    # On a phone: bars, headline figures and every money column on screen (rows become cards), nothing sideways.
    ui.phone(chat)
    chat.evaluate("window.scrollTo(0, 0)")
    ui.assert_fits(chat, "[data-chart=bar] canvas", "[data-testid=answer-stats] .stat-box",
                   "[data-testid=totals] td.num", f"td[data-key='{three}']", "td[data-key=monthly_cost_usd]",
                   "[data-rows-of=resources] td[data-key=net]")
    for turn in (by_service, compare, commitments, budgets):
        assert turn.locator("[data-chart=bar] canvas").bounding_box()["width"] > 250
    compare.scroll_into_view_if_needed()
    ui.shot(chat, "finops-bars")


def test_a_finops_admin_confirms_a_budget_and_sees_it_drawn(platform, chat):
    """A budget is a change: its plan, Confirm, then the new budget drawn like a budget's status (spent, forecast
    and budget lines, the amount, the alert thresholds). Deleted again through the API afterwards."""
    admin, name = "fiona@finopti.dev", "browser-check"
    ui.sign_in(chat, platform.edge, admin)
    turn = ui.ask(chat, f'create budget "{name}" of 300 for env=dev')
    turn.locator("[data-testid=plan]").wait_for()
    turn.locator("[data-testid=confirm]").click()
    outcome = turn.locator("[data-testid=plan-outcome]")
    try:
        chart = outcome.locator("[data-chart=timeseries]")
        chart.locator("canvas").first.wait_for()
        assert chart.locator(".lg-name").all_inner_texts() == ["Actual", "Forecast", "Budget"]
        assert dollars(stat(outcome, "Budget")) == 300
        thresholds = outcome.locator("[data-testid=further-table][data-rows-of='status.thresholds']")
        assert thresholds.locator("tbody tr").count() >= 1
        assert all(MONEY.match(t) for t in thresholds.locator("td[data-key=amount] .cell").all_inner_texts())
        ui.shot(chat, "finops-budget-created")
        ui.phone(chat)
        ui.assert_fits(chat, "[data-testid=plan-outcome] [data-chart=timeseries] canvas",
                       "[data-testid=plan-outcome] td[data-key=amount]")
    finally:
        plan = platform.ask(f'delete budget "{name}"', admin)
        if plan.status_code == 200 and plan.json().get("kind") == "plan":
            assert platform.confirm(plan, admin).status_code == 200
