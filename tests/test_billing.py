"""The sandbox's billing history and the FinOps analyses over it (finopti.cloud.finops), against the
answers docs/sandbox.md documents, plus the properties those answers rest on."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from finopti.cloud import AlreadyExists, InvalidArgument, NotFound, SandboxCloud
from finopti.cloud.backend import CloudBackend, open_backend
from finopti.cloud.billing_catalog import SERIES_RATES, billable_vcpus, series_of
from finopti.cloud.billing_seed import BILLING_START_TS
from finopti.cloud.catalog import DAY, DISK_PRICES, HOUR, MACHINE_TYPES, SANDBOX_NOW_TS
from finopti.cloud.finops import forecast, periods
from finopti.cloud.seed import build_plan

PLAN = build_plan()
MACHINES = {m.name: m for m in MACHINE_TYPES}


@pytest.fixture(scope="module")
def cloud(seeded_sandbox: Path) -> SandboxCloud:
    """The session's seeded sandbox, for tests that only read; tests that write use `fresh_sandbox`."""
    return SandboxCloud(seeded_sandbox)


def export_rows(cloud: SandboxCloud, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(cloud.db_path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def day(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


# -- the export itself -------------------------------------------------------------------------------


def test_rows_have_the_bigquery_export_shape(cloud: SandboxCloud) -> None:
    rows = cloud.billing_export_rows(start="2026-11-12", end="2026-11-12", limit=3)["rows"]
    assert set(rows[0]) == {
        "billing_account_id", "service", "sku", "usage_start_time", "usage_end_time", "project", "labels",
        "system_labels", "location", "resource", "export_time", "cost", "currency", "currency_conversion_rate",
        "usage", "credits", "invoice", "cost_type",
    }  # fmt: skip
    top = rows[0]  # the costliest row of the spike day: the egress spike
    assert top["service"] == {"id": "E505-1604-58F8", "description": "Networking"}
    assert top["sku"]["description"] == "Network Internet Egress from Americas to Americas"
    assert top["resource"]["name"] == "search-frontend-prod-01"
    assert top["usage"] == {"amount": 7680 * 2**30, "unit": "bytes", "amount_in_pricing_units": 7680.0,
                            "pricing_unit": "gibibyte"}
    assert top["cost"] == pytest.approx(921.6)
    assert top["usage_start_time"] == "2026-11-12T00:00:00Z" and top["usage_end_time"] == "2026-11-13T00:00:00Z"
    assert {"key": "team", "value": "search"} in top["labels"]
    assert top["project"]["id"] == "finopti-prod" and top["invoice"] == {"month": "202611"}
    assert set(top["location"]) == {"location", "country", "region", "zone"}


def test_at_least_90_days_of_daily_rows_for_every_project(cloud: SandboxCloud) -> None:
    days = export_rows(cloud, "SELECT project_id, COUNT(DISTINCT usage_start_time) AS days, MIN(usage_start_time) AS "
                              "first, MAX(usage_end_time) AS last FROM billing_export GROUP BY project_id")
    assert {r["project_id"] for r in days} == {"finopti-prod", "finopti-staging", "finopti-dev"}
    for row in days:
        assert row["days"] == 107 >= 90
        assert (row["first"], row["last"]) == (BILLING_START_TS, SANDBOX_NOW_TS)
    misaligned = export_rows(cloud, "SELECT COUNT(*) FROM billing_export WHERE usage_start_time % 86400 != 0 "
                                    "OR usage_end_time - usage_start_time != 86400")[0][0]
    assert misaligned == 0


def test_instance_costs_follow_the_price_table_and_the_stop_history(cloud: SandboxCloud) -> None:
    """Core + RAM of an instance on a day = its machine type's hourly price x the hours it ran that day."""
    rows = export_rows(cloud, "SELECT resource_name, usage_start_time AS day, SUM(cost) AS cost, "
                              "SUM(CASE WHEN sku_description LIKE '%Core%' THEN usage_amount_in_pricing_units END) "
                              "AS core_hours FROM billing_export WHERE sku_description LIKE '% Instance %' "
                              "GROUP BY resource_name, usage_start_time")
    cost = {(r["resource_name"], r["day"]): (r["cost"], r["core_hours"]) for r in rows}
    for inst in PLAN.instances:
        machine = MACHINES[inst.machine_type]
        for d in range(BILLING_START_TS, SANDBOX_NOW_TS, DAY):
            end = inst.stopped_at if inst.stopped_at is not None else d + DAY
            hours = max(0, min(d + DAY, end) - max(d, inst.created)) / HOUR
            got, core_hours = cost.get((inst.name, d), (0.0, 0.0))
            assert got == pytest.approx(machine.hourly_usd * hours, abs=2e-6), (inst.name, d)
            assert (core_hours or 0.0) == pytest.approx(billable_vcpus(machine) * hours)


def test_machine_prices_split_exactly_into_core_and_ram_rates() -> None:
    for machine in MACHINE_TYPES:
        core, ram = SERIES_RATES[series_of(machine.name)]
        assert billable_vcpus(machine) * core + machine.memory_gb * ram == pytest.approx(machine.hourly_usd, abs=1e-6)


def test_disks_cost_their_monthly_price_spread_over_730_hours(cloud: SandboxCloud) -> None:
    rows = export_rows(cloud, "SELECT resource_name, cost FROM billing_export WHERE usage_start_time = ? AND "
                              "sku_description LIKE '%PD Capacity'", (day("2026-11-15"),))
    assert len(rows) == len(PLAN.disks)
    for disk in PLAN.disks:
        got = next(r["cost"] for r in rows if r["resource_name"] == disk.name)
        assert got == pytest.approx(DISK_PRICES[disk.disk_type] * disk.size_gb * 24 / 730, abs=1e-6)


def test_the_commitment_credits_exactly_its_share_of_c2_usage_in_its_region(cloud: SandboxCloud) -> None:
    fees = export_rows(cloud, "SELECT MIN(usage_start_time) AS first, SUM(cost) AS cost FROM billing_export "
                              "WHERE sku_description LIKE 'Commitment v1: C2 % in Americas for 1 Year'")[0]
    assert fees["first"] == day("2026-09-01")
    for d in (day("2026-08-31"), day("2026-10-10")):
        rows = export_rows(cloud, "SELECT cost, credits_total, credits FROM billing_export WHERE usage_start_time = ? "
                                  "AND sku_description LIKE 'C2 Instance % running in Americas' AND "
                                  "location_region = 'us-central1'", (d,))
        used_vcpus = 24  # three c2-standard-8 run in us-central1; the commitment covers 16 vCPUs and 64 GB
        share = 0.0 if d < day("2026-09-01") else 16 / used_vcpus
        assert len(rows) == 6
        for row in rows:
            assert row["credits_total"] == pytest.approx(-share * row["cost"], abs=1e-6)
            if share:
                assert json.loads(row["credits"])[0]["type"] == "COMMITTED_USAGE_DISCOUNT"
    other_regions = export_rows(cloud, "SELECT SUM(credits_total) FROM billing_export WHERE sku_description LIKE "
                                       "'C2 Instance%' AND location_region != 'us-central1'")[0][0]
    assert other_regions == 0


# -- the documented answers (docs/sandbox.md, "FinOps answers") ----------------------------------------


def test_monthly_totals(cloud: SandboxCloud) -> None:
    months = {p: cloud.cost_report(period=p)["totals"] for p in ("2026-08", "2026-09", "2026-10", "this_month")}
    assert months == {
        "2026-08": {"cost": 10733.31, "credits": 0.0, "net": 10733.31},
        "2026-09": {"cost": 10421.07, "credits": -601.37, "net": 9819.7},
        "2026-10": {"cost": 10754.13, "credits": -621.41, "net": 10132.72},
        "this_month": {"cost": 6062.42, "credits": -306.93, "net": 5755.49},
    }
    november = cloud.cost_report(period="this_month")
    assert november["period"] == {"label": "this_month", "start": "2026-11-01", "end": "2026-11-15", "days": 15}
    assert november["credits_by_type"] == {"COMMITTED_USAGE_DISCOUNT": -300.68, "FREE_TIER": -6.25}
    assert [(g["key"], g["net"]) for g in november["groups"]] == [
        ("Compute Engine", 3724.5), ("Networking", 1382.77), ("Cloud Storage", 452.41), ("BigQuery", 195.8)]


def test_breakdowns_add_up_to_the_total(cloud: SandboxCloud) -> None:
    total = cloud.cost_report(period="last_month")["totals"]["net"]
    for group_by in ("service", "project", "team", "env", "sku", "region", "resource", "day", "label:app"):
        report = cloud.cost_report(period="last_month", group_by=group_by, top=500)
        assert sum(g["net"] for g in report["groups"]) == pytest.approx(total, abs=0.05), group_by
        assert report["explanation"]["period"] == "2026-10-01 to 2026-10-31 (31 days)"
    by_team = cloud.cost_report(period="last_month", group_by="team")
    assert [(g["key"], g["net"]) for g in by_team["groups"]] == [
        ("platform", 3026.35), ("data", 2653.54), ("payments", 2079.11), ("search", 1874.64),
        ("(no team label)", 499.06)]
    by_project = cloud.cost_report(period="last_month", group_by="project")
    assert [(g["key"], g["net"]) for g in by_project["groups"]] == [
        ("finopti-prod", 6060.1), ("finopti-staging", 2360.07), ("finopti-dev", 1712.54)]
    days = cloud.cost_report(period="last_week", group_by="day")["groups"]
    assert [g["key"] for g in days] == [f"2026-11-{d:02d}" for d in range(9, 16)]
    assert days[3]["net"] == 1268.45  # the spike day


def test_filters_narrow_the_slice(cloud: SandboxCloud) -> None:
    payments = cloud.cost_report(period="this_month", team="payments")
    assert payments["totals"]["net"] == 914.25 and payments["filter"] == {"labels": {"team": "payments"}}
    bigquery = cloud.cost_report(period="this_month", service="bigquery", group_by="day")  # case-insensitive
    assert bigquery["filter"] == {"service": ["BigQuery"]}
    assert [g["key"] for g in bigquery["groups"]][0] == "2026-11-10"
    prod_search = cloud.cost_report(period="this_month", project="finopti-prod", label="team=search")
    assert prod_search["totals"]["net"] == 1602.46


def test_why_did_the_bill_go_up_last_week(cloud: SandboxCloud) -> None:
    answer = cloud.compare_costs()
    assert answer["current"]["period"]["start"] == "2026-11-09" and answer["previous"]["period"]["end"] == "2026-11-08"
    assert (answer["previous"]["net"], answer["current"]["net"], answer["change"], answer["change_pct"]) == (
        2226.36, 3216.27, 989.91, 44.5)
    drivers = [(d["key"], d["change"], d["status"]) for d in answer["drivers"]]
    assert drivers == [("Networking", 903.71, "up"), ("BigQuery", 195.8, "new"), ("Compute Engine", -110.48, "down"),
                       ("Cloud Storage", 0.87, "up")]
    assert sum(d["change"] for d in answer["drivers"]) == pytest.approx(answer["change"], abs=0.02)
    assert answer["drivers"][0]["details"][0]["key"] == "search-frontend-prod-01"
    assert answer["drivers"][0]["details"][0]["change"] == 919.13
    stopped = [d["key"] for d in answer["drivers"][2]["details"]]
    assert stopped == ["payments-api-prod-02", "bastion-dev-03", "ci-runner-prod-01"]


def test_month_over_month_compares_calendar_months(cloud: SandboxCloud) -> None:
    answer = cloud.compare_costs(period="last_month")
    assert answer["previous"]["period"] == {"label": "month before last_month", "start": "2026-09-01",
                                            "end": "2026-09-30", "days": 30}
    assert answer["change"] == 313.02


def test_forecast(cloud: SandboxCloud) -> None:
    answer = cloud.forecast_costs()
    month, following = answer["month_end"], answer["next_month"]
    assert (month["month"], month["actual_to_date"], month["forecast"]) == ("2026-11", 5755.49, 10610.44)
    assert month["interval_80"] == [10476.31, 10744.57] and month["interval_95"] == [10405.3, 10815.57]
    assert (following["month"], following["forecast"], following["interval_80"]) == (
        "2026-12", 10012.81, [9513.1, 10512.53])
    assert answer["model"]["cleaned_spikes"] == [{"date": "2026-11-12", "service": "Networking", "removed": 918.64}]
    for level in ("80", "95"):
        lo, hi = month[f"interval_{level}"]
        assert month["actual_to_date"] <= lo < month["forecast"] < hi
    assert month["interval_95"][0] < month["interval_80"][0]
    future = [p for p in answer["series"] if "forecast" in p]
    assert [p["date"] for p in future][0] == "2026-11-16" and future[-1]["date"] == "2026-12-31"
    remaining = month["forecast"] - month["actual_to_date"]
    assert sum(p["forecast"] for p in future[:15]) == pytest.approx(remaining, abs=0.1)


def test_forecast_of_a_team_sees_the_stop_as_a_level_shift(cloud: SandboxCloud) -> None:
    payments = cloud.forecast_costs(team="payments")
    assert payments["month_end"]["forecast"] == 1775.95 and payments["next_month"]["forecast"] == 1786.23
    assert [s["from"] for s in payments["model"]["level_shifts"]] == ["2026-11-07", "2026-11-06"]


def test_anomalies_are_the_two_designed_events(cloud: SandboxCloud) -> None:
    answer = cloud.detect_cost_anomalies(period="last_90_days")
    found = [(a["date"], a["service"], a["kind"]) for a in answer["anomalies"]]
    assert found == [("2026-11-10", "BigQuery", "new_service"), ("2026-11-12", "Networking", "spike")]
    spike = answer["anomalies"][1]
    assert (spike["actual"], spike["expected"], spike["excess"], spike["score"]) == (954.07, 35.43, 918.64, 269.5)
    assert spike["drivers"][0]["resource"] == "search-frontend-prod-01" and spike["drivers"][0]["team"] == "search"
    assert "search-frontend-prod-01" in spike["reason"]
    assert answer["anomalies"][0]["drivers"][0]["sku"] == "Analysis"
    flagged = {"BigQuery", "Networking"}
    assert all(set(point) == {"date"} | flagged for point in answer["series"])


def test_budgets_as_seeded(cloud: SandboxCloud) -> None:
    budgets = {b["name"]: b for b in cloud.list_budgets()}
    assert {n: (b["actual"], b["forecast"], b["state"]) for n, b in budgets.items()} == {
        "monthly-total": (5755.49, 10610.44, "forecast_over"),
        "payments": (914.25, 1775.95, "on_track"),
        "search-prod": (1602.46, 2300.15, "forecast_over"),
    }
    assert [(t["percent"], t["basis"], t["crossed_on"]) for t in budgets["search-prod"]["crossed"]] == [
        (50.0, "actual", "2026-11-12"), (100.0, "forecast", None)]
    assert budgets["payments"]["crossed"] == [] and budgets["payments"]["exceed_probability"] == 0.0


def test_are_we_going_to_stay_under_5k_for_payments(cloud: SandboxCloud) -> None:
    answer = cloud.budget_status(amount=5000, team="payments")
    assert (answer["saved"], answer["actual"], answer["forecast"], answer["forecast_percent"], answer["state"]) == (
        False, 914.25, 1775.95, 35.5, "on_track")
    first, last = answer["series"][0], answer["series"][-1]
    assert (first["date"], first["budget"], last["date"]) == ("2026-11-01", 5000.0, "2026-11-30")
    assert last["forecast"] == pytest.approx(answer["forecast"], abs=0.05)  # cumulative, from rounded days


def test_a_slice_names_the_saved_budget_inside_it(cloud: SandboxCloud) -> None:
    """"is the search budget on track": no budget is team=search alone; search-prod (finopti-prod, team=search)
    is the one inside it. "the data budget" has none: a clear error listing the budgets."""
    answer = cloud.budget_status(labels="team=search")
    assert (answer["name"], answer["actual"], answer["forecast"], answer["saved"]) == (
        "search-prod", 1602.46, 2300.15, True)
    with pytest.raises(InvalidArgument, match="no saved budget covers exactly team=data.*search-prod"):
        cloud.budget_status(team="data")


def test_create_use_and_delete_a_budget(fresh_sandbox: SandboxCloud) -> None:
    cloud = fresh_sandbox
    created = cloud.create_budget("dev-tight", 500, project="finopti-dev", thresholds=[50, {"percent": 120,
                                  "basis": "forecast"}], created_by="fiona@finopti.dev")
    assert created["filter"] == {"labels": {}, "project": "finopti-dev"}
    assert created["created_by"] == "fiona@finopti.dev"
    status = created["status"]
    assert (status["actual"], status["state"]) == (671.37, "over")
    assert [(t["percent"], t["basis"], t["crossed"]) for t in status["thresholds"]] == [
        (50.0, "actual", True), (120.0, "forecast", True)]
    with pytest.raises(AlreadyExists, match="dev-tight"):
        cloud.create_budget("dev-tight", 10)
    assert cloud.plan_budget_change("create_budget", "dev-tight", 10)["blocked"].startswith("budget 'dev-tight'")
    plan = cloud.plan_budget_change("delete_budget", "dev-tight")
    assert (plan["before"]["amount"], plan["after"], plan["undo"]) == (500.0, None, 'create budget "dev-tight" of 500')
    assert "dev-tight" in {b["name"] for b in SandboxCloud(cloud.db_path).list_budgets()}
    assert cloud.budget_status("dev-tight")["saved"] is True
    assert cloud.delete_budget("dev-tight")["deleted"] is True
    with pytest.raises(NotFound, match="budget 'dev-tight' not found"):
        cloud.budget_status("dev-tight")


def test_a_budget_plan_changes_nothing(fresh_sandbox: SandboxCloud) -> None:
    plan = fresh_sandbox.plan_budget_change("create_budget", "qa-limit", 400, labels="env=dev")
    assert (plan["changed"], plan["blocked"], plan["before"]) == (True, None, None)
    assert plan["undo"] == 'delete budget "qa-limit"'
    assert plan["after"]["filter"] == {"labels": {"env": "dev"}}
    assert plan["changes"][0] == "create budget qa-limit: $400.00 a month for env=dev"  # not "created": a plan
    assert "qa-limit" not in {b["name"] for b in fresh_sandbox.list_budgets()}
    with pytest.raises(NotFound, match="budget 'qa-limit' not found"):
        fresh_sandbox.plan_budget_change("delete_budget", "qa-limit")
    with pytest.raises(InvalidArgument, match="action must be one of create_budget"):
        fresh_sandbox.plan_budget_change("rename_budget", "qa-limit")


def test_should_we_buy_a_commitment(cloud: SandboxCloud) -> None:
    answer = cloud.commitment_recommendations()
    assert answer["commitments"][0]["name"] == "c2-us-central1-1y"
    assert answer["commitments"][0]["utilisation_percent"] == {"vcpus": 100.0, "memory_gb": 100.0}
    recs = {r["key"]: r for r in answer["recommendations"]}
    assert len(recs) == 12 and answer["total_monthly_saving"] == {"TWELVE_MONTH": 1871.08,
                                                                  "THIRTY_SIX_MONTH": 2781.33}
    top = answer["recommendations"][0]
    assert (top["key"], top["vcpus"]["recommended"], top["memory_gb"]["recommended"], top["monthly_saving_1y"]) == (
        "N2 us-central1", 42, 200, 587.48)
    c2 = recs["C2 us-central1"]  # 24 vCPUs run, 16 are committed: 8 more
    assert (c2["vcpus"]["baseline"], c2["vcpus"]["committed"], c2["vcpus"]["recommended"]) == (24.0, 16, 8)
    assert c2["after_rightsizing"]["instances"] == ["warehouse-loader-prod-01"]
    assert c2["after_rightsizing"]["vcpus"] == 4
    assert answer["total_monthly_saving_after_rightsizing_1y"] == 1351.13
    # Saving = amount x on-demand rate x 730 x 37 %.
    core, ram = SERIES_RATES["c2"]
    assert c2["monthly_saving_1y"] == round((8 * core + 32 * ram) * 730 * 0.37, 2)


def test_what_is_not_labelled(cloud: SandboxCloud) -> None:
    answer = cloud.unlabeled_spend()
    assert (answer["total_net"], answer["unlabeled"]["net"], answer["share"]) == (10644.73, 939.44, 0.0883)
    assert answer["by_service"] == [{"key": "Compute Engine", "net": 743.64}, {"key": "BigQuery", "net": 195.8}]
    assert answer["resource_count"] == 17
    bigquery = next(r for r in answer["resources"] if r["service"] == "BigQuery")
    assert bigquery["missing"] == ["team"] and bigquery["net"] == 195.8
    only_team = cloud.unlabeled_spend(keys=["team"])
    assert only_team["unlabeled"]["net"] == answer["by_missing_key"]["team"] == 678.77


def test_unused_resources_and_their_saving(cloud: SandboxCloud) -> None:
    answer = cloud.find_unused_resources()
    assert answer["monthly_cost_by_kind"] == {"unattached_disks": 185.0, "idle_addresses": 21.9,
                                              "old_snapshots": 170.25}
    assert answer["monthly_saving_usd"] == 377.15
    assert {a["name"] for a in answer["idle_addresses"]} == {"legacy-vpn-gateway", "old-lb-frontend",
                                                            "payments-api-prod-02-ip"}
    assert [s["age_days"] for s in answer["old_snapshots"]] == [399, 259, 189, 174, 119]
    assert len(answer["items"]) == 16 and answer["items"][0]["name"] == "ledger-db-restore-test"


def test_stopping_a_vm_makes_its_address_idle(fresh_sandbox: SandboxCloud) -> None:
    cloud = fresh_sandbox
    cloud.stop_instance("payments-api-prod-01")
    names = {a["name"] for a in cloud.find_unused_resources()["idle_addresses"]}
    assert "payments-api-prod-01-ip" in names
    cloud.delete_instance("search-frontend-prod-01")
    idle = {a["name"]: a for a in cloud.find_unused_resources()["idle_addresses"]}
    assert idle["search-frontend-prod-01-ip"]["reason"] == "reserved, used by nothing"


# -- properties the methods rest on -------------------------------------------------------------------


def test_a_spike_on_any_day_of_any_service_is_found(fresh_sandbox: SandboxCloud) -> None:
    """Add twice the service's usual day's cost on random days: each is found, nothing else new is."""
    cloud = fresh_sandbox
    conn = sqlite3.connect(cloud.db_path)
    rng = random.Random(7)
    injected = set()
    services = ["Compute Engine", "Networking", "Cloud Storage"]
    try:
        for _ in range(6):
            service = rng.choice(services)
            d = day("2026-09-01") + rng.randrange(0, 60) * DAY
            if any(abs(d - other) < 15 * DAY for _, other in injected):
                continue  # one injection per baseline window, so each is judged against clean history
            usual = conn.execute("SELECT SUM(cost + credits_total) FROM billing_export WHERE service_description = ? "
                                 "AND usage_start_time = ?", (service, d - 7 * DAY)).fetchone()[0]
            conn.execute("INSERT INTO billing_export SELECT billing_account_id, service_id, service_description, "
                         "sku_id, sku_description, usage_start_time, usage_end_time, project_id, project_name, "
                         "project_number, labels, location_location, location_region, location_zone, resource_name, "
                         "resource_global_name, export_time, ?, currency, currency_conversion_rate, usage_amount, "
                         "usage_unit, usage_amount_in_pricing_units, usage_pricing_unit, '[]', 0, invoice_month, "
                         "cost_type FROM billing_export WHERE service_description = ? AND usage_start_time = ? LIMIT 1",
                         (2 * usual, service, d))
            injected.add((service, d))
        conn.commit()
    finally:
        conn.close()
    found = cloud.detect_cost_anomalies(start="2026-08-20", end="2026-11-15")["anomalies"]
    spikes = {(a["service"], day(a["date"])) for a in found if a["kind"] == "spike"}
    assert spikes == injected | {("Networking", day("2026-11-12"))}


@pytest.mark.parametrize("seed", range(5))
def test_forecast_fit_recovers_trend_weekdays_and_a_level_shift(seed: int) -> None:
    rng = random.Random(seed)
    start = day("2026-10-01")
    days = [start + i * DAY for i in range(42)]
    level, slope = rng.uniform(100, 500), rng.uniform(-1, 1)
    shift_at, shift = rng.randrange(10, 35), rng.uniform(30, 60)
    weekend = rng.uniform(10, 30)
    values = [level + slope * i - (weekend if datetime.fromtimestamp(d, UTC).weekday() >= 5 else 0)
              + (shift if i >= shift_at else 0) + rng.uniform(-1, 1) for i, d in enumerate(days)]
    model = forecast.fit(days, values)
    described = model.describe()
    assert described["trend_per_day"] == pytest.approx(slope, abs=0.15)
    assert described["weekday_effects"]["Sat"] == pytest.approx(-weekend, abs=2)
    assert [s["from"] for s in described["level_shifts"]][:1] == [periods.iso_day(days[shift_at])]
    future = days[-1] + DAY
    expected = level + slope * 42 + shift - (weekend if datetime.fromtimestamp(future, UTC).weekday() >= 5 else 0)
    mean, sd = model.sum_interval([future])
    assert mean == pytest.approx(expected, abs=5) and 0 < sd < 5


def test_a_constant_series_forecasts_itself_exactly() -> None:
    days = [day("2026-10-01") + i * DAY for i in range(28)]
    model = forecast.fit(days, [42.0] * 28)
    assert model.sum_interval(days[:10]) == (pytest.approx(420.0), pytest.approx(0.0, abs=1e-6))
    assert model.describe()["level_shifts"] == []


# -- periods and bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "start", "end"), [
    ("yesterday", "2026-11-15", "2026-11-15"), ("last_7_days", "2026-11-09", "2026-11-15"),
    ("last_week", "2026-11-09", "2026-11-15"), ("this_month", "2026-11-01", "2026-11-15"),
    ("month to date", "2026-11-01", "2026-11-15"), ("last_month", "2026-10-01", "2026-10-31"),
    ("2026-09", "2026-09-01", "2026-09-30"), ("last_90_days", "2026-08-18", "2026-11-15"),
    ("q3", "2026-08-01", "2026-09-30"), ("last_quarter", "2026-08-01", "2026-09-30"),  # cut to the data
    ("this_quarter", "2026-10-01", "2026-11-15"), ("q4", "2026-10-01", "2026-11-15"),
    ("this_year", "2026-08-01", "2026-11-15"), ("november_12", "2026-11-12", "2026-11-12"),
    ("2026-11-10", "2026-11-10", "2026-11-10"), ("october_31", "2026-10-31", "2026-10-31"),
])  # fmt: skip
def test_named_periods(name: str, start: str, end: str) -> None:
    period = periods.resolve(name, None, None, SANDBOX_NOW_TS, BILLING_START_TS)
    assert (period.describe()["start"], period.describe()["end"]) == (start, end)


def test_periods_are_cut_to_the_data() -> None:
    cut = periods.resolve(None, "2026-07-01", "2026-12-31", SANDBOX_NOW_TS, BILLING_START_TS)
    assert cut.describe() == {"label": "2026-07-01 to 2026-12-31", "start": "2026-08-01", "end": "2026-11-15",
                              "days": 107}


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda c: c.cost_report(period="last_fortnight"), InvalidArgument, "unknown period 'last_fortnight'.*last_week"),
    (lambda c: c.cost_report(period="this_week"), InvalidArgument, "no billing data for this_week.*2026-11-15"),
    (lambda c: c.cost_report(period="2026-13"), InvalidArgument, "not a real month"),
    (lambda c: c.cost_report(start="2026-11-31"), InvalidArgument, "not a real date"),
    (lambda c: c.cost_report(start="2026-11-10", end="2026-11-01"), InvalidArgument, "ends .* before it starts"),
    (lambda c: c.cost_report(period="last_week", start="2026-11-01"), InvalidArgument, "either period or start/end"),
    (lambda c: c.cost_report(group_by="colour"), InvalidArgument, "group_by must be one of day, month, service"),
    (lambda c: c.cost_report(group_by="label"), InvalidArgument, "needs label_key"),
    (lambda c: c.cost_report(service="Compute Engien"), InvalidArgument, "unknown service.*Did you mean: Compute "),
    (lambda c: c.cost_report(project="finopti-qa"), InvalidArgument, "unknown project 'finopti-qa'.*finopti-prod"),
    (lambda c: c.cost_report(label="team"), InvalidArgument, "key=value"),
    (lambda c: c.cost_report(top=0), InvalidArgument, "top must be"),
    (lambda c: c.compare_costs(compare_to="2026-07"), InvalidArgument, "no billing data for 2026-07"),
    (lambda c: c.forecast_costs(lookback_days=3), InvalidArgument, "lookback_days must be between 7 and 90"),
    (lambda c: c.detect_cost_anomalies(threshold=0), InvalidArgument, "threshold must be a number between 1"),
    (lambda c: c.unlabeled_spend(keys=[]), InvalidArgument, "keys must be label names"),
    (lambda c: c.create_budget("Payments!", 10), InvalidArgument, "budget name"),
    (lambda c: c.create_budget("p", -5), InvalidArgument, "amount must be a number above 0"),
    (lambda c: c.create_budget("p", 5, thresholds=[{"percent": 50, "basis": "hope"}]), InvalidArgument, "basis"),
    (lambda c: c.create_budget("p", 5, thresholds=[0]), InvalidArgument, "percent must be above 0"),
    (lambda c: c.create_budget("p", 5, service="Cloud Spanner"), InvalidArgument, "unknown service"),
    (lambda c: c.budget_status(), InvalidArgument, "give a budget name, or an amount"),
    (lambda c: c.budget_status("payments", amount=5), InvalidArgument, "either a budget name or an amount"),
    (lambda c: c.budget_status("paymnts"), NotFound, "budget 'paymnts' not found. Did you mean: payments"),
    (lambda c: c.delete_budget("nope"), NotFound, "budget 'nope' not found"),
    (lambda c: c.commitment_recommendations(lookback_days=365), InvalidArgument, "lookback_days"),
    (lambda c: c.find_unused_resources(min_snapshot_age_days=0), InvalidArgument, "min_snapshot_age_days"),
    (lambda c: c.billing_export_rows(limit=10_000), InvalidArgument, "limit must be between 1 and 500"),
])  # fmt: skip
def test_bad_input(cloud: SandboxCloud, call, error, message: str) -> None:
    with pytest.raises(error, match=message):
        call(cloud)


def test_answers_are_json_and_show_their_work(cloud: SandboxCloud) -> None:
    answers = [cloud.cost_report(), cloud.compare_costs(), cloud.forecast_costs(), cloud.detect_cost_anomalies(),
               cloud.unlabeled_spend(), cloud.budget_status("payments"), cloud.commitment_recommendations(),
               cloud.find_unused_resources(), cloud.billing_export_rows()]
    assert json.loads(json.dumps(answers)) == answers
    for answer in answers:
        assert set(answer["explanation"]) == {"data", "period", "filter", "method"}
        assert all(isinstance(v, str) and v for v in answer["explanation"].values())


def test_the_sandbox_is_a_cloud_backend(tmp_path: Path) -> None:
    backend = open_backend(tmp_path)
    assert isinstance(backend, CloudBackend) and backend.db_path == tmp_path / "cloud" / "sandbox.db"
    with pytest.raises(ValueError, match="FINOPTI_CLOUD='gcp' is not available"):
        open_backend(tmp_path, {"FINOPTI_CLOUD": "gcp"})


def test_an_older_sandbox_file_is_refused_with_what_to_do(fresh_sandbox: SandboxCloud) -> None:
    path = fresh_sandbox.db_path
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="seeded by an older sandbox.*delete it"):
        SandboxCloud(path)


def test_per_day_totals_are_what_the_docs_table_shows(cloud: SandboxCloud) -> None:
    by_day = defaultdict(float)
    for g in cloud.cost_report(period="last_week", group_by="day")["groups"]:
        by_day[g["key"]] = g["net"]
    assert by_day["2026-11-09"] == 309.77 and by_day["2026-11-12"] == 1268.45 and by_day["2026-11-15"] == 293.49


def test_every_tool_of_the_tool_servers_is_a_backend_method(tmp_path: Path, monkeypatch) -> None:
    """The tool servers reach the cloud only through CloudBackend: each tool is a method of that name there."""
    from mcp.server.fastmcp import FastMCP

    from finopti.services.common import ServiceSettings
    from finopti.services.gcloud_tools.app import create_app as gcloud_tools
    from finopti.services.monitoring_tools.app import create_app as monitoring_tools

    tools: set[str] = set()
    register = FastMCP.tool

    def recording(self, *args, **kwargs):
        decorate = register(self, *args, **kwargs)

        def named(fn):
            tools.add(fn.__name__)
            return decorate(fn)

        return named

    monkeypatch.setattr(FastMCP, "tool", recording)
    fresh = ServiceSettings(home=tmp_path)
    gcloud_tools(fresh)
    monitoring_tools(fresh)
    protocol = {name for name in dir(CloudBackend) if not name.startswith("_")}
    assert len(tools) > 25 and tools <= protocol, tools - protocol
