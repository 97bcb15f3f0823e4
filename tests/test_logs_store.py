"""The log store: its library (filters, order, retention, delivery records) and its service over a real socket
(push JSON and protobuf, query API, 400s, SSE tail, trace waterfall, labels)."""

import gzip
import threading
import time
import uuid

import httpx
import orjson
import pytest
import uvicorn

from finopti.logs.lokipb import encode_push
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


def test_retention_by_age_and_size(tmp_path):
    store = LogStore(tmp_path / "r.db", retention_seconds=3600, max_bytes=1 << 40)
    now = T0 + 10 * 3600 * 10**9
    store.push([({"service": "old"}, [[str(now - 2 * 3600 * 10**9), "old line"]]),  # pushed while it was recent
                ({"service": "new"}, [[str(now - 60 * 10**9), "new line"]])], now_ns=now - 3600 * 10**9)
    assert store.enforce_retention(now_ns=now) == 1
    assert [line["line"] for line in store.query(LogQuery())] == ["new line"]
    assert store.query(LogQuery(text="old")) == []  # gone from the full-text index too

    store.max_bytes = 2 << 20
    big = "x" * 900
    for batch in range(10):
        store.push([({"service": "bulk"}, [[str(now + batch * 1000 + i), f"{big} {batch}"] for i in range(1000)])],
                   now_ns=now)
    assert store.used_bytes() > store.max_bytes
    deleted = store.enforce_retention(now_ns=now)
    assert deleted > 0 and store.used_bytes() <= store.max_bytes
    newest = store.query(LogQuery(limit=1))[0]
    assert newest["line"].endswith(" 9")  # the oldest went first
    # The FTS index and the rows agree after deletes: a search finds only rows that exist.
    assert all(line["line"].startswith(big) for line in store.query(LogQuery(text="x", limit=5000)))
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
    (b'{"streams": [{"stream": {}, "values": [["99999999999999999999999", "a"]]}]}', "invalid push body"),
])
def test_bad_push_is_a_400_naming_the_field(server, body, problem):
    r = httpx.post(f"{server}/loki/api/v1/push", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert problem in r.json()["message"]


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": "x"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "100000"}, "limit"),
    ({"start": "yesterday"}, "start"),
    ({"start": "2026-11-26T12:00:00Z", "end": "2026-11-26T11:00:00Z"}, "end"),
    ({"since": "15 parsecs"}, "since"),
    ({"direction": "sideways"}, "direction"),
    ({"trace_id": "a b"}, "trace_id"),
    ({"services": "ui"}, "services"),
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
    # No redirect to an absolute URL (the store lives behind the gateway's /logs/ prefix).
    assert httpx.get(f"{server}/api/logs/").status_code == 404


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
            trace_id: str, flags: str = "-") -> tuple[dict, list]:
    obj = {"ts": "", "level": "info", "service": "gateway", "message": "access", "listener": listener,
           "method": "POST", "path": path, "route": route, "upstream_service": upstream, "status": status,
           "response_flags": flags, "duration_ms": duration, "upstream_duration_ms": str(duration),
           "request_id": "req-1", "trace_id": trace_id, "user": "bob@finopti.dev"}
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
        gateway(12, "mesh", "/gcloud-tools/mcp", "gcloud-tools", "gcloud-tools.v1", 5, 200, t),
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
