"""The sandbox's filters the assistant uses, checked against the documented facts (docs/sandbox.md)."""

import pytest

from finopti.cloud import InvalidArgument, NotFound, SandboxCloud


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> SandboxCloud:
    return SandboxCloud(tmp_path_factory.mktemp("sandbox") / "sandbox.db")


def test_inventory_names_everything(cloud):
    inv = cloud.inventory()
    assert len(inv["instances"]) == 48 and len(inv["buckets"]) == 8 and len(inv["zones"]) == 5
    assert {"name": "ledger-db-prod-01", "zone": "us-central1-a", "machine_type": "c2-standard-8",
            "state": "RUNNING", "labels": {"env": "prod", "team": "payments", "app": "ledger-db"}} in inv["instances"]
    assert {"name": "etl-scratch-old", "zone": "us-central1-a", "attached_to": None} in inv["disks"]
    assert {"name": "e2-small", "downsize_to": "e2-micro", "upsize_to": "e2-medium"} in inv["machine_types"]


def test_instances_by_machine_type_and_several_labels(cloud):
    assert [i["name"] for i in cloud.list_instances(machine_type="n2-highmem-4")] == [
        "bastion-staging-02", "fraud-scorer-staging-01", "indexer-dev-01", "notebook-staging-02"]
    both = cloud.list_instances(label="env=prod,team=payments")
    assert [i["name"] for i in both] == ["fraud-scorer-prod-01", "fraud-scorer-prod-02", "ledger-db-prod-01",
                                         "payments-api-prod-01", "payments-api-prod-02", "payments-api-prod-03"]
    with pytest.raises(InvalidArgument, match="key=value"):
        cloud.list_instances(label="env=prod,team")


def test_idle_and_rightsizing_in_one_zone_or_label(cloud):
    assert [i["name"] for i in cloud.find_idle_instances(zone="us-central1-a")] == [
        "indexer-dev-01", "query-cache-prod-01"]
    assert [i["name"] for i in cloud.find_idle_instances(label="env=prod")] == [
        "search-frontend-prod-02", "query-cache-prod-01", "notebook-prod-03", "notebook-prod-02"]
    asia = cloud.rightsizing_recommendations(zone="asia-southeast1-a")
    assert {r["name"] for r in asia} == {"monitoring-prod-02", "monitoring-prod-03", "etl-worker-prod-03",
                                         "notebook-prod-03", "ci-runner-prod-04"}
    with pytest.raises(InvalidArgument, match="unknown zone"):
        cloud.find_idle_instances(zone="mars-1a")


def test_one_disk_or_bucket_by_name(cloud):
    assert [d["monthly_cost_usd"] for d in cloud.list_disks(name="ledger-db-restore-test")] == [85.0]
    assert [b["monthly_cost_usd"] for b in cloud.list_buckets(name="finopti-ml-datasets")] == [133.33]
    with pytest.raises(NotFound, match="Did you mean: etl-scratch-old"):
        cloud.list_disks(name="etl-scratch-olde")
    with pytest.raises(NotFound, match="finopti-db-backups"):
        cloud.list_buckets(name="finopti-db-backup")


def test_cost_of_one_instance_and_of_labelled_resources(cloud):
    one = cloud.estimate_monthly_cost(instance="ledger-db-prod-01")
    assert one["group_by"] == "instance" and [g["key"] for g in one["groups"]] == ["ledger-db-prod-01"]
    assert one["totals"]["compute"] == 304.86 and one["totals"]["total"] == one["groups"][0]["total"]
    payments = cloud.estimate_monthly_cost(label="team=payments")
    assert payments["totals"]["total"] == 1865.15  # the documented per-team figure
    with pytest.raises(NotFound, match="ledger-db-prod-01"):
        cloud.estimate_monthly_cost(instance="ledger-db-prod-1")
