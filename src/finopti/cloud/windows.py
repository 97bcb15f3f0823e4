"""Time windows as people say them, in the small vocabulary the assistant's log tools take, resolved against a
clock (the sandbox's frozen one for the cloud's logs, the real one for the platform's own).

- `30m`, `6h`, `2d`, `1w`: that long back from now;
- `today`: since midnight UTC; `yesterday`: the whole previous day (midnight to midnight UTC);
- `this_morning`: since the most recent 06:00 UTC (yesterday's, just after midnight);
- `this_week`: since Monday 00:00 UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import InvalidArgument

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_WORDS = {"m": "minute", "h": "hour", "d": "day", "w": "week"}
NAMED = ("today", "yesterday", "this_morning", "this_week")
MAX_SECONDS = 90 * 86400


def bounds(window: str, now: float) -> tuple[float, float]:
    """(start, end) in epoch seconds; end is `now` except for `yesterday`."""
    said = str(window).strip().lower()
    current = datetime.fromtimestamp(now, UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if said == "today":
        return midnight.timestamp(), now
    if said == "yesterday":
        return (midnight - timedelta(days=1)).timestamp(), midnight.timestamp()
    if said == "this_morning":
        six = midnight.replace(hour=6)
        return (six if six <= current else six - timedelta(days=1)).timestamp(), now
    if said == "this_week":
        return (midnight - timedelta(days=midnight.weekday())).timestamp(), now
    match = _DURATION.match(said)
    if not match:
        raise InvalidArgument(f"window must be a duration such as 30m, 6h, 2d or one of {', '.join(NAMED)}; "
                              f"got {window!r}.")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_SECONDS:
        raise InvalidArgument(f"window must be more than 0 and at most 90 days; got {window!r}.")
    return now - seconds, now


def describe(window: str) -> str:
    """"in the last 2 hours", "yesterday", "since this morning" — for answers."""
    said = str(window).strip().lower()
    if said in ("today", "yesterday"):
        return said
    if said == "this_morning":
        return "since this morning"
    if said == "this_week":
        return "this week"
    match = _DURATION.match(said)
    if not match:
        return said
    amount, unit = match.group(1), _UNIT_WORDS[match.group(2)]
    return f"in the last {unit}" if amount == "1" else f"in the last {amount} {unit}s"
