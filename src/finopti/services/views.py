"""Builders for an answer's `view`: how the chat draws an action's `data` (the presentation contract, documented
in docs/console.md and rendered by the ui's views.js). Plain dicts, so an agent's answer stays JSON.

    view = bar(rows="groups", x="key", y=["compute", "disks"], unit="USD", stacked=True,
               columns=[col("key", "Team"), col("compute", unit="USD")], totals=True)
"""

from typing import Any, Literal

Unit = str  # ISO 4217 currency (USD), "%" (0-100), "datetime", "count", "GB", ... (docs/console.md)
# A totals row: True sums every money column; [keys] sums those; {key: dot path in data} shows the answer's own
# (unrounded) total for that column, None sums it.
Totals = bool | list[str] | dict[str, str | None]


def col(key: str, label: str | None = None, unit: Unit | None = None) -> dict:
    """One table column: the row's key, its header (default: from the key), its unit (default: guessed)."""
    out: dict[str, Any] = {"key": key}
    if label:
        out["label"] = label
    if unit is not None:
        out["unit"] = unit
    return out


def stat(label: str, key: str | None = None, unit: Unit | None = None, *, of: str | None = None,
         agg: Literal["sum", "avg", "max", "min"] | None = None) -> dict:
    """A headline number: `key` is a dot path in data; or `agg` over the rows' `of` column."""
    out: dict[str, Any] = {"label": label}
    for name, value in (("key", key), ("unit", unit), ("of", of), ("agg", agg)):
        if value is not None:
            out[name] = value
    return out


def _view(kind: str, **fields: Any) -> dict:
    return {"type": kind, **{k: v for k, v in fields.items() if v is not None}}


def table(*, rows: str | None = None, columns: list[dict] | None = None, totals: Totals | None = None,
          sort: tuple[str, bool] | None = None, stats: list[dict] | None = None, empty: str | None = None,
          title: str | None = None, tables: list[dict] | None = None) -> dict:
    """Rows as a sortable table with a totals row (see `Totals`); `sort` is (key, descending); `tables` are
    further tables drawn under the view (each a `table(rows=..., title=...)`).
    A column key may be a dot path into nested objects (`plans.TWELVE_MONTH.monthly_saving`)."""
    return _view("table", rows=rows, columns=columns, totals=totals, stats=stats, empty=empty, title=title,
                 sort={"key": sort[0], "desc": sort[1]} if sort else None, tables=tables)


def bar(*, x: str, y: list[str], unit: Unit, rows: str | None = None, stacked: bool = False,
        labels: dict[str, str] | None = None, columns: list[dict] | None = None, totals: Totals | None = None,
        sort: tuple[str, bool] | None = None, stats: list[dict] | None = None, limit: int | None = None,
        title: str | None = None, tables: list[dict] | None = None) -> dict:
    """One horizontal bar per row (category `x`), a segment per `y` key, and the table under it."""
    return {**table(rows=rows, columns=columns, totals=totals, sort=sort, stats=stats, title=title, tables=tables),
            **_view("bar", x=x, y=y, unit=unit, stacked=stacked or None, labels=labels, limit=limit)}


def band(lower: str, upper: str, label: str) -> dict:
    """An interval shaded between two row keys (a forecast's 80 %)."""
    return {"lower": lower, "upper": upper, "label": label}


def markers(*, rows: str, x: str, series: str | None = None, label: str | None = None) -> dict:
    """Points of interest drawn as dots on a time series: each row of `rows` marks time `x` on the line named by
    its `series` value (an anomaly's day on its service's line)."""
    return {k: v for k, v in {"rows": rows, "x": x, "series": series, "label": label}.items() if v is not None}


def timeseries(*, x: str, y: list[str], unit: Unit, rows: str | None = None, series: str | None = None,
               labels: dict[str, str] | None = None, stats: list[dict] | None = None,
               columns: list[dict] | None = None, title: str | None = None, bands: list[dict] | None = None,
               marks: dict | None = None, totals: Totals | None = None,
               tables: list[dict] | None = None, joins: dict[str, str] | None = None) -> dict:
    """A line per `y` key (or per value of `series`) over time `x` (ISO 8601 or epoch seconds); the points as a
    table behind a disclosure. `joins` {"forecast": "actual"}: that line starts at the other's last point."""
    return {**table(rows=rows, columns=columns, stats=stats, title=title, totals=totals, tables=tables),
            **_view("timeseries", x=x, y=y, unit=unit, series=series, labels=labels, bands=bands, markers=marks,
                    joins=joins)}


def detail(*, stats: list[dict] | None = None, title: str | None = None) -> dict:
    """One object as label/value pairs, its lists of rows as tables."""
    return _view("detail", stats=stats, title=title)
