"""An answer's rows as text, for the command line: the same `view` contract the chat draws (docs/console.md) —
the rows it names, its columns, units, totals and order — rendered as plain strings. Pure functions; the CLI
puts the result in a table. (The browser's side of the contract is the ui's views.js.)"""

import re
from dataclasses import dataclass
from datetime import datetime

CURRENCY = re.compile(r"^[A-Z]{3}$")
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
MAX_COLUMNS = 12


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    unit: str = ""


@dataclass(frozen=True)
class AnswerTable:
    columns: list[Column]
    rows: list[list[str]]
    numeric: list[bool]  # right-aligned columns
    totals: list[str] | None = None
    title: str | None = None  # a further table's heading (the view's `tables`)


def human_label(key: str) -> str:
    text = re.sub(r"_(usd|eur|gbp|pct|percent)$", "", key, flags=re.IGNORECASE).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def guess_unit(key: str, values: list) -> str:
    match = re.search(r"_(usd|eur|gbp)$", key.lower())
    if match:
        return match.group(1).upper()
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, str) and ISO_TIME.match(v) for v in present):
        return "datetime"
    if re.search(r"(^|_)(cpu|memory)(_|$)|_pct$|_percent$", key.lower()) and all(
            isinstance(v, int | float) for v in present):
        return "%"
    if key.lower().endswith("_gb"):
        return "GB"
    return ""


def format_value(value, unit: str = "") -> str:
    """A cell: money with its currency, percentages, dates, objects as k=v, booleans as yes/no."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value)
    if unit == "datetime" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return value
    if isinstance(value, int | float):
        if CURRENCY.match(unit or ""):
            sign = "-" if value < 0 else ""
            return f"{sign}{SYMBOLS.get(unit, unit + ' ')}{abs(value):,.2f}"
        number = f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
        if unit in ("%", "percent"):
            return f"{number}%"
        if unit == "percentunit":
            return f"{value * 100:,.2f}%"
        return f"{number} {unit}" if unit and unit not in ("count", "short") else number
    return str(value)


def _pick(data, path: str | None):
    if not path:
        return data
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def cell(row: dict, key: str):
    """A row's value for a column key: the key itself, else a dot path into nested objects."""
    return row[key] if key in row else _pick(row, key)


def _is_rows(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def rows_of(data, view: dict) -> list[dict] | None:
    if "rows" in view:
        rows = _pick(data, view["rows"])
    elif isinstance(data, list):
        rows = data
    else:
        rows = None
    return rows if _is_rows(rows) else None


def _columns(rows: list[dict], view: dict) -> list[Column]:
    declared = view.get("columns") or []
    if declared:
        out = []
        for c in declared:
            c = {"key": c} if isinstance(c, str) else c
            unit = c.get("unit")
            out.append(Column(c["key"], c.get("label") or human_label(c["key"].split(".")[-1]),
                              unit if unit is not None else guess_unit(c["key"], [cell(r, c["key"]) for r in rows])))
        return out
    keys: list[str] = []
    for row in rows[:200]:
        keys += [k for k in row if k not in keys]
    nested = {k for k in keys if any(isinstance(r.get(k), dict | list) for r in rows)}
    ordered = [k for k in keys if k not in nested] + [k for k in keys if k in nested]
    return [Column(k, human_label(k), guess_unit(k, [r.get(k) for r in rows])) for k in ordered[:MAX_COLUMNS]]


def answer_table(payload: dict) -> AnswerTable | None:
    """The rows of an /api/ask answer as its view says (or inferred), or None when `data` holds no rows."""
    view = payload.get("view") if isinstance(payload.get("view"), dict) else {}
    data = payload.get("data")
    rows = rows_of(data, view)
    if rows is None and view.get("type") == "detail" and isinstance(data, dict):
        scalars = {k: v for k, v in data.items() if not _is_rows(v)}
        return AnswerTable([Column("field", "Field"), Column("value", "Value")],
                           [[human_label(k), format_value(v, guess_unit(k, [v]))] for k, v in scalars.items()],
                           [False, False])
    if rows is None:
        return None
    return _table(data, rows, view)


def answer_stats(payload: dict) -> list[tuple[str, str]]:
    """The view's headline figures as (label, text): a key's value in data, or an aggregate over the rows."""
    view = payload.get("view") if isinstance(payload.get("view"), dict) else {}
    data = payload.get("data")
    rows = rows_of(data, view) or []
    out = []
    for s in view.get("stats") or []:
        if s.get("key"):
            value = _pick(data, s["key"])
        elif s.get("of"):
            xs = [v for r in rows if isinstance(v := cell(r, s["of"]), int | float)]
            agg = {"max": max, "min": min, "avg": lambda v: sum(v) / len(v)}.get(s.get("agg") or "sum", sum)
            value = agg(xs) if xs else None
        else:
            value = s.get("value")
        label = s.get("label") or human_label(str(s.get("key") or s.get("of") or ""))
        out.append((label, format_value(value, s.get("unit", view.get("unit", "")) or "") or "–"))
    return out


def answer_tables(payload: dict) -> list[AnswerTable]:
    """The answer's table, then each of its view's further `tables` that has rows (an anomaly list, the
    resources behind a breakdown), each with its title."""
    view = payload.get("view") if isinstance(payload.get("view"), dict) else {}
    data = payload.get("data")
    main = answer_table(payload)
    further = []
    for t in view.get("tables") or []:
        rows = rows_of(data, t) if isinstance(t, dict) else None
        if rows is not None:
            further.append(_table(data, rows, t, title=t.get("title") or human_label(str(t.get("rows", "")))))
    return ([main] if main else []) + further


def _totals(data, rows: list[dict], columns: list[Column], spec) -> list[str] | None:
    """True: every money column summed; [keys]: those summed; {key: dot path}: the answer's own figure (None: sum)."""
    if spec is True:
        spec = [c.key for c in columns if CURRENCY.match(c.unit or "")]
    if not spec:
        return None
    given = {k: _pick(data, path) for k, path in spec.items() if path} if isinstance(spec, dict) else {}
    totals = []
    for c in columns:
        if c.key not in spec:
            totals.append("")
            continue
        figure = given.get(c.key)
        if not isinstance(figure, int | float):
            figure = sum(cell(r, c.key) or 0 for r in rows)
        totals.append(format_value(round(figure, 2), c.unit))
    totals[0] = totals[0] or f"Total ({len(rows)})"
    return totals


def _table(data, rows: list[dict], view: dict, title: str | None = None) -> AnswerTable:
    columns = _columns(rows, view)
    sort = view.get("sort")
    if isinstance(sort, dict) and sort.get("key"):
        key = sort["key"]
        present = [r for r in rows if cell(r, key) is not None]
        rows = sorted(present, key=lambda r: cell(r, key), reverse=bool(sort.get("desc"))) + [
            r for r in rows if cell(r, key) is None]
    values = [[cell(r, c.key) for c in columns] for r in rows]
    numeric = [all(isinstance(v[i], int | float) and not isinstance(v[i], bool) for v in values if v[i] is not None)
               and any(v[i] is not None for v in values) for i in range(len(columns))]
    table_rows = [[format_value(v, c.unit) for v, c in zip(row, columns, strict=True)] for row in values]
    return AnswerTable(columns, table_rows, numeric, _totals(data, rows, columns, view.get("totals")), title)
