"""Numbers a prompt gives in free form: time windows ("past 10 days", "yesterday", "last 24 hours", "this week"),
percentages or thresholds ("under 3%", "below 3 percent", "less than 1.5") and amounts of money ("$2,500",
"5k", "3000 dollars", "a budget of 400").

A window is kept as said, in a small vocabulary the tools understand (`10d`, `24h`, `30m`, `today`,
`yesterday`, `this_morning`, `this_week`); `days` turns it into whole days for the analyses that take days."""

import math
import re
from dataclasses import dataclass

from finopti.services.orchestrator.text import number

UNITS = {
    "m": ("m", 1), "min": ("m", 1), "mins": ("m", 1), "minute": ("m", 1), "minutes": ("m", 1),
    "h": ("h", 1), "hr": ("h", 1), "hrs": ("h", 1), "hour": ("h", 1), "hours": ("h", 1),
    "d": ("d", 1), "day": ("d", 1), "days": ("d", 1),
    "w": ("d", 7), "wk": ("d", 7), "wks": ("d", 7), "week": ("d", 7), "weeks": ("d", 7),
    "fortnight": ("d", 14), "fortnights": ("d", 14),
    "month": ("d", 30), "months": ("d", 30),
}
CALENDAR = {"today": "today", "yesterday": "yesterday", "tonight": "today"}
CALENDAR_PAIRS = {("this", "morning"): "this_morning", ("this", "week"): "this_week", ("this", "day"): "today",
                  ("since", "monday"): "this_week"}
LEADING = frozenset({"last", "past", "previous", "recent", "the", "over", "in", "for", "during", "within", "from",
                     "since", "of"})
PERCENT_WORDS = frozenset({"%", "percent", "pct", "per-cent"})
BELOW = frozenset({"under", "below", "beneath", "<", "lower", "less", "max", "maximum", "at-most"})
ABOVE = frozenset({"over", "above", ">", "more", "greater", "exceeding", "higher", "beyond"})
HOURS_PER_UNIT = {"m": 1 / 60, "h": 1, "d": 24}
MONEY = re.compile(r"^(?P<dollar>\$)?(?P<number>\d[\d,]*(?:\.\d+)?)(?P<scale>[km])?$")
MONEY_UNITS = frozenset({"dollar", "dollars", "usd", "bucks", "$"})
MONEY_SCALES = {"k": 1_000, "m": 1_000_000, "thousand": 1_000, "grand": 1_000, "million": 1_000_000}
BUDGET_WORDS = frozenset({"budget", "budgets", "budgeted"})
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
MONTH_OF = {**{m: m for m in MONTHS}, **{m[:3]: m for m in MONTHS}, "sept": "september"}
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_OF_MONTH = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?$")


@dataclass(frozen=True)
class Window:
    said: str  # the tools' vocabulary: 10d, 24h, 30m, today, yesterday, this_morning, this_week

    @property
    def days(self) -> int:
        """Whole days back from now that cover the window."""
        if self.said in ("today", "yesterday", "this_morning"):
            return 1
        if self.said == "this_week":
            return 7
        amount, unit = float(self.said[:-1]), self.said[-1]
        return max(1, math.ceil(amount * HOURS_PER_UNIT[unit] / 24))


@dataclass(frozen=True)
class Quantity:
    start: int
    end: int
    kind: str  # window, percent, below (a bare number after "under"/"below"), above (a percentage after "over"),
    # money (an amount: "$2,500", "5k", "3000 dollars", a number next to "budget"), date (one day: "2026-11-12",
    # or "november_12" for "on november 12" / "12 nov": the latest such day, as the tools read month names)
    value: float | Window | str


def _amount(token: str, next_token: str) -> float | None:
    if token in ("a", "an", "one") and next_token in UNITS:
        return 1.0
    return number(token)


def _window_at(tokens: tuple[str, ...], i: int) -> tuple[int, Window] | None:
    """A window starting at token i: (tokens used, window)."""
    token = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    if token in CALENDAR:
        return 1, Window(CALENDAR[token])
    if (token, nxt) in CALENDAR_PAIRS:
        return 2, Window(CALENDAR_PAIRS[(token, nxt)])
    compact = _compact_duration(token)
    if compact is not None:
        return 1, compact
    if token in ("last", "past", "previous") and nxt in UNITS and nxt not in ("m", "h", "d", "w"):
        unit, factor = UNITS[nxt]
        return 2, Window(f"{factor}{unit}")
    if token == "couple" and nxt == "of" and i + 2 < len(tokens) and tokens[i + 2] in UNITS:
        unit, factor = UNITS[tokens[i + 2]]
        return 3, Window(f"{2 * factor}{unit}")
    amount = _amount(token, nxt)
    if amount is not None and nxt in UNITS and amount > 0:
        unit, factor = UNITS[nxt]
        value = amount * factor
        return 2, Window(f"{value:g}{unit}")
    if token in ("fortnight",):
        return 1, Window("14d")
    return None


def _compact_duration(token: str) -> Window | None:
    """`10d`, `24h`, `30m`, `2w`."""
    if len(token) < 2 or token[-1] not in "mhdw" or not token[:-1].replace(".", "", 1).isdigit():
        return None
    unit, factor = UNITS[token[-1]]
    value = float(token[:-1]) * factor
    return Window(f"{value:g}{unit}") if value > 0 else None


def _percent_at(tokens: tuple[str, ...], i: int) -> tuple[int, float] | None:
    token = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    if token.endswith("%") and number(token[:-1].lstrip("<")) is not None:
        return 1, number(token[:-1].lstrip("<"))
    value = number(token)
    if value is not None and nxt in PERCENT_WORDS:
        return 2, value
    if value is not None and nxt == "per" and i + 2 < len(tokens) and tokens[i + 2] == "cent":
        return 3, value
    return None


def _money_at(tokens: tuple[str, ...], i: int) -> tuple[int, float] | None:
    """An amount at token i: with a $ or a k/m, followed by dollars/thousand, or a number by the word budget."""
    m = MONEY.match(tokens[i])
    if m is None:
        return None
    value = float(m["number"].replace(",", ""))
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    used = 1
    if nxt in MONEY_SCALES and not m["scale"]:
        value, used = value * MONEY_SCALES[nxt], 2
        nxt = tokens[i + 2] if i + 2 < len(tokens) else ""
    if m["scale"]:
        value *= MONEY_SCALES[m["scale"]]
    if nxt in MONEY_UNITS:
        return used + 1, value
    near_budget = BUDGET_WORDS & set(tokens[max(0, i - 3):i + used + 2])  # "a 9,500 monthly budget"
    if m["dollar"] or m["scale"] or used == 2 or (near_budget and value >= 1):
        return used, value
    return None


def _day(token: str) -> int | None:
    m = DAY_OF_MONTH.match(token)
    return int(m[1]) if m and 1 <= int(m[1]) <= 31 else None


def _date_at(tokens: tuple[str, ...], i: int) -> tuple[int, str] | None:
    """One day at token i: `2026-11-12`, "november 12", "nov 12th", "12 november"."""
    token = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    if ISO_DAY.match(token):
        return 1, token
    if token in MONTH_OF and _day(nxt) is not None:
        return 2, f"{MONTH_OF[token]}_{_day(nxt)}"
    if _day(token) is not None and nxt in MONTH_OF and nxt != "may":
        return 2, f"{MONTH_OF[nxt]}_{_day(token)}"
    return None


def find_quantities(tokens: tuple[str, ...], taken: set[int]) -> list[Quantity]:
    found: list[Quantity] = []
    i = 0
    while i < len(tokens):
        if i in taken:
            i += 1
            continue
        date = _date_at(tokens, i)
        if date is not None:
            used, day = date
            found.append(Quantity(i, i + used, "date", day))  # type: ignore[arg-type]
            i += used
            continue
        window = _window_at(tokens, i)
        if window is not None:
            used, value = window
            start = i
            while start > 0 and tokens[start - 1] in LEADING and start - 1 not in taken:
                start -= 1
            found.append(Quantity(start, i + used, "window", value))
            i += used
            continue
        money = _money_at(tokens, i)
        if money is not None:
            used, value = money
            found.append(Quantity(i, i + used, "money", value))
            i += used
            continue
        percent = _percent_at(tokens, i)
        if percent is not None:
            used, value = percent
            before = tokens[max(0, i - 2):i]
            above = bool(set(before) & ABOVE) and not set(before) & BELOW
            found.append(Quantity(i, i + used, "above" if above else "percent", value))
            i += used
            continue
        value = number(tokens[i])
        if value is not None and i > 0 and (tokens[i - 1] in BELOW or tokens[i - 1] == "than"):
            found.append(Quantity(i, i + 1, "below", value))
        i += 1
    return found
