"""The log store service: a Loki-compatible push API and the platform's log query API over `LogStore`.

- `POST /loki/api/v1/push`: Loki's JSON body (gzip allowed) or protobuf + snappy (what Promtail sends), or the
  collector's columns (`finopti.logs.wire`).
  The collector adds `X-Finopti-Collector`, `X-Finopti-Seq` and `X-Finopti-Positions` so a batch it
  retries is stored once (see `LogStore.push`), and `X-Finopti-Prev-Seq` so its batches are stored in order
  (409 when the one before has not come: the collector sends it again).
- `GET /loki/api/v1/labels`, `GET /loki/api/v1/label/{name}/values`: for Grafana's label browser.
- `GET /api/logs`, `GET /api/logs/tail` (Server-Sent Events), `GET /api/traces/` (the trace list: user, route,
  status, prefix, traffic, start/end/since, limit), `GET /api/traces/{trace_id}`, `GET /api/stats`,
  `GET /api/collector/positions?collector=`.

Every path is relative to the app, with no redirects, so the gateway can mount it under `/logs/`.
Settings (environment): FINOPTI_LOGSTORE_RETENTION (`7d`), FINOPTI_LOGSTORE_MAX_BYTES (`1GiB`),
FINOPTI_LOGSTORE_FUTURE_GRACE (`10m`), FINOPTI_LOGSTORE_RETENTION_INTERVAL (`60s`, how often retention runs).
"""

import asyncio
import contextlib
import gzip
import io
import json
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge, Histogram
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams

from finopti.logs import wire
from finopti.logs.levels import level_word
from finopti.logs.lokipb import decode_push, varint
from finopti.logs.search import format_cursor, parse_cursor, text_pattern
from finopti.logs.store import MAX_LIMIT, Admission, Delivery, LogQuery, LogStore, PushError
from finopti.logs.times import parse_since, parse_time, since_ns
from finopti.logs.trace_search import TraceFilter, search_traces
from finopti.mesh.model import parse_size
from finopti.paths import StateDir
from finopti.services.common import Health, ServiceSettings, create_service_app, error_body

log = logging.getLogger("finopti.logstore")

PUSH_PATH = "/loki/api/v1/push"

LINES = Counter("finopti_logstore_lines_ingested_total", "Log lines stored")
DUPLICATES = Counter("finopti_logstore_duplicate_batches_total", "Pushed batches already stored (retries)")
REJECTED = Counter("finopti_logstore_push_rejected_total", "Push requests refused as invalid")
PUSH_SECONDS = Histogram(
    "finopti_logstore_push_seconds", "Time to store one push request",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RETAINED_BYTES = Gauge("finopti_logstore_bytes", "Bytes of the database in use")
RETENTION_DELETED = Counter("finopti_logstore_retention_deleted_total", "Lines removed by retention")
FUTURE = Counter("finopti_logstore_lines_future_total",
                 "Lines dated beyond the grace period ahead: stored at arrival, their own time kept as original_ts")
TOO_OLD = Counter("finopti_logstore_lines_too_old_total", "Lines older than the retention when pushed: dropped")

QUERY_PARAMS = {"start", "end", "since", "service", "level", "trace_id", "request_id", "user", "q", "limit",
                "direction", "cursor"}
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
SSE_KEEPALIVE_SECONDS = 15.0


def bad_request(param: str, problem: str) -> HTTPException:
    message = f"invalid query parameter '{param}': {problem}"
    return HTTPException(400, detail={"error": "bad_request", "message": message, "param": param})


def log_query(params: QueryParams, *, default_limit: int = 100) -> LogQuery:
    """Query string -> LogQuery; a 400 naming the parameter for anything it cannot use."""
    unknown = sorted(set(params) - QUERY_PARAMS)
    if unknown:
        raise bad_request(unknown[0], f"unknown parameter (known: {', '.join(sorted(QUERY_PARAMS))})")
    q = LogQuery(limit=default_limit)
    for name in ("start", "end"):
        if params.get(name):
            try:
                setattr(q, name, parse_time(params[name]))
            except (ValueError, OverflowError):
                raise bad_request(name, "expected RFC 3339 (2026-11-26T12:00:00Z) or a Unix timestamp") from None
    if params.get("since"):
        try:
            q.start = since_ns(params["since"], time.time_ns())
        except ValueError as exc:
            raise bad_request("since", str(exc)) from None
    if q.start is not None and q.end is not None and q.start >= q.end:
        raise bad_request("end", "must be after start")
    q.services = [s for s in params.getlist("service") if s]
    q.levels = [level_word(s) or s.strip().lower() for s in params.getlist("level") if s.strip()]
    for name in ("trace_id", "request_id"):
        value = params.get(name)
        if value is not None and not _ID.match(value):
            raise bad_request(name, "expected an id of letters, digits, '-', '_', '.' or ':' (at most 128)")
        setattr(q, name, value or None)
    q.user = params.get("user") or None
    if params.get("cursor"):
        try:
            q.cursor = parse_cursor(params["cursor"])
        except ValueError as exc:
            raise bad_request("cursor", f"{exc} (the next_cursor of the page before)") from None
    q.text = params.get("q") or None
    if q.text is not None and text_pattern(q.text) is None:  # it matched nothing, silently: `*`, `%`, `->`
        raise bad_request("q", "expected a word to look for (letters or digits): punctuation alone is not searched")
    if "limit" in params:
        try:
            q.limit = int(params["limit"])
        except ValueError:
            raise bad_request("limit", "expected an integer") from None
        if not 1 <= q.limit <= MAX_LIMIT:
            raise bad_request("limit", f"must be between 1 and {MAX_LIMIT}")
    q.direction = params.get("direction", "backward")
    if q.direction not in ("backward", "forward"):
        raise bad_request("direction", "expected 'backward' (newest first) or 'forward'")
    return q


TRACE_PARAMS = {"start", "end", "since", "user", "route", "status", "prefix", "traffic", "limit"}
_STATUS = re.compile(r"^([1-5]xx|error|[1-5]\d\d)$")


def trace_filter(params: QueryParams) -> TraceFilter:
    """Query string of the trace list -> TraceFilter; a 400 naming the parameter for anything unusable."""
    unknown = sorted(set(params) - TRACE_PARAMS)
    if unknown:
        raise bad_request(unknown[0], f"unknown parameter (known: {', '.join(sorted(TRACE_PARAMS))})")
    times = log_query(QueryParams({k: v for k, v in params.items() if k in ("start", "end", "since")}))
    f = TraceFilter(start=times.start, end=times.end)
    f.user, f.route, f.prefix = params.get("user") or None, params.get("route") or None, params.get("prefix") or None
    if f.prefix and not re.fullmatch(r"[0-9a-fA-F]{1,32}", f.prefix):
        raise bad_request("prefix", "expected the first hex digits of a trace id")
    status = params.get("status") or None
    if status and not _STATUS.match(status.lower()):
        raise bad_request("status", "expected 2xx, 4xx, 5xx, error or a status code such as 503")
    f.status = status.lower() if status else None
    f.traffic = params.get("traffic") or "user"
    if f.traffic not in ("user", "platform", "all"):
        raise bad_request("traffic", "expected user (default), platform or all")
    if "limit" in params:
        try:
            f.limit = int(params["limit"])
        except ValueError:
            raise bad_request("limit", "expected an integer") from None
        if not 1 <= f.limit <= 500:
            raise bad_request("limit", "must be between 1 and 500")
    return f


def json_streams(body: bytes) -> list[tuple[dict, list]]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PushError(f"body is not valid JSON: {exc}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise PushError("expected {\"streams\": [{\"stream\": {labels}, \"values\": [[ts_ns, line], ...]}]}")
    out = []
    for i, stream in enumerate(streams):
        labels = stream.get("stream") if isinstance(stream, dict) else None
        values = stream.get("values") if isinstance(stream, dict) else None
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise PushError(f"streams[{i}].stream: expected an object of string labels")
        if not isinstance(values, list):
            raise PushError(f"streams[{i}].values: expected a list of [ts_ns, line] entries")
        out.append((labels, values))
    return out


# A push body at most, compressed or not (Loki's distributor takes 100 MB; Promtail's batches are 1 MiB, the
# collector's 1 MB). The sizes that LZ4 and snappy bodies declare are checked before anything is allocated: a
# 5-byte LZ4 body declaring 2 GiB made the store allocate it, and die of it under a memory limit.
MAX_PUSH_BYTES = 64 * 1024 * 1024


class BodyTooLarge(Exception):
    """A push body over MAX_PUSH_BYTES (as sent, or once uncompressed): a 413."""


async def read_body(request: Request, limit: int = MAX_PUSH_BYTES) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the push body is {int(declared)} bytes, over {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the push body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# The most a byte of each format can stand for: an LZ4 block 255 (a match length byte), snappy 64 (a 2-byte copy).
_MAX_RATIO = {"LZ4": 255, "snappy": 32}


def _check_declared(size: int, what: str, body: bytes, limit: int) -> None:
    """Before anything is allocated: a size the body cannot hold is a 400, one over `limit` a 413."""
    if size > _MAX_RATIO[what] * len(body) + 64:
        raise PushError(f"invalid push body: it declares {size} bytes uncompressed, which {len(body)} bytes of"
                        f" {what} cannot hold")
    if size > limit:
        raise BodyTooLarge(f"the push body declares {size} bytes uncompressed ({what}), over {limit}")


def decoded(body: bytes, encoding: str, content_type: str, limit: int = MAX_PUSH_BYTES) -> tuple[bytes, list | None]:
    """A push body, uncompressed, and its streams (None: the collector's columns, which go to the store as they
    are). Any fault of the body is a PushError (a 400): a truncated gzip, corrupt snappy or a malformed protobuf
    raised errors of their own (a 500, which Promtail and Alloy retry for ever); one over `limit` once uncompressed
    is BodyTooLarge (a 413), found before it is uncompressed."""
    try:
        if encoding == "gzip":
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped:
                body = unzipped.read(limit + 1)
            if len(body) > limit:
                raise BodyTooLarge(f"the push body is over {limit} bytes uncompressed")
        elif encoding == "lz4":
            _check_declared(int.from_bytes(body[:4], "little"), "LZ4", body, limit)
            body = wire.decompress(body)
        if "protobuf" in content_type:
            _check_declared(varint(body, 0)[0], "snappy", body, limit)  # snappy opens with its size
            return body, decode_push(body)
        if content_type.startswith(wire.CONTENT_TYPE):
            return body, None
        return body, json_streams(body)
    except (PushError, BodyTooLarge):
        raise
    except Exception as exc:
        raise PushError(f"invalid push body ({type(exc).__name__}): {exc}") from None


def delivery_from(request: Request) -> Delivery | None:
    collector = request.headers.get("x-finopti-collector")
    if not collector:
        return None
    try:
        seq = int(request.headers["x-finopti-seq"])
        prev = int(request.headers.get("x-finopti-prev-seq", "0"))
        # json, not orjson: positions are keyed by file path, and a name that is not UTF-8 comes as \udcXX
        positions = json.loads(request.headers.get("x-finopti-positions", "{}"))
        if not isinstance(positions, dict):
            raise ValueError("x-finopti-positions must be a JSON object")
    except (KeyError, ValueError) as exc:
        raise PushError(f"x-finopti-seq / x-finopti-prev-seq / x-finopti-positions headers: {exc}") from None
    return Delivery(collector, seq, positions, prev)


class DeliveryOrder:
    """A collector keeps two pushes in flight, so that the store parses one while it writes the other; the
    batches must still be stored in the order they were read (a batch's positions cover the ones before
    it). A push waits here until the batch sent before it (`prev`) is stored."""

    def __init__(self, store: LogStore):
        self.store = store
        self.stored: dict[str, int] = {}  # collector -> seq of its last stored batch
        self.changed = asyncio.Condition()

    async def _last(self, collector: str) -> int:
        if collector not in self.stored:
            delivered = await run_in_threadpool(self.store.delivered, collector)
            self.stored.setdefault(collector, delivered.seq if delivered else 0)
        return self.stored[collector]

    async def wait_turn(self, delivery: Delivery, timeout: float = 5.0) -> bool:
        """False if the batch before it has not come within `timeout` (the collector then sends it again)."""
        if delivery.prev <= await self._last(delivery.collector):
            return True
        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: self.stored[delivery.collector] >= delivery.prev), timeout
                )
                return True
            except TimeoutError:
                return False

    async def done(self, delivery: Delivery) -> None:
        async with self.changed:
            self.stored[delivery.collector] = max(self.stored.get(delivery.collector, 0), delivery.seq)
            self.changed.notify_all()


def can_write(directory: Path) -> None:
    """Raise unless a file can be created, written to disk and removed in `directory` (read-only, full, gone)."""
    probe = directory / f".health-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def create_app(settings: ServiceSettings) -> FastAPI:
    path = StateDir(settings.home).logstore_db
    path.parent.mkdir(parents=True, exist_ok=True)
    # A store that cannot write does not start: the process manager tries again, with backoff, until it can.
    can_write(path.parent)
    health = Health(lambda: can_write(path.parent))
    store = LogStore(
        path,
        retention_seconds=parse_since(os.environ.get("FINOPTI_LOGSTORE_RETENTION", "7d")),
        max_bytes=parse_size(os.environ.get("FINOPTI_LOGSTORE_MAX_BYTES", "1GiB")),
        future_grace=parse_since(os.environ.get("FINOPTI_LOGSTORE_FUTURE_GRACE", "10m")),
    )
    retention_interval = parse_since(os.environ.get("FINOPTI_LOGSTORE_RETENTION_INTERVAL", "60s"))
    # Each push logging a "request completed" line would feed the collector a line per push, forever.
    app = create_service_app(settings, "FinOpti log store", quiet_paths=frozenset({PUSH_PATH}))
    app.router.redirect_slashes = False  # a redirect would carry an absolute path, wrong behind /logs/
    app.state.store = store
    app.state.health = health
    app.state.arrived = asyncio.Event()
    order = DeliveryOrder(store)

    async def retention_loop() -> None:
        while True:
            try:
                RETENTION_DELETED.inc(await run_in_threadpool(store.enforce_retention))
                RETAINED_BYTES.set(await run_in_threadpool(store.used_bytes))
            except Exception:
                log.exception("retention failed")
            await asyncio.sleep(retention_interval)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        tasks = [asyncio.create_task(retention_loop()), asyncio.create_task(health.watch(settings.service))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            store.close()

    app.router.lifespan_context = lifespan

    @app.post(PUSH_PATH)
    async def push(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await read_body(request)
            body, streams = decoded(body, request.headers.get("content-encoding", "").lower(),
                                    request.headers.get("content-type", ""))
            delivery = delivery_from(request)
            if delivery is not None and not await order.wait_turn(delivery):
                return JSONResponse(error_body(409, "conflict",
                                               f"batch {delivery.prev} must be stored first: send it again"), 409)
            admission = Admission()
            try:
                if streams is None:
                    stored = await run_in_threadpool(store.push_lines, body, delivery, None, admission)
                else:
                    stored = await run_in_threadpool(store.push, streams, delivery, None, admission)
            except (sqlite3.Error, OSError) as exc:  # the store, not the push: unhealthy until a write succeeds
                health.failed(f"cannot store: {exc}")
                return JSONResponse(error_body(503, "store_unavailable",
                                               f"the log store cannot write ({exc}); send the batch again"),
                                    503, headers={"retry-after": "1"})
            health.recovered()
            if delivery is not None:
                await order.done(delivery)
        except BodyTooLarge as exc:
            REJECTED.inc()
            return JSONResponse(error_body(413, "payload_too_large", str(exc)), 413)
        except (PushError, ValueError, OSError, IndexError, OverflowError) as exc:
            REJECTED.inc()
            message = str(exc) if isinstance(exc, PushError) else f"invalid push body: {exc}"
            return JSONResponse(error_body(400, "bad_request", message), 400)
        FUTURE.inc(admission.future)
        TOO_OLD.inc(admission.too_old)
        if stored:
            LINES.inc(stored)
            app.state.arrived.set()  # wake every live tail
            app.state.arrived = asyncio.Event()
        elif admission.duplicate:
            DUPLICATES.inc()
        PUSH_SECONDS.observe(time.perf_counter() - started)
        return Response(status_code=204)

    @app.get("/loki/api/v1/labels")
    async def labels() -> dict:
        return {"status": "success", "data": await run_in_threadpool(store.labels)}

    @app.get("/loki/api/v1/label/{name}/values")
    async def label_values(name: str) -> dict:
        return {"status": "success", "data": await run_in_threadpool(store.label_values, name)}

    @app.get("/api/logs")
    async def logs(request: Request) -> Response:
        q = log_query(request.query_params)
        lines = await run_in_threadpool(store.query, q)
        # A full page may have more after it: the cursor of its last line continues from there, with no gap or
        # repeat even between lines of the same time.
        more = format_cursor((lines[-1]["ts_ns"], lines[-1]["id"])) if len(lines) == q.limit else None
        return Response(orjson.dumps({"lines": lines, "next_cursor": more}), media_type="application/json")

    @app.get("/api/logs/tail")
    async def tail(request: Request) -> EventSourceResponse:
        """New lines as Server-Sent Events (`id:` is the row id; `Last-Event-ID` resumes after it).
        With start or since, the lines stored since then come first."""
        q = log_query(request.query_params, default_limit=1000)
        resume = request.headers.get("last-event-id", "")
        if resume.isascii() and resume.isdigit():
            after = int(resume)
        elif q.start is not None:
            after = 0
        else:
            after = await run_in_threadpool(store.last_id)

        async def events():
            nonlocal after
            yield ServerSentEvent(comment="tailing")  # a first byte now: clients and proxies see the stream open
            while True:
                arrived = app.state.arrived  # before the query, so a push during it is not missed
                lines = await run_in_threadpool(store.since, after, q)
                for line in lines:
                    after = line["id"]
                    yield ServerSentEvent(data=orjson.dumps(line).decode(), id=str(after))
                if len(lines) == q.limit:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), timeout=1.0)

        # EventSourceResponse ends the stream when the client goes or the server shuts down (a plain streaming
        # response would hold uvicorn's graceful shutdown forever) and sends a comment every 15 s.
        return EventSourceResponse(events(), ping=SSE_KEEPALIVE_SECONDS, headers={"X-Accel-Buffering": "no"})

    @app.get("/api/traces/")
    async def traces(request: Request) -> Response:
        """The trace list: requests that entered through the edge, newest first (finopti.logs.trace_search)."""
        result = await run_in_threadpool(search_traces, store, trace_filter(request.query_params))
        return Response(orjson.dumps(result), media_type="application/json")

    @app.get("/api/traces/{trace_id}")
    async def trace(trace_id: str) -> Response:
        if not _ID.match(trace_id):
            raise HTTPException(400, detail={"error": "bad_request", "param": "trace_id",
                                             "message": "invalid path parameter 'trace_id': expected a trace id"})
        result = await run_in_threadpool(store.trace, trace_id)
        if not result["lines"]:
            raise HTTPException(404, detail={"error": "not_found", "message": f"no log lines for trace {trace_id}"})
        return Response(orjson.dumps(result), media_type="application/json")

    @app.get("/api/stats")
    async def stats() -> dict:
        return await run_in_threadpool(store.stats)

    @app.get("/api/collector/positions")
    async def collector_positions(collector: str = "") -> Response:
        if not collector:
            raise bad_request("collector", "required: the collector's name")
        delivered = await run_in_threadpool(store.delivered, collector)
        return Response(json.dumps({"collector": collector, "seq": delivered.seq if delivered else 0,
                                    "positions": delivered.positions if delivered else {}}),
                        media_type="application/json")

    return app


__all__ = ["create_app", "log_query"]
