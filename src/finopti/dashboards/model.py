"""The dashboard model: what each panel shows, free of any dashboard tool's or log store's vocabulary.

Metric queries are PromQL (the platform's metrics are Prometheus everywhere). Log queries are filters over
the JSON log lines every component writes; the Grafana renderer turns them into LogQL, the built-in
console applies them to its own log store.

Variables are referenced as `$name` inside queries. A multi-value variable stands for a regex alternation
(`a|b`), "all" for `.*`; `$__range` is the dashboard's time window (e.g. `1h`).
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

PanelKind = Literal["timeseries", "stat", "table", "logs", "trace", "graph"]


@dataclass(frozen=True)
class MetricQuery:
    promql: str
    legend: str = ""


@dataclass(frozen=True)
class LogQuery:
    """Log lines of some services, at some levels, of one trace, containing some text.

    Every field is optional and may be a variable: services=("$service",), level="$level", text="$text".
    """

    services: tuple[str, ...] = ()  # empty: every component, the gateway included
    level: str | None = None  # a level, or levels as "error|critical"
    trace_var: str | None = None  # name of the variable holding the trace id (matched on the line's trace_id)
    text: str | None = None  # case-insensitive regex the line must contain
    top_by: tuple[str, ...] = ()  # count matching lines in the window by these fields, show the top ones
    limit: int = 10  # how many groups `top_by` shows
    drop_events: tuple[str, ...] = ()  # leave out lines whose `event` field is one of these
    volume_by: tuple[str, ...] = ()  # count matching lines per interval by these stream labels (a histogram)


@dataclass(frozen=True)
class GraphQuery:
    """Who calls whom, from the gateway's access lines in the window: one edge per (caller, callee) with its
    requests, errors (5xx, the gateway's own answers included) and p95 duration. The caller is the source's
    mesh identity; requests on the edge listener come from `clients`. Calls to `exclude_services` are left
    out unless the dashboard's `traffic` variable asks for platform traffic (the console) — Grafana leaves
    them out."""

    exclude_services: tuple[str, ...] = ()


Query = MetricQuery | LogQuery | GraphQuery


@dataclass(frozen=True)
class Panel:
    title: str
    kind: PanelKind
    queries: tuple[Query, ...]
    unit: str = ""  # Grafana unit ids: reqps, percentunit, s, short
    expected_empty_reason: str | None = None  # when "no data" is the right answer, and why
    description: str = ""
    columns: tuple[str, ...] = ()  # table of log lines: the line's fields to show, in order
    width: int = 12  # of 24 grid columns


@dataclass(frozen=True)
class Variable:
    """A dashboard variable. `values_from` names where its choices come from."""

    name: str
    kind: Literal["label_values", "custom", "text"]
    label: str = ""
    values_from: Literal["metrics", "logs"] = "metrics"  # label_values: which store to ask
    selector: str = ""  # label_values: metric (or log stream selector) whose label values are offered
    values_label: str = ""  # label_values: which label; defaults to the variable's name
    options: tuple[str, ...] = ()  # custom: the fixed choices
    multi: bool = True  # several values and an "All" choice
    default: str = ""


@dataclass(frozen=True)
class Link:
    """A link to another dashboard of the model (Grafana: a dashboard link; the console: its page)."""

    title: str
    uid: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    variables: tuple[Variable, ...]
    panels: tuple[Panel, ...]
    description: str = ""
    links: tuple[Link, ...] = ()
    refresh: str = "30s"
    time_from: str = "now-1h"
    tags: tuple[str, ...] = field(default=("finopti",))


def interpolate(query: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """Replace `$name` as Grafana does: one value as is, several as a regex alternation `(a|b)`.

    Names without a value stay as they are, so a caller sees what it did not fill in."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        v = values[name]
        return v if isinstance(v, str) else "(" + "|".join(v) + ")"

    return re.sub(r"\$(\w+)", value, query)
