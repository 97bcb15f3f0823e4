"""What an entry is, against the real collector and log store (both as processes): a traceback joins the entry it
belongs to and is found as an error; a clock far ahead cannot pin the store."""

import os
import signal
import time

import httpx
import orjson
import pytest
from test_logs_pipeline import Pipeline, running, wait_for

from finopti.logs.times import ns_to_rfc3339

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/worker.py", line 12, in <module>\n'
    "    main()\n"
    '  File "/app/worker.py", line 9, in main\n'
    '    raise RuntimeError("no database")\n'
    "RuntimeError: no database"
)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    with running(tmp_path_factory.mktemp("entries") / "home") as p:
        yield p


def query(pipeline: Pipeline, **params) -> list[dict]:
    r = httpx.get(f"{pipeline.store_url}/api/logs", params={"limit": 100, **params}, timeout=10)
    r.raise_for_status()
    return r.json()["lines"]


def metric(url: str, name: str) -> float:
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def json_line(service: str, message: str, **fields) -> str:
    return orjson.dumps({"ts": ns_to_rfc3339(time.time_ns()), "level": "info", "service": service,
                         "message": message, **fields}).decode()


def test_a_crash_at_start_up_is_one_error_entry(pipeline):
    """A service logs JSON, then Python prints an uncaught exception on stderr (the same file)."""
    (pipeline.logs / "worker.log").write_text(json_line("worker", "starting") + "\n" + TRACEBACK + "\n")
    wait_for(lambda: len(query(pipeline, service="worker")) == 2, 30, "two entries")
    [crash] = query(pipeline, service="worker", level="error")
    assert crash["line"] == TRACEBACK
    assert [line["level"] for line in query(pipeline, service="worker", direction="forward")] == ["info", "error"]
    assert len(query(pipeline, service="worker", q="no database")) == 1


def test_a_traceback_joins_the_text_line_it_follows(pipeline):
    """`logging.exception` in a text format: the line, then the traceback."""
    lines = ["2026-11-26 12:07:43,954 ERROR job 7 failed", TRACEBACK, "2026-11-26 12:07:44,001 INFO job 8 done"]
    (pipeline.logs / "jobs.log").write_text("\n".join(lines) + "\n")
    wait_for(lambda: len(query(pipeline, service="jobs")) == 2, 30, "two entries")
    first, second = query(pipeline, service="jobs", direction="forward")
    assert first["line"] == lines[0] + "\n" + TRACEBACK and first["level"] == "error"
    assert second["line"] == lines[2] and second["level"] == "info"


def test_a_clock_ahead_cannot_pin_the_store(pipeline):
    collector_metrics = f"http://127.0.0.1:{pipeline.collector_port}/metrics"
    store_metrics = f"{pipeline.store_url}/metrics"
    before = time.time_ns()
    path = pipeline.logs / "skewed.log"
    path.write_text(orjson.dumps({"ts": "2099-01-01T00:00:00.000Z", "level": "info", "service": "skewed",
                                  "message": "from the future"}).decode() + "\n")
    wait_for(lambda: query(pipeline, service="skewed"), 30, "the line from 2099")
    with open(path, "a") as f:
        f.write(json_line("skewed", "written later") + "\n")
    wait_for(lambda: len(query(pipeline, service="skewed")) == 2, 30, "the next line")
    newest, dated = query(pipeline, service="skewed")
    assert newest["line"]["message"] == "written later"  # the 2099 line does not stay first
    assert before <= dated["ts_ns"] <= time.time_ns()
    assert dated["metadata"]["original_ts"] == "2099-01-01T00:00:00.000000Z"  # the claim is kept
    assert metric(collector_metrics, "finopti_collector_lines_future_total") == 1

    # Pushed by another agent (Promtail, Alloy): the store applies the same rule, and drops lines older than its
    # retention (7 days by default).
    labels = {"job": "finopti", "service": "pushed", "level": "info"}
    body = {"streams": [{"stream": labels, "values": [
        ["4102444800000000000", "dated 2100"], [str(time.time_ns() - 30 * 86400 * 10**9), "a month old"]]}]}
    assert httpx.post(f"{pipeline.store_url}/loki/api/v1/push", json=body).status_code == 204
    [pushed] = query(pipeline, service="pushed", since="1m")
    assert pushed["line"] == "dated 2100" and pushed["metadata"] == {"original_ts": "2100-01-01T00:00:00.000000Z"}
    assert metric(store_metrics, "finopti_logstore_lines_future_total") == 1
    assert metric(store_metrics, "finopti_logstore_lines_too_old_total") == 1


def test_odd_lines_and_file_names_do_not_stop_the_collector(pipeline):
    """Values that once raised in the collector's reader (which a restarted collector would read again, forever):
    a millisecond field of `²` digits, a level that is a list or an object, a line nested 5,000 deep, a rotated file
    named `x.log.²`."""
    (pipeline.logs / "odd.log.²").write_bytes(b"")
    odd = [{"ts": "2026-11-26T12:07:55.²²²Z", "message": "superscript"}, {"level": ["error"], "message": "listed"},
           {"level": {"name": "warn"}, "message": "Traceback (most recent call last):"},
           {"level": 50, "message": "pino"}]
    with open(pipeline.logs / "odd.log", "ab") as f:
        f.write(b"".join(orjson.dumps({"service": "odd", **line}) + b"\n" for line in odd))
        f.write(b'{"service": "odd", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n")  # text: too deep to be JSON
    wait_for(lambda: len(query(pipeline, service="odd")) == 5, 30, "five odd lines")
    levels = {line["line"]["message"] if isinstance(line["line"], dict) else "deep": line["level"]
              for line in query(pipeline, service="odd")}
    assert levels == {"superscript": "info", "listed": "info", "Traceback (most recent call last):": "error",
                      "pino": "error", "deep": "info"}
    assert pipeline.collector.popen.poll() is None
    r = httpx.get(f"{pipeline.store_url}/api/logs", params={"cursor": "²:1"}, timeout=10)
    assert r.status_code == 400 and r.json()["param"] == "cursor"
    with httpx.stream("GET", f"{pipeline.store_url}/api/logs/tail", params={"service": "odd", "since": "1h"},
                      headers={"last-event-id": b"\xb2"}, timeout=10) as r:  # `²` in Latin-1
        assert r.status_code == 200


def test_what_writers_put_around_a_json_line_does_not_cost_its_trace_id_or_its_time(pipeline):
    """A byte order mark before a file's first line (PowerShell, .NET), NULs before a line (the hole a writer leaves
    when it writes at its old offset into a file truncated under it), spaces, CRLF endings and NULs after: each line
    stays JSON, found by its trace id and dated by its own time. So does a time written as a Unix number (zap's
    seconds with a fraction, pino's milliseconds, nanoseconds, digits in a string) or under another name (`time`,
    `@timestamp`), and a level in odd dress."""
    base = time.time_ns() // 10**9 * 10**9 - 60 * 10**9  # a minute ago, whole seconds
    ts = ns_to_rfc3339(base)
    lines = [
        (b"\xef\xbb\xbf", {"ts": ts}, b"\n"), (b"\x00" * 3000, {"ts": ts}, b"\n"), (b"  ", {"ts": ts}, b"\r\n"),
        (b"", {"ts": ts}, b"\x00\x00\n"), (b"", {"ts": (base + 10**9) / 1e9 + 0.25}, b"\n"),
        (b"", {"ts": (base + 2 * 10**9) // 10**6}, b"\n"), (b"", {"ts": base + 3 * 10**9 + 7}, b"\n"),
        (b"", {"ts": str((base + 4 * 10**9) // 10**9)}, b"\n"), (b"", {"ts": ts, "level": " ERROR "}, b"\n"),
        (b"", {"ts": ts, "level": "50"}, b"\n"),
        (b"", {"time": (base + 5 * 10**9) // 10**6, "level": 30}, b"\n"),  # pino: `time`, epoch ms
        (b"", {"time": ns_to_rfc3339(base + 6 * 10**9).replace("Z", "+00:00")}, b"\n"),  # Go's slog, logrus
        (b"", {"@timestamp": ns_to_rfc3339(base + 7 * 10**9)}, b"\n"),  # Elastic's ECS
    ]
    trace_ids = [os.urandom(16).hex() for _ in lines]
    with open(pipeline.logs / "wrapped.log", "ab") as f:
        for (before, fields, after), trace_id in zip(lines, trace_ids, strict=True):
            f.write(before + orjson.dumps({"level": "info", "service": "wrapped", "message": "m", **fields,
                                           "trace_id": trace_id}) + after)
    wait_for(lambda: len(query(pipeline, service="wrapped")) == len(lines), 30, "every wrapped line")
    found = [query(pipeline, trace_id=trace_id) for trace_id in trace_ids]
    assert [len(f) for f in found] == [1] * len(lines)
    assert [f[0]["ts_ns"] for f in found] == [base] * 4 + [
        base + 1_250_000_000, base + 2 * 10**9, base + 3 * 10**9 + 7, base + 4 * 10**9, base, base,
        base + 5 * 10**9, base + 6 * 10**9, base + 7 * 10**9]
    assert [f[0]["level"] for f in found] == ["info"] * 8 + ["error", "error"] + ["info"] * 3
    assert all(isinstance(f[0]["line"], dict) for f in found)


def test_files_named_in_any_bytes_are_collected_once_across_a_restart(pipeline):
    """A file named `café.log` put the name in the positions header, which httpx refuses to send (not ASCII): the
    push was retried for ever and collection stopped. A name whose bytes are not UTF-8 could not be a label, nor be
    written by orjson. Both are collected, as services `café` and `bad\ufffd`, and a restarted collector resumes
    from the store's record of them without repeating a line."""
    names = {"café": "café", os.fsdecode(b"bad\xff"): "bad\ufffd"}
    for name in names:
        (pipeline.logs / f"{name}.log").write_text(json_line("", "first") + "\n")
    for service in names.values():
        wait_for(lambda s=service: query(pipeline, service=s), 30, f"the line of {service}")
    pipeline.collector.signal(signal.SIGTERM)
    for name in names:
        with open(pipeline.logs / f"{name}.log", "a") as f:
            f.write(json_line("", "second") + "\n")
    pipeline.start_collector()
    for service in names.values():
        wait_for(lambda s=service: len(query(pipeline, service=s)) >= 2, 30, f"the second line of {service}")
        assert sorted(line["line"]["message"] for line in query(pipeline, service=service)) == ["first", "second"]


def test_a_logs_directory_under_a_name_that_is_not_ascii(tmp_path):
    """The collector's name (host and logs directory) goes in a header, which must be ASCII: under /home/josé no
    push could be sent, and none was retried into success."""
    with running(tmp_path / "josé" / "home") as p:
        (p.logs / "worker.log").write_text(json_line("worker", "hello") + "\n")
        wait_for(lambda: query(p, service="worker"), 30, "the line")
