"""Example prompts built from what exists: the capabilities a 422 lists and the suggestions it offers name real
instances, zones and services, so every one of them can be asked as it is."""

from finopti.services.orchestrator.catalog import ACTIONS, ActionSpec
from finopti.services.orchestrator.inventory import Inventory
from finopti.services.orchestrator.parser import Intent, render_prompt


def _pick(inventory: Inventory, subject: str | None) -> dict[str, str | None]:
    running = [i for i in inventory.instances if i.state == "RUNNING"]
    stopped = [i for i in inventory.instances if i.state != "RUNNING"]
    chosen = inventory.instance(subject) if subject else None
    run = chosen if chosen and chosen.state == "RUNNING" else (running[0] if running else None)
    stop = chosen if chosen and chosen.state != "RUNNING" else (stopped[0] if stopped else None)
    smaller = None
    if stop is not None:
        smaller = (inventory.machine_types.get(stop.machine_type) or {}).get("downsize_to")
    services = [s for s in inventory.services if s.endswith("-agent")] or list(inventory.services)
    return {
        "{running}": run.name if run else None,
        "{stopped}": stop.name if stop else None,
        "{smaller}": smaller,
        "{zone}": (chosen.zone if chosen else sorted(inventory.zones)[0]) if inventory.zones else None,
        "{disk}": inventory.disks[0]["name"] if inventory.disks else None,
        "{bucket}": inventory.buckets[0] if inventory.buckets else None,
        "{service}": services[0] if services else None,
    }


def example_intent(spec: ActionSpec, inventory: Inventory, subject: str | None = None) -> Intent | None:
    """The action's example with names from the inventory; None when the inventory has nothing to name."""
    values = _pick(inventory, subject)
    example = dict(spec.example)
    about = next((slot for slot in spec.slots if slot.kind == "instance"), None)
    if subject and about is not None:  # the example, about the instance that was named
        kept = {"metric", "days", "window", "severity"}
        example = {a: v for a, v in example.items() if spec.slot(a) and spec.slot(a).kind in kept}
        example[about.arg] = subject
    args = {}
    for arg, value in example.items():
        if isinstance(value, str) and value in values:
            if values[value] is None:
                return None
            value = values[value]
        args[arg] = value
    return Intent(spec.agent, spec.name, args)


def examples(inventory: Inventory, subject: str | None = None, actions: tuple[ActionSpec, ...] = ACTIONS) -> list[dict]:
    """One example prompt per action (about `subject` when the action takes an instance)."""
    out = []
    for spec in actions:
        intent = example_intent(spec, inventory, subject)
        if intent is not None:
            out.append({"prompt": render_prompt(intent), "description": spec.summary, "agent": spec.agent,
                        "action": spec.name, "mutates": spec.mutates})
    return out


def suggestions(inventory: Inventory, mentioned: list[str], limit: int = 6) -> list[dict]:
    """For a prompt that maps to nothing: what can be asked about the instance it named, else a varied few."""
    subject = next((m for m in mentioned if inventory.instance(m)), None)
    if subject:
        about = [s for s in ACTIONS if any(slot.kind == "instance" for slot in s.slots) and not s.mutates]
        return examples(inventory, subject, tuple(about))[:limit]
    return [e for e in examples(inventory) if not e["mutates"]][:limit]
