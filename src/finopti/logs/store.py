"""The embedded Loki: log lines in one SQLite file (WAL), indexed by time, stream, trace and request id and
full text; retention by age and size.

Layout
- `streams`: one row per label set (Loki's stream), with its `service` and `level` pulled out for filters.
- `logs`: one row per line: time (ns), stream, the original line, its structured metadata as JSON.
- trace and request ids are indexed through integer keys `(row block << 32) | crc32(id)`: a random key
  (a trace id) would land anywhere in its B-tree and dirty a page per row, which halves ingest; keys that
  start with the row's block of 8192 rows are appended at the index's end like the time index, and a lookup
  probes each block (one index seek per 8192 rows; the default 1 GiB holds ~2 M lines: ~250 seeks).
- `logs_fts`: FTS5 over each line's message (the whole line when it is not JSON), contentless (the text is
  already in `logs`) and without column sizes (they serve only ranking, and cost a B-tree row per line).
- `collectors`: what each collector has delivered (batch sequence number and file positions), written in
  the same transaction as its lines, so a retried or replayed batch is recognised and a collector that was
  killed resumes exactly where its last stored batch ended.
"""

import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from finopti.logs.times import FUTURE_GRACE_SECONDS, ns_to_rfc3339
from finopti.logs.trace import build_trace

log = logging.getLogger("finopti.logs.store")

DEFAULT_RETENTION_SECONDS = 7 * 86400
DEFAULT_MAX_BYTES = 1 << 30
BLOCK_BITS = 13
MAX_LIMIT = 5000
TRACE_LINE_LIMIT = 10_000
WAL_LIMIT = 64 << 20

# The text full-text search sees; used both to index and to un-index a row, so it must stay the same.
MESSAGE_SQL = "CASE WHEN json_valid(line) THEN coalesce(json_extract(line, '$.message'), line) ELSE line END"

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    labels TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    level TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    tkey INTEGER,
    rkey INTEGER,
    meta TEXT,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_ts ON logs(ts);
CREATE INDEX IF NOT EXISTS logs_stream_ts ON logs(stream, ts);
CREATE INDEX IF NOT EXISTS logs_trace ON logs(tkey) WHERE tkey IS NOT NULL;
CREATE INDEX IF NOT EXISTS logs_request ON logs(rkey) WHERE rkey IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5(message, content='', columnsize=0);
CREATE TABLE IF NOT EXISTS collectors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    positions TEXT NOT NULL
);
"""


class PushError(ValueError):
    """A push body that is not a valid Loki push request; the message names the offending field."""


@dataclass
class LogQuery:
    start: int | None = None  # ns, inclusive
    end: int | None = None  # ns, exclusive
    services: Sequence[str] = ()
    levels: Sequence[str] = ()
    trace_id: str | None = None
    request_id: str | None = None
    text: str | None = None
    limit: int = 100
    direction: str = "backward"  # newest first, as Loki


@dataclass
class Delivery:
    """Who pushed a batch and where it ends in their files (see `collectors` above)."""

    collector: str
    seq: int
    positions: dict = field(default_factory=dict)
    prev: int = 0  # the batch the collector sent before this one, to be stored first (0: none to wait for)


@dataclass
class Admission:
    """What a push's times did to its lines: retimed (dated too far ahead) or dropped (older than retention)."""

    future: int = 0
    too_old: int = 0


def admit(values: list, now_ns: int, grace_ns: int, oldest_ns: int, counts: Admission) -> list:
    """The entries to store. One dated more than `grace_ns` ahead of `now_ns` is stored at `now_ns` with its own
    time as metadata `original_ts` (else it would stay the newest line for good, and retention could never remove
    it); one older than `oldest_ns` is dropped. Both are counted."""
    newest = now_ns + grace_ns
    out = None
    for i, value in enumerate(values):
        try:
            ts = int(value[0])
        except (TypeError, ValueError, IndexError):
            ts = now_ns  # not ours to judge: the push's own validation names it
        if oldest_ns <= ts <= newest or not _well_formed(value):  # a bad entry is left for validation to name
            if out is not None:
                out.append(value)
            continue
        if out is None:
            out = values[:i]
        if ts < oldest_ns:
            counts.too_old += 1
            continue
        counts.future += 1
        meta = dict(value[2]) if len(value) > 2 and isinstance(value[2], dict) else {}
        meta["original_ts"] = ns_to_rfc3339(ts)
        out.append([str(now_ns), value[1], meta])
    return values if out is None else out


def _well_formed(value: list) -> bool:
    meta = value[2] if len(value) == 3 else None
    return (len(value) in (2, 3) and isinstance(value[1], str)
            and (meta is None or (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()))))


def _rows(first_id: int, stream: int, values: list) -> list[tuple]:
    """Loki values -> rows; the hot loop of ingest, so without checks: bad input raises and `_explain` says why."""
    rows = []
    crc32, shift = zlib.crc32, BLOCK_BITS
    for row_id, value in enumerate(values, first_id):
        meta = value[2] if len(value) == 3 else None
        line = value[1]
        if line.__class__ is not str:
            raise TypeError("line")
        if meta:
            block = (row_id >> shift) << 32
            trace_id, request_id = meta.get("trace_id"), meta.get("request_id")
            rows.append((
                row_id, int(value[0]), stream,
                block | crc32(trace_id.encode()) if trace_id else None,
                block | crc32(request_id.encode()) if request_id else None,
                orjson.dumps(meta).decode(), line,
            ))
        elif len(value) in (2, 3):
            rows.append((row_id, int(value[0]), stream, None, None, None, line))
        else:
            raise ValueError("bad entry")
    return rows


def _explain(i: int, values: object) -> None:
    if not isinstance(values, list):
        raise PushError(f"streams[{i}].values: expected a list")
    for j, value in enumerate(values):
        where = f"streams[{i}].values[{j}]"
        if not isinstance(value, list | tuple) or len(value) not in (2, 3):
            raise PushError(f"{where}: expected [timestamp_ns, line] or [timestamp_ns, line, metadata]")
        try:
            int(value[0])
        except (TypeError, ValueError):
            raise PushError(f"{where}[0]: timestamp must be an integer of nanoseconds as a string") from None
        if not isinstance(value[1], str):
            raise PushError(f"{where}[1]: line must be a string")
        meta = value[2] if len(value) == 3 else None
        if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
            raise PushError(f"{where}[2]: structured metadata must be an object of strings")


def stream_service_level(labels: dict[str, str]) -> tuple[str, str]:
    service = labels.get("service") or labels.get("service_name") or labels.get("job") or "unknown"
    level = labels.get("level") or labels.get("detected_level") or "info"
    return service, level


def fts_query(text: str) -> str | None:
    """What a person types -> an FTS5 phrase: the words in order (`us-central1-a` is the phrase
    "us central1 a"); a trailing `*` makes the last word a prefix. Quoting keeps FTS5 syntax out of reach."""
    words = "".join(c if c.isalnum() else " " for c in text).split()
    if not words:
        return None
    return '"' + " ".join(words) + '"' + ("*" if text.rstrip().endswith("*") else "")


def row_to_line(row: tuple) -> dict:
    row_id, ts, service, level, meta, line = row
    parsed: object = line
    if line.startswith("{"):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return {
        "id": row_id,
        "ts": ns_to_rfc3339(ts),
        "ts_ns": ts,
        "service": service,
        "level": level,
        "line": parsed,
        "metadata": orjson.loads(meta) if meta else {},
    }


class LogStore:
    def __init__(self, path: Path, retention_seconds: float = DEFAULT_RETENTION_SECONDS,
                 max_bytes: int = DEFAULT_MAX_BYTES, future_grace: float = FUTURE_GRACE_SECONDS):
        self.path = Path(path)
        self.retention_seconds = retention_seconds
        self.future_grace = future_grace
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)
        self._next_id = (self._writer.execute("SELECT max(id) FROM logs").fetchone()[0] or 0) + 1
        self._streams: dict[tuple, int] = {}
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Checkpoints (WAL -> database, with an fsync) on a thread of their own: in the committing thread,
        # as SQLite does by default, they took a third of ingest time.
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="logstore-checkpoint", daemon=True)
        self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process; only an OS crash can lose the last ones.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA journal_size_limit=67108864")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _checkpoint_loop(self, interval: float = 0.5) -> None:
        conn = self._connect()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            while not self._closing.wait(interval):
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                # Under steady writes a passive checkpoint never lets the log start over, so it grows (to the
                # size of the data written: 0.5 GB for 600,000 lines). Past WAL_LIMIT, one that waits for the
                # writer between two transactions, copies what is left and empties the log.
                if frames * page_size > WAL_LIMIT:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()

    # --- ingest -------------------------------------------------------------------------------------------

    def _stream_id(self, labels: dict[str, str]) -> int:
        key = tuple(sorted(labels.items()))
        stream = self._streams.get(key)
        if stream is None:
            text = orjson.dumps(dict(key)).decode()
            service, level = stream_service_level(labels)
            self._writer.execute(
                "INSERT OR IGNORE INTO streams(labels, service, level) VALUES (?, ?, ?)", (text, service, level)
            )
            stream = self._writer.execute("SELECT id FROM streams WHERE labels = ?", (text,)).fetchone()[0]
            self._streams[key] = stream
        return stream

    def push(self, streams: Iterable[tuple[dict[str, str], list]], delivery: Delivery | None = None,
             now_ns: int | None = None, admission: Admission | None = None) -> int:
        """Store Loki streams: (labels, [[ts_ns, line] or [ts_ns, line, {metadata}], ...]). Returns the number of
        lines stored: 0 for a batch this collector delivered before (a retry after a lost answer). Times are
        judged against `now_ns` (default: now), see `admit`; `admission` counts what that did."""
        now_ns = now_ns if now_ns is not None else time.time_ns()
        admission = admission if admission is not None else Admission()
        grace_ns, oldest_ns = int(self.future_grace * 1e9), now_ns - int(self.retention_seconds * 1e9)
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                if delivery is not None:
                    known = conn.execute("SELECT seq FROM collectors WHERE name = ?", (delivery.collector,)).fetchone()
                    if known is not None and delivery.seq <= known[0]:
                        conn.execute("ROLLBACK")
                        return 0
                first = self._next_id
                rows = []
                for i, (labels, values) in enumerate(streams):
                    values = admit(values, now_ns, grace_ns, oldest_ns, admission)
                    try:
                        rows += _rows(self._next_id + len(rows), self._stream_id(labels), values)
                    except (TypeError, ValueError, IndexError, AttributeError):
                        _explain(i, values)  # raises a PushError naming the bad entry
                        raise
                conn.executemany("INSERT INTO logs(id, ts, stream, tkey, rkey, meta, line) VALUES (?,?,?,?,?,?,?)",
                                 rows)
                conn.execute(f"INSERT INTO logs_fts(rowid, message) SELECT id, {MESSAGE_SQL} FROM logs WHERE id >= ?",
                             (first,))
                if delivery is not None:
                    conn.execute(
                        "INSERT INTO collectors(name, seq, positions) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE"
                        " SET seq = excluded.seq, positions = excluded.positions",
                        (delivery.collector, delivery.seq, orjson.dumps(delivery.positions).decode()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._streams.clear()  # a rolled-back stream row must be looked up again
                raise
            self._next_id = first + len(rows)
            return len(rows)

    def delivered(self, collector: str) -> Delivery | None:
        row = self._reader().execute("SELECT seq, positions FROM collectors WHERE name = ?", (collector,)).fetchone()
        return Delivery(collector, row[0], orjson.loads(row[1])) if row else None

    # --- queries ------------------------------------------------------------------------------------------

    def _key_list(self, value: str) -> str:
        """Every block's key for an id, as a JSON array for `IN (SELECT value FROM json_each(?))`."""
        # Two subqueries: each is one B-tree step, where `min(id), max(id)` together would scan the table.
        low, high = self._reader().execute("SELECT (SELECT min(id) FROM logs), (SELECT max(id) FROM logs)").fetchone()
        if low is None:
            return "[]"
        crc = zlib.crc32(value.encode())
        return orjson.dumps([(b << 32) | crc for b in range(low >> BLOCK_BITS, (high >> BLOCK_BITS) + 1)]).decode()

    def _stream_ids(self, services: Sequence[str], levels: Sequence[str]) -> list[int]:
        sql, params = "SELECT id FROM streams WHERE 1", []
        for column, values in (("service", services), ("level", levels)):
            if values:
                sql += f" AND {column} IN ({','.join('?' * len(values))})"
                params += list(values)
        return [r[0] for r in self._reader().execute(sql, params)]

    def _where(self, q: LogQuery) -> tuple[list[str], list] | None:
        """SQL conditions for a query; None when it can match nothing."""
        where: list[str] = []
        params: list = []
        if q.start is not None:
            where.append("l.ts >= ?")
            params.append(q.start)
        if q.end is not None:
            where.append("l.ts < ?")
            params.append(q.end)
        if q.services or q.levels:
            streams = self._stream_ids(q.services, q.levels)
            if not streams:
                return None
            where.append(f"l.stream IN ({','.join(map(str, streams))})")
        for column, name, value in (("tkey", "trace_id", q.trace_id), ("rkey", "request_id", q.request_id)):
            if value:
                where.append(f"l.{column} IN (SELECT value FROM json_each(?)) AND json_extract(l.meta, '$.{name}') = ?")
                params += [self._key_list(value), value]
        return where, params

    def query(self, q: LogQuery) -> list[dict]:
        built = self._where(q)
        if built is None:
            return []
        where, params = built
        order = "DESC" if q.direction == "backward" else "ASC"
        limit = min(q.limit, MAX_LIMIT)
        select = "SELECT l.id, l.ts, s.service, s.level, l.meta, l.line"
        if q.text:
            match = fts_query(q.text)
            if match is None:
                return []
            # Driven by the full-text index in arrival (row id) order, which streams and stops at `limit`;
            # ordering all matches by time first would materialise every match of a common word. Lines arrive
            # in time order but for the odd late one, so the page is the newest (or oldest) arrivals, by time.
            sql = (f"{select} FROM logs_fts f JOIN logs l ON l.id = f.rowid JOIN streams s ON s.id = l.stream"
                   f" WHERE logs_fts MATCH ? {''.join(' AND ' + w for w in where)} ORDER BY f.rowid {order} LIMIT ?")
            rows = self._reader().execute(sql, [match, *params, limit]).fetchall()
            rows.sort(key=lambda r: (r[1], r[0]), reverse=order == "DESC")
        else:
            sql = (f"{select} FROM logs l JOIN streams s ON s.id = l.stream"
                   f" WHERE {' AND '.join(where) or '1'} ORDER BY l.ts {order}, l.id {order} LIMIT ?")
            rows = self._reader().execute(sql, [*params, limit]).fetchall()
        return [row_to_line(r) for r in rows]

    def last_id(self) -> int:
        return self._reader().execute("SELECT coalesce(max(id), 0) FROM logs").fetchone()[0]

    def since(self, after_id: int, q: LogQuery) -> list[dict]:
        """Lines stored after row `after_id` that match `q`, in arrival order (the live tail)."""
        built = self._where(q)
        if built is None:
            return []
        where, params = built
        if q.text:
            match = fts_query(q.text)
            if match is None:
                return []
            where.append("l.id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ? AND rowid > ?)")
            params += [match, after_id]
        sql = (
            "SELECT l.id, l.ts, s.service, s.level, l.meta, l.line FROM logs l JOIN streams s ON s.id = l.stream"
            f" WHERE l.id > ? {''.join(' AND ' + w for w in where)} ORDER BY l.id LIMIT ?"
        )
        return [row_to_line(r) for r in self._reader().execute(sql, [after_id, *params, min(q.limit, MAX_LIMIT)])]

    def trace(self, trace_id: str) -> dict:
        """Every line of a trace in time order, with the waterfall of its hops."""
        lines = self.query(LogQuery(trace_id=trace_id, limit=TRACE_LINE_LIMIT, direction="forward"))
        # Lines that carry the trace's request id but no trace id (logged outside a span) belong to it too.
        seen = {line["id"] for line in lines}
        for request_id in {line["metadata"].get("request_id") for line in lines} - {None, ""}:
            for line in self.query(LogQuery(request_id=request_id, limit=TRACE_LINE_LIMIT, direction="forward")):
                if line["id"] not in seen and not line["metadata"].get("trace_id"):
                    seen.add(line["id"])
                    lines.append(line)
        lines.sort(key=lambda line: (line["ts_ns"], line["id"]))
        return build_trace(trace_id, lines)

    def labels(self) -> list[str]:
        names: set[str] = set()
        for (labels,) in self._reader().execute("SELECT labels FROM streams"):
            names.update(orjson.loads(labels))
        return sorted(names)

    def label_values(self, name: str) -> list[str]:
        values = {orjson.loads(labels).get(name) for (labels,) in self._reader().execute("SELECT labels FROM streams")}
        return sorted(v for v in values if v is not None)

    def stats(self) -> dict:
        conn = self._reader()
        lines, oldest, newest = conn.execute("SELECT count(*), min(ts), max(ts) FROM logs").fetchone()
        return {
            "lines": lines,
            "bytes": self.used_bytes(),
            "oldest": ns_to_rfc3339(oldest) if oldest is not None else None,
            "newest": ns_to_rfc3339(newest) if newest is not None else None,
        }

    # --- retention ----------------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        conn = self._reader()
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * conn.execute("PRAGMA page_size").fetchone()[0]

    def _delete(self, select_ids: str, params: tuple) -> int:
        """Delete the rows `select_ids` picks (at most a chunk), from the FTS index too. Short transactions:
        ingest waits for the write lock meanwhile."""
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = orjson.dumps([r[0] for r in conn.execute(select_ids, params)]).decode()
                doomed = "SELECT value FROM json_each(?)"
                conn.execute(
                    f"INSERT INTO logs_fts(logs_fts, rowid, message) SELECT 'delete', id, {MESSAGE_SQL}"
                    f" FROM logs WHERE id IN ({doomed})",
                    (ids,),
                )
                deleted = conn.execute(f"DELETE FROM logs WHERE id IN ({doomed})", (ids,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return deleted

    def enforce_retention(self, now_ns: int | None = None, chunk: int = 20_000) -> int:
        """Drop lines older than the retention, then the oldest lines while the file holds more than max_bytes
        (freed pages are reused, so the file stays near max_bytes instead of shrinking)."""
        now_ns = now_ns if now_ns is not None else time.time_ns()
        cutoff = now_ns - int(self.retention_seconds * 1e9)
        deleted = 0
        while n := self._delete("SELECT id FROM logs WHERE ts < ? ORDER BY ts LIMIT ?", (cutoff, chunk)):
            deleted += n
        while self.used_bytes() > self.max_bytes:
            total = self._reader().execute("SELECT count(*) FROM logs").fetchone()[0]
            if not total:
                break
            n = self._delete("SELECT id FROM logs ORDER BY id LIMIT ?", (max(100, min(chunk, total // 20)),))
            deleted += n
            if not n:
                break
        if deleted:
            log.info("retention removed %d lines", deleted, extra={"event": "retention", "deleted": deleted})
            with self._write_lock:
                self._writer.execute("PRAGMA optimize")
        return deleted
