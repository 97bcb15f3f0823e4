"""The orchestrator's deterministic intent parser."""

import pytest

from finopti.services.orchestrator.intents import capabilities, parse_intent


@pytest.mark.parametrize(
    ("prompt", "agent", "action", "arguments"),
    [
        ("list instances in us-central1-a", "gcloud-agent", "list_instances", {"zone": "us-central1-a"}),
        ("List running VMs with label env=prod", "gcloud-agent", "list_instances",
         {"state": "RUNNING", "label": "env=prod"}),
        ("list stopped instances in us-east1-b", "gcloud-agent", "list_instances",
         {"zone": "us-east1-b", "state": "TERMINATED"}),
        ("describe instance ledger-db-prod-01", "gcloud-agent", "describe_instance", {"name": "ledger-db-prod-01"}),
        ("stop instance indexer-dev-01", "gcloud-agent", "stop_instance", {"name": "indexer-dev-01"}),
        ("start indexer-dev-01", "gcloud-agent", "start_instance", {"name": "indexer-dev-01"}),
        ("delete the vm notebook-prod-02", "gcloud-agent", "delete_instance", {"name": "notebook-prod-02"}),
        ("resize web-dev-01 to e2-small", "gcloud-agent", "resize_instance",
         {"name": "web-dev-01", "machine_type": "e2-small"}),
        ("find idle instances", "gcloud-agent", "find_idle_instances", {}),
        ("Find idle VMs below 3% over the last 14 days", "gcloud-agent", "find_idle_instances",
         {"cpu_threshold": 3.0, "days": 14}),
        ("rightsizing recommendations", "gcloud-agent", "rightsizing_recommendations", {}),
        ("monthly cost by team", "gcloud-agent", "estimate_monthly_cost", {"group_by": "label", "label_key": "team"}),
        ("what do we spend per instance", "gcloud-agent", "estimate_monthly_cost", {"group_by": "instance"}),
        ("list unattached disks", "gcloud-agent", "list_disks", {"unattached_only": True}),
        ("show buckets", "gcloud-agent", "list_buckets", {}),
        ("cpu utilization of ledger-db-prod-01 over 3 days", "monitoring-agent", "query_time_series",
         {"instance": "ledger-db-prod-01", "metric": "cpu", "days": 3}),
        ("memory usage for ledger-db-prod-01", "monitoring-agent", "query_time_series",
         {"instance": "ledger-db-prod-01", "metric": "memory"}),
        ("which metrics can I query", "monitoring-agent", "list_metrics", {}),
    ],
)
def test_prompts_map_to_actions(prompt, agent, action, arguments):
    intent = parse_intent(prompt)
    assert intent is not None
    assert (intent.agent, intent.action, intent.arguments) == (agent, action, arguments)


@pytest.mark.parametrize("prompt", ["hello", "sing me a song about clouds", ""])
def test_unmappable_prompts_give_none(prompt):
    assert parse_intent(prompt) is None


def test_every_capability_example_parses():
    for example in capabilities():
        assert parse_intent(example) is not None, example
