"""The collector in-process against a real HTTP receiver that records every push: what it pushes (labels,
structured metadata, original lines), robustness to bad lines, retries, rotation and truncation."""

import itertools
import json
import os
import random
import shutil
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finopti.logs.collector import Collector, ParseStats, parse_line, serve_http
from finopti.logs.line_guard import lines_with_marks, suspect
from finopti.logs.multiline import Joiner, MultilineRule, infer_level
from finopti.logs.tail import FileTail, Position, anchor_of, digest


class Receiver:
    """A Loki push endpoint on a real socket: records every accepted push; `fail_with` answers errors instead."""

    def __init__(self):
        self.pushes: list[dict] = []
        self.fail_with: int | None = None
        self.attempts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.attempts += 1
                    status = receiver.fail_with or 204
                    if status == 204:
                        receiver.pushes.append({"headers": dict(self.headers), "body": orjson.loads(body),
                                                "size": len(body)})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802 - a real Loki has no /api/collector/positions
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def streams(self) -> list[dict]:
        with self.lock:
            return [s for p in self.pushes for s in p["body"]["streams"]]

    def entries(self) -> list[tuple[dict, list]]:
        return [(s["stream"], v) for s in self.streams() for v in s["values"]]

    def lines(self) -> list[str]:
        return [v[1] for _, v in self.entries()]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


class Running:
    def __init__(self, collector: Collector):
        self.collector = collector
        self.thread = threading.Thread(target=collector.run, daemon=True)
        self.thread.start()
        assert collector.ready.wait(10)

    def stop(self) -> None:
        self.collector.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


def start(tmp_path: Path, url: str, **kwargs) -> Running:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    kwargs.setdefault("poll_interval", 0.02)
    # One push at a time: this receiver, unlike the log store, does not put concurrent pushes in order.
    kwargs.setdefault("in_flight", 1)
    kwargs.setdefault("max_backoff", 0.5)
    return Running(Collector(logs, tmp_path / "positions.json", url, name="test", **kwargs))


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def metric(collector: Collector, name: str, **labels) -> float:
    for family in text_string_to_metric_families(httpx.get(collector_metrics_url(collector)).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


_servers: dict[int, str] = {}


def collector_metrics_url(collector: Collector) -> str:
    if id(collector) not in _servers:
        server = serve_http(collector, 0)
        _servers[id(collector)] = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    return _servers[id(collector)]


def service_line(service: str, message: str, **fields) -> str:
    return json.dumps({"ts": "2026-11-26T12:07:55.548Z", "level": "info", "service": service, "version": "v1",
                       "message": message, **fields})


NOW = 1_795_700_000_000_000_000  # 2026-11-26T13:33:20Z, after the lines' own time


def test_parse_line():
    stats = ParseStats()
    line = service_line("gcloud-agent", "done", trace_id="ab" * 16, span_id="cd" * 8, request_id="r-1",
                        user="bob@finopti.dev", route="/v1/actions/{action}", status=200, version="v2")
    parsed = parse_line(line.encode(), "gcloud-agent-v2", NOW, stats)
    assert (parsed.service, parsed.level, parsed.ts_ns) == ("gcloud-agent", "info", 1795694875548000000)
    assert parsed.text == line.encode()  # the original line, not re-encoded
    assert parsed.metadata() == {
        "trace_id": "ab" * 16, "span_id": "cd" * 8, "request_id": "r-1", "user": "bob@finopti.dev",
        "route": "/v1/actions/{action}", "component": "gcloud-agent-v2"}
    assert parsed.extras == {"component": "gcloud-agent-v2"}  # what the line does not say itself
    # Empty ids (logged outside a request) are not metadata.
    assert parse_line(service_line("ui", "up", trace_id="", user="").encode(), "ui", NOW, stats).metadata() == {}
    # Envoy's diagnostics and supervisord: plain text, level guessed, dated by the (local) time they start with.
    parsed = parse_line(b"[2026-11-26 12:08:17.666][7258][warning][main] caught SIGTERM", "gateway.err", NOW, stats)
    written = int(datetime(2026, 11, 26, 12, 8, 17).timestamp()) * 10**9 + 666_000_000
    assert (parsed.service, parsed.level, parsed.ts_ns) == ("gateway", "warning", written)
    assert parsed.metadata() == {"component": "gateway.err"}
    assert parse_line(b"2026-11-26 12:07:43,954 CRIT Supervisor running", "supervisord", 0, stats).level == "critical"
    supervisord = parse_line(b"2026-11-26 12:07:43,954 INFO spawned: 'ui'", "supervisord", NOW, stats)
    assert supervisord.ts_ns == int(datetime(2026, 11, 26, 12, 7, 43).timestamp()) * 10**9 + 954_000_000
    # No time of its own (a traceback at start-up), or one further ahead than the grace: the time it was read.
    assert parse_line(b"Traceback (most recent call last):", "ui", NOW, stats).ts_ns == NOW
    ahead = parse_line(b"[2099-01-01 00:00:00.000][1][info][main] from the future", "gateway.err", NOW, stats)
    assert ahead.ts_ns == NOW and ahead.extras["original_ts"][:4] in ("2098", "2099")
    assert parse_line(b'{"broken": ', "ui", 0, stats)[:2] == ("ui", "info")
    assert parse_line(b"caf\xe9 \xff\xfe", "ui", 0, stats).text == "caf\ufffd \ufffd\ufffd".encode()
    assert parse_line(b"   ", "ui", 0, stats) is None
    assert (stats.not_json, stats.invalid_utf8, stats.empty) == (7, 1, 1)


def test_pushes_labels_and_structured_metadata_never_ids_as_labels(tmp_path, receiver):
    started_ns = time.time_ns()
    running = start(tmp_path, receiver.url)
    lines = [
        service_line("gcloud-tools", "request completed", trace_id=f"{i:032x}", span_id=f"{i:016x}",
                     request_id=f"req-{i}", user="bob@finopti.dev", route="/mcp", event="request_completed",
                     status=200, duration_ms=2.6, level="error" if i % 3 == 0 else "info")
        for i in range(30)
    ]
    (tmp_path / "logs" / "gcloud-tools.log").write_text("\n".join(lines) + "\n")
    (tmp_path / "logs" / "supervisord.log").write_text("2026-11-26 12:07:43,954 INFO spawned: 'ui'\n")
    wait_for(lambda: len(receiver.lines()) == 31, what="31 lines pushed")
    running.stop()

    for stream in receiver.streams():
        assert set(stream["stream"]) == {"job", "service", "level"}, stream["stream"]
        assert stream["stream"]["job"] == "finopti"
    entries = receiver.entries()
    assert {(s["service"], s["level"]) for s, _ in entries} == {
        ("gcloud-tools", "info"), ("gcloud-tools", "error"), ("supervisord", "info")}
    pushed = {v[1]: v for _, v in entries}
    for i, line in enumerate(lines):
        assert pushed[line][2] == {"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "request_id": f"req-{i}",
                                   "user": "bob@finopti.dev", "route": "/mcp"}  # the original line, unchanged
    headers = receiver.pushes[0]["headers"]
    # Batch numbers come from the clock: a run that cannot read the store's record never reuses one.
    assert headers["x-finopti-collector"] == "test" and int(headers["x-finopti-seq"]) >= started_ns


def test_bad_lines_do_not_stop_the_pipeline(tmp_path, receiver):
    running = start(tmp_path, receiver.url, max_line_bytes=256 * 1024)
    collector = running.collector
    log = tmp_path / "logs" / "ui.log"
    with open(log, "wb") as f:
        f.write(service_line("ui", "before").encode() + b"\n")
        f.write(b'{"ts": "2026-11-26T12:07:55.548Z", "message": "cut short\n')  # invalid JSON
        f.write(b"x" * (1 << 20) + b"\n")  # 1 MiB: over the line limit
        f.write(b"\x00\x01binary \xff\xfe bytes\n")
        f.write(b"\n")  # empty
        f.write(service_line("ui", "after").encode() + b"\n")
        f.write(b'{"message": "half written')  # no newline yet: waits
    wait_for(lambda: len(receiver.lines()) == 4, what="4 lines")
    time.sleep(0.2)
    assert len(receiver.lines()) == 4
    with open(log, "ab") as f:
        f.write(b' at last"}\n')
    wait_for(lambda: len(receiver.lines()) == 5, what="the completed last line")
    lines = receiver.lines()
    assert json.loads(lines[0])["message"] == "before"
    assert lines[1] == '{"ts": "2026-11-26T12:07:55.548Z", "message": "cut short'
    assert lines[2] == "\x01binary \ufffd\ufffd bytes"  # leading NULs are a writer's hole, not text
    assert json.loads(lines[3])["message"] == "after"
    assert lines[4] == '{"message": "half written at last"}'
    assert metric(collector, "finopti_collector_lines_rejected_total", reason="too_long") == 1
    assert metric(collector, "finopti_collector_lines_rejected_total", reason="empty") == 1
    assert metric(collector, "finopti_collector_lines_unstructured_total", reason="not_json") == 2
    assert metric(collector, "finopti_collector_lines_unstructured_total", reason="invalid_utf8") == 1
    assert metric(collector, "finopti_collector_lines_pushed_total") == 5
    health = httpx.get(collector_metrics_url(collector).replace("/metrics", "/healthz")).json()
    assert health["status"] == "ok" and health["files"] == 1
    running.stop()


@pytest.mark.parametrize("status", [503, 429, 403])  # 403: the gateway while its policy service restarts
def test_receiver_errors_are_retried_without_loss_or_duplicates(tmp_path, receiver, status):
    receiver.fail_with = status
    running = start(tmp_path, receiver.url, in_flight=2, batch_lines=300)
    log = tmp_path / "logs" / "orchestrator.log"
    with open(log, "a") as f:
        for i in range(2000):
            f.write(service_line("orchestrator", f"line {i}") + "\n")
    wait_for(lambda: receiver.attempts >= 3, what="retries")
    assert metric(running.collector, "finopti_collector_push_errors_total", reason=f"http_{status}") >= 3
    assert httpx.get(collector_metrics_url(running.collector).replace("/metrics", "/healthz")).json()[
        "receiver_up"] is False
    receiver.fail_with = None
    wait_for(lambda: len(receiver.lines()) == 2000, what="every line after recovery")
    running.stop()
    # Two pushes in flight, retried independently, may land in either order: each line exactly once.
    assert sorted(json.loads(line)["message"] for line in receiver.lines()) == sorted(f"line {i}" for i in range(2000))


def test_a_refused_batch_is_dropped_and_counted(tmp_path, receiver):
    receiver.fail_with = 400
    running = start(tmp_path, receiver.url)
    (tmp_path / "logs" / "ui.log").write_text(service_line("ui", "refused") + "\n")
    wait_for(lambda: metric(running.collector, "finopti_collector_lines_rejected_total",
                            reason="refused_by_receiver") == 1, what="the refusal counted")
    receiver.fail_with = None
    with open(tmp_path / "logs" / "ui.log", "a") as f:
        f.write(service_line("ui", "accepted") + "\n")
    wait_for(lambda: len(receiver.lines()) == 1, what="the next line")
    running.stop()
    assert json.loads(receiver.lines()[0])["message"] == "accepted"


def test_restart_resumes_from_positions(tmp_path, receiver):
    log = tmp_path / "logs" / "ui.log"
    running = start(tmp_path, receiver.url)
    log.write_text("".join(service_line("ui", f"a{i}") + "\n" for i in range(100)))
    wait_for(lambda: len(receiver.lines()) == 100)
    running.stop()
    positions = json.loads((tmp_path / "positions.json").read_text())
    saved = positions["positions"][str(log.resolve())]
    assert (saved["dev"], saved["inode"], saved["offset"]) == (os.stat(log).st_dev, os.stat(log).st_ino,
                                                                 log.stat().st_size)
    assert saved["fp"] == digest(log.read_bytes()[:1024]) and saved["fp_len"] == 1024
    with open(log, "a") as f:
        f.write(service_line("ui", "while down") + "\n")
    running = start(tmp_path, receiver.url)
    wait_for(lambda: len(receiver.lines()) == 101)
    time.sleep(0.3)
    running.stop()
    assert len(receiver.lines()) == 101 and json.loads(receiver.lines()[-1])["message"] == "while down"


def test_push_bodies_stay_under_the_limit(tmp_path, receiver):
    """A gateway refuses bodies over its limit (1 MiB) and that cannot be retried: batches are cut before."""
    running = start(tmp_path, receiver.url, batch_bytes=50_000)
    lines = [service_line("ui", f"line {i} " + "\"quoted\" " * (i % 40), trace_id=f"{i:032x}") for i in range(3000)]
    (tmp_path / "logs" / "ui.log").write_text("\n".join(lines) + "\n")
    wait_for(lambda: len(receiver.lines()) == 3000, what="3000 lines")
    running.stop()
    assert receiver.lines() == lines
    assert max(p["size"] for p in receiver.pushes) <= 50_000
    assert len(receiver.pushes) > 20


def test_lines_caused_by_our_own_pushes_are_dropped(tmp_path, receiver):
    """Each push makes the gateway and the policy service log a line; pushing those would never stop. They are
    recognised by the verified caller identity (`source`), never by an id a client could choose."""
    collector_id = "spiffe://finopti.local/svc/collector"
    running = start(tmp_path, receiver.url, identity=collector_id)
    (tmp_path / "logs" / "gateway.log").write_text("\n".join([
        json.dumps({"service": "gateway", "message": "access", "route": "logstore-push", "source": collector_id}),
        json.dumps({"service": "policy", "event": "authz_decision", "route": "logstore-push", "source": "collector"}),
        # A user who names their request like the collector's pushes is still recorded.
        json.dumps({"service": "gateway", "message": "access", "route": "ask", "request_id": "finopti-collector-1",
                    "client_request_id": "finopti-collector-1"}),
        json.dumps({"service": "gateway", "message": "access", "route": "ask", "source": "spiffe://finopti.local/svc/ui"}),
    ]) + "\n")
    wait_for(lambda: len(receiver.lines()) == 2, what="the two other lines")
    time.sleep(0.3)
    running.stop()
    assert [json.loads(line)["route"] for line in receiver.lines()] == ["ask", "ask"]
    assert metric(running.collector, "finopti_collector_lines_rejected_total", reason="own_traffic") == 2


def test_credentials_are_redacted_and_counted(tmp_path, receiver):
    """The second line of defence: a token that reached a log line is replaced before the line is pushed."""
    jwt_value = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    running = start(tmp_path, receiver.url)
    (tmp_path / "logs" / "gateway.log").write_text("\n".join([
        json.dumps({"service": "gateway", "path": f"/api/logs?access_token={jwt_value}&limit=1"}),
        json.dumps({"service": "orchestrator", "headers": {"authorization": f"Bearer {jwt_value}"}}),
        "Traceback: call failed with Authorization: Bearer opaque-secret-value-123",
        json.dumps({"service": "gateway", "path": "/api/logs?limit=1&q=token"}),
        json.dumps({"service": "ui", "msg": f"upstream answered {jwt_value}"}),  # a bare JWT: no "=", no scheme
        "RETRY WITH AUTHORIZATION: BEARER OPAQUE-SECRET-VALUE-456",  # upper case
    ]) + "\n")
    wait_for(lambda: len(receiver.lines()) == 6, what="6 lines")
    running.stop()
    pushed = receiver.lines()
    assert not any(jwt_value in line or "opaque-secret" in line.lower() for line in pushed)
    objects = [json.loads(line) for line in pushed if line.startswith("{")]
    assert {o["path"] for o in objects if "path" in o} == {
        "/api/logs?access_token=[REDACTED]&limit=1", "/api/logs?limit=1&q=token"}  # the second: nothing secret
    assert [o["headers"]["authorization"] for o in objects if "headers" in o] == ["[REDACTED]"]
    assert metric(running.collector, "finopti_collector_redactions_total", kind="query_parameter") == 1
    assert metric(running.collector, "finopti_collector_redactions_total", kind="json_field") == 1
    assert metric(running.collector, "finopti_collector_redactions_total", kind="authorization") == 2
    assert metric(running.collector, "finopti_collector_redactions_total", kind="jwt") == 1


def test_jwt_redaction_finds_what_the_pattern_it_replaced_found():
    """JWTs are found in one pass over runs of the token alphabet (a regex tried at every "eyJ" was quadratic on
    a path of "eyJeyJ…" a client can send: 1.8 s per 57 KB line). Same answers as that regex, on random lines."""
    import re

    from finopti.logs.line_guard import _redact_jwts

    old = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
    pieces = ["eyJ", "eyJhbGciOi", "abcd", "a", ".", "-", "_", " ", "/", "=", "\"", "%20",
              "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"]
    rng = random.Random(11)
    for _ in range(5000):
        line = "".join(rng.choices(pieces, k=rng.randint(1, 30)))
        expected, count = old.subn("[REDACTED]", line)
        assert _redact_jwts(line) == (expected, count), line
    assert _redact_jwts("/static/" + "eyJ" * 19_000) == ("/static/" + "eyJ" * 19_000, 0)


def test_own_log_is_not_collected_and_new_files_are(tmp_path, receiver):
    running = start(tmp_path, receiver.url, exclude={"collector"})
    (tmp_path / "logs" / "collector.log").write_text(service_line("collector", "mine") + "\n")
    time.sleep(0.3)
    (tmp_path / "logs" / "late-comer.log").write_text(service_line("late-comer", "hello") + "\n")
    wait_for(lambda: len(receiver.lines()) == 1, timeout=5)
    time.sleep(0.3)
    running.stop()
    assert json.loads(receiver.lines()[0])["service"] == "late-comer"


def test_more_files_than_it_may_hold_open(tmp_path, receiver):
    """Hundreds of files and a low open-files limit: the collector took every descriptor and died (EMFILE, then
    again under its process manager, collecting nothing). It holds at most `max_open_files`: a file read to its end
    is closed and opened again, from where it was read to, once it changes — appended to, or rotated meanwhile."""
    logs = tmp_path / "logs"
    logs.mkdir()
    names = [f"s{n:02d}" for n in range(30)]

    def write(name: str, numbers: range, path: Path | None = None) -> None:
        with open(path or logs / f"{name}.log", "a") as f:
            f.write("".join(service_line(name, f"{name} {i}") + "\n" for i in numbers))

    for name in names:
        write(name, range(5))
    running = start(tmp_path, receiver.url, max_open_files=6, rotate_wait=0.1)  # a rotated file holds its slot
    collector = running.collector
    wait_for(lambda: len(receiver.lines()) == 150, 60, "the first 150 lines")
    assert len(collector.tails) <= 6 and len(collector.tails) + len(collector.parked) == 30
    for name in names[::2]:
        write(name, range(5, 8))
    for name in names[1::2]:  # rotated while closed: the rest of the old file, then the new one
        write(name, range(5, 7))
        os.rename(logs / f"{name}.log", logs / f"{name}.log.1")
        write(name, range(7, 8))
    wait_for(lambda: len(receiver.lines()) == 240, 60, "every line written since")
    time.sleep(0.3)
    running.stop()
    messages = sorted(json.loads(line)["message"] for line in receiver.lines())
    assert messages == sorted(f"{name} {i}" for name in names for i in range(8))
    assert collector.health()["files"] == 30


# --- FileTail: rotation and truncation, without a collector -------------------------------------------------


def read_all(tail: FileTail) -> list[bytes]:
    out = []
    while (chunk := tail.read(1000)) is not None:
        out += chunk.lines
    return out


def test_tail_follows_rotation_and_joins_a_split_line(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"one\ntwo\nthr")
    tail = FileTail(log, 1024)
    assert tail.open(None)
    assert read_all(tail) == [b"one", b"two"]
    os.rename(log, tmp_path / "x.log.1")  # supervisord rotates mid-line
    log.write_bytes(b"ee\nfour\n")
    assert read_all(tail) == [b"three", b"four"]
    assert tail.rotations == 1 and tail.files[-1].inode == os.stat(log).st_ino
    assert tail.files[-1].offset == 8
    assert len(tail.files) == 2  # the old file is still followed (ROTATE_WAIT): a writer may still write there


def test_tail_follows_truncation(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"a\nb\n")
    tail = FileTail(log, 1024)
    tail.open(None)
    assert read_all(tail) == [b"a", b"b"]
    log.write_bytes(b"c\n")  # truncated and rewritten
    assert read_all(tail) == [b"c"]
    assert tail.truncations == 1


def test_tail_sees_a_truncation_regrown_to_the_same_size_or_beyond(tmp_path):
    """Size alone cannot tell: the first bytes and the bytes before the offset changed."""
    log = tmp_path / "x.log"
    log.write_bytes(b"line 1\nline 2\n")
    tail = FileTail(log, 1024)
    tail.open(None)
    assert read_all(tail) == [b"line 1", b"line 2"]
    with open(log, "r+b") as f:  # same inode, same size, other lines
        f.truncate(0)
        f.write(b"line 3\nline 4\n")
    assert read_all(tail) == [b"line 3", b"line 4"]
    with open(log, "r+b") as f:  # same inode, bigger
        f.truncate(0)
        f.write(b"line 5\nline 6\nline 7\n")
    assert read_all(tail) == [b"line 5", b"line 6", b"line 7"]
    assert tail.truncations == 2


def test_tail_reads_what_only_the_copy_holds_after_copytruncate(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"a\nb\n")
    tail = FileTail(log, 1024)
    tail.open(None)
    assert read_all(tail) == [b"a", b"b"]
    with open(log, "ab") as f:
        f.write(b"c\nd")  # written after our last read: only the copy will hold it
    shutil.copyfile(log, tmp_path / "x.log.1")
    with open(log, "r+b") as f:
        f.truncate(0)
        f.write(b"\ne\n")  # the rest of the line cut by the rotation, as supervisord splits a line
    assert read_all(tail) == [b"c", b"d", b"e"]
    assert tail.truncations == 1


def test_tail_follows_a_rotated_file_still_being_written(tmp_path):
    log = tmp_path / "x.log"
    writer = open(log, "ab", buffering=0)  # noqa: SIM115 - a writer that keeps its file across the rotation
    writer.write(b"1\n")
    tail = FileTail(log, 1024, rotate_wait=0.5)
    tail.open(None)
    assert read_all(tail) == [b"1"]
    os.rename(log, tmp_path / "x.log.1")
    log.write_bytes(b"new 1\n")
    writer.write(b"2\n")  # still to the rotated file
    assert sorted(read_all(tail)) == [b"2", b"new 1"]
    writer.write(b"3\n")
    assert read_all(tail) == [b"3"]
    writer.close()
    rotated_key = f"{log}@{os.stat(tmp_path / 'x.log.1').st_dev}:{os.stat(tmp_path / 'x.log.1').st_ino}"
    assert tail.keys() == [rotated_key, str(log)]
    time.sleep(0.6)
    assert read_all(tail) == [] and tail.take_forgotten() == [rotated_key] and tail.keys() == [str(log)]


def test_tail_follows_a_file_rotated_mid_line_that_is_still_written(tmp_path):
    """logrotate's `create` under a writer that flushes mid-line (stdio's block buffering) and reopens its file only
    later: the old file ends in half a line when the new one appears. That half starts the new file's first line (as
    supervisord splits a line), but the old file is still followed: the writer's next lines there were lost."""
    log = tmp_path / "x.log"
    writer = open(log, "ab", buffering=0)  # noqa: SIM115 - a writer that keeps its file across the rotation
    writer.write(b"A\nhal")
    tail = FileTail(log, 1024, rotate_wait=60)  # never let go during the test
    tail.open(None)
    assert read_all(tail) == [b"A"]
    os.rename(log, tmp_path / "x.log.1")
    log.write_bytes(b"")
    assert read_all(tail) == []
    writer.write(b"f\nB\n")  # before its reopen
    writer.close()
    with open(log, "ab") as reopened:
        reopened.write(b"C\n")
    assert sorted(read_all(tail)) == [b"B", b"f", b"halC"]  # B was lost; the split of `half` cannot be known


def test_tail_resumes_in_a_rotated_file(tmp_path):
    """Down while the file rotated twice: finish the old inode, then the newer rotated file, then the file."""
    log = tmp_path / "x.log"
    log.write_bytes(b"1\n2\n")
    saved = Position(os.stat(log).st_dev, os.stat(log).st_ino, 2, digest(b"1\n2\n"), 4, *anchor_of(b"1"))
    os.rename(tmp_path / "x.log", tmp_path / "x.log.1")
    (tmp_path / "x.log").write_bytes(b"3\n")
    os.rename(tmp_path / "x.log.1", tmp_path / "x.log.2")
    os.rename(tmp_path / "x.log", tmp_path / "x.log.1")
    (tmp_path / "x.log").write_bytes(b"4\n")
    tail = FileTail(log, 1024)
    tail.open({str(log): saved})
    assert read_all(tail) == [b"2", b"3", b"4"]


def test_tail_resumes_in_the_copy_after_a_copytruncate_while_down(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"1\n2\n")
    saved = Position(os.stat(log).st_dev, os.stat(log).st_ino, 2, digest(b"1\n2\n"), 4, *anchor_of(b"1"))
    shutil.copyfile(log, tmp_path / "x.log.1")
    log.write_bytes(b"3\n4\n")  # the same inode, other content, the same size
    tail = FileTail(log, 1024)
    tail.open({str(log): saved})
    assert read_all(tail) == [b"2", b"3", b"4"]


def test_tail_does_not_trust_a_reused_inode(tmp_path):
    """The file was deleted and another created with the same inode number while we were down."""
    log = tmp_path / "x.log"
    log.write_bytes(b"old 1\nold 2\n")
    saved = Position(os.stat(log).st_dev, os.stat(log).st_ino, 12, digest(b"old 1\nold 2\n"), 12, *anchor_of(b"old 2"))
    with open(log, "r+b") as f:  # what inode reuse looks like from here: same inode, other bytes
        f.write(b"new 1\nnew 2\nnew 3\n")
    tail = FileTail(log, 1024)
    tail.open({str(log): saved})
    assert read_all(tail) == [b"new 1", b"new 2", b"new 3"]


def test_tail_skips_a_line_too_long_without_holding_it(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"short\n" + b"y" * 3000 + b"\nafter\n")
    tail = FileTail(log, 100)
    tail.open(None)
    lines = []
    while (chunk := tail.read(1000)) is not None:
        assert all(len(f.buffer) <= 100 for f in tail.files)
        lines += chunk.lines
    assert lines == [b"short", b"after"] and tail.too_long == 1


def test_tail_reads_the_line_after_a_hole(tmp_path):
    """A writer without O_APPEND writes at its old offset into a file truncated under it: NULs up to there, then its
    line. The NULs (300 KiB, over the line limit) were one line too long, skipped with the real line at its end."""
    log = tmp_path / "x.log"
    log.write_bytes(b"before\n" * 1000)
    tail = FileTail(log, 256 * 1024)
    tail.open(None)
    assert read_all(tail) == [b"before"] * 1000
    os.truncate(log, 0)
    with open(log, "r+b") as writer:  # its offset, as it was
        writer.seek(300 * 1024)
        writer.write(b"after the hole\n" + b"\x00\x00 kept\n")
    lines = []
    while (chunk := tail.read(1000)) is not None:
        assert all(len(f.buffer) <= 256 * 1024 for f in tail.files)
        lines += chunk.lines
    assert lines == [b"after the hole", b" kept"] and tail.too_long == 0


def test_tail_hands_back_what_does_not_fit(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"".join(b"%d\n" % i for i in range(10)))
    tail = FileTail(log, 100)
    tail.open(None)
    chunk = tail.read(3)
    assert chunk.lines == [b"0", b"1", b"2"] and chunk.ends == [2, 4, 6] and chunk.end == 6
    assert chunk.position().offset == 6 and chunk.position().inode == os.stat(log).st_ino
    assert read_all(tail) == [b"%d" % i for i in range(3, 10)]


# --- multiline entries and levels ---------------------------------------------------------------------------

TRACEBACK = [
    b"Traceback (most recent call last):",
    b'  File "/app/main.py", line 3, in <module>',
    b"    start()",
    b"KeyError: 'port'",
    b"",
    b"During handling of the above exception, another exception occurred:",
    b"",
    b"Traceback (most recent call last):",
    b'  File "/app/main.py", line 5, in <module>',
    b'    raise RuntimeError("cannot start")',
    b"RuntimeError: cannot start",
]


def joined(lines: list[bytes], rule: MultilineRule = MultilineRule()) -> list[bytes]:
    joiner = Joiner(rule, rule.compiled(), 256 * 1024)
    ends = list(itertools.accumulate(len(line) + 1 for line in lines))
    entries = joiner.feed(lines, ends, 0)
    held = joiner._take() if joiner.holding else None
    return [e.text for e in entries] + ([held.text] if held else [])


def test_a_traceback_joins_the_entry_it_belongs_to():
    text_line = b"2026-11-26 12:07:43,954 ERROR worker failed"
    json_line = b'{"level": "info", "message": "starting"}'
    assert joined([text_line, *TRACEBACK, b"2026-11-26 12:07:44,001 INFO next"]) == [
        b"\n".join([text_line, *TRACEBACK]), b"2026-11-26 12:07:44,001 INFO next"]
    # After a JSON line (a whole entry by itself) a raw traceback is an entry of its own; so is one at the start.
    assert joined([json_line, *TRACEBACK]) == [json_line, b"\n".join(TRACEBACK)]
    assert joined(TRACEBACK[:4]) == [b"\n".join(TRACEBACK[:4])]
    # Java, Envoy, logfmt, syslog and uvicorn's text lines start entries; indented and `Caused by` lines continue.
    java = [b"2026-11-26 12:07:43 SEVERE boom", b"java.lang.IllegalStateException: x", b"\tat a.B.c(B.java:1)",
            b"Caused by: java.io.IOException: y", b"\t... 3 more"]
    starts = [b"[2026-11-26 12:08:17.666][7258][warning][main] caught SIGTERM", b"level=info msg=ok",
              b"Nov 26 12:07:55 host sshd[1]: ok", b"INFO:     Started server process [1]", b"<13>1 2026-11-26 x"]
    assert joined(java + starts) == [b"\n".join(java), *starts]


def test_an_entry_is_cut_at_max_lines():
    rule = MultilineRule(max_lines=3)
    assert joined([b"12:00 start", b" a", b" b", b" c", b" d"], rule) == [b"12:00 start\n a\n b", b" c\n d"]


@pytest.mark.parametrize(("text", "level"), [
    ("\n".join(line.decode() for line in TRACEBACK), "error"),
    ("2026-11-26 12:07:43,954 INFO worker failed\nRuntimeError: boom", "error"),
    ("Exception in ASGI application", "error"),
    ("java.lang.NullPointerException", "error"),
    ("2026-11-26 12:07:43 CRITICAL disk full", "critical"),
    ("FATAL: the database system is shutting down", "critical"),
    ("panic: runtime error: index out of range", "critical"),
    ("[2026-11-26 12:08:17.666][7258][warning][main] caught SIGTERM", "warning"),
    ("0 errors, ErrorBoundary mounted", "info"),
    ("listening on 127.0.0.1:8080", "info"),
])
def test_level_inferred_from_content(text, level):
    assert infer_level(text) == level


def test_multiline_entries_through_the_collector(tmp_path, receiver):
    running = start(tmp_path, receiver.url, multiline=MultilineRule(max_wait=0.2))
    log = tmp_path / "logs" / "worker.log"
    log.write_bytes(b"\n".join([service_line("worker", "starting").encode(), *TRACEBACK]) + b"\n")
    wait_for(lambda: len(receiver.lines()) == 2, what="the JSON line and the traceback")
    (stream_json, _), (stream_tb, tb) = receiver.entries()
    assert stream_json["level"] == "info" and stream_tb == {"job": "finopti", "service": "worker", "level": "error"}
    assert tb[1] == "\n".join(line.decode() for line in TRACEBACK)
    running.stop()
    assert metric(running.collector, "finopti_collector_multiline_entries_total") == 1
    # The position covers the whole entry: a restart does not push it again.
    running = start(tmp_path, receiver.url, multiline=MultilineRule(max_wait=0.2))
    with open(log, "ab") as f:
        f.write(service_line("worker", "after").encode() + b"\n")
    wait_for(lambda: len(receiver.lines()) >= 3, what="the next line")
    time.sleep(0.4)
    running.stop()
    assert len(receiver.lines()) == 3


def test_a_line_dated_ahead_is_kept_at_read_time(tmp_path, receiver):
    running = start(tmp_path, receiver.url)
    before = time.time_ns()
    (tmp_path / "logs" / "skewed.log").write_text(
        json.dumps({"ts": "2099-01-01T00:00:00.000Z", "level": "info", "service": "skewed", "message": "ahead"})
        + "\n")
    wait_for(lambda: len(receiver.lines()) == 1, what="the line")
    running.stop()
    [(_, value)] = receiver.entries()
    assert before <= int(value[0]) <= time.time_ns()
    assert value[2] == {"original_ts": "2099-01-01T00:00:00.000000Z"}
    assert metric(running.collector, "finopti_collector_lines_future_total") == 1


def test_tail_reads_every_file_of_several_rotations_between_two_looks(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"a\n")
    tail = FileTail(log, 1024, rotate_wait=0)
    tail.open(None)
    assert read_all(tail) == [b"a"]
    with open(log, "ab") as f:
        f.write(b"b\n")
    os.rename(log, tmp_path / "x.log.1")
    log.write_bytes(b"c\n")
    os.rename(tmp_path / "x.log.1", tmp_path / "x.log.2")
    os.rename(log, tmp_path / "x.log.1")
    log.write_bytes(b"d\n")
    assert read_all(tail) == [b"b", b"c", b"d"] and tail.rotations == 2


def test_a_chunk_finds_the_same_lines_to_redact_as_each_line():
    """The collector looks for redaction's marks once per chunk: exactly the lines a per-line look would pick."""
    rng = random.Random(5)
    pieces = [b"abc", b"={", b"Bearer ", b"BEARER ", b"eyJx", b"EYJ", b"token\"", b"passw", b"SECRET", b"\"key\"",
              b"zz", b" ", b"e", b"yJ", b"ear", b"er ", b"=", b"KEY\""]
    for _ in range(200):
        lines = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(1, 30))]
        assert lines_with_marks(lines) == {i for i, line in enumerate(lines) if suspect(line)}


def test_a_line_or_a_batch_that_raises_is_skipped_and_counted(tmp_path, receiver, monkeypatch):
    """The safety net for a case no test foresaw: a line whose parsing raises is kept as plain text (it was dropped:
    with hundreds of files, a lazy import that found no descriptor left dropped lines so), a batch whose encoding
    raises is dropped; both are counted, and the lines after them are pushed (before, the reader or a sender
    thread died, and the pipeline stopped)."""
    import finopti.logs.collector as collector_module

    parse, body = collector_module.parse_line, collector_module.LokiBatch.body

    def parse_or_raise(raw, *args, **kwargs):
        if b"explodes" in raw:
            raise RuntimeError("a case no test foresaw")
        return parse(raw, *args, **kwargs)

    def body_or_raise(batch):
        if any(b"unencodable" in entry for entries in batch.streams.values() for entry in entries):
            raise RuntimeError("a batch no test foresaw")
        return body(batch)

    monkeypatch.setattr(collector_module, "parse_line", parse_or_raise)
    monkeypatch.setattr(collector_module.LokiBatch, "body", body_or_raise)
    running = start(tmp_path, receiver.url)
    log = tmp_path / "logs" / "ui.log"
    log.write_text("".join(service_line("ui", m) + "\n" for m in ("before", "explodes", "after")))
    wait_for(lambda: len(receiver.lines()) == 3, what="the line that raised and those around it")
    with open(log, "a") as f:
        f.write(service_line("ui", "unencodable") + "\n")
    wait_for(lambda: metric(running.collector, "finopti_collector_lines_rejected_total", reason="unencodable") == 1,
             what="the batch dropped")
    with open(log, "a") as f:
        f.write(service_line("ui", "later") + "\n")
    wait_for(lambda: len(receiver.lines()) == 4, what="the line after the dropped batch")
    assert [json.loads(line)["message"] for line in receiver.lines()] == ["before", "explodes", "after", "later"]
    assert [labels["service"] for labels, _ in receiver.entries()] == ["ui"] * 4
    assert metric(running.collector, "finopti_collector_lines_unstructured_total", reason="unparseable") == 1
    running.stop()


def test_what_is_not_a_regular_file_is_not_followed(tmp_path, receiver):
    """A named pipe `x.log` (opening it waited for a writer: the reader stopped), a symlink to itself (ELOOP raised),
    a directory `x.log`: skipped; the regular files next to them are collected."""
    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / "pipe.log")
    os.symlink(logs / "loop.log", logs / "loop.log")
    (logs / "dir.log").mkdir()
    running = start(tmp_path, receiver.url)
    (logs / "ui.log").write_text(service_line("ui", "collected") + "\n")
    wait_for(lambda: receiver.lines(), what="the regular file's line")
    assert [json.loads(line)["message"] for line in receiver.lines()] == ["collected"]
    running.stop()
