"""The log store: its library (filters, order, retention, delivery records) and its service over a real socket
(push JSON and protobuf, query API, 400s, SSE tail, trace waterfall, labels)."""

import gzip
import json
import os
import random
import sqlite3
import threading
import time
import uuid

import cramjam
import httpx
import orjson
import pytest
import uvicorn

from finopti.logs import wire
from finopti.logs.cli_support import newest_lines
from finopti.logs.lokipb import encode_push
from finopti.logs.metadata import from_object, indexed_values
from finopti.logs.search import text_pattern
from finopti.logs.store import Admission, Delivery, LogQuery, LogStore
from finopti.ports import free_port
from finopti.services.common import ServiceSettings
from finopti.services.logstore.app import create_app

T0 = 1_795_000_000_000_000_000  # ns
MS = 1_000_000


def entry(ts: int, service: str, message: str, level: str = "info", **fields) -> tuple[dict, list]:
    obj = {"ts": "", "level": level, "service": service, "message": message, **fields}
    meta = {k: fields[k] for k in ("trace_id", "span_id", "request_id", "user", "route") if fields.get(k)}
    labels = {"job": "finopti", "service": service, "level": level}
    return labels, [str(ts), orjson.dumps(obj).decode(), meta] if meta else [str(ts), orjson.dumps(obj).decode()]


def push(store: LogStore, *entries: tuple[dict, list], delivery: Delivery | None = None) -> int:
    return store.push([(labels, [value]) for labels, value in entries], delivery)


@pytest.fixture
def store(tmp_path):
    s = LogStore(tmp_path / "logstore.db", retention_seconds=3650 * 86400)
    yield s
    s.close()


def messages(lines: list[dict]) -> list[str]:
    return [line["line"]["message"] if isinstance(line["line"], dict) else line["line"] for line in lines]


def test_filters_order_and_limit(store):
    trace_a, trace_b = uuid.uuid4().hex, uuid.uuid4().hex
    push(
        store,
        entry(T0 + 1 * MS, "orchestrator", "asked", trace_id=trace_a, request_id="req-a"),
        entry(T0 + 2 * MS, "gcloud-agent", "listing instances in us-central1-a", trace_id=trace_a, request_id="req-a"),
        entry(T0 + 3 * MS, "gcloud-tools", "quota exceeded", level="error", trace_id=trace_a, request_id="req-a"),
        entry(T0 + 4 * MS, "orchestrator", "asked", trace_id=trace_b, request_id="req-b"),
        entry(T0 + 5 * MS, "ui", "page served"),
    )
    # Pushed out of time order: still returned by time.
    push(store, entry(T0, "ui", "first of all"))

    assert messages(store.query(LogQuery())) == [
        "page served", "asked", "quota exceeded", "listing instances in us-central1-a", "asked", "first of all"
    ]
    assert messages(store.query(LogQuery(direction="forward", limit=2))) == ["first of all", "asked"]
    assert messages(store.query(LogQuery(services=["ui"]))) == ["page served", "first of all"]
    assert len(store.query(LogQuery(services=["ui", "gcloud-tools"]))) == 3
    assert messages(store.query(LogQuery(levels=["error"]))) == ["quota exceeded"]
    assert store.query(LogQuery(services=["ui"], levels=["error"])) == []
    assert store.query(LogQuery(services=["nobody"])) == []
    assert messages(store.query(LogQuery(trace_id=trace_a, direction="forward"))) == [
        "asked", "listing instances in us-central1-a", "quota exceeded"
    ]
    assert messages(store.query(LogQuery(request_id="req-b"))) == ["asked"]
    assert store.query(LogQuery(trace_id=uuid.uuid4().hex)) == []
    assert messages(store.query(LogQuery(start=T0 + 2 * MS, end=T0 + 4 * MS))) == [
        "quota exceeded", "listing instances in us-central1-a"
    ]
    # Text: words in order, case-insensitive; `us-central1-a` is a phrase of three words; `*` for a prefix.
    assert messages(store.query(LogQuery(text="US-CENTRAL1-A"))) == ["listing instances in us-central1-a"]
    assert messages(store.query(LogQuery(text="quota"))) == ["quota exceeded"]
    assert store.query(LogQuery(text="exceeded quota")) == []
    assert store.query(LogQuery(text="instance")) == []
    assert messages(store.query(LogQuery(text="instance*"))) == ["listing instances in us-central1-a"]
    assert messages(store.query(LogQuery(text="asked", services=["orchestrator"], trace_id=trace_b))) == ["asked"]
    assert store.query(LogQuery(text="\" OR * NEAR(")) == []  # FTS5 syntax is not interpreted

    line = store.query(LogQuery(trace_id=trace_a, levels=["error"]))[0]
    assert line["service"] == "gcloud-tools" and line["level"] == "error"
    assert line["metadata"] == {"trace_id": trace_a, "request_id": "req-a"}
    assert line["line"]["message"] == "quota exceeded"  # parsed JSON
    assert line["ts"].endswith("Z") and line["ts_ns"] == T0 + 3 * MS


def test_ids_in_many_row_blocks(store):
    """Trace and request keys start with the row's block of 8192 rows: lookups probe every block."""
    trace_id = uuid.uuid4().hex
    values = [[str(T0 + i), f"line {i}", {"trace_id": trace_id if i % 5000 == 0 else f"t{i}"}] for i in range(20_000)]
    store.push([({"service": "svc", "level": "info"}, values)])
    found = store.query(LogQuery(trace_id=trace_id, direction="forward"))
    assert [line["line"] for line in found] == ["line 0", "line 5000", "line 10000", "line 15000"]


def test_plain_lines_and_other_labels(store):
    store.push([({"job": "varlogs", "service_name": "nginx"}, [[str(T0), "GET / 200"]])])
    [line] = store.query(LogQuery(services=["nginx"]))
    assert line["line"] == "GET / 200" and line["level"] == "info" and line["metadata"] == {}
    assert store.labels() == ["job", "service_name"]
    assert store.label_values("job") == ["varlogs"]


def test_a_delivery_is_stored_once(store):
    first = Delivery("c1", 1, {"/x.log": [1, 10]})
    assert push(store, entry(T0, "ui", "one"), delivery=first) == 1
    assert push(store, entry(T0, "ui", "one"), delivery=first) == 0  # a retry after a lost answer
    assert push(store, entry(T0 + 1, "ui", "two"), delivery=Delivery("c1", 2, {"/x.log": [1, 20]})) == 1
    assert push(store, entry(T0 + 2, "ui", "three"), delivery=Delivery("c2", 1)) == 1  # another collector
    assert messages(store.query(LogQuery(direction="forward"))) == ["one", "two", "three"]
    assert store.delivered("c1") == Delivery("c1", 2, {"/x.log": [1, 20]})
    assert store.delivered("nobody") is None


def test_a_push_that_fails_for_a_full_disk_leaves_nothing_behind(store):
    """A full disk (here: the database may not grow by a page) fails the push's transaction, and SQLite rolls it
    back itself. A new stream's id must not outlive it: it was cached, the next new stream got the same id, and the
    first stream's later lines were filed under the second's labels."""
    push(store, entry(T0, "a", "one"))
    pages = store._writer.execute("PRAGMA page_count").fetchone()[0]
    store._writer.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError, match="full"):  # not "cannot rollback - no transaction is active"
        push(store, *[entry(T0 + i, "b", os.urandom(3000).hex()) for i in range(1, 51)])
    store._writer.execute("PRAGMA max_page_count = 1073741823")  # space again
    push(store, entry(T0 + 60, "c", "from c"))
    push(store, entry(T0 + 61, "b", "from b"))
    lines = store.query(LogQuery(direction="forward"))
    assert [(line["service"], line["line"]["message"]) for line in lines] == [
        ("a", "one"), ("c", "from c"), ("b", "from b")]
    assert store.label_values("service") == ["a", "b", "c"]


def test_retention_by_age_and_size(tmp_path):
    now = T0 + 10 * 3600 * 10**9
    clock = [now - 3600 * 10**9]
    store = LogStore(tmp_path / "r.db", retention_seconds=3600, max_bytes=1 << 40, clock=lambda: clock[0],
                     background=False)
    store.push([({"service": "old"}, [[str(now - 2 * 3600 * 10**9), "old line"]]),  # pushed while it was recent
                ({"service": "new"}, [[str(now - 60 * 10**9), "new line"]])])
    store.merge(force=True)
    clock[0] = now
    assert store.enforce_retention() == 1
    assert [line["line"] for line in store.query(LogQuery())] == ["new line"]
    assert store.query(LogQuery(text="old")) == []

    # By size: lines that do not compress (random), so that their parts are big.
    store.max_bytes = 2 << 20
    for batch in range(10):
        store.push([({"service": "bulk"}, [[str(now + batch * 1000 + i), f"{os.urandom(450).hex()} {batch}"]
                                           for i in range(1000)])])
        store.merge(force=True)
    assert sum(p.size for p in store._catalog) > store.max_bytes
    deleted = store.enforce_retention()
    assert deleted > 0 and sum(p.size for p in store._catalog) <= store.max_bytes
    assert store.stats()["lines"] == 10_001 - deleted
    newest = store.query(LogQuery(limit=1))[0]
    assert newest["line"].endswith(" 9")  # the oldest went first
    oldest = store.query(LogQuery(limit=1, direction="forward", services=["bulk"]))[0]
    assert int(oldest["line"].rsplit(" ", 1)[1]) * 1000 >= deleted - 1000
    store.close()


def test_a_clock_ahead_cannot_pin_the_store_and_old_lines_are_dropped(tmp_path):
    store = LogStore(tmp_path / "skew.db", retention_seconds=86400)
    now = time.time_ns()
    admission = Admission()
    stored = store.push([({"service": "skewed"}, [
        [str(now - 60 * 10**9), "a minute ago"],
        [str(now + 5 * 60 * 10**9), "five minutes ahead: within the grace period"],
        ["4102444800000000000", "dated 2100", {"trace_id": "ab" * 16}],
        [str(now - 2 * 86400 * 10**9), "older than the retention"],
    ])], now_ns=now, admission=admission)
    assert stored == 3 and (admission.future, admission.too_old) == (1, 1)
    lines = store.query(LogQuery(direction="forward"))
    assert [line["line"] for line in lines] == [
        "a minute ago", "dated 2100", "five minutes ahead: within the grace period"]
    dated = lines[1]
    assert dated["ts_ns"] == now  # stored when it came
    assert dated["metadata"] == {"trace_id": "ab" * 16, "original_ts": "2100-01-01T00:00:00.000000Z"}
    store.push([({"service": "skewed"}, [[str(now + 1000), "the next line"]])], now_ns=now + 1000)
    assert store.query(LogQuery(limit=1))[0]["line"] == "five minutes ahead: within the grace period"
    assert store.enforce_retention(now_ns=now + 2 * 86400 * 10**9) == 4  # the line from 2100 ages out too
    store.close()


# --- the service, on a real socket -------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("FINOPTI_LOGSTORE_RETENTION", "3650d")
    port = free_port()
    settings = ServiceSettings(service="logstore", port=port, home=tmp_path)
    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "log store did not start"
        time.sleep(0.02)
    yield base
    srv.should_exit = True
    thread.join(10)


def json_push(base: str, streams: list[tuple[dict, list]], **kwargs) -> httpx.Response:
    body = {"streams": [{"stream": labels, "values": values} for labels, values in streams]}
    return httpx.post(f"{base}/loki/api/v1/push", json=body, **kwargs)


def push_entries(base: str, *entries: tuple[dict, list], **kwargs) -> httpx.Response:
    return json_push(base, [(labels, [value]) for labels, value in entries], **kwargs)


def test_push_json_gzip_and_protobuf(server):
    labels = {"job": "finopti", "service": "ui", "level": "info"}
    assert json_push(server, [(labels, [[str(T0), "json line", {"trace_id": "aa" * 16}]])]).status_code == 204
    body = orjson.dumps({"streams": [{"stream": labels, "values": [[str(T0 + 1), "gzip line"]]}]})
    r = httpx.post(f"{server}/loki/api/v1/push", content=gzip.compress(body),
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 204
    pb = encode_push([(labels, [[str(T0 + 2), "protobuf line", {"trace_id": "bb" * 16, "user": "bob"}]])])
    r = httpx.post(f"{server}/loki/api/v1/push", content=pb, headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 204
    lines = httpx.get(f"{server}/api/logs", params={"direction": "forward"}).json()["lines"]
    assert [line["line"] for line in lines] == ["json line", "gzip line", "protobuf line"]
    assert lines[2]["metadata"] == {"trace_id": "bb" * 16, "user": "bob"}
    assert httpx.get(f"{server}/loki/api/v1/labels").json() == {"status": "success",
                                                                "data": ["job", "level", "service"]}
    assert httpx.get(f"{server}/loki/api/v1/label/service/values").json()["data"] == ["ui"]


@pytest.mark.parametrize(("body", "problem"), [
    (b"not json", "not valid JSON"),
    (b'{"streams": 3}', "streams"),
    (b'{"streams": [{"stream": {"service": 1}, "values": []}]}', "streams[0].stream"),
    (b'{"streams": [{"stream": {}, "values": [["x", "line"]]}]}', "streams[0].values[0][0]"),
    (b'{"streams": [{"stream": {}, "values": [["1", 2]]}]}', "streams[0].values[0][1]"),
    (b'{"streams": [{"stream": {}, "values": [["1", "a", {"trace_id": 5}]]}]}', "streams[0].values[0][2]"),
    (b'{"streams": [{"stream": {}, "values": [["99999999999999999999999", "a"]]}]}', "streams[0].values[0][0]"),
])
def test_bad_push_is_a_400_naming_the_field(server, body, problem):
    r = httpx.post(f"{server}/loki/api/v1/push", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert problem in r.json()["message"]


def test_a_push_body_too_large_once_uncompressed_is_refused_before_it_is_uncompressed(server):
    """5 bytes of LZ4 declaring 2 GiB made the store allocate 2 GiB (and die of it under a memory limit); a snappy
    body can declare as much, a gzip bomb inflates 1,000-fold. A size the body cannot hold is a 400; a real body
    over 64 MiB uncompressed a 413 naming the limit; the store goes on."""
    lines_before = httpx.get(f"{server}/api/stats").json()["lines"]
    limit = 64 * 1024 * 1024
    snappy_2gib = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x07]) + b"\x00"
    big = b" " * (limit + 1)
    bodies = [((0x7FFFFFFF).to_bytes(4, "little") + b"\x00", "lz4", wire.CONTENT_TYPE, 400),
              (snappy_2gib, "", "application/x-protobuf", 400),
              (gzip.compress(snappy_2gib), "gzip", "application/x-protobuf", 400),
              (bytes(cramjam.lz4.compress_block(big)), "lz4", wire.CONTENT_TYPE, 413),
              (bytes(cramjam.snappy.compress_raw(big)), "", "application/x-protobuf", 413),
              (gzip.compress(big), "gzip", "application/json", 413)]
    for body, encoding, content_type, status in bodies:
        headers = {"content-type": content_type, **({"content-encoding": encoding} if encoding else {})}
        r = httpx.post(f"{server}/loki/api/v1/push", content=body, headers=headers, timeout=30)
        assert r.status_code == status, (encoding, content_type, r.text)
        assert ("declares" if status == 400 else str(limit)) in r.json()["message"]
        assert r.json()["error"] == ("bad_request" if status == 400 else "payload_too_large")
    assert push_entries(server, entry(T0, "after", "still here")).status_code == 204
    assert httpx.get(f"{server}/api/stats").json()["lines"] == lines_before + 1


def test_any_broken_push_body_is_a_400(server):
    """Bodies broken in every way a wire can break them: a 400, never a 500 (which Promtail and Alloy retry for
    ever). Before, a truncated gzip (EOFError), corrupt snappy (cramjam's own error) or a protobuf with a byte
    changed (TypeError, AttributeError) were 500s."""
    rng = random.Random(14)
    good = encode_push([({"service": "a", "level": "info"}, [[str(T0), "line", {"trace_id": "ab"}]])])
    raw = bytes(cramjam.snappy.decompress_raw(good))
    bodies = [(gzip.compress(b'{"streams": []}')[:-3], "gzip", "application/json"),
              (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xffgarbage", "gzip", "application/json"),
              (b"not snappy at all", "", "application/x-protobuf"),
              (bytes(cramjam.snappy.compress_raw(b"\t\x04l\xf0f\x88\x97\x80w]k\xc8\x1ez\xe7\x12\xa9\xa7\xd0=\x08")), "",
               "application/x-protobuf")]  # a field of the wrong wire type: TypeError
    for _ in range(150):
        broken = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        bodies.append((bytes(cramjam.snappy.compress_raw(bytes(broken))), "", "application/x-protobuf"))
    with httpx.Client(base_url=server) as client:
        for body, encoding, content_type in bodies:
            headers = {"content-type": content_type, **({"content-encoding": encoding} if encoding else {})}
            r = client.post("/loki/api/v1/push", content=body, headers=headers)
            assert r.status_code in (204, 400), (r.status_code, r.text, body)  # a change may leave it valid


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": "x"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "100000"}, "limit"),
    ({"start": "yesterday"}, "start"),
    ({"start": "2026-11-26T12:00:00Z", "end": "2026-11-26T11:00:00Z"}, "end"),
    ({"since": "15 parsecs"}, "since"),
    ({"since": "9" * 400 + "s"}, "since"),  # infinite seconds: was a 500 (OverflowError)
    ({"since": "nan"}, "since"),
    ({"since": "-5"}, "since"),
    ({"direction": "sideways"}, "direction"),
    ({"trace_id": "a b"}, "trace_id"),
    ({"services": "ui"}, "services"),
    ({"q": "*"}, "q"),  # no word: it matched nothing, silently
    ({"q": "%\x00 ->"}, "q"),
])
def test_bad_query_params_are_400s_naming_them(server, params, param):
    r = httpx.get(f"{server}/api/logs", params=params)
    assert r.status_code == 400
    body = r.json()
    assert body["param"] == param and f"'{param}'" in body["message"]


def test_query_api_over_http(server):
    trace_id = uuid.uuid4().hex
    spec = [("orchestrator", "asked", "info"), ("gcloud-agent", "boom", "error"),
            ("ui", "idle instances found", "info")]
    streams = [entry(T0 + i * MS, svc, msg, level=lvl, trace_id=trace_id, request_id="r-1")
               for i, (svc, msg, lvl) in enumerate(spec)]
    assert push_entries(server, *streams).status_code == 204
    get = lambda **p: [m for m in messages(httpx.get(f"{server}/api/logs", params=p).json()["lines"])]  # noqa: E731
    assert get() == ["idle instances found", "boom", "asked"]
    assert get(direction="forward", limit=1) == ["asked"]
    assert get(service=["ui", "orchestrator"]) == ["idle instances found", "asked"]
    assert get(level="error") == ["boom"]
    assert get(trace_id=trace_id, q="idle instances") == ["idle instances found"]
    assert get(request_id="r-1", service="gcloud-agent") == ["boom"]
    assert get(start=str((T0 + MS) / 1e9), end="2099-01-01T00:00:00Z") == ["idle instances found", "boom"]
    assert get(since="1h") == []  # T0 is in 2026-11; all older than an hour
    assert len(get(since="99999999999d")) == 3  # back beyond 1677: everything
    # No redirect to an absolute URL (the store lives behind the gateway's /logs/ prefix).
    assert httpx.get(f"{server}/api/logs/").status_code == 404


def test_words_beyond_ascii_are_found_in_either_case_and_either_json_form(server):
    """Python's json.dumps writes `café` as `caf\\u00e9`: a search for a word with a letter beyond ASCII found only
    the lines that hold it as UTF-8, and only in the case typed."""
    labels = {"job": "finopti", "service": "unicode", "level": "info"}
    values = [[str(T0), json.dumps({"message": "escaped café Ünï 東京"})],
              [str(T0 + 1), json.dumps({"message": "raw café Ünï 東京"}, ensure_ascii=False)],
              [str(T0 + 2), "text CAFÉ ünï"], [str(T0 + 3), "text cafe unrelated"]]
    assert json_push(server, [(labels, values)]).status_code == 204

    def found(q: str) -> list[int]:
        lines = httpx.get(f"{server}/api/logs", params={"q": q, "service": "unicode", "direction": "forward"}).json()
        return [line["ts_ns"] - T0 for line in lines["lines"]]

    for q in ("café", "CAFÉ", "ünï", "ÜNÏ", "Café ünï"):
        assert found(q) == [0, 1, 2], q
    assert found("東京") == [0, 1]
    assert found("cafe") == [3]


def test_levels_pushed_by_another_agent_are_found_as_the_collectors_are(server):
    """Alloy and Promtail push the `level` a line says as it is (Go's slog: `ERROR`, `WARN`): `level=error` and
    the console's level filter missed those lines; the label values listed `ERROR` beside `error`."""
    spec = [("ERROR", "one"), ("err", "two"), ("WARN", "three"), (" Info ", "four"), ("notice", "five")]
    streams = [({"job": "alloy", "service": "slogger", "level": level}, [[str(T0 + i), message]])
               for i, (level, message) in enumerate(spec)]
    assert json_push(server, streams).status_code == 204

    def found(*levels: str) -> list[str]:
        params = {"service": "slogger", "level": list(levels), "direction": "forward"}
        return [line["line"] for line in httpx.get(f"{server}/api/logs", params=params).json()["lines"]]

    assert found("error") == found("ERROR") == ["one", "two"]
    assert found("warning") == found("warn") == ["three"]
    assert found("info") == ["four"] and found("notice") == ["five"]
    values = httpx.get(f"{server}/loki/api/v1/label/level/values").json()["data"]
    assert {"error", "warning", "info", "notice"} <= set(values) and not {"ERROR", "WARN", "err"} & set(values)


def test_tail_streams_new_lines(server):
    received: list[dict] = []
    opened = threading.Event()

    def tail() -> None:
        with httpx.stream("GET", f"{server}/api/logs/tail", params={"service": "ui"},
                          timeout=httpx.Timeout(10, read=10)) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    received.append(orjson.loads(line[6:]))
                    return

    thread = threading.Thread(target=tail, daemon=True)
    thread.start()
    assert opened.wait(5)
    push_entries(server, entry(T0, "orchestrator", "not for this tail"))
    time.sleep(0.2)
    started = time.monotonic()
    push_entries(server, entry(T0 + 1, "ui", "fresh line"))
    thread.join(5)
    assert [r["line"]["message"] for r in received] == ["fresh line"]
    assert time.monotonic() - started < 1.0  # woken by the push, not by a poll


def gateway(ts_ms: int, listener: str, path: str, route: str, upstream: str, duration: int, status: int,
            trace_id: str, flags: str = "-", **fields) -> tuple[dict, list]:
    obj = {"ts": "", "level": "info", "service": "gateway", "message": "access", "listener": listener,
           "method": "POST", "path": path, "route": route, "upstream_service": upstream, "status": status,
           "response_flags": flags, "duration_ms": duration, "upstream_duration_ms": str(duration),
           "request_id": "req-1", "trace_id": trace_id, "user": "bob@finopti.dev", **fields}
    return ({"job": "finopti", "service": "gateway", "level": "info"},
            [str(T0 + ts_ms * MS), orjson.dumps(obj).decode(), {"trace_id": trace_id, "request_id": "req-1"}])


def completed(ts_ms: float, service: str, path: str, route: str, status: int, duration: float, trace_id: str):
    return entry(T0 + int(ts_ms * MS), service, "request completed", level="error" if status >= 500 else "info",
                 trace_id=trace_id, request_id="req-1", event="request_completed", path=path, route=route,
                 status=status, duration_ms=duration, version="v1")


def test_trace_waterfall(server):
    t = uuid.uuid4().hex
    # Envoy writes an access line when a request ends, with the time it started: inner hops come first.
    lines = [
        gateway(12, "mesh", "/gcloud-tools/mcp", "gcloud-tools", "gcloud-tools.v1", 5, 200, t,
                authz="allowed", authz_rule="role:finops_viewer", authz_reason=None),
        gateway(20, "mesh", "/gcloud-tools/mcp", "gcloud-tools", "gcloud-tools.v1", 6, 500, t),
        gateway(5, "mesh", "/gcloud-agent/v1/actions/list_instances", "gcloud-agent", "gcloud-agent.v1", 30, 502, t),
        gateway(0, "edge", "/api/ask", "ask", "orchestrator.v1", 40, 502, t),
        entry(T0 + 1 * MS, "orchestrator", "parsed intent", trace_id=t, request_id="req-1", version="v1"),
        # The gateway's ext_authz call for the gcloud-agent hop, logged by the policy service.
        entry(T0 + 6 * MS, "policy", "authz decision", trace_id=t, request_id="req-1", event="authz_decision",
              listener="mesh", route="gcloud-agent", allow=True),
        entry(T0 + 13 * MS, "gcloud-tools", "listing", trace_id=t, request_id="req-1", version="v1"),
        completed(16.5, "gcloud-tools", "/mcp", "/mcp", 200, 4.1, t),
        entry(T0 + 22 * MS, "gcloud-tools", "sandbox exploded", level="error", trace_id=t, request_id="req-1",
              version="v1"),
        completed(25.2, "gcloud-tools", "/mcp", "/mcp", 500, 4.9, t),
        completed(34.4, "gcloud-agent", "/v1/actions/list_instances", "/v1/actions/{action}", 502, 29.0, t),
        completed(39.5, "orchestrator", "/ask", "/ask", 502, 38.8, t),
        entry(T0 + 50 * MS, "gcloud-tools", "unrelated line of another trace", trace_id=uuid.uuid4().hex),
    ]
    assert push_entries(server, *lines).status_code == 204
    trace = httpx.get(f"{server}/api/traces/{t}").json()
    assert trace["trace_id"] == t
    assert [line["ts_ns"] for line in trace["lines"]] == sorted(line["ts_ns"] for line in trace["lines"])
    assert len(trace["lines"]) == 12
    hops = trace["hops"]
    assert [(h["listener"], h["service"], h["status"], h["depth"]) for h in hops] == [
        ("edge", "orchestrator", 502, 0), ("mesh", "gcloud-agent", 502, 1),
        ("mesh", "gcloud-tools", 200, 2), ("mesh", "gcloud-tools", 500, 2),
    ]
    assert [h["offset_ms"] for h in hops] == [0, 5, 12, 20]
    assert [h["duration_ms"] for h in hops] == [40, 30, 5, 6]
    assert hops[1]["served"] == {"service": "gcloud-agent", "version": "v1", "route": "/v1/actions/{action}",
                                 "status": 502, "duration_ms": 29.0}
    assert [messages(h["lines"]) for h in hops] == [
        ["parsed intent", "request completed"],
        ["authz decision", "request completed"],
        ["listing", "request completed"],
        ["sandbox exploded", "request completed"],
    ]
    assert messages(hops[3]["errors"]) == ["sandbox exploded", "request completed"]
    # The gateway's own decision (native rules) comes from the access line; the Rego route's from the policy.
    assert hops[2]["authz"] == {"by": "gateway", "allow": True, "rule": "role:finops_viewer"}
    assert hops[1]["authz"] is None
    assert hops[2]["errors"] == []
    assert trace["errors"] == 4
    assert trace["duration_ms"] == 40

    assert httpx.get(f"{server}/api/traces/{uuid.uuid4().hex}").status_code == 404
    assert httpx.get(f"{server}/api/traces/not%20an%20id").status_code == 400


def test_stats_and_collector_positions(server):
    push_entries(server, entry(T0, "ui", "x"), headers={"x-finopti-collector": "c9", "x-finopti-seq": "4",
                                                        "x-finopti-positions": '{"/a.log": [7, 99]}'})
    assert httpx.get(f"{server}/api/stats").json()["lines"] == 1
    assert httpx.get(f"{server}/api/collector/positions", params={"collector": "c9"}).json() == {
        "collector": "c9", "seq": 4, "positions": {"/a.log": [7, 99]}}
    assert httpx.get(f"{server}/api/collector/positions", params={"collector": "new"}).json()["seq"] == 0
    metrics = httpx.get(f"{server}/metrics").text
    assert "finopti_logstore_lines_ingested_total" in metrics


# --- parts: the same answers before and after merging, paging by cursor -------------------------------------

WORDS = ["alpha", "beta", "gamma", "us-central1-a", "quota", "idle", "Disk", "x9"]


def random_lines(rng: random.Random, count: int) -> list[tuple[dict, list]]:
    """Lines of a few streams, many sharing a time (ties), some ids and users repeated; a JSON line carries its
    metadata as fields (as the services' lines do), a text line only as metadata."""
    out = []
    traces = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(count // 6 + 1)]
    for n in range(count):
        service, level = rng.choice(["ui", "orchestrator", "gcloud-tools"]), rng.choice(["info", "error"])
        meta = {}
        if rng.random() < 0.8:
            meta["trace_id"] = rng.choice(traces)
        if rng.random() < 0.5:
            meta["user"] = rng.choice(["bob@finopti.dev", "carol@finopti.dev", 'we"ird\\user'])
        if rng.random() < 0.5:
            meta["request_id"] = f"req-{rng.randrange(count // 4 + 1)}"
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + f" #{n}"
        if rng.random() < 0.7:
            line = orjson.dumps({"message": text, "n": n, **meta}).decode()
            if rng.random() < 0.3:
                meta["component"] = f"{service}-v2"
        else:
            line = text
        value = [str(T0 + rng.randrange(count // 3) * MS), line] + ([meta] if meta else [])
        out.append(({"job": "finopti", "service": service, "level": level}, value))
    return out


def push_as_the_collector(store: LogStore, entries: list[tuple[dict, list]]) -> int:
    """The collector's columns: a JSON line's metadata is not sent, only what the line does not say."""
    streams: dict[str, tuple[dict, list]] = {}
    for labels, value in entries:
        streams.setdefault(orjson.dumps(labels).decode(), (labels, []))[1].append(value)
    blocks = []
    for labels, values in streams.values():
        ts, texts, extras, metas = [], [], [], []
        for value in values:
            meta = value[2] if len(value) == 3 else {}
            own = from_object(orjson.loads(value[1])) if value[1].startswith("{") else {}
            ts.append(int(value[0]))
            texts.append(value[1].encode())
            rest = {k: v for k, v in meta.items() if own.get(k) != v}
            extras.append(orjson.dumps(rest) if rest else b"")
            metas.append(meta)
        indexed = {field: list(values) for field, values in indexed_values(metas).items()}
        blocks.append(wire.encode_block(labels, ts, texts, extras, indexed, derived=True))
    return store.push_lines(wire.encode(blocks))


def oracle(lines: list[dict], q: LogQuery) -> list[int]:
    """The ids `q` should answer, by brute force over every stored line."""
    pattern = text_pattern(q.text) if q.text else None
    chosen = []
    for line in lines:
        meta = line["metadata"]
        if q.services and line["service"] not in q.services or q.levels and line["level"] not in q.levels:
            continue
        if any(meta.get(f) != v for f, v in q.metadata()):
            continue
        if q.start is not None and line["ts_ns"] < q.start or q.end is not None and line["ts_ns"] >= q.end:
            continue
        text = line["line"] if isinstance(line["line"], str) else orjson.dumps(line["line"]).decode()
        if pattern is not None and not pattern.search(text.encode()):
            continue
        key = (line["ts_ns"], line["id"])
        if q.cursor is not None and (key >= q.cursor if q.backward else key <= q.cursor):
            continue
        chosen.append(key)
    chosen.sort(reverse=q.backward)
    return [line_id for _, line_id in chosen[: q.limit]]


def random_query(rng: random.Random, lines: list[dict]) -> LogQuery:
    some = rng.choice(lines)
    q = LogQuery(limit=rng.choice([1, 3, 10, 100, 5000]), direction=rng.choice(["backward", "forward"]))
    if rng.random() < 0.3:
        q.services = [some["service"]]
    if rng.random() < 0.2:
        q.levels = [some["level"]]
    for name in ("trace_id", "request_id", "user"):
        if rng.random() < 0.2 and some["metadata"].get(name):
            setattr(q, name, some["metadata"][name])
    if rng.random() < 0.05:
        q.trace_id = uuid.uuid4().hex  # in no part: the Bloom filters say so
    if rng.random() < 0.3:
        q.text = rng.choice(WORDS + ["us central1", "quot*", "ALPHA beta", "#1"])
    if rng.random() < 0.3:
        q.start = some["ts_ns"] - rng.randrange(3) * MS
    if rng.random() < 0.3:
        q.end = some["ts_ns"] + rng.randrange(1, 3) * MS
    if rng.random() < 0.3:
        q.cursor = (some["ts_ns"], some["id"])
    return q


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_queries_answer_as_a_scan_of_every_line_before_and_after_merging(tmp_path, seed):
    rng = random.Random(seed)
    store = LogStore(tmp_path / "p.db", retention_seconds=3650 * 86400, background=False)
    entries = random_lines(rng, 3000)
    for at in range(0, len(entries), 250):  # pushes of several streams: Loki's JSON, and the collector's columns
        batch = entries[at:at + 250]
        if at % 500:
            assert push_as_the_collector(store, batch) == len(batch)
        else:
            by_stream: dict[str, tuple[dict, list]] = {}
            for labels, value in batch:
                by_stream.setdefault(orjson.dumps(labels).decode(), (labels, []))[1].append(value)
            store.push(list(by_stream.values()))
    everything = store.query(LogQuery(limit=5000, direction="forward"))
    assert len(everything) == 3000 and len({line["id"] for line in everything}) == 3000
    # Every line as it was sent, with all its metadata (read from the JSON line where it was not sent).
    stored = sorted(everything, key=lambda line: line["id"])
    sent = sorted((value for _, value in entries), key=lambda value: int(value[1].rsplit("#", 1)[1].split('"')[0]))
    as_sent = [[str(line["ts_ns"]), orjson.dumps(line["line"]).decode() if isinstance(line["line"], dict)
                else line["line"], line["metadata"]] for line in stored]
    by_n = sorted(as_sent, key=lambda value: int(value[1].rsplit("#", 1)[1].split('"')[0]))
    assert by_n == [[v[0], v[1], v[2] if len(v) == 3 else {}] for v in sent]
    queries = [random_query(rng, everything) for _ in range(150)]
    for stage in ("level 0", "merged", "reopened"):
        if stage == "merged":
            assert store.merge(force=True) > 0 and all(p.level == 1 for p in store._catalog)
        if stage == "reopened":
            store.close()
            store = LogStore(tmp_path / "p.db", retention_seconds=3650 * 86400, background=False)
        for q in queries:
            assert [line["id"] for line in store.query(q)] == oracle(everything, q), (stage, q)
    next_id = push(store, entry(T0, "ui", "after the reopening")) and store.last_id()
    assert next_id == 3001  # ids go on from where they were
    store.close()


def test_paging_by_cursor_neither_skips_nor_repeats_lines_of_the_same_time(tmp_path):
    store = LogStore(tmp_path / "c.db", retention_seconds=3650 * 86400, background=False)
    # Three lines at each of 50 times, over two streams and three pushes.
    for push_no in range(3):
        push(store, *[entry(T0 + t * 1000, "ui" if t % 2 else "orchestrator", f"{t}-{push_no}") for t in range(50)])
    store.merge(force=True)
    for direction in ("backward", "forward"):
        for limit in (1, 2, 7, 150):
            seen, cursor = [], None
            while True:
                page = store.query(LogQuery(limit=limit, direction=direction, cursor=cursor))
                seen += page
                if len(page) < limit:
                    break
                cursor = (page[-1]["ts_ns"], page[-1]["id"])
            keys = [(line["ts_ns"], line["id"]) for line in seen]
            assert len(keys) == 150 and len(set(keys)) == 150
            assert keys == sorted(keys, reverse=direction == "backward")
    store.close()


def test_start_is_exact_to_the_nanosecond(server):
    """Two lines at the same ts_ns = t + 1000: `start=t+1000` (inclusive) has both, `start=t+1001` neither."""
    t = (time.time_ns() // 10**9 - 60) * 10**9
    labels = {"job": "finopti", "service": "exact", "level": "info"}
    values = [[str(t), "before"], [str(t + 1000), "same time 1"], [str(t + 1000), "same time 2"],
              [str(t + 2000), "after"]]
    assert json_push(server, [(labels, values)]).status_code == 204

    def page(**params) -> dict:
        return httpx.get(f"{server}/api/logs", params={"service": "exact", "direction": "forward", **params}).json()

    assert [line["line"] for line in page(start=str(t + 1000))["lines"]] == ["same time 1", "same time 2", "after"]
    assert [line["line"] for line in page(start=str(t + 1001))["lines"]] == ["after"]
    assert [line["line"] for line in page(end=str(t + 1000))["lines"]] == ["before"]
    first = page(limit=2)
    assert [line["line"] for line in first["lines"]] == ["before", "same time 1"]
    rest = page(limit=2, cursor=first["next_cursor"])
    assert [line["line"] for line in rest["lines"]] == ["same time 2", "after"]
    assert page(limit=2, cursor=rest["next_cursor"]) == {"lines": [], "next_cursor": None}
    r = httpx.get(f"{server}/api/logs", params={"cursor": "yesterday"})
    assert r.status_code == 400 and r.json()["param"] == "cursor"


def test_queries_running_while_parts_are_merged_see_every_line_once(tmp_path):
    store = LogStore(tmp_path / "m.db", retention_seconds=3650 * 86400)  # merging in the background
    pushed = [0]
    stop = threading.Event()

    def pusher() -> None:
        for batch in range(60):
            store.push([({"service": f"s{k}", "level": "info"},
                         [[str(T0 + (batch * 100 + i) * MS), f"line {batch}-{k}-{i}", {"trace_id": f"t{i % 7}"}]
                          for i in range(100)]) for k in range(3)])
            pushed[0] += 300
            if batch % 10 == 9:
                store.merge(force=True)
        stop.set()

    thread = threading.Thread(target=pusher)
    thread.start()
    rounds = 0
    while not stop.is_set() or rounds < 3:
        # `pushed` counts a push once stored: a query may see one more (stored, not yet counted), never fewer.
        before = pushed[0]
        lines = store.query(LogQuery(limit=5000, direction="forward", services=["s0", "s1"]))
        after = pushed[0] + 300
        ids = [line["id"] for line in lines]
        assert len(ids) == len(set(ids)) and min(before * 2 // 3, 5000) <= len(ids) <= min(after * 2 // 3, 5000)
        traced = [line["id"] for line in store.query(LogQuery(trace_id="t3", limit=5000))]
        assert len(traced) == len(set(traced)) <= (pushed[0] + 300) * 14 // 100  # 14 of each 100 lines have t3
        rounds += 1
    thread.join()
    assert store.stats()["lines"] == 18_000
    store.close()


def test_a_store_of_the_first_version_is_converted(tmp_path):
    """One row per line and a full-text index: every line becomes part of a compressed part, with its id."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE streams (id INTEGER PRIMARY KEY, labels TEXT NOT NULL UNIQUE, service TEXT NOT NULL,
                              level TEXT NOT NULL);
        CREATE TABLE logs (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, stream INTEGER NOT NULL, tkey INTEGER,
                           rkey INTEGER, meta TEXT, line TEXT NOT NULL);
        CREATE VIRTUAL TABLE logs_fts USING fts5(message, content='', columnsize=0);
        CREATE TABLE collectors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, positions TEXT NOT NULL);
        INSERT INTO streams VALUES (1, '{"level":"info","service":"ui"}', 'ui', 'info'),
                                   (2, '{"level":"error","service":"orchestrator"}', 'orchestrator', 'error');
        INSERT INTO collectors VALUES ('c1', 42, '{}');
    """)
    conn.executemany("INSERT INTO logs(id, ts, stream, meta, line) VALUES (?, ?, ?, ?, ?)", [
        (n * 3, T0 + n * MS, 1 + n % 2, orjson.dumps({"trace_id": f"t{n % 10}"}).decode() if n % 4 else None,
         f"line {n}") for n in range(1, 3001)])
    conn.commit()
    conn.close()
    store = LogStore(path, retention_seconds=3650 * 86400, background=False)
    lines = store.query(LogQuery(limit=5000, direction="forward"))
    assert [(line["id"], line["line"]) for line in lines] == [(n * 3, f"line {n}") for n in range(1, 3001)]
    assert [line["line"] for line in store.query(LogQuery(trace_id="t7", services=["orchestrator"], limit=3))] == [
        "line 2997", "line 2987", "line 2977"]
    assert store.delivered("c1").seq == 42
    assert store.push([({"service": "ui"}, [[str(T0), "new"]])]) == 1 and store.last_id() == 9001
    store.close()
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "logs" not in tables and "logs_fts" not in tables


def test_finopti_logs_pages_without_gaps(server):
    """More lines than one page (5,000), many at the same time: `finopti logs -n` gets the newest, once each."""
    t = (time.time_ns() // 10**9 - 120) * 10**9
    labels = {"job": "finopti", "service": "paged", "level": "info"}
    for batch in range(3):
        values = [[str(t + (batch * 4000 + i) // 3 * 1000), f"line {batch * 4000 + i}"] for i in range(4000)]
        assert json_push(server, [(labels, values)]).status_code == 204
    lines = newest_lines(lambda params: httpx.get(f"{server}/api/logs", params=params, timeout=30).json(),
                         [("service", "paged")], 11_000)
    assert [line["line"] for line in lines] == [f"line {n}" for n in range(1000, 12_000)]


@pytest.mark.parametrize(("body", "problem"), [
    (b"\x00\x05\x00", "block 0: truncated"),
    (wire.encode([wire.encode_block({"service": "x"}, [T0], [b"a"], [b""], {}, derived=True)[:-3]]),
     "block 0: truncated"),
    (wire.encode([wire.encode_block({"service": 5}, [T0], [b"a"], [b""], {}, derived=True)]),
     "labels must be an object of strings"),
])
def test_a_bad_collector_body_is_a_400_naming_the_problem(server, body, problem):
    r = httpx.post(f"{server}/loki/api/v1/push", content=body, headers={"content-type": wire.CONTENT_TYPE})
    assert r.status_code == 400 and problem in r.json()["message"]
    compressed = bytes(cramjam.lz4.compress_block(body))
    r = httpx.post(f"{server}/loki/api/v1/push", content=compressed,
                   headers={"content-type": wire.CONTENT_TYPE, "content-encoding": "lz4"})
    assert r.status_code == 400 and problem in r.json()["message"]
    r = httpx.post(f"{server}/loki/api/v1/push", content=b"not lz4",
                   headers={"content-type": wire.CONTENT_TYPE, "content-encoding": "lz4"})
    assert r.status_code == 400 and "LZ4" in r.json()["message"]


def test_the_collector_body_over_http(server):
    """Derived metadata comes back whole; the user filter finds it."""
    t = time.time_ns()
    line = orjson.dumps({"ts": "x", "message": "hello", "trace_id": "cd" * 16, "user": "erin@finopti.dev"})
    body = wire.encode([wire.encode_block({"job": "finopti", "service": "wired", "level": "info"}, [t, t + 1],
                                          [line, b"plain text"], [b'{"component":"wired-v2"}', b""],
                                          {"trace_id": ["cd" * 16], "user": ["erin@finopti.dev"]}, derived=True)])
    r = httpx.post(f"{server}/loki/api/v1/push", content=body, headers={"content-type": wire.CONTENT_TYPE})
    assert r.status_code == 204
    [found] = httpx.get(f"{server}/api/logs", params={"user": "erin@finopti.dev"}).json()["lines"]
    assert found["line"]["message"] == "hello" and found["service"] == "wired"
    assert found["metadata"] == {"trace_id": "cd" * 16, "user": "erin@finopti.dev", "component": "wired-v2"}
    assert [line["line"] for line in httpx.get(f"{server}/api/logs", params={"service": "wired"}).json()[
        "lines"]] == ["plain text", found["line"]]
