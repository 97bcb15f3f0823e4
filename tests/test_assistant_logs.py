"""Questions about logs: the instances' (the sandbox's Cloud-Logging-like entries, documented in
docs/sandbox.md) and the platform's own (the log store, for roles that may read logs, decided by the gateway)."""

import time
from datetime import datetime

import httpx
import pytest

from finopti.cloud import InvalidArgument, NotFound, SandboxCloud
from finopti.cloud.catalog import SANDBOX_NOW_TS
from finopti.cloud.windows import bounds, describe

CAROL, ALICE, BOB = "carol@finopti.dev", "alice@finopti.dev", "bob@finopti.dev"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> SandboxCloud:
    return SandboxCloud(tmp_path_factory.mktemp("sandbox") / "sandbox.db")


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(("window", "start", "end"), [
    ("yesterday", "2026-11-15T00:00:00Z", "2026-11-16T00:00:00Z"),
    ("this_morning", "2026-11-15T06:00:00Z", "2026-11-16T00:00:00Z"),
    ("today", "2026-11-16T00:00:00Z", "2026-11-16T00:00:00Z"),
    ("this_week", "2026-11-16T00:00:00Z", "2026-11-16T00:00:00Z"),
    ("6h", "2026-11-15T18:00:00Z", "2026-11-16T00:00:00Z"),
    ("2d", "2026-11-14T00:00:00Z", "2026-11-16T00:00:00Z"),
])
def test_windows_on_the_sandbox_clock(window, start, end):
    assert bounds(window, SANDBOX_NOW_TS) == (_at(start), _at(end))


def test_windows_on_a_weekday_afternoon():
    wednesday = _at("2026-11-18T14:30:00Z")
    assert bounds("this_week", wednesday)[0] == _at("2026-11-16T00:00:00Z")
    assert bounds("this_morning", wednesday)[0] == _at("2026-11-18T06:00:00Z")
    assert bounds("today", wednesday)[0] == _at("2026-11-18T00:00:00Z")
    assert describe("1h") == "in the last hour" and describe("this_morning") == "since this morning"
    for bad in ("forever", "0h", "100d", "-2h"):
        with pytest.raises(InvalidArgument, match="window"):
            bounds(bad, wednesday)


def test_documented_answers(cloud):
    yesterday = cloud.query_instance_logs(min_severity="WARNING", window="yesterday")
    assert yesterday["total"] == 12
    assert [(i["instance"], i["entries"], i["worst_severity"]) for i in yesterday["instances"]] == [
        ("payments-api-prod-01", 3, "ERROR"), ("ci-runner-prod-04", 2, "ERROR"), ("ledger-db-prod-01", 2, "WARNING"),
        ("search-frontend-prod-01", 2, "WARNING"), ("bastion-dev-01", 1, "WARNING"),
        ("etl-worker-prod-02", 1, "WARNING"), ("indexer-dev-02", 1, "WARNING")]
    morning = cloud.query_instance_logs(min_severity="WARNING", window="this_morning")
    assert morning["total"] == 11 and "bastion-dev-01" not in {i["instance"] for i in morning["instances"]}
    prod = cloud.query_instance_logs(min_severity="WARNING", window="24h", label="env=prod")
    assert prod["total"] == 10
    slow = cloud.query_instance_logs(instance="ledger-db-prod-01", min_severity="WARNING", window="6h")
    assert [e["message"] for e in slow["entries"]] == ["slow query: 3.8 s on SELECT from ledger_entries"]
    critical = cloud.query_instance_logs(min_severity="CRITICAL", window="7d")
    assert [(e["instance"], e["timestamp"]) for e in critical["entries"]] == [
        ("etl-worker-prod-02", "2026-11-14T03:20:00Z")]
    full = cloud.query_instance_logs(text="DISK FULL", window="7d")
    assert [e["instance"] for e in full["entries"]] == ["ci-runner-prod-04"]
    assert cloud.query_instance_logs(window="this_week")["total"] == 0


def test_routine_entries_and_the_cloud_logging_shape(cloud):
    day = cloud.query_instance_logs(instance="notebook-dev-01", window="yesterday")
    assert day["total"] == 5 and day["by_severity"] == {"INFO": 5}
    entry = day["entries"][0]
    assert entry["logName"] == "projects/finopti-dev/logs/app" and entry["resource"] == {
        "type": "gce_instance", "labels": {"instance_id": "notebook-dev-01", "zone": "us-central1-b",
                                           "project_id": "finopti-dev"}}
    # ci-runner-prod-01 stopped at 2026-11-13T14:00Z: a NOTICE from the audit log, then silence.
    stopped = cloud.query_instance_logs(instance="ci-runner-prod-01", window="3d")
    last = stopped["entries"][0]
    assert (last["severity"], last["timestamp"]) == ("NOTICE", "2026-11-13T14:00:00Z")
    with pytest.raises(NotFound, match="ledger-db-prod-01"):
        cloud.query_instance_logs(instance="ledger-db-prod-1")
    with pytest.raises(InvalidArgument, match="min_severity"):
        cloud.query_instance_logs(min_severity="LOUD")


# ---------------------------------------------------------------- through the gateway


def test_instance_log_question_end_to_end(platform):
    answer = platform.ask("which instances logged warnings since this morning", user=CAROL)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["agent"], body["action"], body["arguments"]) == (
        "monitoring-agent", "query_instance_logs", {"min_severity": "WARNING", "window": "this_morning"})
    expected = SandboxCloud(platform.state.sandbox_db).query_instance_logs(min_severity="WARNING",
                                                                           window="this_morning")
    assert body["data"]["total"] == expected["total"] == 11
    assert body["answer"].startswith("11 entries at WARNING or worse in the logs of the instances since this morning")
    assert "payments-api-prod-01 3 (ERROR)" in body["answer"]
    assert body["view"]["rows"] == "entries"


def test_platform_log_question_finds_what_a_service_logged(platform):
    # A refused confirmation makes the orchestrator log a warning: ask about it once the collector shipped it.
    bad = httpx.post(f"{platform.edge}/api/ask/confirm", json={"token": "forged"}, headers=platform.headers(CAROL),
                     timeout=30)
    assert bad.status_code == 400
    deadline = time.monotonic() + 30
    while True:
        answer = platform.ask("did the orchestrator log any warnings in the last 10 minutes", user=CAROL)
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        if data["total"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert answer.json()["arguments"] == {"service": "orchestrator", "min_severity": "WARNING", "window": "10m"}
    assert any("confirmation refused" in m["message"] for m in data["messages"]), data["messages"]
    assert data["by_service"].keys() == {"orchestrator"} and set(data["by_level"]) <= {"warning", "error",
                                                                                    "critical"}
    assert "from orchestrator in the last 10 minutes" in answer.json()["answer"]


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_roles_that_may_not_read_logs_are_refused(platform, user):
    refused = platform.ask("errors from the gcloud agent in the last hour", user=user)
    assert refused.status_code == 403
    assert f"user {user} needs role observability_admin to run query_platform_logs" in refused.json()["message"]


def test_the_gateway_decides_the_log_store_hop_for_the_user(platform):
    """Even the monitoring agent reads the log store only for a user who may read logs."""
    for user, status in ((CAROL, 200), (BOB, 403), (ALICE, 403)):
        response = platform.mesh("monitoring-agent", "GET", "/logstore/api/logs?limit=1", user)
        assert response.status_code == status, (user, response.text)
    assert platform.mesh("gcloud-agent", "GET", "/logstore/api/logs?limit=1", CAROL).status_code == 403
