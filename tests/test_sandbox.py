"""Tests for the sandbox cloud backend (finopti.cloud)."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from finopti.cloud import SANDBOX_NOW, InvalidArgument, NotFound, SandboxCloud, SandboxError, default_db_path
from finopti.cloud.catalog import HOUR, SANDBOX_NOW_TS, SEEDED_MACHINE_TYPES, iso
from finopti.cloud.seed import build_plan

PLAN = build_plan()
DESIGNED = {
    profile: {i.name for i in PLAN.instances if i.profile == profile}
    for profile in ("idle", "overprovisioned", "busy", "steady", "stopped")
}
NOW = "2026-11-16T00:00:00Z"


@pytest.fixture(scope="module")
def shared(seeded_sandbox: Path) -> SandboxCloud:
    """The session's seeded sandbox, for read-only tests; tests that mutate get their own copy."""
    return SandboxCloud(seeded_sandbox)


@pytest.fixture
def cloud(fresh_sandbox: SandboxCloud) -> SandboxCloud:
    return fresh_sandbox


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def data_disk_owner() -> str:
    """A running instance that has a data disk, per the seed plan."""
    owners = {d.attached_to for d in PLAN.disks if not d.boot and d.attached_to}
    return sorted(owners & (DESIGNED["steady"] | DESIGNED["busy"]))[0]


# -- seeding -------------------------------------------------------------------------------------


def test_two_fresh_databases_are_identical(tmp_path: Path) -> None:
    a = SandboxCloud(tmp_path / "a.db")
    b = SandboxCloud(tmp_path / "b" / "b.db")  # parent directory is created
    assert dump(a.db_path) == dump(b.db_path)
    assert a.list_instances() == b.list_instances()
    assert a.estimate_monthly_cost("instance") == b.estimate_monthly_cost("instance")


def test_clock_is_fixed() -> None:
    assert SANDBOX_NOW.isoformat() == "2026-11-16T00:00:00+00:00"
    assert iso(SANDBOX_NOW_TS) == NOW


def test_reopening_does_not_reseed(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    SandboxCloud(path).delete_instance(data_disk_owner())
    assert len(SandboxCloud(path).list_instances()) == 47


def test_empty_file_is_seeded_and_garbage_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    assert len(SandboxCloud(empty).list_instances()) == 48
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SandboxError, match="not a usable sandbox database"):
        SandboxCloud(garbage)


def test_counts(shared: SandboxCloud) -> None:
    instances = shared.list_instances()
    assert len(instances) == 48
    assert Counter(i["zone"] for i in instances) == {
        "us-central1-a": 14,
        "us-central1-b": 10,
        "us-east1-b": 10,
        "europe-west1-b": 8,
        "asia-southeast1-a": 6,
    }
    assert Counter(i["state"] for i in instances) == {"RUNNING": 39, "TERMINATED": 9}
    assert {i["machine_type"] for i in instances} == set(SEEDED_MACHINE_TYPES)
    assert all(set(i["labels"]) == {"env", "team", "app"} for i in instances)
    disks = shared.list_disks()
    assert sum(d["boot"] for d in disks) == 48
    assert len(shared.list_disks(unattached_only=True)) == 8
    assert len(shared.list_buckets()) == 8
    assert [z["instances"] for z in shared.list_zones()] == [14, 10, 10, 8, 6]


def test_documented_facts(shared: SandboxCloud) -> None:
    """Pins the seed to the facts docs/sandbox.md shows; change both together."""
    assert [i["name"] for i in shared.list_instances(zone="us-central1-a")] == [
        "bastion-staging-01", "ci-runner-prod-01", "etl-worker-staging-01", "fraud-scorer-dev-01",
        "indexer-dev-01", "ledger-db-prod-01", "monitoring-prod-01", "notebook-staging-01",
        "notebook-staging-02", "payments-api-staging-01", "query-cache-prod-01", "query-cache-prod-02",
        "search-frontend-dev-01", "warehouse-loader-prod-01",
    ]  # fmt: skip
    assert [i["name"] for i in shared.find_idle_instances()] == [
        "search-frontend-prod-02", "indexer-dev-01", "query-cache-prod-01", "notebook-prod-03",
        "search-frontend-dev-03", "notebook-prod-02",
    ]  # fmt: skip
    assert {r["name"] for r in shared.rightsizing_recommendations() if r["action"] == "upsize"} == {
        "indexer-dev-02", "search-frontend-prod-01", "payments-api-prod-01", "etl-worker-prod-02",
        "ci-runner-prod-04",
    }  # fmt: skip
    assert shared.estimate_monthly_cost()["totals"] == {
        "compute": 5682.61, "disks": 1341.0, "storage": 534.65, "total": 7558.26,
    }  # fmt: skip
    assert sorted(d["name"] for d in shared.list_disks(unattached_only=True)) == [
        "bastion-old-boot", "ci-cache-2025", "etl-scratch-old", "ledger-db-restore-test",
        "monitoring-archive", "notebook-home-jdoe", "search-reindex-tmp", "warehouse-export-2025q3",
    ]  # fmt: skip


def test_running_instances_have_14_days_of_hourly_samples(shared: SandboxCloud) -> None:
    for inst in shared.list_instances(state="RUNNING"):
        for metric in ("cpu", "memory"):
            assert shared.query_time_series(inst["name"], metric, days=14)["samples"] == 14 * 24
    name = sorted(DESIGNED["steady"])[0]
    for metric in ("cpu", "memory"):
        series = shared.query_time_series(name, metric, days=14)
        assert series["samples"] == 14 * 24 == len(series["points"])
        assert series["points"][0]["ts"] == iso(SANDBOX_NOW_TS - (14 * 24 - 1) * HOUR)
        assert series["points"][-1]["ts"] == NOW
        assert all(0 <= p["value"] <= 100 for p in series["points"])


def test_stopped_time_has_no_samples(shared: SandboxCloud) -> None:
    stopped = [i for i in PLAN.instances if i.profile == "stopped"]
    partial = 0
    for inst in stopped:
        series = shared.query_time_series(inst.name, "cpu", days=14)
        assert all(p["ts"] <= iso(inst.stopped_at) for p in series["points"])
        expected = max(0, 14 * 24 - (SANDBOX_NOW_TS - inst.stopped_at) // HOUR)
        assert series["samples"] == expected
        partial += 0 < expected < 14 * 24
    assert partial >= 3  # some stopped inside the window, the rest before it
    assert any(shared.query_time_series(i.name, "cpu", days=14)["samples"] == 0 for i in stopped)


# -- listing and filters -------------------------------------------------------------------------


def test_zone_filter_returns_only_that_zone(shared: SandboxCloud) -> None:
    found = shared.list_instances(zone="europe-west1-b")
    assert len(found) == 8
    assert {i["zone"] for i in found} == {"europe-west1-b"}
    assert {i["name"] for i in found} == {i.name for i in PLAN.instances if i.zone == "europe-west1-b"}
    assert {d["zone"] for d in shared.list_disks(zone="us-east1-b")} == {"us-east1-b"}


def test_state_and_label_filters(shared: SandboxCloud) -> None:
    terminated = shared.list_instances(state="TERMINATED")
    assert {i["name"] for i in terminated} == DESIGNED["stopped"]
    assert shared.list_instances(state="stopped") == terminated  # alias, case-insensitive
    prod = shared.list_instances(label="env=prod")
    assert prod and all(i["labels"]["env"] == "prod" for i in prod)
    both = shared.list_instances(zone="us-central1-a", state="RUNNING", label="team=payments")
    assert {i["name"] for i in both} == {
        "ledger-db-prod-01",
        "payments-api-staging-01",
        "fraud-scorer-dev-01",
    }
    assert shared.list_instances(label="team=nobody") == []


def test_describe_instance(shared: SandboxCloud) -> None:
    info = shared.describe_instance("ledger-db-prod-01")
    assert info["zone"] == "us-central1-a" and info["machine_type"] == "c2-standard-8"
    assert info["vcpus"] == 8 and info["hourly_price_usd"] == 0.417616
    assert info["monthly_compute_usd"] == round(0.417616 * 730, 2)
    assert [d["name"] for d in info["disks"]] == ["ledger-db-prod-01", "ledger-db-prod-01-data"]
    assert info["disks"][0]["boot"] is True
    assert info["monthly_disks_usd"] == round(sum(d["monthly_cost_usd"] for d in info["disks"]), 2)
    stopped = shared.describe_instance(sorted(DESIGNED["stopped"])[0])
    assert stopped["state"] == "TERMINATED" and stopped["monthly_compute_usd"] == 0.0


def test_every_answer_is_json_serialisable(shared: SandboxCloud) -> None:
    name = sorted(DESIGNED["busy"])[0]
    answers = [
        shared.list_instances(),
        shared.describe_instance(name),
        shared.list_disks(),
        shared.list_buckets(),
        shared.find_idle_instances(),
        shared.rightsizing_recommendations(),
        shared.list_metrics(),
        shared.estimate_monthly_cost("label"),
        shared.query_time_series(name, "memory", 3, 6),
        shared.list_zones(),
        shared.list_machine_types(),
        shared.price_table(),
    ]
    assert json.loads(json.dumps(answers)) == answers


def test_catalogue_helpers(shared: SandboxCloud) -> None:
    assert [m["name"] for m in shared.list_metrics()] == ["cpu", "memory"]
    types = {m["name"]: m for m in shared.list_machine_types()}
    assert set(SEEDED_MACHINE_TYPES) <= set(types)
    assert types["n2-standard-4"]["vcpus"] == 4 and types["n2-standard-4"]["memory_gb"] == 16
    assert types["e2-medium"]["monthly_usd"] == round(0.033503 * 730, 2)
    assert (types["n2-standard-8"]["downsize_to"], types["n2-standard-8"]["upsize_to"]) == (
        "n2-standard-4",
        "n2-standard-16",
    )
    prices = shared.price_table()
    assert prices["disks_per_gb_month"] == {"pd-standard": 0.04, "pd-balanced": 0.10, "pd-ssd": 0.17}
    assert prices["storage_per_gb_month"]["ARCHIVE"] == 0.0012


# -- mutations -----------------------------------------------------------------------------------


def test_stop_then_list_shows_terminated_and_persists(cloud: SandboxCloud) -> None:
    name = "ledger-db-prod-01"
    result = cloud.stop_instance(name)
    before, after = result.pop("before"), result.pop("after")  # the audit trail's record of the change
    assert result == {
        "name": name,
        "zone": "us-central1-a",
        "previous_state": "RUNNING",
        "state": "TERMINATED",
        "changed": True,
        "message": f"instance {name} stopped",
    }
    assert (before["state"], after["state"]) == ("RUNNING", "TERMINATED") and before["name"] == name
    assert name in {i["name"] for i in cloud.list_instances(state="TERMINATED")}
    again = cloud.stop_instance(name)
    assert again["changed"] is False and "already TERMINATED" in again["message"]

    reopened = SandboxCloud(cloud.db_path)
    assert reopened.describe_instance(name)["state"] == "TERMINATED"
    assert reopened.describe_instance(name)["last_stop"] == NOW
    assert reopened.start_instance(name)["state"] == "RUNNING"
    assert SandboxCloud(cloud.db_path).describe_instance(name)["state"] == "RUNNING"
    assert cloud.start_instance(name)["changed"] is False


def test_resize_rules(cloud: SandboxCloud) -> None:
    name = "monitoring-prod-02"  # over-provisioned c2-standard-8
    with pytest.raises(InvalidArgument, match="monitoring-prod-02 is RUNNING; stop it"):
        cloud.resize_instance(name, "c2-standard-4")
    cloud.stop_instance(name)
    with pytest.raises(
        InvalidArgument, match="unknown machine type 'c2-standard-3'.*e2-small.*n2-standard-8"
    ):
        cloud.resize_instance(name, "c2-standard-3")
    result = cloud.resize_instance(name, "c2-standard-4")
    assert result["changed"] is True and result["previous_machine_type"] == "c2-standard-8"
    assert result["monthly_compute_change_usd"] == round(
        round(0.208808 * 730, 2) - round(0.417616 * 730, 2), 2
    )
    assert cloud.resize_instance(name, "c2-standard-4")["changed"] is False

    reopened = SandboxCloud(cloud.db_path)
    info = reopened.describe_instance(name)
    assert info["machine_type"] == "c2-standard-4" and info["hourly_price_usd"] == 0.208808
    assert info["last_resize"] == NOW
    reopened.start_instance(name)
    # Samples were taken at the old size, so the analyses no longer judge this instance.
    assert name not in {r["name"] for r in reopened.rightsizing_recommendations()}


def test_delete_frees_data_disks(cloud: SandboxCloud) -> None:
    name = data_disk_owner()
    unattached_before = {d["name"] for d in cloud.list_disks(unattached_only=True)}
    result = cloud.delete_instance(name)
    assert result["deleted_disks"] == [name] and result["detached_disks"] == [f"{name}-data"]

    reopened = SandboxCloud(cloud.db_path)
    with pytest.raises(NotFound, match=name):
        reopened.describe_instance(name)
    with pytest.raises(NotFound):
        reopened.query_time_series(name, "cpu")
    disks = {d["name"]: d for d in reopened.list_disks()}
    assert name not in disks  # the boot disk went with the instance
    assert disks[f"{name}-data"]["attached_to"] is None
    unattached_after = {d["name"] for d in reopened.list_disks(unattached_only=True)}
    assert unattached_after == unattached_before | {f"{name}-data"}
    assert len(reopened.list_instances()) == 47


def test_concurrent_use_from_threads(cloud: SandboxCloud) -> None:
    names = sorted(DESIGNED["steady"])[:6]
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for _ in range(5):
                cloud.stop_instance(name)
                cloud.list_instances(state="RUNNING")
                cloud.start_instance(name)
                cloud.estimate_monthly_cost()
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cloud.list_instances(state="RUNNING")) == 39


# -- analyses ------------------------------------------------------------------------------------


def test_idle_detection_finds_the_designed_idle_instances(shared: SandboxCloud) -> None:
    idle = shared.find_idle_instances()
    assert {i["name"] for i in idle} == DESIGNED["idle"]
    assert not {i["name"] for i in idle} & DESIGNED["busy"]
    hourly = {m["name"]: m["hourly_usd"] for m in shared.list_machine_types()}
    for item in idle:
        series = shared.query_time_series(item["name"], "cpu", days=7)
        assert item["avg_cpu"] == series["avg"] < 5
        assert item["max_cpu"] == series["max"]
        assert item["samples"] == 7 * 24
        assert item["monthly_saving_usd"] == round(hourly[item["machine_type"]] * 730, 2)
    savings = [i["monthly_saving_usd"] for i in idle]
    assert savings == sorted(savings, reverse=True)
    assert idle[0]["name"] == "search-frontend-prod-02"  # the idle n2-standard-8


def test_idle_threshold_extremes(shared: SandboxCloud) -> None:
    assert shared.find_idle_instances(cpu_threshold=0) == []
    # At 100 % every running instance with data counts; the stopped ones never do.
    everything = {i["name"] for i in shared.find_idle_instances(cpu_threshold=100, days=1)}
    assert (
        everything == DESIGNED["idle"] | DESIGNED["overprovisioned"] | DESIGNED["busy"] | DESIGNED["steady"]
    )


def test_busy_instances_really_are_busy(shared: SandboxCloud) -> None:
    for name in DESIGNED["busy"]:
        series = shared.query_time_series(name, "cpu", days=14)
        assert series["avg"] > 70 and series["p95"] > 85


def test_rightsizing_recommendations(shared: SandboxCloud) -> None:
    recs = {r["name"]: r for r in shared.rightsizing_recommendations()}
    downsized = {n for n, r in recs.items() if r["action"] == "downsize"}
    upsized = {n for n, r in recs.items() if r["action"] == "upsize"}
    assert downsized == DESIGNED["idle"] | DESIGNED["overprovisioned"]
    assert upsized == DESIGNED["busy"]
    monthly = {m["name"]: m["monthly_usd"] for m in shared.list_machine_types()}
    for name, rec in recs.items():
        cpu = shared.query_time_series(name, "cpu", days=14)
        memory = shared.query_time_series(name, "memory", days=14)
        assert rec["cpu_p95"] == cpu["p95"] and rec["memory_p95"] == memory["p95"]
        if rec["action"] == "downsize":
            assert rec["cpu_p95"] < 30 and rec["memory_p95"] < 40 and rec["monthly_saving_usd"] > 0
        else:
            assert rec["cpu_p95"] > 85 and rec["monthly_saving_usd"] < 0
        expected = round(monthly[rec["machine_type"]] - monthly[rec["recommended_machine_type"]], 2)
        assert rec["monthly_saving_usd"] == expected
    assert recs["monitoring-prod-02"]["recommended_machine_type"] == "c2-standard-4"
    assert recs["ci-runner-prod-04"]["recommended_machine_type"] == "c2-standard-16"
    assert recs["notebook-prod-02"]["recommended_machine_type"] == "e2-micro"
    assert recs["notebook-prod-03"]["recommended_machine_type"] == "e2-standard-2"  # n2 bottom -> e2


def test_cost_totals_add_up(shared: SandboxCloud) -> None:
    total = shared.estimate_monthly_cost()
    by_instance = shared.estimate_monthly_cost("instance")
    by_team = shared.estimate_monthly_cost("label", "team")
    assert total["totals"] == by_instance["totals"] == by_team["totals"]
    t = total["totals"]
    assert t["total"] == pytest.approx(t["compute"] + t["disks"] + t["storage"], abs=1e-9)

    # Compute: recomputed independently from the instance list and the price list.
    monthly = {m["name"]: m["monthly_usd"] for m in shared.list_machine_types()}
    running = shared.list_instances(state="RUNNING")
    assert t["compute"] == pytest.approx(sum(monthly[i["machine_type"]] for i in running), abs=1e-6)
    assert t["disks"] == pytest.approx(sum(d["monthly_cost_usd"] for d in shared.list_disks()), abs=1e-6)
    assert t["storage"] == pytest.approx(sum(b["monthly_cost_usd"] for b in shared.list_buckets()), abs=1e-6)

    for report in (by_instance, by_team):
        for column in ("compute", "disks", "storage", "total"):
            assert sum(g[column] for g in report["groups"]) == pytest.approx(t[column], abs=1e-6)
    per_instance = {g["key"]: g for g in by_instance["groups"]}
    assert per_instance["ledger-db-prod-01"]["compute"] == round(0.417616 * 730, 2)
    assert per_instance[sorted(DESIGNED["stopped"])[0]]["compute"] == 0.0
    assert per_instance["(buckets)"]["storage"] == t["storage"]
    assert {g["key"] for g in by_team["groups"]} == {
        "payments",
        "search",
        "data",
        "platform",
        "(no team label)",
    }
    assert total["groups"] == [] and by_team["label_key"] == "team"


def test_stopping_an_instance_lowers_compute_cost(cloud: SandboxCloud) -> None:
    before = cloud.estimate_monthly_cost()["totals"]
    cloud.stop_instance("ledger-db-prod-01")
    after = cloud.estimate_monthly_cost()["totals"]
    assert after["compute"] == pytest.approx(before["compute"] - round(0.417616 * 730, 2), abs=1e-6)
    assert after["disks"] == before["disks"]


def test_time_series_steps_and_stats(shared: SandboxCloud) -> None:
    hourly = shared.query_time_series("ledger-db-prod-01", "cpu", days=1)
    values = [p["value"] for p in hourly["points"]]
    assert len(values) == 24 and hourly["start"] == "2026-11-15T00:00:00Z" and hourly["end"] == NOW
    assert hourly["avg"] == round(sum(values) / 24, 2)
    assert hourly["max"] == max(values)
    assert hourly["p95"] == sorted(values)[math.ceil(0.95 * 24) - 1]
    six = shared.query_time_series("ledger-db-prod-01", "cpu", days=1, step_hours=6)
    assert [p["ts"] for p in six["points"]] == [
        "2026-11-15T06:00:00Z",
        "2026-11-15T12:00:00Z",
        "2026-11-15T18:00:00Z",
        NOW,
    ]
    for i, point in enumerate(six["points"]):
        assert point["value"] == round(sum(values[6 * i : 6 * i + 6]) / 6, 2)
    assert (six["avg"], six["max"], six["p95"]) == (hourly["avg"], hourly["max"], hourly["p95"])


def test_time_series_of_long_stopped_instance_is_empty(shared: SandboxCloud) -> None:
    name = next(
        i.name
        for i in PLAN.instances
        if i.profile == "stopped" and i.stopped_at < SANDBOX_NOW_TS - 14 * 86400
    )
    series = shared.query_time_series(name, "cpu", days=14)
    assert series["points"] == [] and series["avg"] is None and "no samples" in series["note"]


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda c: c.describe_instance("ledger-db-prod-1"),
            NotFound,
            "'ledger-db-prod-1' not found.*ledger-db-prod-01",
        ),
        (lambda c: c.stop_instance("nope"), NotFound, "instance 'nope' not found"),
        (lambda c: c.describe_instance(""), InvalidArgument, "non-empty"),
        (
            lambda c: c.list_instances(zone="us-west1-a"),
            InvalidArgument,
            "unknown zone 'us-west1-a'.*us-central1-a",
        ),
        (lambda c: c.list_disks(zone="mars-1a"), InvalidArgument, "unknown zone 'mars-1a'"),
        (lambda c: c.list_instances(state="PAUSED"), InvalidArgument, "unknown state 'PAUSED'"),
        (lambda c: c.list_instances(state=["RUNNING"]), InvalidArgument, "unknown state"),
        (lambda c: c.list_instances(zone=["us-east1-b"]), InvalidArgument, "unknown zone"),
        (lambda c: c.list_instances(label="env"), InvalidArgument, "key=value"),
        (lambda c: c.find_idle_instances(days=0), InvalidArgument, "days must be between 1 and 14, got 0"),
        (lambda c: c.find_idle_instances(days=15), InvalidArgument, "days must be between 1 and 14"),
        (lambda c: c.find_idle_instances(days="7"), InvalidArgument, "whole number"),
        (lambda c: c.find_idle_instances(days=True), InvalidArgument, "whole number"),
        (
            lambda c: c.find_idle_instances(cpu_threshold=-1),
            InvalidArgument,
            "cpu_threshold must be between 0",
        ),
        (lambda c: c.find_idle_instances(cpu_threshold=101), InvalidArgument, "cpu_threshold"),
        (lambda c: c.find_idle_instances(cpu_threshold=float("nan")), InvalidArgument, "cpu_threshold"),
        (lambda c: c.rightsizing_recommendations(days=30), InvalidArgument, "days"),
        (
            lambda c: c.estimate_monthly_cost("zone"),
            InvalidArgument,
            "group_by must be one of instance, label",
        ),
        (lambda c: c.estimate_monthly_cost("label", ""), InvalidArgument, "label_key"),
        (
            lambda c: c.query_time_series("ledger-db-prod-01", "disk"),
            InvalidArgument,
            "metric must be one of cpu",
        ),
        (lambda c: c.query_time_series("ledger-db-prod-01", "cpu", 1, 0), InvalidArgument, "step_hours"),
        (
            lambda c: c.query_time_series("ledger-db-prod-01", "cpu", 1, 25),
            InvalidArgument,
            "between 1 and 24",
        ),
        (lambda c: c.query_time_series("ghost", "cpu"), NotFound, "instance 'ghost' not found"),
        (lambda c: c.resize_instance("ghost", "e2-small"), NotFound, "ghost"),
    ],
)
def test_bad_input(shared: SandboxCloud, call, error: type[SandboxError], message: str) -> None:
    with pytest.raises(error, match=message):
        call(shared)


def test_errors_are_sandbox_errors() -> None:
    assert issubclass(NotFound, SandboxError) and issubclass(InvalidArgument, SandboxError)


def test_default_db_path() -> None:
    assert default_db_path({"FINOPTI_HOME": "/srv/finopti"}) == Path("/srv/finopti/cloud/sandbox.db")
    assert default_db_path({}) == Path(".finopti/cloud/sandbox.db")
