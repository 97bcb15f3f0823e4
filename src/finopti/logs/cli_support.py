"""What `finopti logs` and `finopti trace` print: one readable line per log line, and a trace's waterfall."""

from collections.abc import Callable

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from finopti.logs.times import parse_since

__all__ = ["format_line", "newest_lines", "parse_since", "render_trace"]

PAGE = 5000  # the query API's largest page

LEVEL_COLORS = {"debug": "2", "info": "32", "warning": "33", "error": "31", "critical": "1;31"}
LEVEL_STYLES = {"debug": "dim", "info": "green", "warning": "yellow", "error": "red", "critical": "bold red"}
ERROR_LEVELS = {"error", "critical", "fatal"}
# Shown elsewhere on the line, or noise for a person.
HIDDEN = {
    "ts", "level", "service", "version", "message", "trace_id", "span_id", "request_id", "color_message",
    "user_agent", "upstream_host", "response_code_details", "bytes_received", "bytes_sent", "upstream_duration_ms",
    "taskName",
}
FIELD_ORDER = ["event", "listener", "method", "path", "route", "upstream_service", "status", "duration_ms", "user"]
MAX_VALUE = 80


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def _fields(obj: dict) -> list[tuple[str, object]]:
    keys = [k for k in FIELD_ORDER if k in obj] + sorted(k for k in obj if k not in FIELD_ORDER)
    return [(k, obj[k]) for k in keys if k not in HIDDEN and obj[k] not in ("", None, "-")]


def _value(key: str, value: object) -> str:
    text = f"{value}ms" if key == "duration_ms" else str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def format_line(line: dict, color: bool, show_trace: bool = True) -> str:
    """`12:07:55.548 gcloud-tools  INFO  request completed  route=/mcp status=200 duration_ms=2.6ms  trace=7b9d…`
    for a line of the query API (`{ts, service, level, line, metadata}`)."""
    level = str(line.get("level") or "info").lower()
    ts = str(line.get("ts") or "")
    clock = ts[11:23] if len(ts) >= 23 else ts
    obj = line.get("line")
    meta = line.get("metadata") or {}
    if isinstance(obj, dict):
        message = str(obj.get("message", ""))
        fields = " ".join(f"{k}={_value(k, v)}" for k, v in _fields(obj))
        trace_id = obj.get("trace_id") or meta.get("trace_id")
    else:
        message, fields, trace_id = str(obj), "", meta.get("trace_id")
    parts = [_paint(clock, "2", color)]
    if meta.get("original_ts"):  # its own time was too far ahead: stored when it came, its claim shown too
        parts.append(_paint(f"[dated {meta['original_ts']}]", "33", color))
    parts += [
        _paint(f"{line.get('service', '?'):<16}", "36", color),
        _paint(f"{level.upper():<8}", LEVEL_COLORS.get(level, ""), color),
        _paint(message, "1;31" if color and level in ERROR_LEVELS else "", color),
    ]
    if fields:
        parts.append(_paint(fields, "2", color))
    if trace_id and show_trace:
        # Whole: `finopti trace` takes what is printed here (a prefix works too, when unique).
        parts.append(_paint(f"trace={trace_id}", "35", color))
    return " ".join(parts)


def newest_lines(fetch: Callable[[list[tuple[str, str]]], dict], params: list[tuple[str, str]],
                 count: int) -> list[dict]:
    """The newest `count` lines matching `params`, oldest first: `GET /api/logs` (through `fetch`) page by page,
    each page continuing from the last one's `next_cursor`, so no line is skipped or repeated between pages, even
    among lines of the same time."""
    lines: list[dict] = []
    cursor = None
    while len(lines) < count:
        page = fetch([*params, ("direction", "backward"), ("limit", str(min(PAGE, count - len(lines)))),
                      *([("cursor", cursor)] if cursor else [])])
        lines += page["lines"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return lines[::-1]


def _bar(hop: dict, total_ms: float, width: int = 24) -> str:
    if total_ms <= 0:
        return " " * width
    start = min(width - 1, int(hop["offset_ms"] / total_ms * width))
    length = max(1, round(hop["duration_ms"] / total_ms * width))
    length = min(length, width - start)
    return " " * start + "█" * length + " " * (width - start - length)


def _hop_label(hop: dict, total_ms: float) -> Text:
    status = hop.get("status")
    failed = status is None or status >= 500 or bool(hop["errors"])
    label = Text()
    label.append(f"+{hop['offset_ms']:>7.1f}ms ", style="dim")
    label.append(_bar(hop, total_ms), style="red" if failed else "cyan")
    label.append(f" {hop.get('listener') or '?'}", style="dim")
    label.append(f" {hop.get('method') or ''} {hop.get('path') or ''}")
    label.append(f" → {hop.get('service') or hop.get('upstream_service') or '-'}", style="bold")
    served = hop.get("served") or {}
    if served.get("route"):
        label.append(f" {served['route']}", style="dim")
    label.append(f"  {status if status is not None else '-'}", style="bold red" if failed else "green")
    label.append(f"  {hop['duration_ms']:g} ms")
    if hop.get("response_flags") not in (None, "", "-"):
        label.append(f"  flags={hop['response_flags']}", style="yellow")
    if hop["errors"]:
        label.append(f"  {len(hop['errors'])} error{'s' if len(hop['errors']) > 1 else ''}", style="bold red")
    return label


def _line_text(line: dict) -> Text:
    level = str(line.get("level") or "info").lower()
    text = Text(format_line(line, color=False, show_trace=False))
    text.stylize("bold red" if level in ERROR_LEVELS else LEVEL_STYLES.get(level, "") or "dim")
    return text


def render_trace(trace: dict) -> Group:
    """The waterfall: every hop in start order, nested by which hop encloses it, with its service's lines
    under it; errors in red. `trace` is what GET /api/traces/{id} answers."""
    hops = trace.get("hops") or []
    total = float(trace.get("duration_ms") or 0)
    errors = trace.get("errors", 0)
    title = Text(f"trace {trace['trace_id']}", style="bold")
    title.append(f"  {total:g} ms · {len(hops)} hop{'s' if len(hops) != 1 else ''} · ")
    title.append(f"{errors} error{'s' if errors != 1 else ''}", style="bold red" if errors else "green")
    tree = Tree(title)
    # A hop's children: the hops it encloses and its service's lines, in time order.
    children: dict[int, list[tuple[int, int, int | dict]]] = {-1: []}
    stack: list[int] = []  # indexes of the open hops, by depth
    for i, hop in enumerate(hops):
        depth = min(int(hop.get("depth", 0)), len(stack))
        stack = stack[:depth] + [i]
        children[stack[-2] if len(stack) > 1 else -1].append((hop["start_ns"], 0, i))
        children[i] = [(line["ts_ns"], 1, line) for line in hop.get("lines", [])]

    def add(node: Tree, key: int) -> None:
        for _, kind, item in sorted(children[key], key=lambda c: (c[0], c[1])):
            if kind == 0:
                add(node.add(_hop_label(hops[item], total)), item)
            else:
                node.add(_line_text(item))

    add(tree, -1)
    unattached = trace.get("unattached") or []
    if unattached:
        other = tree.add(Text("lines outside any hop", style="dim"))
        for line in unattached:
            other.add(_line_text(line))
    return Group(tree)
