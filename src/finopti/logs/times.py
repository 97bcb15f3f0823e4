"""Times as the log pipeline reads and writes them: nanoseconds since the epoch, RFC 3339 text, durations."""

import calendar
import math
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
second_cache: dict[str, int] = {}  # `2026-11-26T12:07:55` -> ns
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A line dated further ahead than this is stored at its arrival time (Loki's `creation_grace_period` is 10 min).
FUTURE_GRACE_SECONDS = 600.0
# Times are int64 ns (1677-09-21 to 2262-04-11); an older one is read as this, which every retention drops.
OLDEST_NS = -(2**63)


def parse_since(text: str) -> float:
    """`15m`, `1h30m`, `2d`, `90s`, `500ms` or a bare number of seconds -> seconds: finite, not negative
    (`nan`, `-5`, `inf` or 400 nines are not durations)."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"invalid duration {text!r} (expected e.g. 30s, 15m, 1h30m, 2d)") from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not 0 <= seconds < math.inf:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 30s, 15m, 1h30m, 2d)")
    return seconds


def since_ns(text: str, now_ns: int) -> int:
    """The start of `since=<duration>` back from `now_ns`; a duration back beyond 1677 (int64 ns) is from then."""
    return max(OLDEST_NS, now_ns - int(min(parse_since(text), 1e11) * 1e9))


def rfc3339_ns(text: str) -> int:
    """`2026-11-26T12:07:55.548Z` -> ns. The services' and Envoy's format takes a cached fast path:
    the collector converts every line's timestamp, so this is on the hot path."""
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        base = second_cache.get(text[:19])
        if base is None:
            try:
                base = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1_000_000_000
            except ValueError:
                base = -1
            if len(second_cache) > 4096:
                second_cache.clear()
            second_cache[text[:19]] = base
        millis = text[20:23]
        if base >= 0 and millis.isascii() and millis.isdigit():  # int() takes `²` or `١` too
            return base + int(millis) * 1_000_000
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return max(OLDEST_NS, _ns_since_epoch(parsed))


def _ns_since_epoch(aware: datetime) -> int:
    """Exact, before 1970 too (int(timestamp()) rounds -0.5 s to 0)."""
    delta = aware - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


# A text line that starts with its own time: Envoy's `[2026-11-26 12:08:17.666]`, supervisord's and Python
# logging's `2026-11-26 12:07:43,954`; both write this machine's local time, without a zone. A zone written after
# it (`2026-11-26T12:07:43.123Z`, zap's console, Go; `+02:00`) is the line's own.
_LEADING_TIME = re.compile(r"\[?(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
                           r"(?:([Zz])|([+-])(\d\d):?(\d\d))?(?![\d:])", re.ASCII)


def leading_time_ns(text: str) -> int | None:
    """The time a text line starts with, in its own zone if it names one, else read in the local time zone, in ns;
    None when it starts with none."""
    match = _LEADING_TIME.match(text)
    if match is None:
        return None
    *fields, fraction, utc, sign, hours, minutes = match.groups()
    try:
        written = datetime(*map(int, fields))
        if utc or sign:
            offset = timedelta(hours=int(hours), minutes=int(minutes)) if sign else timedelta(0)
            aware = written.replace(tzinfo=timezone(-offset if sign == "-" else offset))
        else:
            aware = written.astimezone(UTC)  # naive: astimezone() reads it in the local zone, as it was written
    except (ValueError, OverflowError, OSError):  # `0001-01-01 00:00:00`: no such time in the local zone
        return None
    return max(OLDEST_NS, _ns_since_epoch(aware) + int((fraction or "").ljust(9, "0")))


def parse_time(text: str) -> int:
    """A query bound: RFC 3339, or a Unix timestamp in s, ms, µs or ns (told apart by magnitude, as Loki does).
    Numbers are read exactly (a float is off by up to ±128 ns at today's nanoseconds)."""
    text = text.strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        return rfc3339_ns(text)
    if not number.is_finite():
        raise ValueError(f"not a time: {text!r}")
    return _unix_ns(number)


def _unix_ns(number: Decimal) -> int:
    """A Unix time in s, ms, µs or ns, told apart by magnitude (as Loki does) -> ns."""
    for limit, factor in ((10**11, 10**9), (10**14, 10**6), (10**17, 10**3)):
        if abs(number) < limit:
            return int(number * factor)
    return int(number)


_EPOCH_TEXT = re.compile(r"\d{9,19}(\.\d{1,9})?", re.ASCII)
_PLAUSIBLE_NS = (10**18, 2**63)  # 2001-09-09 to 2262: a number outside is a counter or a mistake, not a time


def epoch_ns(value: object) -> int | None:
    """A line's own time given as a Unix time (zap's `1764592075.123` s, pino's ms, ns; a number or its digits in a
    string) -> ns; None for anything else, and for a number that would date the line before 2001 or after 2262
    (0, -1, 10**30: the line is then dated when it was read, rather than dropped as too old or beyond int64)."""
    cls = value.__class__
    if cls is int or (cls is str and _EPOCH_TEXT.fullmatch(value)):
        number = Decimal(value)
    elif cls is float and math.isfinite(value):
        number = Decimal(repr(value))  # the digits written: 1764592075.123, not its binary expansion
    else:
        return None
    ns = _unix_ns(number)
    return ns if _PLAUSIBLE_NS[0] <= ns < _PLAUSIBLE_NS[1] else None


_second_text: dict[int, str] = {}


def ns_to_rfc3339(ns: int) -> str:
    """ns -> `2026-11-26T12:07:55.548123Z` (microseconds: what a person and a JSON client need). Every line a
    query returns is dated so: the second's text is cached."""
    seconds, rest = divmod(ns, 1_000_000_000)
    text = _second_text.get(seconds)
    if text is None:
        text = (_EPOCH + timedelta(seconds=seconds)).isoformat().replace("+00:00", "")
        if len(_second_text) > 4096:
            _second_text.clear()
        _second_text[seconds] = text
    return f"{text}.{rest // 1000:06d}Z"
