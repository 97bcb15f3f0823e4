"""Entity recognition: the spans of a prompt that name something in the inventory, each with its readings.

A span is read the way names are built (parts split on `-`): "ledger db prod 1" is `ledger-db-prod-01`,
"us central1 a" and "uscentral1a" are `us-central1-a`. A reading is:

- `exact`: the parts (numbers compared as numbers) or the letters and digits run together are the name's;
- `corrected`: same parts but with a typo in the letters ("ledgr"), never in a number or a short part;
- `partial`: the span is the beginning of several names, or of one ("ledger db prod");
- `near`: only a number differs ("payments-api-prod-07"): which one was meant is a question, not a guess;
- `unknown`: a token shaped like a resource name that is in no inventory (the tools answer for it).

A span can mean several things at once (an instance and its boot disk share a name; "notebook prod" is the
start of three instances and the labels app=notebook, env=prod): the action that is asked picks the reading.
"""

import re
from dataclasses import dataclass, field
from functools import lru_cache

from rapidfuzz.distance import OSA

from finopti.services.orchestrator.inventory import Inventory
from finopti.services.orchestrator.text import parts

MAX_SPAN = 6

# Words that never belong to a name: a span stops at them.
STOPWORDS = frozenset("""
a an the in on of to for from and or with by per at is are was were be been being me my our we it its i you your
please all any some this that these those what which how who where when do does did can could would should will
shall may might must has have had not no yes there here over under below above last past since during within into
onto as so than then also just only about up down off again named called like vs versus than
""".split())

# Label values that are also ordinary words: taken as a label only next to a label key or a resource noun
# ("the data team", "search vms"), never alone ("search the logs", "data disks").
COMMON_WORDS = frozenset({"data", "search", "platform", "monitoring", "api", "cache", "query", "app", "web",
                          "test", "old", "new", "home", "boot", "logs", "archive", "export"})
LABEL_KEY_WORDS = {"team": "team", "teams": "team", "env": "env", "environment": "env", "environments": "env",
                   "app": "app", "application": "app", "apps": "app", "applications": "app"}
RESOURCE_NOUNS = frozenset({"instance", "instances", "vm", "vms", "server", "servers", "machine", "machines",
                            "resources", "resource", "box", "boxes", "nodes", "node", "workloads", "fleet"})

# Other ways to say a platform service's name.
SERVICE_ALIASES = {
    "gateway": ("envoy", "proxy", "api gateway", "edge"),
    "ui": ("web ui", "chat ui", "user interface", "console", "web app"),
    "policy": ("policy service", "policy engine", "opa", "authz", "authorization service"),
    "logstore": ("log store", "loki", "log database"),
    "collector": ("log collector", "log shipper"),
    "orchestrator": ("the orchestrator",),
    "gcloud-tools": ("gcloud tool server", "gcloud tools server", "gcloud mcp server"),
    "monitoring-tools": ("monitoring tool server", "monitoring tools server", "monitoring mcp server"),
}
_LABEL_TOKEN = re.compile(r"^([a-z][a-z0-9_]*)[=:]([a-z0-9][a-z0-9_.-]*)$")
_NAME_SHAPED = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")
_MACHINE_SHAPED = re.compile(r"^[a-z]\d[a-z]?-")
NEW_LABEL_KEYS = {"team": "team", "env": "env", "environment": "env"}
NOT_A_VALUE = frozenset({"each", "every", "whole", "entire", "their", "which", "what", "one", "same", "other",
                         "another", "new", "own", "single", "per", "by", "cost", "costs", "spend", "label", "tag"})
_ZONE_SHAPED = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")  # us-west2-a: a zone, even one we have no instance in


@dataclass(frozen=True)
class Reading:
    kind: str  # instance, disk, bucket, zone, region, machine_type, label, service, name
    value: str | None  # None when several candidates fit equally
    quality: str  # exact, corrected, partial, near, unknown
    candidates: tuple[str, ...] = ()


@dataclass
class Mention:
    start: int
    end: int
    said: str
    readings: list[Reading] = field(default_factory=list)

    def reading(self, kind: str) -> Reading | None:
        return next((r for r in self.readings if r.kind == kind), None)


@dataclass(frozen=True)
class Entry:
    kind: str
    value: str
    parts: tuple[str, ...]
    compact: str


def _norm(part: str) -> str:
    return str(int(part)) if part.isdigit() else part


def _digits(part: str) -> str:
    return "".join(c for c in part if c.isdigit())


def _tolerance(length: int) -> int:
    return 0 if length <= 3 else 1 if length <= 5 else 2


# Words people say for a part of a name.
PART_SYNONYMS = {"db": {"database", "databases"}, "prod": {"production"}, "dev": {"development"},
                 "staging": {"stage", "stg"}, "api": {"apis"}}
_CANONICAL_PART = {word: part for part, words in PART_SYNONYMS.items() for word in words}


@lru_cache(maxsize=1 << 16)
def compare_part(said: str, name: str) -> str:
    """'equal', 'close' (a typo in letters) or 'different'."""
    if _norm(said) == _norm(name) or said in PART_SYNONYMS.get(name, ()):
        return "equal"
    if said.isdigit() or name.isdigit() or _digits(said) != _digits(name):
        return "different"
    if OSA.distance(said, name) <= _tolerance(min(len(said), len(name))):
        return "close"
    return "different"


def _compare(said: tuple[str, ...], name: tuple[str, ...]) -> str:
    """'equal', 'close', 'near' (only numbers differ) or 'different', for parts of the same length."""
    if len(said) != len(name):
        return "different"
    verdicts = [compare_part(s, n) for s, n in zip(said, name, strict=True)]
    if all(v == "equal" for v in verdicts):
        return "equal"
    if all(v in ("equal", "close") for v in verdicts):
        return "close"
    numbers_differ = all(v != "different" or (s.isdigit() and n.isdigit())
                         for v, s, n in zip(verdicts, said, name, strict=True))
    return "near" if numbers_differ else "different"


def _prefix(said: tuple[str, ...], name: tuple[str, ...]) -> bool:
    return len(said) < len(name) and all(compare_part(s, n) != "different" for s, n in zip(said, name, strict=False))


class EntityIndex:
    """Every name of an inventory, ready to be matched."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        entries: list[Entry] = []

        def add(kind: str, value: str, spoken: str | None = None) -> None:
            split = tuple(parts(spoken or value))
            entries.append(Entry(kind, value, split, "".join(split)))

        for inst in inventory.instances:
            add("instance", inst.name)
        for disk in inventory.disks:
            add("disk", disk["name"])
        for bucket in inventory.buckets:
            add("bucket", bucket)
        for zone in inventory.zones:
            add("zone", zone)
        for region in inventory.regions():
            add("region", region)
        for machine_type in inventory.machine_types:
            add("machine_type", machine_type)
        for project in inventory.projects:
            add("project", project)
        for service in inventory.services:
            add("service", service)
            for alias in SERVICE_ALIASES.get(service, ()):
                add("service", service, alias.replace(" ", "-"))
        self.label_values: dict[tuple[str, ...], list[str]] = {}
        for key, values in inventory.labels.items():
            for value in values:
                self.label_values.setdefault(tuple(_norm(p) for p in parts(value)), []).append(f"{key}={value}")
        self.entries = entries
        self.first_parts = {e.parts[0] for e in entries} | {p[0] for p in self.label_values}
        self.compacts = {e.compact for e in entries}

    def regions(self) -> dict[str, list[str]]:
        return self.inventory.regions()

    def _starts_name(self, token_parts: list[str]) -> bool:
        first = token_parts[0]
        if "".join(token_parts) in self.compacts:  # "uscentral1a"
            return True
        return any(compare_part(first, known) != "different" for known in self.first_parts)

    def _label_reading(self, said: tuple[str, ...]) -> Reading | None:
        """The span as label values one after another ("notebook prod" = app=notebook, env=prod)."""
        found: dict[str, str] = {}
        i = 0
        while i < len(said):
            for size in range(len(said) - i, 0, -1):
                key = tuple(_CANONICAL_PART.get(p, _norm(p)) for p in said[i:i + size])
                # "notebooks", "bastions": a value said in the plural
                pairs = self.label_values.get(key) or self.label_values.get((*key[:-1], key[-1].removesuffix("s")))
                if pairs:
                    key, _, value = pairs[0].partition("=")
                    if key in found:
                        return None
                    found[key] = value
                    i += size
                    break
            else:
                return None
        value = ",".join(f"{k}={v}" for k, v in sorted(found.items()))
        return Reading("label", value, "exact")

    def readings(self, said: tuple[str, ...]) -> list[Reading]:
        """Every reading of one span's parts, best first per kind."""
        compact = "".join(said)
        by_kind: dict[str, dict[str, list[str]]] = {}
        for entry in self.entries:
            verdict = "equal" if entry.compact == compact else _compare(said, entry.parts)
            if verdict == "different" and _prefix(said, entry.parts):
                verdict = "prefix"
            if verdict != "different":
                by_kind.setdefault(entry.kind, {}).setdefault(verdict, []).append(entry.value)
        out: list[Reading] = []
        for kind, verdicts in by_kind.items():
            for verdict, quality in (("equal", "exact"), ("close", "corrected")):
                values = sorted(set(verdicts.get(verdict, [])))
                if values:
                    out.append(Reading(kind, values[0] if len(values) == 1 else None, quality, tuple(values)))
                    break
            else:
                if kind in ("instance", "disk", "bucket"):
                    prefixed = sorted(set(verdicts.get("prefix", [])))
                    near = sorted(set(verdicts.get("near", [])))
                    if prefixed and len(said) >= 2:
                        out.append(Reading(kind, prefixed[0] if len(prefixed) == 1 else None, "partial",
                                           tuple(prefixed)))
                    elif near:
                        out.append(Reading(kind, None, "near", tuple(near)))
        label = self._label_reading(said)
        if label is not None:
            out.append(label)
        return out


_last_index: list[EntityIndex] = []


def index_for(inventory: Inventory) -> EntityIndex:
    """The index of this very inventory object (the cache hands out one object until it refreshes)."""
    if not _last_index or _last_index[0].inventory is not inventory:
        _last_index[:] = [EntityIndex(inventory)]
    return _last_index[0]


def _label_context(tokens: tuple[str, ...], start: int, end: int) -> bool:
    after = tokens[end] if end < len(tokens) else ""
    before = tokens[start - 1] if start > 0 else ""
    if after in LABEL_KEY_WORDS or before in LABEL_KEY_WORDS or before in ("label", "labelled", "labeled", "tagged"):
        return True
    if before == "for" and set(tokens) & (COST_NOUNS | BUDGET_CONTEXT):  # "a $1.5k budget for search"
        return True
    # "search vm logs": first in the prompt, an ordinary word is a verb, not a team.
    return start > 0 and (after in RESOURCE_NOUNS or after in COST_NOUNS)


ONE_DISK = frozenset({"disk", "volume", "boot"})
# "the search budget", "data spend": a label value before a money word is a slice of spend.
COST_NOUNS = frozenset({"budget", "budgets", "spend", "spending", "cost", "costs", "bill"})
BUDGET_CONTEXT = frozenset({"stay", "under", "within", "exceed", "afford", "forecast", "spent", "billing"})


def _keep(reading: Reading, said: tuple[str, ...], tokens: tuple[str, ...], start: int, end: int,
          readings: list[Reading]) -> bool:
    if reading.kind == "label" and len(said) == 1 and said[0] in COMMON_WORDS:
        return _label_context(tokens, start, end)
    if reading.kind == "disk" and any(r.kind == "instance" and r.value == reading.value for r in readings):
        # A boot disk is named after its instance: the name means the disk only when a disk is spoken of
        # ("the disk ledger-db-prod-01"); "what disks does ledger-db-prod-01 have" asks about the instance's.
        near = set(tokens[max(0, start - 2):start]) | set(tokens[end:end + 1])
        return bool(near & ONE_DISK)
    return True


def find_mentions(tokens: tuple[str, ...], inventory: Inventory) -> list[Mention]:
    """Longest spans first, left to right; a token belongs to at most one mention."""
    index = index_for(inventory)
    mentions: list[Mention] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        explicit = _LABEL_TOKEN.match(token)
        if explicit:
            key = LABEL_KEY_WORDS.get(explicit.group(1), explicit.group(1))
            mentions.append(Mention(i, i + 1, token, [Reading("label", f"{key}={explicit.group(2)}", "exact")]))
            i += 1
            continue
        token_parts = parts(token)
        if token in STOPWORDS or not token_parts or not index._starts_name(token_parts):
            i += 1
            continue
        found = None
        for end in range(min(len(tokens), i + MAX_SPAN), i, -1):
            span = tokens[i:end]
            if any(t in STOPWORDS for t in span[1:]):
                continue
            said = tuple(p for t in span for p in parts(t))
            found_readings = index.readings(said)
            readings = [r for r in found_readings if _keep(r, said, tokens, i, end, found_readings)]
            if readings:
                found = Mention(i, end, " ".join(span), readings)
                break
        if found is None:
            i += 1
            continue
        mentions.append(found)
        i = found.end
    return _with_unknown_names(tokens, mentions)


def _with_unknown_names(tokens: tuple[str, ...], mentions: list[Mention]) -> list[Mention]:
    """Tokens shaped like resource names (`web-dev-01`) or zones (`us-west2-a`) that no inventory knows, and a
    word before "team" or "env" ("the marketing team"): the tools will answer for them (a 404, the valid zones,
    a team's spend of 0 rather than everyone's)."""
    taken = {i for m in mentions for i in range(m.start, m.end)}
    for i, token in enumerate(tokens):
        if i in taken:
            continue
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if after in NEW_LABEL_KEYS and token.isalpha() and len(token) > 2 and token not in STOPWORDS | NOT_A_VALUE:
            value = f"{NEW_LABEL_KEYS[after]}={token}"
            mentions.append(Mention(i, i + 1, token, [Reading("label", value, "unknown")]))
            continue
        if not _NAME_SHAPED.match(token) or _MACHINE_SHAPED.match(token):
            continue
        named = i > 0 and tokens[i - 1] in ("named", "called", "instance", "vm", "server", "disk", "bucket")
        if _ZONE_SHAPED.match(token):
            mentions.append(Mention(i, i + 1, token, [Reading("zone", token, "unknown")]))
        elif any(c.isdigit() for c in token) or named:
            mentions.append(Mention(i, i + 1, token, [Reading("name", token, "unknown")]))
    return sorted(mentions, key=lambda m: m.start)
