"""What the assistant can be asked, as data: each agent action with the words that ask for it and the slots
its arguments are filled from. The parser (`parser.py`) has no rule of its own about any action.

Adding an action is declaring it here:

    ActionSpec(
        agent="gcloud-agent", name="list_snapshots", summary="List disk snapshots",
        template="list snapshots[ older than {days} days]",
        words={"snapshot": 2.5, "snapshots": 2.5, "old": 0.5},
        slots=(Slot("days", "days"), Slot("zone", "zone")),
    )

- `words`: phrases (several words, `*` for up to four words in between: "turn * off") and how much each says
  "this action" (a negative weight says "not this one"). `verbs` are words that change something or that no
  other action may share: another action asked with one of them is penalised.
- `slots`: each argument, the kind of thing that fills it (`SLOT_KINDS`) and whether it is required; a
  missing required argument makes the assistant ask for it instead of guessing.
- Without any of its words an action is not considered, unless the arguments in `implied_by` are all there
  (an instance and a machine type: a resize). A mutation needs one of its `verbs` or `implied_by`.
- `template`: the canonical prompt for an intent (segments in [brackets] appear when their argument is set);
  it is what a clarifying question offers, and the parser must read it back to the same intent.
"""

from dataclasses import dataclass, field

# What fills a slot. Entities come from the inventory; the rest from the shared vocabulary below or from
# quantities (windows, percentages) and quoted text.
SLOT_KINDS = {
    "instance": "an instance's name",
    "disk": "a disk's name",
    "bucket": "a bucket's name",
    "zone": "a zone (a region with a single zone counts)",
    "machine_type": "a machine type",
    "label": "labels key=value (several joined by ',')",
    "service": "a platform service",
    "state": "RUNNING or TERMINATED",
    "metric": "cpu or memory",
    "severity": "WARNING, ERROR or CRITICAL (the least severe level wanted)",
    "group_by": "how to group costs (sets group_by and label_key)",
    "unattached": "true: only disks attached to nothing",
    "percent": "a percentage (a threshold)",
    "days": "whole days back from now",
    "window": "a time window: 30m, 6h, 2d, today, yesterday, this_morning, this_week",
    "text": "quoted text to search for",
    "period": "a billing period: last_week, last_month, this_month, yesterday, last_<n>_days, a month's name",
    "cloud_service": "a billed cloud service: Compute Engine, Networking, Cloud Storage, BigQuery",
    "cost_group": "how to break costs down (service, project, sku, region, resource, day, month or a label)",
    "amount": "an amount of money",
    "label_key": "a label key that spend lacks (team, env)",
    "project": "a project's name (billing actions' filter)",
}


@dataclass(frozen=True)
class Slot:
    arg: str
    kind: str
    required: bool = False
    weight: float | None = None  # how much filling it says "this action" (default: per kind)
    default: object = None  # a value the intent always carries when the prompt says nothing (metric: cpu)
    ask: str = ""  # the question when it is missing


@dataclass(frozen=True)
class ActionSpec:
    agent: str
    name: str
    summary: str
    template: str
    words: dict[str, float] = field(default_factory=dict)
    verbs: dict[str, float] = field(default_factory=dict)
    slots: tuple[Slot, ...] = ()
    mutates: bool = False
    # Arguments whose presence alone asks for this action (a bare instance name: describe it).
    implied_by: tuple[str, ...] = ()
    # An example's arguments; "{running}", "{stopped}", "{zone}", "{disk}", "{bucket}", "{service}",
    # "{smaller}" (a smaller type for "{stopped}") are filled from the inventory, so examples name what exists.
    example: dict = field(default_factory=dict)

    def slot(self, arg: str) -> Slot | None:
        return next((s for s in self.slots if s.arg == arg), None)


# ------------------------------------------------------------------ shared vocabulary (slot values)

STATE_WORDS = {
    "running": "RUNNING", "up": "RUNNING", "active": "RUNNING", "powered on": "RUNNING", "live": "RUNNING",
    "started": "RUNNING", "online": "RUNNING",
    "stopped": "TERMINATED", "terminated": "TERMINATED", "down": "TERMINATED", "off": "TERMINATED",
    "powered off": "TERMINATED", "not running": "TERMINATED", "halted": "TERMINATED", "inactive": "TERMINATED",
    "shut off": "TERMINATED", "offline": "TERMINATED", "switched off": "TERMINATED", "turned off": "TERMINATED",
}
METRIC_WORDS = {
    "cpu": "cpu", "cpus": "cpu", "processor": "cpu", "load": "cpu", "loaded": "cpu", "busy": "cpu",
    "overloaded": "cpu", "working": "cpu", "how hard": "cpu", "compute load": "cpu",
    "memory": "memory", "ram": "memory", "mem": "memory", "short on memory": "memory",
    "running out of ram": "memory", "running out of memory": "memory", "memory pressure": "memory",
    "low on memory": "memory", "out of ram": "memory", "how idle": "cpu", "maxing out": "cpu", "maxed out": "cpu",
    "pegged": "cpu", "maxed": "cpu",
}
SEVERITY_WORDS = {
    "warning": "WARNING", "warnings": "WARNING", "warn": "WARNING", "unusual": "WARNING",
    "anything unusual": "WARNING", "problem": "WARNING", "problems": "WARNING", "issue": "WARNING",
    "issues": "WARNING", "anomalies": "WARNING", "anything wrong": "WARNING", "wrong": "WARNING",
    "anything bad": "WARNING", "bad": "WARNING", "suspicious": "WARNING", "anything odd": "WARNING",
    "error": "ERROR", "errors": "ERROR", "failure": "ERROR", "failures": "ERROR", "failed": "ERROR",
    "exceptions": "ERROR", "exception": "ERROR", "crash": "ERROR", "crashes": "ERROR", "crashed": "ERROR",
    "critical": "CRITICAL", "fatal": "CRITICAL", "critical errors": "CRITICAL", "emergency": "CRITICAL",
    "emergencies": "CRITICAL",
}
UNATTACHED_WORDS = {
    "unattached": True, "orphaned": True, "orphan": True, "orphans": True, "detached": True, "not attached": True,
    "dangling": True, "unused": True, "attached to nothing": True, "not in use": True, "free floating": True,
    "free-floating": True, "leftover": True, "forgotten": True, "nobody is using": True, "no one is using": True,
    "not used": True, "not being used": True, "nobody uses": True, "lying around": True,
}
_GROUP_KEYS = {
    ("label", "team"): ("team", "teams"),
    ("label", "env"): ("env", "envs", "environment", "environments"),
    ("label", "app"): ("app", "apps", "application", "applications"),
    ("instance", None): ("instance", "instances", "vm", "vms", "server", "servers", "machine", "machines"),
}
GROUP_WORDS: dict[str, tuple[str, str | None]] = {
    **{f"{prep} {word}": group
       for group, words in _GROUP_KEYS.items()
       for word in words
       for prep in ("by", "per", "each", "for each", "for every", "across", "broken down by", "grouped by",
                    "split by")},
    # "which team spends the most", "the most expensive instances": a ranking is a breakdown.
    **{f"{which} {word}": group
       for group, words in _GROUP_KEYS.items() if group[0] == "label"
       for word in words
       for which in ("which", "what")},
    **{f"{most} {word}": ("instance", None) for word in _GROUP_KEYS[("instance", None)]
       for most in ("most expensive", "cheapest", "least expensive", "top *")},
    **{f"{word} {verb} the most": ("instance", None) for word in _GROUP_KEYS[("instance", None)]
       for verb in ("cost", "costs", "that cost", "that costs")},
    **{f"{verb} the most": ("instance", None) for verb in ("costing us", "costing", "costs us", "cost us")},
}
# Billing periods said in words (windows such as "last week" or "past 30 days" come from quantities.py).
MONTH_NAMES = ("january", "february", "march", "april", "june", "july", "august", "september", "october",
               "november", "december")  # not "may": too often a verb
PERIOD_WORDS = {
    "this month": "this_month", "month to date": "this_month", "month-to-date": "this_month", "mtd": "this_month",
    "so far this month": "this_month", "current month": "this_month", "this month so far": "this_month",
    "month over month": "last_month", "month-over-month": "last_month", "week over week": "last_week",
    "week-over-week": "last_week", "previous month": "last_month", "the month before": "last_month",
    "month on month": "last_month", "week on week": "last_week", "prior month": "last_month",
    "prior week": "last_week",
    # quarters: q1..q4 is the latest such quarter that has begun
    **{q: q for q in ("q1", "q2", "q3", "q4")},
    **{f"{n} quarter": f"q{i}" for i, n in enumerate(("first", "second", "third", "fourth"), 1)},
    "last quarter": "last_quarter", "previous quarter": "last_quarter", "prior quarter": "last_quarter",
    "this quarter": "this_quarter", "quarter to date": "this_quarter", "qtd": "this_quarter",
    "this year": "this_year", "year to date": "this_year", "ytd": "this_year", "so far this year": "this_year",
    **{m: m for m in MONTH_NAMES}, **{f"in {m}": m for m in MONTH_NAMES},
    **{m[:3]: m for m in MONTH_NAMES if m[:3] not in ("mar", "jun", "jul")}, "sept": "september",
}
# GCP's service names as people say them (service.description in the billing export).
CLOUD_SERVICE_WORDS = {
    "bigquery": "BigQuery", "big query": "BigQuery", "bq": "BigQuery",
    "networking": "Networking", "network": "Networking", "egress": "Networking", "bandwidth": "Networking",
    "data transfer": "Networking", "compute engine": "Compute Engine", "gce": "Compute Engine",
    "cloud storage": "Cloud Storage", "gcs": "Cloud Storage",
    # services this project does not use: passed on, so the tool says which ones it knows (never the total)
    "cloud sql": "Cloud SQL", "gke": "Kubernetes Engine", "kubernetes engine": "Kubernetes Engine",
    "kubernetes": "Kubernetes Engine", "cloud run": "Cloud Run", "cloud functions": "Cloud Functions",
    "pubsub": "Pub/Sub", "pub/sub": "Pub/Sub", "spanner": "Cloud Spanner", "bigtable": "Cloud Bigtable",
    "dataflow": "Dataflow", "vertex ai": "Vertex AI", "memorystore": "Memorystore",
}
_COST_GROUPS = {
    ("service", None): ("service", "services"), ("project", None): ("project", "projects"),
    ("sku", None): ("sku", "skus"), ("region", None): ("region", "regions"),
    ("resource", None): ("resource", "resources"), ("day", None): ("day",), ("month", None): ("month",),
}
COST_GROUP_WORDS: dict[str, tuple[str, str | None]] = {
    **{f"{prep} {word}": group
       for group, words in {**_COST_GROUPS, **{g: w for g, w in _GROUP_KEYS.items() if g[0] == "label"}}.items()
       for word in words
       for prep in ("by", "per", "each", "for each", "for every", "across", "broken down by", "grouped by",
                    "split by")
       if not (word == "month" and prep in ("per", "each", "for each", "for every"))},  # "per month": a rate
    **{f"{which} {word}": group
       for group, words in {**_COST_GROUPS, **{g: w for g, w in _GROUP_KEYS.items() if g[0] == "label"}}.items()
       for word in words if group[0] not in ("day", "month")
       for which in ("which", "what", "top", "top *", "biggest", "largest", "most expensive")},  # top 3 services
    "daily": ("day", None), "day by day": ("day", None), "per day": ("day", None), "each day": ("day", None),
    "month by month": ("month", None),
}
LABEL_KEY_SAID = {
    **{f"{key} {noun}": key for key in ("team", "env") for noun in ("label", "labels", "tag", "tags")},
    # "what isn't tagged with an env", "resources with no team"
    **{f"{how} {key}": key for key in ("team", "env")
       for how in ("tagged with a", "tagged with an", "labeled with a", "labeled with an", "labelled with a",
                   "labelled with an", "no", "without a", "without an")},
    "environment label": "env", "environment tag": "env", "environment labels": "env",
}
# Values a slot kind takes from the vocabulary above.
VOCABULARY: dict[str, dict] = {
    "state": STATE_WORDS,
    "metric": METRIC_WORDS,
    "severity": SEVERITY_WORDS,
    "unattached": UNATTACHED_WORDS,
    "group_by": GROUP_WORDS,
    "period": PERIOD_WORDS,
    "cloud_service": CLOUD_SERVICE_WORDS,
    "cost_group": COST_GROUP_WORDS,
    "label_key": LABEL_KEY_SAID,
}

INSTANCE_NOUNS = {"instance": 0.8, "instances": 1.5, "vm": 0.8, "vms": 1.5, "server": 0.8, "servers": 1.5,
                  "machine": 0.8, "machines": 1.5, "node": 1.0, "nodes": 1.0, "boxes": 1.0, "fleet": 1.0,
                  "compute engine": 1.5}
_THE_INSTANCE = {"instance": 0.5, "vm": 0.5, "server": 0.5, "machine": 0.5, "box": 0.5,
                 # "delete all unattached disks" is no instance's deletion (out of scope, never a question
                 # offering instances to delete)
                 **{noun: -2.0 for noun in ("disk", "disks", "volume", "volumes", "bucket", "buckets", "snapshot",
                                            "snapshots", "ips", "ip", "addresses", "address", "old snapshots",
                                            "external ips", "external ip", "static ips", "ip addresses",
                                            "unused resources", "idle resources", "orphaned resources",
                                            "wasted resources", "persistent disks", "storage buckets", "idle ips",
                                            "idle ip", "idle addresses", "idle external ips")}}


def _if_we(*done: str) -> dict[str, float]:
    """"how much would we save if we stopped X": a change asked about is a plan of it (the plan says what it
    would do and changes nothing), so these are the change's verbs."""
    return {f"if {who} {verb}": 3.0 for who in ("we", "i", "you") for verb in done}

# Money words every billing action shares, weakly: the action is said by its own words and its slots
# ("last month" makes a cost report, "forecast" a forecast), so the monthly estimate keeps "what do we spend".
COST_WORDS = {"cost": 1.0, "costs": 1.0, "costing": 1.0, "spend": 1.0, "spends": 1.0, "spending": 1.0,
              "spent": 1.0, "bill": 1.0, "billing": 1.0, "billed": 1.5, "charges": 1.0, "charged": 1.0,
              "paid": 1.0, "pay": 0.5, "paying": 0.5, "money": 0.5, "cloud costs": 1.0, "expenses": 1.0}
BUDGET_WORDS = {"budget": 2.5, "budgets": 2.5}
LOG_WORDS = {"log": 2.5, "logs": 2.5, "logged": 3.0, "log entries": 3.0, "log lines": 3.0, "logging": 2.0,
             "entries": 1.0, "syslog": 2.5, "mentioning": 1.0, "containing": 1.0, "search": 0.5,
             "messages": 1.0}

# ------------------------------------------------------------------ the actions

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "gcloud-agent", "list_instances", "List VM instances (zone, state, labels, machine type)",
        template="list[ {state}] instances[ in {zone}][ with label {label}][ of type {machine_type}]",
        example={"zone": "{zone}"},
        words={**INSTANCE_NOUNS, "list": 1.0, "show": 0.5, "which": 0.5, "how many": 1.0, "inventory": 1.5,
               "deployed": 1.0, "give me": 0.5, "all": 0.3, "every": 0.3, "belong to": 0.5, "owned by": 0.5,
               "count": 1.0, "what is running": 1.0, "run": 0.3},
        slots=(Slot("zone", "zone"), Slot("state", "state"), Slot("label", "label"),
               Slot("machine_type", "machine_type")),
    ),
    ActionSpec(
        "gcloud-agent", "describe_instance", "Describe one instance (type, state, zone, labels, disks, price)",
        template="describe instance {name}",
        example={"name": "{running}"},
        words={"describe": 2.5, "details": 2.0, "detail": 2.0, "info": 2.0, "information": 2.0,
               "tell me about": 2.0, "what is": 1.0, "what do we know about": 2.0, "about": 0.5, "show": 0.5,
               "machine type": 1.0, "what type": 1.0, "which zone": 1.0, "what zone": 1.0, "where": 1.0,
               "status": 1.0, "state": 1.0, "what state": 1.0, "look up": 1.0},
        slots=(Slot("name", "instance", required=True, weight=2.0, ask="Which instance should I describe?"),),
        implied_by=("name",),
    ),
    ActionSpec(
        "gcloud-agent", "stop_instance", "Stop an instance (compute billing stops; disks are kept)",
        template="stop instance {name}",
        example={"name": "{running}"},
        verbs={"stop": 3.0, "halt": 3.0, "shut down": 3.0, "shutdown": 3.0, "shut off": 3.0, "turn off": 3.0,
               "power off": 3.0, "switch off": 3.0, "kill": 3.0, "terminate": 3.0, "pause": 2.5, "suspend": 2.5,
               "spin down": 3.0, "be stopped": 3.0, "turn * off": 3.0, "shut * down": 3.0, "power * off": 3.0,
               "switch * off": 3.0, "power down": 3.0, "power * down": 3.0, "shut * off": 3.0, "spin * down": 3.0,
               "take * offline": 3.0, "stopping": 3.0, **_if_we("stopped", "stop", "shut down", "turned off")},
        words=_THE_INSTANCE,
        slots=(Slot("name", "instance", required=True, weight=2.0, ask="Which instance should I stop?"),),
        mutates=True,
    ),
    ActionSpec(
        "gcloud-agent", "start_instance", "Start a stopped instance",
        template="start instance {name}",
        example={"name": "{stopped}"},
        verbs={"start": 3.0, "boot": 3.0, "boot up": 3.0, "bring up": 3.0, "bring * up": 3.0, "power on": 3.0,
               "power up": 3.0, "turn on": 3.0, "turn * on": 3.0, "switch on": 3.0, "spin up": 3.0,
               "resume": 3.0, "wake up": 3.0, "wake * up": 3.0, "start up": 3.0, "fire up": 3.0,
               "be started": 3.0, "unpause": 3.0, "bring * back": 3.0, "fire * up": 3.0, "spin * up": 3.0,
               "start * up": 3.0, "starting": 3.0, "power * on": 3.0, **_if_we("started", "start")},
        words=_THE_INSTANCE,
        slots=(Slot("name", "instance", required=True, weight=2.0, ask="Which instance should I start?"),),
        mutates=True,
    ),
    ActionSpec(
        "gcloud-agent", "resize_instance", "Change a stopped instance's machine type",
        template="resize instance {name} to {machine_type}",
        example={"name": "{stopped}", "machine_type": "{smaller}"},
        verbs={"resize": 3.0, "be resized": 3.0, "resizing": 3.0, **_if_we("resized", "resize")},
        words={**_THE_INSTANCE, "downgrade": 2.0, "upgrade": 2.0, "downsize": 2.0, "upsize": 2.0,
               "scale up": 2.0, "scale down": 2.0, "scale * up": 2.0, "scale * down": 2.0, "scale": 1.5,
               "switch": 1.5, "change": 1.5, "make": 1.0, "move": 1.5, "set": 1.0, "convert": 1.5, "put": 1.0,
               "machine type": 1.0, "migrate": 1.5},
        slots=(Slot("name", "instance", required=True, weight=2.0, ask="Which instance should I resize?"),
               Slot("machine_type", "machine_type", required=True, weight=2.0,
                    ask="Which machine type should it become?")),
        mutates=True,
        implied_by=("name", "machine_type"),
    ),
    ActionSpec(
        "gcloud-agent", "delete_instance", "Delete an instance (its boot disk goes; data disks stay)",
        template="delete instance {name}",
        example={"name": "{stopped}"},
        verbs={"delete": 3.0, "remove": 3.0, "destroy": 3.0, "get rid of": 3.0, "decommission": 3.0,
               "tear down": 3.0, "tear * down": 3.0, "nuke": 3.0, "trash": 3.0, "scrap": 3.0, "erase": 3.0,
               "drop": 2.0, "be deleted": 3.0, "be removed": 3.0, "throw away": 3.0, "wipe": 3.0, "deleting": 3.0,
               "removing": 3.0, "decommissioning": 3.0, **_if_we("deleted", "delete", "removed")},
        words=_THE_INSTANCE,
        slots=(Slot("name", "instance", required=True, weight=2.0, ask="Which instance should I delete?"),),
        mutates=True,
    ),
    ActionSpec(
        "gcloud-agent", "list_disks", "List persistent disks (only unattached ones, one zone, one disk)",
        template="list[ {unattached_only}] disks[ in {zone}][ named {name}]",
        example={"unattached_only": True},
        words={"disk": 2.0, "disks": 2.0, "volume": 2.0, "volumes": 2.0, "persistent disks": 2.5,
               "block storage": 2.0, "list": 0.5, "show": 0.3},
        slots=(Slot("unattached_only", "unattached"), Slot("zone", "zone"), Slot("name", "disk", weight=2.0)),
        implied_by=("name",),
    ),
    ActionSpec(
        "gcloud-agent", "list_buckets", "List storage buckets (or one bucket)",
        template="list buckets[ named {name}]",
        example={},
        words={"bucket": 2.0, "buckets": 2.0, "cloud storage": 2.0, "gcs": 2.0, "object storage": 2.0,
               "storage buckets": 2.5, "storage": 1.0, "list": 0.5, "show": 0.3},
        slots=(Slot("name", "bucket", weight=2.0),),
        implied_by=("name",),
    ),
    ActionSpec(
        "gcloud-agent", "find_idle_instances", "Find idle running instances and what stopping them saves",
        template="find idle instances[ below {cpu_threshold}% cpu][ over the last {days} days][ in {zone}]"
                 "[ with label {label}]",
        example={"cpu_threshold": 5.0, "days": 7},
        words={"idle": 3.0, "idling": 3.0, "idles": 3.0, "unused": 2.0, "underused": 3.0, "underutilized": 3.0,
               "underutilised": 3.0,
               "under-utilized": 3.0, "under-utilised": 3.0, "doing nothing": 3.0, "not doing anything": 3.0,
               "zombie": 3.0, "zombies": 3.0, "sitting idle": 3.0, "wasting money": 2.0, "wasting": 1.5,
               "save money": 2.0, "can we stop": 3.0, "could we stop": 3.0, "should we stop": 3.0,
               # "vms we could turn off": asking which could be stopped is no stop
               # ("X should be stopped" names one: that is a stop, planned)
               **{phrase: 3.5 for modal in ("could", "can", "should") for verb in ("stop", "turn off", "shut down")
                  for phrase in (f"{modal} we {verb}", f"we {modal} {verb}")},
               "safe to stop": 3.5, "safe to turn off": 3.5,
               "mostly idle": 3.0, "cpu": 1.0, "averaging": 1.0, "quiet": 1.5, "unutilized": 3.0,
               "do nothing": 3.0, "does nothing": 3.0, "did nothing": 3.0, "nobody is using": 2.0,
               "not being used": 2.0, "no one is using": 2.0,
               "instances": 0.5, "vms": 0.5, "machines": 0.5, "servers": 0.5},
        slots=(Slot("cpu_threshold", "percent", weight=1.5), Slot("days", "days"), Slot("zone", "zone"),
               Slot("label", "label")),
    ),
    ActionSpec(
        "gcloud-agent", "rightsizing_recommendations", "Recommend machine type changes (downsize or upsize)",
        template="rightsizing recommendations[ over the last {days} days][ in {zone}][ with label {label}]",
        example={},
        words={"rightsizing": 3.0, "rightsize": 3.0, "right-size": 3.0, "right size": 3.0, "right-sizing": 3.0,
               "right sizing": 3.0, "oversized": 3.0, "over-provisioned": 3.0, "overprovisioned": 3.0,
               "over provisioned": 3.0, "undersized": 3.0, "under-provisioned": 3.0, "underprovisioned": 3.0,
               "downsize": 2.5, "downsizing": 3.0, "upsize": 2.5, "upsizing": 3.0, "too big": 3.0,
               "too large": 3.0, "too small": 3.0, "bigger machine": 3.0, "smaller machine": 3.0,
               "bigger machine type": 3.0, "smaller machine type": 3.0, "recommendations": 1.0,
               "recommendation": 1.0, "suggestions": 0.5, "instances": 0.5, "vms": 0.5, "machines": 0.5,
               "bigger than": 3.0, "larger than": 3.0, "more than they need": 3.0, "bigger than needed": 3.0,
               "downsized": 3.0, "upsized": 3.0, "rightsized": 3.0, "right-sized": 3.0, "too beefy": 3.0},
        slots=(Slot("days", "days"), Slot("zone", "zone"), Slot("label", "label")),
    ),
    ActionSpec(
        "gcloud-agent", "estimate_monthly_cost", "Estimate the monthly bill (total, per team/env/app, per "
        "instance, of one instance or of labelled resources)",
        template="monthly cost[ {group_by}][ of instance {instance}][ of resources with label {label}]",
        example={"group_by": "label", "label_key": "team"},
        words={"cost": 2.5, "costs": 2.5, "costing": 2.5, "spend": 2.5, "spends": 2.5, "spending": 2.5, "spent": 2.5,
               **{f"most expensive {w}": 2.5 for w in _GROUP_KEYS[("instance", None)]},
               **{f"cheapest {w}": 2.5 for w in _GROUP_KEYS[("instance", None)]}, "cheapest": 1.5,
               "bill": 2.5, "billing": 2.0, "pay": 2.0, "paying": 2.0, "price": 2.0, "expensive": 2.0,
               "money": 1.0, "monthly": 0.5, "how much": 0.5, "total": 0.5, "run rate": 2.5, "run-rate": 2.5,
               "burn rate": 2.5, "burn": 1.5,
               # the run rate is compute, disks and buckets: "what does bigquery (or gke) cost" is not its total
               **{said: -2.0 for said, service in CLOUD_SERVICE_WORDS.items()
                  if service not in ("Compute Engine", "Cloud Storage")}},
        slots=(Slot("group_by", "group_by", weight=1.5), Slot("instance", "instance", weight=1.5),
               Slot("label", "label")),
    ),
    ActionSpec(
        "monitoring-agent", "query_time_series", "CPU or memory utilization of one instance over time",
        template="{metric} utilization of {instance}[ over the last {days} days]",
        example={"instance": "{running}", "metric": "cpu", "days": 3},
        words={"cpu": 2.0, "memory": 2.0, "ram": 2.0, "utilization": 2.0, "utilisation": 2.0, "usage": 1.5,
               "load": 2.0, "loaded": 2.0, "busy": 2.0, "overloaded": 2.0, "working": 1.0, "how hard": 1.5,
               "graph": 1.0, "plot": 1.0, "chart": 1.0, "short on memory": 3.0, "running out of ram": 3.0,
               "running out of memory": 3.0, "memory pressure": 3.0, "low on memory": 3.0, "out of ram": 3.0,
               "performance": 1.0, "time series": 2.0, "trend": 1.0, "using": 0.5, "mem": 2.0, "processor": 2.0,
               "how idle": 2.5, "maxing out": 2.5, "history": 1.0, "peak": 1.0, "slow": 1.5, "maxed out": 2.5,
               "idle": 1.5,
               "pegged": 2.5, "maxed": 2.0},
        slots=(Slot("instance", "instance", required=True, weight=2.0, ask="Which instance's utilization?"),
               Slot("metric", "metric", default="cpu"), Slot("days", "days")),
    ),
    ActionSpec(
        "monitoring-agent", "list_metrics", "List the metrics that can be queried",
        template="list metrics",
        example={},
        words={"metrics": 3.0, "metric": 2.5, "what can you measure": 3.0, "measure": 2.0,
               "monitoring metrics": 3.0, "list": 0.5},
    ),
    ActionSpec(
        "monitoring-agent", "query_instance_logs", "Log entries of the cloud's instances (severity, window, text)",
        template="instance logs[ of {instance}][ in {zone}][ with label {label}][ with {min_severity}][ {window}]"
                 "[ mentioning \"{text}\"]",
        example={"min_severity": "WARNING", "window": "24h"},
        words={**LOG_WORDS, "instance": 1.0, "instances": 1.0, "vm": 1.0, "vms": 1.0, "server": 0.5,
               "servers": 0.5, "machines": 0.5, "platform": -0.5, "services": -0.5},
        slots=(Slot("instance", "instance", weight=1.5), Slot("zone", "zone"), Slot("label", "label"),
               Slot("min_severity", "severity", weight=2.0), Slot("window", "window"), Slot("text", "text")),
    ),
    ActionSpec(
        "monitoring-agent", "query_platform_logs", "The platform's own log lines (service, level, window, text)",
        template="platform logs[ of {service}][ with {min_severity}][ {window}][ mentioning \"{text}\"]",
        example={"service": "{service}", "min_severity": "ERROR", "window": "1h"},
        words={**LOG_WORDS, "platform": 1.5, "our services": 1.5, "services": 1.0, "service": 0.5,
               "finopti": 1.0, "agents": 1.0, "mesh": 1.0, "instance": -0.5, "instances": -0.5, "vm": -0.5,
               "vms": -0.5},
        slots=(Slot("service", "service", weight=2.5), Slot("min_severity", "severity", weight=2.0),
               Slot("window", "window"), Slot("text", "text")),
    ),
)

BILLING_ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "gcloud-agent", "cost_report", "Billed cost over a period (by service, project, SKU, team, label or day)",
        template="cost report[ for {period}][ {group_by}][ for service {service}][ with label {label}]"
                 "[ in project {project}]",
        example={"period": "last_month", "group_by": "service"},
        words={**COST_WORDS, "cost report": 3.0, "billing report": 3.0, "breakdown": 1.0, "break down": 1.0,
               "invoice": 2.0, "invoiced": 2.0, "actual": 1.0, "what did we": 0.5, "how much did": 0.5,
               "credits": 2.0, "credit": 1.5, "money going": 3.0, "where is the money": 3.0},
        slots=(Slot("project", "project"),
               Slot("period", "period", weight=3.0), Slot("group_by", "cost_group", weight=2.0),
               Slot("service", "cloud_service", weight=1.5), Slot("label", "label")),
    ),
    ActionSpec(
        "gcloud-agent", "compare_costs", "Compare a period's cost with the one before and find what drove it",
        template="compare costs[ for {period}] with the period before[ {group_by}][ for service {service}]"
                 "[ with label {label}][ in project {project}]",
        example={"period": "last_week"},
        words={**COST_WORDS, "compare": 3.0, "comparison": 3.0, "compared": 3.0, "go up": 3.0, "went up": 3.0,
               "gone up": 3.0, "going up": 2.5, "go down": 3.0, "went down": 3.0, "increase": 3.0, "increased": 3.0,
               "increases": 3.0, "decrease": 3.0, "decreased": 3.0, "rise": 3.0, "rose": 3.0, "risen": 3.0,
               "jump": 3.0, "jumped": 3.0, "grew": 3.0, "growth": 2.0, "fell": 3.0, "higher": 2.0, "lower": 2.0,
               "more than": 1.0, "less than": 1.0, "drove": 3.0, "drivers": 3.5, "driver": 3.5, "driving": 3.0,
               "caused": 2.0, "why": 1.5, "changed": 3.0, "change": 3.0, "changes": 3.0, "difference": 3.0,
               "month over month": 2.0, "week over week": 2.0, "the week before": 2.0, "the month before": 2.0,
               "month on month": 2.0, "week on week": 2.0, "diff": 2.0,
               "period before": 2.0, "versus": 2.5, "vs": 2.5},
        slots=(Slot("project", "project"),
               Slot("period", "period", weight=2.0), Slot("group_by", "cost_group", weight=0.5),
               Slot("service", "cloud_service", weight=1.5), Slot("label", "label")),
    ),
    ActionSpec(
        "gcloud-agent", "forecast_costs", "Forecast this month's and next month's cost (80 % and 95 % intervals)",
        template="forecast costs[ for service {service}][ with label {label}][ in project {project}]",
        example={},
        words={**COST_WORDS, "forecast": 3.5, "forecasts": 3.5, "forecasted": 3.5, "predict": 3.5,
               "prediction": 3.5, "projected": 3.5, "projection": 3.5, "end of the month": 3.5,
               "end of month": 3.5, "month end": 3.5, "month-end": 3.5, "next month": 3.5, "will we spend": 3.0,
               "going to spend": 3.0, "going to cost": 3.0, "will cost": 2.5, "will be": 1.0, "expected": 2.0,
               "expect": 2.0, "land": 1.5, "on pace": 2.5, "trajectory": 2.5, "outlook": 2.5,
               "end the month": 3.5, "finish the month": 3.5, "end up": 2.5, "where will": 1.0},
        slots=(Slot("project", "project"),
               Slot("service", "cloud_service", weight=1.5), Slot("label", "label")),
    ),
    ActionSpec(
        "gcloud-agent", "detect_cost_anomalies", "Find days on which a service cost unusually much, and why",
        template="cost anomalies[ for {period}][ for service {service}][ with label {label}][ in project {project}]",
        example={"period": "last_30_days"},
        words={**COST_WORDS, "anomaly": 3.0, "anomalies": 3.0, "anomalous": 3.0, "cost anomalies": 4.5,
               "spend anomalies": 4.5, "spike": 3.0, "spikes": 3.0, "spiked": 3.0, "spiking": 3.0, "surge": 3.0,
               "outlier": 3.0, "outliers": 3.0, "unusual": 2.5, "unexpected": 2.5, "weird": 1.5, "odd": 1.5,
               "sudden": 1.5, "anything weird": 3.0, "anything odd": 3.0, "log": -2.0, "logs": -2.0},
        slots=(Slot("project", "project"),
               Slot("period", "period", weight=1.5), Slot("service", "cloud_service", weight=1.5),
               Slot("label", "label")),
    ),
    ActionSpec(
        "gcloud-agent", "budget_status", "Will a budget hold: spend so far, forecast, thresholds crossed",
        template="budget status[ of \"{name}\"][ of a {amount} budget][ for {labels}][ for service {service}]"
                 "[ in project {project}]",
        example={"amount": 5000, "labels": "team=payments"},
        words={"budget": 2.5, "budgets": 1.0, "stay under": 3.0, "stay within": 3.0, "stay below": 3.0, "on track": 3.0,
               "go over": 3.0, "going over": 3.0, "exceed": 3.0, "overrun": 3.0, "blow": 1.5, "within": 1.0,
               "under": 0.5, "doing": 1.0, "status": 1.0, "hold": 1.0, "afford": 2.0, "budget status": 4.0,
               "spend": 0.5, "spending": 0.5, "at risk": 2.5, "keep * under": 3.0, "keep * below": 3.0,
               "keep * within": 3.0},
        slots=(Slot("project", "project"),
               Slot("name", "text", weight=1.0), Slot("amount", "amount", weight=2.5), Slot("labels", "label"),
               Slot("service", "cloud_service", weight=1.0)),
    ),
    ActionSpec(
        "gcloud-agent", "list_budgets", "List budgets with their actual and forecast spend",
        template="list budgets",
        example={},
        words={"budgets": 3.0, "budget": 1.0, "list": 1.0, "show": 0.5, "which": 0.5, "all": 0.5, "our budgets": 3.0,
               "do we have": 1.0,
               "budget alerts": 3.5, "alerts": 1.0, "at risk": 2.5, "over budget": 3.0, "any": 0.3},
    ),
    ActionSpec(
        "gcloud-agent", "create_budget", "Create a monthly budget with alert thresholds (FinOps admins)",
        template="create budget \"{name}\" of {amount}[ for {labels}][ for service {service}][ in project {project}]",
        example={"name": "qa-limit", "amount": 400, "labels": "env=dev"},
        verbs={"create * budget": 4.0, "set up * budget": 4.0, "set * budget": 4.0, "add * budget": 4.0,
               "new budget": 4.0, "make * budget": 4.0, "create budget": 4.0, "define * budget": 4.0},
        words={**BUDGET_WORDS, "called": 0.5, "named": 0.5, "monthly": 0.5},
        slots=(Slot("project", "project"),
               Slot("name", "text", required=True, weight=1.0,
                    ask="What should the budget be called? Say the name in quotes."),
               Slot("amount", "amount", required=True, weight=2.0, ask="How much a month?"),
               Slot("labels", "label"), Slot("service", "cloud_service", weight=1.0)),
        mutates=True,
    ),
    ActionSpec(
        "gcloud-agent", "delete_budget", "Delete a budget (FinOps admins)",
        template="delete budget \"{name}\"",
        example={"name": "qa-limit"},
        verbs={"delete * budget": 4.0, "remove * budget": 4.0, "drop * budget": 4.0, "get rid of * budget": 4.0,
               "delete budget": 4.0, "remove budget": 4.0},
        words=BUDGET_WORDS,
        slots=(Slot("name", "text", required=True, weight=1.0, ask="Which budget? Say its name in quotes."),),
        mutates=True,
    ),
    ActionSpec(
        "gcloud-agent", "unlabeled_spend", "Spend on resources without a team or env label",
        template="spend without labels[ for {period}][ missing the {keys} label][ in project {project}]",
        example={},
        words={**COST_WORDS, "unlabeled": 4.5, "unlabelled": 4.5, "untagged": 4.5, "not labeled": 4.5,
               "not labelled": 4.5, "not tagged": 4.5, "no label": 3.0, "no labels": 3.0, "missing labels": 3.5,
               "missing label": 3.5, "missing tags": 3.5, "without labels": 3.5, "without a label": 3.5,
               "labeled": 1.5, "labelled": 1.5, "tagged": 1.5, "labels": 1.0, "label": 1.0, "tags": 1.0,
               "missing": 1.0, "without": 0.5, "no": 0.3, "owner": 1.0, "unowned": 3.0, "unallocated": 3.0,
               "have no": 1.5, "has no": 1.5, "lack": 2.0, "lacks": 2.0, "lacking": 2.0,
               "resources": 0.5},
        slots=(Slot("project", "project"),
               Slot("period", "period", weight=1.0), Slot("keys", "label_key", weight=2.0)),
    ),
    ActionSpec(
        "gcloud-agent", "commitment_recommendations", "Committed use discounts to buy, and how ours are used",
        template="commitment recommendations",
        example={},
        words={"commitment": 3.5, "commitments": 3.5, "committed use": 4.0, "committed use discount": 4.5,
               "committed use discounts": 4.5, "cud": 4.0, "cuds": 4.0, "commit": 3.0, "reservation": 3.0,
               "reservations": 3.0, "reserved": 2.0, "savings plan": 3.5, "savings plans": 3.5, "discount": 2.0,
               "discounts": 2.0, "buy": 1.0, "utilized": 1.0, "utilization": 1.0, "utilised": 1.0,
               "recommendations": 0.5, "save": 0.5},
    ),
    ActionSpec(
        "gcloud-agent", "find_unused_resources", "Unattached disks, idle external IPs and old snapshots, and their "
        "cost",
        template="find unused resources",
        example={},
        words={"unused resources": 4.0, "idle resources": 4.0, "wasted": 2.5, "waste": 2.5, "wasted resources": 4.0,
               "clean up": 3.0, "cleanup": 3.0, "cleaning up": 3.0, "clean-up": 3.0, "old snapshots": 4.0,
               "snapshots": 3.0, "external ips": 3.5,
               "external ip": 3.5, "ip addresses": 3.0, "ips": 3.0, "static ips": 3.5, "addresses": 2.0,
               "idle ips": 4.0, "idle ip": 4.0, "idle addresses": 4.0, "idle external ips": 4.5,
               "resources": 1.0, "orphaned resources": 4.0, "what can we delete": 4.0, "could delete": 2.5,
               "can delete": 2.5, "save money": 1.0, "save": 0.5, "idle": 1.0, "leftovers": 2.0, "garbage": 2.0},
    ),
    ActionSpec(
        "gcloud-agent", "billing_export_rows", "Raw rows of the billing export (BigQuery schema)",
        template="billing export rows[ for {period}][ with label {label}][ for service {service}]"
                 "[ in project {project}]",
        example={"period": "yesterday"},
        words={**COST_WORDS, "billing export": 4.0, "export": 2.0, "raw": 2.0, "rows": 2.0, "line items": 4.0,
               "line item": 4.0, "records": 1.5},
        slots=(Slot("project", "project"),
               Slot("period", "period", weight=1.0), Slot("label", "label"),
               Slot("service", "cloud_service", weight=1.0)),
    ),
)
ACTIONS = ACTIONS + BILLING_ACTIONS

# A change's verb said with "not" or "never" ("don't stop X"): the parser puts this phrase in its place, and it
# is out of scope (no token can be it: "(" is stripped off tokens).
NEGATED_CHANGE = "(not a change)"

# Things people ask that no action does: when these words win, the answer is a 422 with what can be asked.
OUT_OF_SCOPE = ActionSpec(
    "", "out_of_scope", "Something the assistant cannot do", template="",
    verbs={"create": 3.0, "snapshot": 3.0, "ssh": 3.0, "clone": 3.0, "rename": 3.0, "backup": 3.0,
           "back up": 3.0, "reboot": 3.0, "restart": 3.0, "reset": 3.0, "attach": 3.0, "mount": 3.0,
           "deploy": 3.0, "install": 3.0, "upload": 3.0, "download": 3.0, "provision": 3.0, "sing": 3.0,
           "poem": 3.0, "haiku": 3.0, "joke": 3.0, "weather": 3.0, "pizza": 3.0, "song": 3.0, "write": 2.0,
           "translate": 3.0, "email": 3.0, "new vm": 3.0, "new instance": 3.0, "copy": 3.0, "password": 3.0,
           "machine types": 3.0,
           # things this cloud has none of: a cost "of the kafka cluster" is not the project's total
           "cluster": 3.0, "clusters": 3.0, "aws": 3.0, "azure": 3.0, "ec2": 3.0, "s3": 3.0, "lambda": 3.0,
           "gpu": 3.0, "gpus": 3.0, "tpu": 3.0, "tpus": 3.0,
           NEGATED_CHANGE: 3.0},
)


def action(name: str) -> ActionSpec:
    for spec in ACTIONS:
        if spec.name == name:
            return spec
    raise KeyError(name)
