"""The orchestrator's entity-first parser, on the sandbox's inventory (no platform needed)."""

import pytest

from finopti.services.orchestrator.catalog import ACTIONS
from finopti.services.orchestrator.evaluation import PARTS, accuracy, evaluate, load, sandbox_inventory
from finopti.services.orchestrator.examples import example_intent, suggestions
from finopti.services.orchestrator.inventory import Inventory
from finopti.services.orchestrator.parser import render_prompt, understand
from finopti.services.orchestrator.quantities import Window, find_quantities
from finopti.services.orchestrator.text import normalize


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> Inventory:
    return sandbox_inventory(tmp_path_factory.mktemp("sandbox"))


@pytest.mark.parametrize(("part", "goal"), [("tune", 0.97), ("held_out", 0.95)])
def test_evaluation_set_accuracy(inventory, part, goal):
    """The issue's goal on the held-out part (written before the parser, never tuned on)."""
    verdicts = evaluate(load(part), inventory)
    assert len(verdicts) >= 150
    assert accuracy(verdicts)["arguments"] >= goal


def test_the_evaluation_set_is_large_and_covers_every_action():
    rows = [row for part in PARTS for row in load(part)]
    assert len(rows) >= 300
    covered = {row.get("action") for row in rows} | {row["clarify"].get("action") for row in rows if "clarify" in row}
    assert {spec.name for spec in ACTIONS} <= covered
    for part in PARTS:
        assert any(row.get("out_of_scope") for row in load(part))
        assert any("clarify" in row for row in load(part))


def test_every_offered_option_reads_back_as_its_intent(inventory):
    """A clarifying question's choices are prompts the parser maps to exactly the intent offered."""
    checked = 0
    for part in PARTS:
        for row in load(part):
            for option in understand(row["prompt"], inventory).options:
                got = understand(option.prompt, inventory)
                assert got.intent == option.intent, (row["prompt"], option.prompt, got)
                checked += 1
    assert checked >= 40


def test_every_action_example_names_real_things_and_reads_back(inventory):
    for spec in ACTIONS:
        intent = example_intent(spec, inventory)
        assert intent is not None, spec.name
        known = {i.name for i in inventory.instances} | set(inventory.zones) | set(inventory.services) | set(
            inventory.machine_types)
        for arg, value in intent.arguments.items():
            slot = spec.slot(arg)  # by kind: a budget's "name" or a billed "service" is no inventory name
            if slot is not None and slot.kind in ("instance", "zone", "service", "machine_type"):
                assert value in known, (spec.name, arg, value)
        assert understand(render_prompt(intent), inventory).intent == intent, render_prompt(intent)


@pytest.mark.parametrize(("prompt", "action", "arguments", "note"), [
    ("stop ledgr-db-prod-01", "stop_instance", {"name": "ledger-db-prod-01"}, "ledger-db-prod-01"),
    ("ledger db prod 1 memory over 2 days", "query_time_series",
     {"instance": "ledger-db-prod-01", "metric": "memory", "days": 2}, "ledger-db-prod-01"),
    ("memory of the ledger database in prod", "query_time_series",
     {"instance": "ledger-db-prod-01", "metric": "memory"}, "ledger-db-prod-01"),
])
def test_names_read_tolerantly_say_how_they_were_read(inventory, prompt, action, arguments, note):
    got = understand(prompt, inventory)
    assert (got.intent.action, got.intent.arguments) == (action, arguments)
    assert any(note in n for n in got.notes), got.notes


def test_a_number_that_differs_is_a_question_never_a_guess(inventory):
    got = understand("delete payments-api-prod-09", inventory)
    assert got.kind == "clarify" and got.about == "delete_instance" and got.missing == "name"
    assert {o.intent.arguments["name"] for o in got.options} == {
        "payments-api-prod-01", "payments-api-prod-02", "payments-api-prod-03"}


def test_a_mutation_needs_its_verb(inventory):
    """A bare name is described, never stopped or deleted; a listing never answers a 'delete'."""
    assert understand("notebook-dev-01", inventory).intent.action == "describe_instance"
    assert understand("delete disk etl-scratch-old", inventory).kind == "unknown"
    assert understand("delete the bucket finopti-app-logs", inventory).kind == "unknown"


def test_without_an_inventory_exact_names_still_work():
    empty = Inventory()
    assert understand("stop instance web-dev-01", empty).intent.arguments == {"name": "web-dev-01"}
    got = understand("resize web-dev-01 to e2-small", empty)
    assert got.kind == "clarify" and got.missing == "machine_type"  # no catalogue: e2-small is unknown
    assert understand("find idle instances below 3% over 10 days", empty).intent.arguments == {
        "cpu_threshold": 3.0, "days": 10}


def test_out_of_scope_suggestions_name_what_exists(inventory):
    got = understand("ssh into bastion-dev-01", inventory)
    assert got.kind == "unknown" and "bastion-dev-01" in got.mentioned
    offered = suggestions(inventory, list(got.mentioned))
    assert offered and all("bastion-dev-01" in s["prompt"] for s in offered)
    assert all(understand(s["prompt"], inventory).intent for s in offered)


@pytest.mark.parametrize(("text", "said", "days"), [
    ("past 10 days", "10d", 10), ("last 24 hours", "24h", 1), ("yesterday", "yesterday", 1),
    ("this week", "this_week", 7), ("48 hours", "48h", 2), ("a fortnight", "14d", 14), ("two weeks", "14d", 14),
    ("past hour", "1h", 1), ("30m", "30m", 1), ("since this morning", "this_morning", 1), ("an hour", "1h", 1),
])
def test_time_windows(text, said, days):
    windows = [q.value for q in find_quantities(normalize(text).tokens, set()) if q.kind == "window"]
    assert windows == [Window(said)] and windows[0].days == days


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("under 3%", "percent", 3.0), ("below 3 percent", "percent", 3.0), ("less than 1.5", "below", 1.5),
    ("over 80%", "above", 80.0), ("<5%", "percent", 5.0),
])
def test_percentages_and_thresholds(text, kind, value):
    found = find_quantities(normalize(text).tokens, set())
    assert [(q.kind, q.value) for q in found] == [(kind, value)]


def test_quoted_text_is_set_aside():
    prompt = normalize('search the instance logs for "Out of memory" please')
    assert prompt.quoted == ("Out of memory",) and "memory" not in prompt.tokens


@pytest.mark.parametrize(("prompt", "amount"), [
    ("stay under the 5k budget", 5000.0), ("a $2,500 budget", 2500.0), ("3000 dollars", 3000.0),
    ("create a budget of 400", 400.0), ("5 thousand a month", 5000.0), ("an 8k budget", 8000.0),
    ("idle below 3%", None), ("top 5 skus", None), ("cpu of ledger-db-prod-01 over 2 days", None),
])  # fmt: skip
def test_amounts_of_money(prompt, amount):
    found = [q.value for q in find_quantities(normalize(prompt).tokens, set()) if q.kind == "money"]
    assert found == ([amount] if amount is not None else [])


@pytest.mark.parametrize(("prompt", "period"), [
    ("what did we spend last week", "last_week"), ("what did we spend last month", "last_month"),
    ("what did we spend in the past week", "last_7_days"), ("cost report for the last 45 days", "last_45_days"),
    ("what did we spend yesterday", "yesterday"), ("what did we spend in october", "october"),
    ("what did we spend so far this month", "this_month"), ("what did we spend in Q3", "q3"),
    ("what did we spend last quarter", "last_quarter"), ("what did we spend in the prior week", "last_week"),
])  # fmt: skip
def test_billing_periods(inventory, prompt, period):
    got = understand(prompt, inventory).intent
    assert got.action == "cost_report" and got.arguments == {"period": period}


def test_a_rate_is_not_a_period(inventory):
    """"a month" is how often, not which days: still the inventory's monthly estimate."""
    assert understand("what do we spend a month", inventory).intent.action == "estimate_monthly_cost"


@pytest.mark.parametrize("prompt", [
    "don't stop ledger-db-prod-01", "do not delete notebook-dev-01", "never shut down query-cache-prod-02",
    "please don't ever delete ledger-db-prod-01", "why didn't ledger-db-prod-01 stop",
    "please do NOT restart or stop ledger-db-prod-01", "i do not want you to delete notebook-dev-01",
])  # fmt: skip
def test_a_change_said_with_not_is_no_change(inventory, prompt):
    assert understand(prompt, inventory).kind == "unknown"


@pytest.mark.parametrize("prompt", [
    "stop all instances except ledger-db-prod-01", "shut down everything but ledger-db-prod-01",
    "stop every running vm other than ledger-db-prod-01",
])  # fmt: skip
def test_what_is_left_out_is_never_the_target(inventory, prompt):
    """"all but X" names X only to leave it out: a question (never a plan for X), and X is not offered."""
    got = understand(prompt, inventory)
    assert got.kind == "clarify" and got.about == "stop_instance" and got.missing == "name", got
    assert got.options and "ledger-db-prod-01" not in {o.intent.arguments["name"] for o in got.options}
    assert any("left out" in note for note in got.notes)


def test_instances_described_by_labels_are_a_question(inventory):
    got = understand("stop all prod notebooks", inventory)
    assert got.kind == "clarify" and got.about == "stop_instance"
    assert {o.intent.arguments["name"] for o in got.options} == {"notebook-prod-01", "notebook-prod-02",
                                                                 "notebook-prod-03"}
    got = understand("can you stop the ledger staging db", inventory)  # even one fitting instance is asked
    assert got.kind == "clarify" and [o.intent.arguments for o in got.options] == [{"name": "ledger-db-staging-01"}]


def test_two_changes_in_one_prompt_offer_each(inventory):
    got = understand("stop ledger-db-prod-01 then delete notebook-dev-01", inventory)
    assert got.kind == "clarify"
    assert {(o.intent.action, o.intent.arguments["name"]) for o in got.options} >= {
        ("stop_instance", "ledger-db-prod-01"), ("delete_instance", "notebook-dev-01")}


def test_full_width_and_unknown_zones(inventory):
    full_width = understand("describe ＬＥＤＧＥＲ-ＤＢ-ＰＲＯＤ-０１", inventory).intent
    assert full_width.arguments == {"name": "ledger-db-prod-01"}
    # a zone we have nothing in is still a zone: the tool answers that it is unknown (not "no disk us-west2-a")
    assert understand("list instances in us-west2-a", inventory).intent.arguments == {"zone": "us-west2-a"}


def test_projects_filter_billing(inventory):
    got = understand("spend for the finopti-prod project last week", inventory).intent
    assert (got.action, got.arguments) == ("cost_report", {"period": "last_week", "project": "finopti-prod"})


@pytest.mark.parametrize(("prompt", "action", "arguments"), [
    ("which instances are not in prod", "list_instances", {}),
    ("costs without bigquery last month", "cost_report", {"period": "last_month"}),
    ("idle vms except the ones in prod", "find_idle_instances", {}),
    ("list instances in us-central1-a in us-central1-a", "list_instances", {"zone": "us-central1-a"}),
    ("spend year to date", "cost_report", {"period": "this_year"}),
    ("per-service breakdown for october", "cost_report", {"period": "october", "group_by": "service"}),
])  # fmt: skip
def test_what_is_left_out_never_filters(inventory, prompt, action, arguments):
    got = understand(prompt, inventory).intent
    assert (got.action, got.arguments) == (action, arguments)


def test_a_team_or_service_we_do_not_have_is_passed_on_never_dropped(inventory):
    """Dropping it would answer with everyone's spend: passed on, the tool answers 0 or which services exist."""
    got = understand("costs for the marketing team last month", inventory).intent
    assert got.arguments == {"period": "last_month", "label": "team=marketing"}
    assert understand("cloud sql spend last month", inventory).intent.arguments == {
        "period": "last_month", "service": "Cloud SQL"}
    assert understand("how much do our gpus cost", inventory).kind == "unknown"


def test_asking_which_could_be_stopped_is_no_stop(inventory):
    assert understand("are there vms we could turn off to save money", inventory).intent.action == \
        "find_idle_instances"
    assert understand("notebook-dev-01 should be stopped", inventory).intent.action == "stop_instance"


@pytest.mark.parametrize(("prompt", "period"), [
    ("what did networking cost on november 12", "november_12"), ("spend on 2026-11-10", "2026-11-10"),
    ("cost report for 12th nov", "november_12"),
])  # fmt: skip
def test_one_day_is_a_period(inventory, prompt, period):
    got = understand(prompt, inventory).intent
    assert got.action == "cost_report" and got.arguments["period"] == period


def test_a_change_of_disks_or_addresses_is_no_instance_change(inventory):
    """Never a question offering instances to delete: disks, buckets, addresses are out of scope for changes."""
    for prompt in ("delete all unattached disks", "remove the old snapshots", "stop the idle ips"):
        got = understand(prompt, inventory)
        assert got.kind == "unknown" or got.about not in ("delete_instance", "stop_instance"), (prompt, got)
        assert got.intent is None or not got.intent.action.endswith("_instance"), (prompt, got)
    # the disks an instance has are the instance's (describe lists them all), not its boot disk alone
    assert understand("what disks does ledger-db-prod-01 have", inventory).intent.action == "describe_instance"


def test_two_periods_are_a_question_except_in_a_comparison(inventory):
    got = understand("spend for september and october by month", inventory)
    assert got.kind == "clarify" and got.missing == "period"
    assert {o.intent.arguments["period"] for o in got.options} == {"september", "october"}
    assert understand("compare oct and sept spend", inventory).intent.arguments == {"period": "october"}
