"""Billing periods: named ranges ("last_week", "this_month", "2026-10") or dates, resolved against a backend's
today. Days are UTC calendar days; a period is [start, end) in epoch seconds, whole days only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ..errors import InvalidArgument

DAY = 86400

NAMED = ("yesterday", "last_7_days", "last_14_days", "last_30_days", "last_90_days", "this_week", "last_week",
         "this_month", "month_to_date", "last_month", "this_quarter", "last_quarter", "this_year")
LAST_DAYS = re.compile(r"^last_(\d{1,3})_days?$")  # any number of days: last_10_days
MONTH_DAY = re.compile(r"^([a-z]+)_(\d{1,2})$")  # november_12: the latest November 12 that has begun
QUARTERS = ("q1", "q2", "q3", "q4")  # the latest such quarter that has begun
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")


def day_of(ts: int) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def ts_of(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def iso_day(ts: int) -> str:
    return day_of(ts).isoformat()


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month_start(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


@dataclass(frozen=True)
class Period:
    start: int
    end: int  # exclusive
    label: str

    @property
    def days(self) -> int:
        return (self.end - self.start) // DAY

    def day_list(self) -> list[int]:
        return list(range(self.start, self.end, DAY))

    def previous(self) -> Period:
        """The period just before: the previous calendar month for a whole month, else the same length."""
        first, last = day_of(self.start), day_of(self.end - DAY)
        if first.day == 1 and next_month_start(last) == day_of(self.end):
            prev_first = month_start(first - timedelta(days=1))
            return Period(ts_of(prev_first), self.start, f"month before {self.label}")
        return Period(self.start - self.days * DAY, self.start, f"{self.days} days before {self.label}")

    def describe(self) -> dict:
        return {"label": self.label, "start": iso_day(self.start), "end": iso_day(self.end - DAY), "days": self.days}


def _parse_date(name: str, value: object) -> date:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise InvalidArgument(f"{name} must be a date YYYY-MM-DD, got {value!r}.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"{name} is not a real date: {value!r}.") from None


def _named(name: str, today: date) -> tuple[date, date]:
    """[first, last] days of a named period; today is the first day without complete data. Periods that
    run past yesterday (this week, this month) are cut to the data by `clamp`."""
    yesterday = today - timedelta(days=1)
    monday = today - timedelta(days=today.weekday())
    if name == "yesterday":
        return yesterday, yesterday
    if LAST_DAYS.match(name):
        return today - timedelta(days=int(LAST_DAYS.match(name)[1])), yesterday
    if name in MONTHS:  # the latest such month that has begun
        month = MONTHS.index(name) + 1
        year = today.year if month <= today.month else today.year - 1
        first = date(year, month, 1)
        return first, next_month_start(first) - timedelta(days=1)
    if name in QUARTERS or name in ("this_quarter", "last_quarter"):
        current = (today.month - 1) // 3
        if name == "this_quarter":
            quarter, year = current, today.year
        elif name == "last_quarter":
            quarter, year = (current - 1) % 4, today.year - (current == 0)
        else:
            quarter = QUARTERS.index(name)
            year = today.year if quarter <= current else today.year - 1
        first = date(year, 3 * quarter + 1, 1)
        return first, next_month_start(date(year, 3 * quarter + 3, 1)) - timedelta(days=1)
    if name == "this_year":
        return date(today.year, 1, 1), date(today.year, 12, 31)
    if name == "this_week":
        return monday, monday + timedelta(days=6)
    if name == "last_week":
        return monday - timedelta(days=7), monday - timedelta(days=1)
    if name in ("this_month", "month_to_date"):
        return month_start(today), next_month_start(today) - timedelta(days=1)
    if name == "last_month":
        return month_start(month_start(today) - timedelta(days=1)), month_start(today) - timedelta(days=1)
    raise AssertionError(name)


def _one_day(name: str, today: date) -> date:
    """`2026-11-12`, or `november_12`: the latest such day before today."""
    try:
        if name[:4].isdigit():
            return date.fromisoformat(name)
        month, day = MONTH_DAY.match(name).groups()  # type: ignore[union-attr]
        for year in (today.year, today.year - 1):
            found = date(year, MONTHS.index(month) + 1, int(day)) if int(day) <= 31 else None
            if found and found < today:
                return found
    except ValueError:
        pass
    raise InvalidArgument(f"period {name!r} is not a real day.")


def resolve(period: str | None, start: str | None, end: str | None, today_ts: int, first_ts: int,
            default: str = "last_30_days") -> Period:
    """A period from a name, a month (YYYY-MM) or start/end dates (both inclusive), inside the data's range
    [first_ts, today_ts). A period reaching past the data is cut to it; one wholly outside is an error."""
    today = day_of(today_ts)
    if start is not None or end is not None:
        if period is not None:
            raise InvalidArgument("give either period or start/end dates, not both.")
        first = _parse_date("start", start) if start is not None else day_of(first_ts)
        last = _parse_date("end", end) if end is not None else today - timedelta(days=1)
        label = f"{first.isoformat()} to {last.isoformat()}"
    else:
        period = default if period is None else period
        if not isinstance(period, str):
            raise InvalidArgument(f"period must be a string, got {period!r}.")
        name = period.strip()
        if not re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", name):
            name = name.lower().replace(" ", "_").replace("-", "_")
        day = MONTH_DAY.match(name)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", name) or (day and day[1] in MONTHS):
            first = last = _one_day(name, today)
        elif re.fullmatch(r"\d{4}-\d{2}", name):
            try:
                first = date.fromisoformat(f"{name}-01")
            except ValueError:
                raise InvalidArgument(f"period {period!r} is not a real month.") from None
            last = next_month_start(first) - timedelta(days=1)
        elif name in NAMED or name in MONTHS or name in QUARTERS or (
                LAST_DAYS.match(name) and int(LAST_DAYS.match(name)[1]) > 0):
            first, last = _named(name, today)
        else:
            raise InvalidArgument(f"unknown period {period!r}; use one of {', '.join(NAMED)}, last_<n>_days, a "
                                  "month's name, q1-q4, YYYY-MM, one day (YYYY-MM-DD or november_12), or start/end "
                                  "dates YYYY-MM-DD.")
        label = name
    if last < first:
        raise InvalidArgument(f"the period ends ({last.isoformat()}) before it starts ({first.isoformat()}).")
    return clamp(Period(ts_of(first), ts_of(last) + DAY, label), today_ts, first_ts)


def clamp(period: Period, today_ts: int, first_ts: int) -> Period:
    data = f"billing data covers {iso_day(first_ts)} to {iso_day(today_ts - DAY)}"
    if period.start >= today_ts or period.end <= first_ts:
        raise InvalidArgument(f"no billing data for {period.label} ({iso_day(period.start)} to "
                              f"{iso_day(period.end - DAY)}): {data}.")
    return Period(max(period.start, first_ts), min(period.end, today_ts), period.label)
