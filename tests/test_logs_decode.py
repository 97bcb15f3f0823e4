"""The collector's fast decode path against the slow one it stands for.

The collector reads a service's `…T12:07:55.548Z` from a per-second cache, parses a JSON line once and sends the
embedded store columns whose metadata the store reads back from the lines (`LinesBatch`, `finopti.logs.wire`); any
other receiver gets Loki's JSON with every entry's metadata spelled out (`LokiBatch`). The shortcuts must agree with
the long way on every input, and no line, however odd, may stop the reader (an exception there stops collection,
and a restarted collector would read the same line again)."""

import json
import random
import string
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from finopti.logs import wire
from finopti.logs.collector import MAX_SERVICES, LinesBatch, LokiBatch, ParseStats, parse_line
from finopti.logs.search import parse_cursor
from finopti.logs.store import Admission, LogQuery, LogStore
from finopti.logs.times import OLDEST_NS, ns_to_rfc3339, rfc3339_ns, second_cache

NOW = 1_795_700_000_000_000_000  # 2026-11-26T13:33:20Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_ns(text: str, now_ns: int) -> int:
    """The long way: Python's ISO 8601 reader, else the time of reading."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return now_ns
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    delta = parsed - EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def ts_of(ts: object, now_ns: int = NOW) -> int:
    return parse_line(orjson.dumps({"ts": ts, "message": "m"}), "ui", now_ns, ParseStats(), grace_ns=10**30).ts_ns


def test_cached_seconds_agree_with_the_calendar():
    """Every millisecond format time from 1970 to 2199, read twice (the second time from the cache)."""
    rng = random.Random(14)
    second_cache.clear()
    for _ in range(3000):
        ms = rng.randrange(0, 7_258_118_400_000)  # up to 2200-01-01
        text = (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"
        assert ts_of(text) == ts_of(text) == rfc3339_ns(text) == ms * 1_000_000, text


@pytest.mark.parametrize("text", [
    "2026-11-26T12:07:55.²²²Z",  # digits to str.isdigit, not to int()
    "2026-11-26T12:07:55.١٢٣Z",  # Arabic-Indic digits: int() reads them, an ISO date does not
    "2026-11-26T12:07:55.-12Z", "2026-11-26T12:07:55. 12Z", "2026-11-26T12:07:55.+12Z", "2026-11-26T12:07:55.1_2Z",
    "2026-11-26T12:07:55,548Z", "2026-11-26T12:07:55.5481", "2026-11-26T12:07:55.548+01:00",
    "2026-11-26 12:07:55.548Z", "2026-11-26T12:07:55Z", "2026-11-26T12:07:55.548123Z", "2026-02-30T12:07:55.548Z",
    "2026-13-26T12:07:55.548Z", "0000-11-26T12:07:55.548Z", "yesterday at noon……Z", "",
    "1969-12-31T23:59:59.999Z", "1969-12-31T23:59:58.500Z",  # before 1970: int(timestamp()) rounded towards 0
])
def test_near_misses_of_the_cached_format_take_the_long_way(text):
    for _ in range(2):  # the second time, a second's text may be in the cache
        assert ts_of(text) == reference_ns(text, NOW), text


def test_a_leap_second_is_the_next_second():
    """`…:60` (a leap second, which Python's ISO reader refuses) is read as the calendar counts it, not as the
    time of reading."""
    assert ts_of("2016-12-31T23:59:60.500Z") == reference_ns("2017-01-01T00:00:00.500Z", NOW)


@pytest.mark.parametrize("raw", [b'{"ts": "0001-01-01T00:00:00.000Z", "message": "m"}',
                                 b'{"ts": "1600-01-01T00:00:00+00:00", "message": "m"}',
                                 b"0001-01-01 00:00:00 no such local time", b"1600-01-01 00:00:00,000 INFO m"])
def test_a_time_before_1677_is_dropped_as_too_old_not_a_crash(tmp_path, raw):
    """Times are int64 ns (1677-2262): an older one raised in the columns body (OverflowError) or, for a text line
    dated in year 1, in the local-time conversion. Such a line reaches the store, which drops it as too old."""
    parsed = parse_line(raw, "ui", NOW, ParseStats())
    assert parsed.ts_ns in (OLDEST_NS, NOW)  # `0001-01-01 00:00:00` local: no such time, read as the time of reading
    store = store_of(tmp_path, "old")
    try:
        admission = Admission()
        store.push_lines(_batch(parsed).body(), now_ns=NOW, admission=admission)
        assert admission.too_old == (parsed.ts_ns == OLDEST_NS)
    finally:
        store.close()


@pytest.fixture
def new_york_winter(monkeypatch):
    """The machine's zone 5 hours behind UTC (a POSIX zone string: no tz database needed)."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-26T12:07:43.123Z INFO zap's console", "2026-11-26T12:07:43.123000Z"),
    ("2026-11-26T12:07:43+02:00 an offset", "2026-11-26T10:07:43.000000Z"),
    ("2026-11-26T12:07:43.5-0130 another", "2026-11-26T13:37:43.500000Z"),
    ("2026-11-26 12:07:43,954 INFO no zone: local", "2026-11-26T17:07:43.954000Z"),
    ("[2026-11-26 12:08:17.666][1][info] Envoy: local", "2026-11-26T17:08:17.666000Z"),
])
def test_a_text_line_dated_in_a_zone_of_its_own(new_york_winter, text, expected):
    """A text line's leading time was read in the machine's zone even when it names its own (`Z`, `+02:00`): on a
    machine not on UTC, such lines were hours off, out of order with the JSON lines of the same request."""
    parsed = parse_line(text.encode(), "worker", NOW, ParseStats(), grace_ns=10**30)
    assert ns_to_rfc3339(parsed.ts_ns) == expected


HOSTILE = [None, True, 0, -1, 3.5, 10**30, "", " ", "²", "\u0000", "é" * 300, [], ["error"], {}, {"level": "error"},
           [[[]]]]


@pytest.mark.parametrize("field", ["ts", "level", "service", "message", "trace_id", "span_id", "request_id", "user",
                                   "route", "source", "component"])
def test_no_value_of_any_field_stops_the_reader(field):
    """Every odd value of every field the collector reads, through both push bodies, into the store."""
    for value in HOSTILE:
        raw = json.dumps({"ts": "2026-11-26T12:07:55.548Z", "level": "info", "message": "m", field: value}).encode()
        for line in (raw, b'{"' + field.encode() + b'": "\\ud800", "message": "m"}'):  # a lone surrogate
            parsed = parse_line(line, "ui", NOW, ParseStats())
            assert parsed.service and parsed.level and parsed.ts_ns > 0
            columns, loki = LinesBatch(), LokiBatch()
            assert columns.add(parsed, 1_000_000) and loki.add(parsed, 1_000_000)
            [(labels, decoded)] = wire.decode(columns.body())
            assert decoded.values() == orjson.loads(loki.body())["streams"][0]["values"]


@pytest.mark.parametrize(("ts", "expected"), [
    (1_795_699_000, 1_795_699_000 * 10**9), (1_795_699_000.125, 1_795_699_000_125_000_000),  # s (zap: a fraction)
    (1_795_699_000_125, 1_795_699_000_125_000_000), (1_795_699_000_125_001, 1_795_699_000_125_001_000),  # ms, µs
    (1_795_699_000_125_000_001, 1_795_699_000_125_000_001), ("1795699000", 1_795_699_000 * 10**9),  # ns; digits
    ("1795699000.5", 1_795_699_000_500_000_000),
    # Not a time (a counter, a mistake): dated when read, not dropped as too old nor beyond int64.
    (0, NOW), (-1, NOW), (5, NOW), (2**64 - 1, NOW), (True, NOW), ("١٧٩٥٦٩٩٠٠٠", NOW), (float("nan"), NOW), ([], NOW),
])
def test_a_time_written_as_a_unix_number(ts, expected):
    assert ts_of(ts) == expected


@pytest.mark.parametrize(("fields", "expected"), [
    ({"time": 1_795_699_000_123}, 1_795_699_000_123_000_000),  # pino
    ({"time": "2026-11-26T14:00:00+02:00"}, 1_795_694_400_000_000_000),  # Go's slog, logrus, bunyan
    ({"timestamp": "2026-11-26T12:00:00.5Z"}, 1_795_694_400_500_000_000),  # structlog
    ({"@timestamp": "2026-11-26T12:00:00Z"}, 1_795_694_400_000_000_000),  # Elastic's ECS
    ({"ts": "2026-11-26T12:00:00Z", "time": 1_795_699_000_123}, 1_795_694_400_000_000_000),  # `ts` first
    ({"time": None, "timestamp": "nonsense"}, NOW),
])
def test_a_time_under_another_name(fields, expected):
    raw = orjson.dumps({"msg": "m", **fields})
    assert parse_line(raw, "ui", NOW, ParseStats(), grace_ns=10**30).ts_ns == expected


def test_an_object_is_not_an_id():
    """A trace id that is an object or a list is no trace id: it was kept as its Python repr (`{'id': …}`)."""
    raw = orjson.dumps({"message": "m", "trace_id": {"id": "ab" * 16}, "request_id": ["r"], "user": 7, "span_id": True})
    assert parse_line(raw, "ui", NOW, ParseStats()).metadata() == {"user": "7"}


@pytest.mark.parametrize(("level", "expected"), [
    ("ERROR", "error"), ("Warn", "warning"), ("warning", "warning"), ("", "info"), ("notice", "notice"),
    (30, "info"), (40, "warning"), (50, "error"), (60, "critical"), (10, "debug"), (0, "info"),  # pino, bunyan
    (" error ", "error"), ("50", "error"), ("30", "info"),  # padded; pino's number as text
    (None, "error"), (["error"], "error"), ({}, "error"), (True, "error"),  # not a level: read from the message
])
def test_levels(level, expected):
    raw = orjson.dumps({"ts": "2026-11-26T12:07:55.548Z", "level": level, "message": "RuntimeError: boom"})
    assert parse_line(raw, "ui", NOW, ParseStats()).level == expected


def test_odd_numbers_in_a_cursor_are_refused_not_crashed_on():
    for text in ["²:1", "1:²", "١:1", "-:1", "1:"]:
        with pytest.raises(ValueError, match="expected <ts_ns>:<id>"):
            parse_cursor(text)
    assert parse_cursor("-5:7") == (-5, 7)


SECRET = "s3cr3t-value-of-the-token"


def random_lines(rng: random.Random, now_ns: int, count: int) -> list[bytes]:
    """Lines as services, Envoy, Python tracebacks and broken writers make them."""
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(8)]
    words = ["idle", "cpu", "zone", "us-central1-a", "café", "日本", "\\", '"', "eyJ"]
    out = []
    for _ in range(count):
        kind = rng.random()
        ts = (EPOCH + timedelta(microseconds=now_ns // 1000 + rng.randrange(-10**9, 10**9))).strftime(
            "%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"
        if kind < 0.6:
            obj = {"ts": ts, "level": rng.choice(["info", "error", "WARN", 50, None]),
                   "service": rng.choice(["ui", "orchestrator", "gcloud-agent", None, 7]),
                   "message": " ".join(rng.choices(words, k=3)), "trace_id": rng.choice([*ids, "", None, 12]),
                   "request_id": rng.choice([*ids, ""]), "user": rng.choice(["bob@finopti.dev", "", None]),
                   "span_id": rng.choice(["ab" * 8, ""]), "route": rng.choice(["/mcp", None])}
            if rng.random() < 0.05:
                obj["ts"] = "2099-01-01T00:00:00.000Z"  # a clock far ahead: stored at read time, original_ts kept
            if rng.random() < 0.05:
                obj["bytes"] = 10**30  # valid JSON that orjson refuses (beyond 64 bits)
            if rng.random() < 0.05:
                obj["route"] = f"/x?access_token={SECRET}"  # redacted in the line, so in its metadata too
            if rng.random() < 0.05:
                obj["x"] = "BAD"  # a bad byte where the field decoder does not look
            out.append(json.dumps({k: v for k, v in obj.items() if v is not None or rng.random() < 0.5}).encode()
                       .replace(b"BAD", b"B\xffD"))
        elif kind < 0.8:
            out.append(f"[{ts}][7258][warning][main] {' '.join(rng.choices(words, k=4))}".encode())
        elif kind < 0.9:
            out.append(b"Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: boom")
        else:
            out.append(bytes(rng.choices(range(1, 256), k=rng.randrange(1, 40))).replace(b"\n", b" "))
    return out


def store_of(tmp_path, name: str) -> LogStore:
    return LogStore(tmp_path / f"{name}.db", retention_seconds=3650 * 86400, background=False)


def test_the_columns_body_stores_what_lokis_json_does(tmp_path):
    """The same lines through the fast body (metadata read back from the lines by the store) and through Loki's
    JSON (metadata spelled out): every query answers the same lines with the same metadata."""
    rng = random.Random(1414)
    now_ns = time.time_ns()
    fast, slow = store_of(tmp_path, "fast"), store_of(tmp_path, "slow")
    try:
        stats = ParseStats()
        for round_ in range(5):
            parsed = [p for raw in random_lines(rng, now_ns, 400)
                      if (p := parse_line(raw, rng.choice(["ui", "gateway.err", "gcloud-agent-v2"]), now_ns + round_,
                                          stats)) is not None]
            columns, loki = LinesBatch(), LokiBatch()
            for p in parsed:
                assert columns.add(p, 10**8) and loki.add(p, 10**8)
            fast.push_lines(columns.body(), now_ns=now_ns)
            slow.push(((s["stream"], s["values"]) for s in orjson.loads(loki.body())["streams"]), now_ns=now_ns)
        assert stats.future > 0
        everything = LogQuery(limit=5000, direction="forward")

        def comparable(found: list[dict]) -> list[tuple]:
            return [(x["ts_ns"], x["service"], x["level"], orjson.dumps(x["line"]), x["metadata"]) for x in found]

        lines = fast.query(everything)
        assert len(lines) == 2000 - stats.empty - stats.own
        assert any(x["metadata"].get("original_ts") for x in lines)
        assert any(x["metadata"].get("route", "").startswith("/x?access_token=") for x in lines)
        assert SECRET not in orjson.dumps(lines).decode()
        queries = [LogQuery(limit=5000, trace_id=t) for t in {x["metadata"].get("trace_id") for x in lines} if t]
        queries += [LogQuery(limit=5000, request_id=r) for r in {x["metadata"].get("request_id") for x in lines} if r]
        queries += [everything, LogQuery(limit=5000, user="bob@finopti.dev"),
                    LogQuery(limit=5000, text="us-central1-a"), LogQuery(limit=5000, levels=["error"]),
                    LogQuery(limit=5000, services=["gateway"])]
        for stage in ("level 0", "merged"):
            if stage == "merged":
                assert fast.merge(force=True) > 0 and slow.merge(force=True) > 0
            for q in queries:
                assert fast.query(q), (stage, q)
                assert comparable(fast.query(q)) == comparable(slow.query(q)), (stage, q)
            # Every line whose metadata shows an id is found by a lookup of that id (the part's id hashes hold it).
            for field in ("trace_id", "request_id"):
                found = {v: {x["id"] for x in fast.query(LogQuery(limit=5000, **{field: v}))}
                         for v in {x["metadata"].get(field) for x in lines} - {None}}
                assert all(x["id"] in found[x["metadata"][field]] for x in lines if x["metadata"].get(field))
    finally:
        fast.close()
        slow.close()


@pytest.mark.parametrize("raw", [b'{"x": "\\ud800"}', b'{"message": "m", "x": NaN}', b"{'x': 1}", b'{"x": "caf\xe9"',
                                 b"[1, 2]"])
def test_a_line_that_is_not_json_is_text(raw):
    """A lone surrogate, NaN, single quotes, a cut line (with a bad byte), an array: text, bad bytes replaced."""
    stats = ParseStats()
    parsed = parse_line(raw, "ui", NOW, stats)
    assert parsed.obj is None and parsed.ts_ns == NOW and stats.not_json == 1
    assert parsed.text == raw.decode(errors="replace").encode()
    assert LokiBatch().add(parsed, 1_000_000)


@pytest.mark.parametrize("raw", [b'{"x": "caf\xe9", "trace_id": "ab"}', b'{"caf\xe9": 1, "trace_id": "ab"}',
                                 b'{"x": ["\xff"], "level": "error", "trace_id": "ab"}'])
def test_a_json_line_with_a_bad_byte_stays_json(raw):
    """Invalid UTF-8 anywhere in a JSON line (where msgspec looks, or in a field it skips unchecked): the byte is
    replaced and the line read as JSON, as the store reads the stored line back: its trace id is indexed."""
    stats = ParseStats()
    parsed = parse_line(raw, "ui", NOW, stats)
    assert parsed.text == raw.decode(errors="replace").encode() and stats.invalid_utf8 == 1 and not stats.not_json
    assert parsed.obj is not None and parsed.metadata() == {"trace_id": "ab"}
    [(_, columns)] = wire.decode(_batch(parsed).body())
    assert columns.values() == [[str(parsed.ts_ns), parsed.text.decode(), {"trace_id": "ab"}]]


def _batch(parsed) -> LinesBatch:
    batch = LinesBatch()
    assert batch.add(parsed, 1_000_000) and LokiBatch().add(parsed, 1_000_000)
    return batch


def test_a_line_nested_too_deep_is_text_and_can_be_queried(tmp_path):
    """msgspec raises RecursionError (not a DecodeError) past ~1,000 levels: such a line is text, not a crash of
    the collector's reader, nor of a query that reads it back."""
    deep = b'{"trace_id": "ab", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    parsed = parse_line(deep, "ui", NOW, ParseStats())
    assert parsed.obj is None and parsed.text == deep
    store = store_of(tmp_path, "deep")
    try:
        store.push_lines(_batch(parsed).body(), now_ns=NOW)
        [line] = store.query(LogQuery(start=0))
        assert line["line"] == deep.decode() and line["metadata"] == {}
    finally:
        store.close()


def test_random_bytes_never_stop_the_reader():
    """Random bytes after a `{`, and good lines with a few bytes changed: every one goes into both push bodies."""
    rng = random.Random(7)
    alphabet = string.printable.encode() + bytes(range(128, 256))
    good = random_lines(rng, NOW, 200)
    for n in range(6000):
        if n % 2:
            raw = b"{" + bytes(rng.choices(alphabet, k=rng.randrange(0, 60)))
        else:
            raw = bytearray(rng.choice(good))
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(len(raw))] = rng.choice(alphabet)
            raw = bytes(raw)
        parsed = parse_line(raw, "ui", NOW, ParseStats())
        if parsed is not None:
            assert LinesBatch().add(parsed, 1_000_000) and LokiBatch().add(parsed, 1_000_000)


def test_labels_taken_from_lines_are_bounded(monkeypatch):
    """`service` and `level` become labels, a stream per value: a writer that put a new value in every line would
    make a stream per line. Past MAX_SERVICES names a line's file names its service; a level that is not a short
    word is read from the message."""
    import finopti.logs.collector as collector_module

    monkeypatch.setattr(collector_module, "_services", set())
    stats = ParseStats()

    def parsed(**fields):
        return parse_line(orjson.dumps({"message": "RuntimeError: boom", **fields}), "worker", NOW, stats)

    services = {parsed(service=f"svc-{i}").service for i in range(MAX_SERVICES + 44)}
    assert len(services) == MAX_SERVICES + 1 and "worker" in services and stats.capped == 44
    assert parsed(service="svc-3").service == "svc-3"  # admitted before the cap: still its own
    levels = {parsed(level=f"{random.Random(i).getrandbits(64):016x}").level for i in range(100)}
    assert levels == {"error"}  # not a word: inferred from the message
    assert {parsed(level=word).level for word in ("notice", "TRACE", "Verbose")} == {"notice", "trace", "verbose"}
