"""The embedded Loki: log lines in compressed parts per stream and stretch of time, in one SQLite file (WAL);
retention by age and size.

Layout (see `finopti.logs.parts` for a part's columns)
- `streams`: one row per label set (Loki's stream), with its `service` and `level` pulled out for filters.
- `parts`: one row per part: its stream, level (0: one push's lines, LZ4; 1: merged, zstd), time range, id range,
  line count, the hashes of the trace ids, request ids and users it holds, and its compressed columns. Every
  part's row but its data is held in memory (the catalog): a query picks the parts by stream, time and id hash
  without reading any, then opens only those.
- `collectors`: what each collector has delivered (batch sequence number and file positions), written in the same
  transaction as its lines, so a retried or replayed batch is recognised and a collector that was killed resumes
  exactly where its last stored batch ended.
- `counters`: the next line id (ids are never reused, even once every line is gone).

A push writes one level-0 part per stream in one transaction. A background thread merges a stream's level-0
parts into level-1 parts of about PART_BYTES of lines (a quiet stream's parts once they are L0_MAX_AGE old),
adding to the stream's last level-1 part while it is small and recent: so a part holds a stream's lines over a
stretch of time. Merging, retention and checkpoints (WAL -> database) run on threads of their own.

Parts are never changed; merging and retention *retire* parts (in the same transaction that writes the merged
part), and a retired part's row is deleted only once no query that may still read it is running: a query reads
the catalog as it was when it started, whatever is merged meanwhile. Retired rows left by a crash are deleted at
start.
"""

import json
import logging
import sqlite3
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from finopti.logs import wire
from finopti.logs.levels import level_word
from finopti.logs.metadata import key_hash
from finopti.logs.parts import LZ4, ZSTD, Columns, View, may_hold
from finopti.logs.search import LogQuery, matching, text_pattern
from finopti.logs.times import FUTURE_GRACE_SECONDS, ns_to_rfc3339
from finopti.logs.trace import build_trace

__all__ = ["Admission", "Delivery", "LogQuery", "LogStore", "PushError", "MAX_LIMIT"]

log = logging.getLogger("finopti.logs.store")

DEFAULT_RETENTION_SECONDS = 7 * 86400
DEFAULT_MAX_BYTES = 1 << 30
MAX_LIMIT = 5000
TRACE_LINE_LIMIT = 10_000
WAL_LIMIT = 64 << 20
PART_BYTES = 512 << 10  # lines per level-1 part (uncompressed): a lookup decompresses a few of these
PART_SPAN_NS = 3600 * 10**9  # a part covers at most an hour: retention removes whole parts
L0_MAX_AGE = 10.0  # seconds a quiet stream's lines stay in level-0 parts
L0_MAX_PARTS = 64
SCAN_THREADS = 2  # the machine's cores
CACHE_BYTES = 64 << 20  # decoded parts kept for the next query (paging, a trace after its lines)

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    labels TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    level TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream INTEGER NOT NULL,
    level INTEGER NOT NULL,
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    min_id INTEGER NOT NULL,
    max_id INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,
    derived INTEGER NOT NULL,
    keys BLOB NOT NULL,
    retired INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS collectors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    positions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class PushError(ValueError):
    """A push body that is not a valid Loki push request; the message names the offending field."""


class PartGone(Exception):
    """A part of the catalog a query started from was merged or removed meanwhile: the query starts again."""


@dataclass
class Delivery:
    """Who pushed a batch and where it ends in their files (see `collectors` above)."""

    collector: str
    seq: int
    positions: dict = field(default_factory=dict)
    prev: int = 0  # the batch the collector sent before this one, to be stored first (0: none to wait for)


@dataclass
class Admission:
    """What became of a push: lines retimed (dated too far ahead) or dropped (older than retention); a batch its
    collector had delivered before."""

    future: int = 0
    too_old: int = 0
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Part:
    """A part's row without its data: what the catalog holds."""

    id: int
    stream: int
    level: int
    min_ts: int
    max_ts: int
    min_id: int
    max_id: int
    lines: int
    raw_bytes: int
    derived: bool
    size: int  # bytes stored
    keys: array  # sorted hashes of the indexed metadata values
    created: float  # monotonic; -inf for a part found at start


def admit(values: list, now_ns: int, grace_ns: int, oldest_ns: int, counts: Admission) -> list:
    """The entries to store. One dated more than `grace_ns` ahead of `now_ns` is stored at `now_ns` with its own
    time as metadata `original_ts` (else it would stay the newest line for good, and retention could never remove
    it); one older than `oldest_ns` is dropped. Both are counted. A malformed entry is left for validation."""
    newest = now_ns + grace_ns
    out = []
    for value in values:
        try:
            ts = int(value[0])
        except (TypeError, ValueError, IndexError, KeyError):
            out.append(value)
            continue
        if oldest_ns <= ts <= newest or not _well_formed(value):
            out.append(value)
        elif ts < oldest_ns:
            counts.too_old += 1
        else:
            counts.future += 1
            meta = dict(value[2]) if len(value) == 3 and value[2] else {}
            meta["original_ts"] = ns_to_rfc3339(ts)
            out.append([str(now_ns), value[1], meta])
    return out


def _well_formed(value: list) -> bool:
    meta = value[2] if len(value) == 3 else None
    return (len(value) in (2, 3) and isinstance(value[1], str)
            and (meta is None or (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()))))


def _explain(i: int, values: object) -> None:
    """Raise a PushError naming the first bad entry of streams[i]."""
    if not isinstance(values, list):
        raise PushError(f"streams[{i}].values: expected a list")
    for j, value in enumerate(values):
        where = f"streams[{i}].values[{j}]"
        if not isinstance(value, list | tuple) or len(value) not in (2, 3):
            raise PushError(f"{where}: expected [timestamp_ns, line] or [timestamp_ns, line, metadata]")
        try:
            ts = int(value[0])
        except (TypeError, ValueError):
            raise PushError(f"{where}[0]: timestamp must be an integer of nanoseconds as a string") from None
        if not -(1 << 63) <= ts < 1 << 63:
            raise PushError(f"{where}[0]: timestamp out of range")
        if not isinstance(value[1], str):
            raise PushError(f"{where}[1]: line must be a string")
        meta = value[2] if len(value) == 3 else None
        if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
            raise PushError(f"{where}[2]: structured metadata must be an object of strings")
    raise PushError(f"streams[{i}].values: invalid entry")


def _checked(values: list) -> list[int]:
    """The entries' times; raises on any malformed entry (then `_explain` says which). The hot loop of ingest."""
    ts = [int(value[0]) for value in values]
    for value in values:
        if len(value) == 3:
            meta = value[2]
            if meta.__class__ is not dict:
                if meta is None:
                    continue
                raise TypeError("metadata")
            for v in meta.values():
                if v.__class__ is not str:
                    raise TypeError("metadata value")
        elif len(value) != 2:
            raise ValueError("entry")
    if ts and (min(ts) < -(1 << 63) or max(ts) >= 1 << 63):
        raise OverflowError("timestamp")
    return ts


def stream_service_level(labels: dict[str, str]) -> tuple[str, str]:
    """The service and level a stream is found by. A level label is read as the collector reads a line's
    (`finopti.logs.levels`): Alloy or Promtail push Go's `ERROR`, `WARN` as they are, and `level=error` missed them."""
    service = labels.get("service") or labels.get("service_name") or labels.get("job") or "unknown"
    level = labels.get("level") or labels.get("detected_level") or "info"
    return service, level_word(level) or level.strip().lower() or "info"


def line_dict(view: View, i: int, service: str, level: str) -> dict:
    line, meta = view.line(i)
    ts = view.ts[i]
    return {"id": view.ids[i], "ts": ns_to_rfc3339(ts), "ts_ns": ts, "service": service, "level": level,
            "line": line, "metadata": meta}



def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the transaction that failed, if SQLite has not already: a COMMIT that fails for a full disk
    (SQLITE_FULL, an I/O error) rolls it back itself, and a ROLLBACK then raises "no transaction is active",
    hiding the error and skipping what the caller undoes after it (a stream id cached but never stored: the next
    push's lines would be filed under a stream that does not exist)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")

class LogStore:
    def __init__(self, path: Path, retention_seconds: float = DEFAULT_RETENTION_SECONDS,
                 max_bytes: int = DEFAULT_MAX_BYTES, future_grace: float = FUTURE_GRACE_SECONDS,
                 clock: Callable[[], int] = time.time_ns, background: bool = True):
        self.path = Path(path)
        self.clock = clock  # ns: what "now" is for times, retention and the lines a query may see
        self.retention_seconds = retention_seconds
        self.max_bytes = max_bytes
        self.future_grace = future_grace
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._maintenance_lock = threading.RLock()  # merging and retention: one at a time
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._streams: dict[tuple, int] = {}
        self._stream_labels: dict[int, tuple[str, str, dict]] = {}  # id -> service, level, labels
        self._load_streams()
        self._writer.execute("DELETE FROM parts WHERE retired = 1")  # left by a crash: merged, or past retention
        self._convert_rows()
        self._catalog: tuple[Part, ...] = self._load_catalog()
        self._epoch = 0  # catalog version: one more at each retirement
        self._active: dict[int, int] = {}  # epoch -> queries running that started at it
        self._retired: list[tuple[int, set[int]]] = []  # (epoch at retirement, part ids) not deleted yet
        self._epoch_lock = threading.Lock()
        row = self._writer.execute("SELECT value FROM counters WHERE name = 'next_id'").fetchone()
        self._next_id = max(row[0] if row else 1, max((p.max_id + 1 for p in self._catalog), default=1))
        self._cache: OrderedDict[int, tuple[View, int]] = OrderedDict()  # part id -> (view, raw bytes)
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()
        self._scan_pool: ThreadPoolExecutor | None = None
        # Checkpoints (WAL -> database, with an fsync) on a thread of their own: in the committing thread, as
        # SQLite does by default, they took a third of ingest time.
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._closing = threading.Event()
        self._merge_due = threading.Event()
        self._threads = [threading.Thread(target=self._checkpoint_loop, name="logstore-checkpoint", daemon=True)]
        if background:  # else merge() is called by hand (tests)
            self._threads.append(threading.Thread(target=self._merge_loop, name="logstore-merge", daemon=True))
        for thread in self._threads:
            thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process; only an OS crash can lose the last ones.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
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

    def _load_streams(self) -> None:
        for stream_id, labels in self._writer.execute("SELECT id, labels FROM streams"):
            parsed = orjson.loads(labels)
            self._streams[tuple(sorted(parsed.items()))] = stream_id
            self._stream_labels[stream_id] = (*stream_service_level(parsed), parsed)

    def _load_catalog(self) -> tuple[Part, ...]:
        rows = self._writer.execute(
            "SELECT id, stream, level, min_ts, max_ts, min_id, max_id, lines, raw_bytes, derived, length(data),"
            " keys FROM parts")
        parts = []
        for row in rows:
            keys = array("I")
            keys.frombytes(row[11])
            parts.append(Part(*row[:9], bool(row[9]), row[10] + len(row[11]), keys, float("-inf")))
        return tuple(parts)

    def _convert_rows(self, chunk: int = 50_000) -> None:
        """A store written by the first version (one row per line in `logs`, with a full-text index) becomes parts,
        a chunk of rows per transaction (a crash midway resumes), keeping every line's id."""
        conn = self._writer
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'logs'").fetchall():
            return
        log.info("converting %s to compressed parts", self.path, extra={"event": "logstore_conversion"})
        while rows := conn.execute("SELECT id, ts, stream, meta, line FROM logs ORDER BY id LIMIT ?",
                                   (chunk,)).fetchall():
            by_stream: dict[int, list[tuple]] = {}
            for row in rows:
                by_stream.setdefault(row[2], []).append(row)
            conn.execute("BEGIN IMMEDIATE")
            for stream, lines in by_stream.items():
                pieces: list[list[Columns]] = [[]]
                size = 0
                for line_id, ts, _, meta, line in lines:
                    value = [str(ts), line] + ([orjson.loads(meta)] if meta else [])
                    pieces[-1].append(Columns.from_values(line_id, [ts], [value]))
                    size += pieces[-1][-1].raw_bytes
                    if size >= PART_BYTES:
                        pieces.append([])
                        size = 0
                for piece in filter(None, pieces):
                    self._insert(stream, 1, Columns.concat(piece))
            conn.execute("DELETE FROM logs WHERE id <= ?", (rows[-1][0],))
            conn.execute("INSERT INTO counters(name, value) VALUES ('next_id', ?) ON CONFLICT(name) DO UPDATE"
                         " SET value = max(value, excluded.value)", (rows[-1][0] + 1,))
            conn.execute("COMMIT")
        conn.executescript("DROP TABLE IF EXISTS logs_fts; DROP TABLE logs;")

    def _checkpoint_loop(self, interval: float = 0.5) -> None:
        conn = self._connect()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            while not self._closing.wait(interval):
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                # Under steady writes a passive checkpoint never lets the log start over, so it grows. Past
                # WAL_LIMIT, one that waits for the writer between two transactions empties the log.
                if frames * page_size > WAL_LIMIT:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def close(self) -> None:
        if self._scan_pool is not None:
            self._scan_pool.shutdown()
        self._closing.set()
        self._merge_due.set()
        for thread in self._threads:
            thread.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()

    # --- ingest -------------------------------------------------------------------------------------------

    def _stream_id(self, labels: dict[str, str]) -> int:
        stream_key = tuple(sorted(labels.items()))
        stream = self._streams.get(stream_key)
        if stream is None:
            text = orjson.dumps(dict(stream_key)).decode()
            service, level = stream_service_level(labels)
            self._writer.execute(
                "INSERT OR IGNORE INTO streams(labels, service, level) VALUES (?, ?, ?)", (text, service, level))
            stream = self._writer.execute("SELECT id FROM streams WHERE labels = ?", (text,)).fetchone()[0]
            self._streams[stream_key] = stream
            self._stream_labels[stream] = (service, level, dict(stream_key))
            self._new_streams.append(stream_key)
        return stream

    def _insert(self, stream: int, level: int, columns: Columns) -> Part:
        """INSERT a part (in the caller's transaction, under the write lock)."""
        data = columns.encode(LZ4 if level == 0 else ZSTD)
        row = (stream, level, min(columns.ts), max(columns.ts), columns.runs[0][0],
               columns.runs[-1][0] + columns.runs[-1][1] - 1, columns.count, columns.raw_bytes, int(columns.derived),
               columns.keys.tobytes(), data)
        part_id = self._writer.execute(
            "INSERT INTO parts(stream, level, min_ts, max_ts, min_id, max_id, lines, raw_bytes, derived, keys, data)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)", row).lastrowid
        return Part(part_id, *row[:8], columns.derived, len(data) + len(row[9]), columns.keys, time.monotonic())

    def push(self, streams: Iterable[tuple[dict[str, str], list]], delivery: Delivery | None = None,
             now_ns: int | None = None, admission: Admission | None = None) -> int:
        """Store Loki streams: (labels, [[ts_ns, line] or [ts_ns, line, {metadata}], ...]). Returns the number of
        lines stored: 0 for a batch this collector delivered before (a retry after a lost answer). Times are
        judged against `now_ns` (default: now), see `admit`; `admission` counts what that did."""
        now_ns = now_ns if now_ns is not None else self.clock()
        admission = admission if admission is not None else Admission()
        grace_ns, oldest_ns = int(self.future_grace * 1e9), now_ns - int(self.retention_seconds * 1e9)
        blocks = []
        for i, (labels, values) in enumerate(streams):
            try:
                ts = _checked(values)
                if ts and (min(ts) < oldest_ns or max(ts) > now_ns + grace_ns):
                    values = admit(values, now_ns, grace_ns, oldest_ns, admission)
                    ts = _checked(values)
                if values:
                    blocks.append((labels, Columns.from_values(0, ts, values)))
            except (TypeError, ValueError, IndexError, AttributeError, KeyError, OverflowError, UnicodeError):
                _explain(i, values)  # raises a PushError naming the bad entry
                raise
        return self._store(blocks, delivery, admission)

    def push_lines(self, body: bytes, delivery: Delivery | None = None, now_ns: int | None = None,
                   admission: Admission | None = None) -> int:
        """Store the collector's columns (`finopti.logs.wire`); as `push` otherwise."""
        try:
            blocks = wire.decode(body)
        except ValueError as exc:
            raise PushError(str(exc)) from None
        now_ns = now_ns if now_ns is not None else self.clock()
        admission = admission if admission is not None else Admission()
        grace_ns, oldest_ns = int(self.future_grace * 1e9), now_ns - int(self.retention_seconds * 1e9)
        kept = []
        for labels, columns in blocks:
            if columns.count and (min(columns.ts) < oldest_ns or max(columns.ts) > now_ns + grace_ns):
                values = admit(columns.values(), now_ns, grace_ns, oldest_ns, admission)
                if not values:
                    continue
                columns = Columns.from_values(0, _checked(values), values)
            if columns.count:
                kept.append((labels, columns))
        return self._store(kept, delivery, admission)

    def _store(self, blocks: list[tuple[dict[str, str], Columns]], delivery: Delivery | None,
               admission: Admission) -> int:
        """One level-0 part per block (its ids given here) and the delivery record, in one transaction."""
        with self._write_lock:
            conn = self._writer
            self._new_streams: list[tuple] = []  # streams first seen in this transaction
            conn.execute("BEGIN IMMEDIATE")
            try:
                if delivery is not None:
                    known = conn.execute("SELECT seq FROM collectors WHERE name = ?", (delivery.collector,)).fetchone()
                    if known is not None and delivery.seq <= known[0]:
                        conn.execute("ROLLBACK")
                        admission.duplicate = True
                        return 0
                next_id, added = self._next_id, []
                for labels, columns in blocks:
                    columns.runs = [(next_id, columns.count)]
                    added.append(self._insert(self._stream_id(labels), 0, columns))
                    next_id += columns.count
                if added:
                    conn.execute("INSERT INTO counters(name, value) VALUES ('next_id', ?) ON CONFLICT(name)"
                                 " DO UPDATE SET value = excluded.value", (next_id,))
                if delivery is not None:
                    conn.execute(
                        "INSERT INTO collectors(name, seq, positions) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE"
                        " SET seq = excluded.seq, positions = excluded.positions",
                        # json, not orjson: a file name that is not UTF-8 is a lone surrogate, escaped as \udcXX
                        (delivery.collector, delivery.seq, json.dumps(delivery.positions)),
                    )
                conn.execute("COMMIT")
            except BaseException:
                for stream_key in self._new_streams:  # rolled back: looked up again next time
                    self._stream_labels.pop(self._streams.pop(stream_key), None)
                _rollback(conn)
                raise
            stored = next_id - self._next_id
            self._next_id = next_id
            self._catalog = self._catalog + tuple(added)
        if added:
            self._merge_due.set()
        return stored

    def delivered(self, collector: str) -> Delivery | None:
        rows = self._reader().execute("SELECT seq, positions FROM collectors WHERE name = ?", (collector,)).fetchall()
        return Delivery(collector, rows[0][0], json.loads(rows[0][1])) if rows else None

    # --- merging level-0 parts ------------------------------------------------------------------------------

    def _merge_loop(self) -> None:
        while not self._closing.is_set():
            self._merge_due.wait(1.0)
            self._merge_due.clear()
            if self._closing.is_set():
                return
            try:
                self.merge()
                self._reap()
            except Exception:  # the parts stay as they are; the next round tries again
                log.exception("merging log parts failed")

    def merge(self, force: bool = False) -> int:
        """Merge each stream's level-0 parts that are due (PART_BYTES of lines, L0_MAX_PARTS parts, or L0_MAX_AGE
        old; all with `force`) into a level-1 part. Returns how many level-1 parts were written."""
        written = 0
        self._reap()
        with self._maintenance_lock:
            groups: dict[tuple[int, bool], list[Part]] = {}
            for part in self._catalog:
                if part.level == 0:
                    groups.setdefault((part.stream, part.derived), []).append(part)
            now = time.monotonic()
            for (stream, _), level0 in groups.items():
                due = (force or sum(p.raw_bytes for p in level0) >= PART_BYTES or len(level0) >= L0_MAX_PARTS
                       or now - min(p.created for p in level0) >= L0_MAX_AGE)
                if not due:
                    continue
                level0.sort(key=lambda p: p.min_id)
                while level0:
                    batch, size = [], 0
                    while level0 and (not batch or size + level0[0].raw_bytes <= PART_BYTES):
                        size += level0[0].raw_bytes
                        batch.append(level0.pop(0))
                    self._merge_parts(stream, batch)
                    written += 1
        return written

    def _merge_parts(self, stream: int, level0: list[Part]) -> None:
        """One level-1 part of these level-0 parts, and of the stream's last level-1 part if it is small and recent
        (so a quiet stream's parts grow instead of staying tiny)."""
        derived = level0[0].derived
        last = max((p for p in self._catalog if p.stream == stream and p.level == 1 and p.derived == derived),
                   key=lambda p: p.max_id, default=None)
        merged = list(level0)
        if (last is not None and last.raw_bytes + sum(p.raw_bytes for p in level0) <= PART_BYTES
                and last.max_id < level0[0].min_id
                and max(p.max_ts for p in level0) - last.min_ts <= PART_SPAN_NS):
            merged.insert(0, last)
        columns = Columns.concat([View(self._data(p)).columns(p.keys) for p in merged])
        gone = {p.id for p in merged}
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                part = self._insert(stream, 1, columns)
                conn.execute(f"UPDATE parts SET retired = 1 WHERE id IN ({','.join(map(str, gone))})")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self._retire(gone, (part,))

    def _retire(self, gone: set[int], added: tuple[Part, ...] = ()) -> None:
        """Under the write lock, once the retirement is committed: the catalog without `gone`."""
        with self._epoch_lock:
            self._catalog = tuple(p for p in self._catalog if p.id not in gone) + added
            self._retired.append((self._epoch, gone))
            self._epoch += 1

    def _snapshot(self) -> tuple[int, tuple[Part, ...]]:
        """The catalog for a query, whose parts stay readable until `_done(epoch)`."""
        with self._epoch_lock:
            self._active[self._epoch] = self._active.get(self._epoch, 0) + 1
            return self._epoch, self._catalog

    def _done(self, epoch: int) -> None:
        with self._epoch_lock:
            self._active[epoch] -= 1
            if not self._active[epoch]:
                del self._active[epoch]

    def _reap(self) -> None:
        """Delete the retired parts no running query can read any more."""
        with self._epoch_lock:
            oldest = min(self._active, default=self._epoch)
            ready = [ids for epoch, ids in self._retired if epoch < oldest]
            self._retired = [(epoch, ids) for epoch, ids in self._retired if epoch >= oldest]
        doomed = set().union(*ready) if ready else set()
        if not doomed:
            return
        with self._write_lock:
            self._writer.execute(f"DELETE FROM parts WHERE id IN ({','.join(map(str, doomed))})")
        self._forget(doomed)

    def _data(self, part: Part) -> bytes:
        rows = self._reader().execute("SELECT data FROM parts WHERE id = ?", (part.id,)).fetchall()
        if not rows:
            raise PartGone(part.id)
        return rows[0][0]

    # --- reading parts --------------------------------------------------------------------------------------

    def _view(self, part: Part) -> View:
        with self._cache_lock:
            hit = self._cache.get(part.id)
            if hit is not None:
                self._cache.move_to_end(part.id)
                return hit[0]
        view = View(self._data(part))
        with self._cache_lock:
            if part.id not in self._cache:
                self._cache[part.id] = (view, part.raw_bytes)
                self._cache_bytes += part.raw_bytes
            while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
                _, (_, size) = self._cache.popitem(last=False)
                self._cache_bytes -= size
        return view

    def _forget(self, part_ids: set[int]) -> None:
        with self._cache_lock:
            for part_id in part_ids:
                hit = self._cache.pop(part_id, None)
                if hit is not None:
                    self._cache_bytes -= hit[1]

    # --- queries ------------------------------------------------------------------------------------------

    def _stream_ids(self, services: Sequence[str], levels: Sequence[str]) -> set[int]:
        return {sid for sid, (service, level, _) in list(self._stream_labels.items())
                if (not services or service in services) and (not levels or level in levels)}

    def _bounds(self, q: LogQuery) -> tuple[int, int | None]:
        """[low, high) of the lines a query may see: never older than the retention."""
        oldest = self.clock() - int(self.retention_seconds * 1e9)
        return max(q.start, oldest) if q.start is not None else oldest, q.end

    def _candidates(self, catalog: tuple[Part, ...], q: LogQuery, low: int, high: int | None,
                    after_id: int = 0) -> list[Part]:
        streams = self._stream_ids(q.services, q.levels) if q.services or q.levels else None
        keys = [key_hash(f, v) for f, v in q.metadata()]
        cursor = q.cursor
        out = []
        for part in catalog:
            if part.max_ts < low or (high is not None and part.min_ts >= high) or part.max_id <= after_id:
                continue
            if streams is not None and part.stream not in streams:
                continue
            if cursor is not None and (part.min_ts > cursor[0] if q.backward else part.max_ts < cursor[0]):
                continue
            if keys and not may_hold(part.keys, keys):
                continue
            out.append(part)
        return out

    def _reading(self, run, *args):
        """`run(catalog, *args)` on a catalog whose parts stay readable while it runs."""
        for attempt in range(3):
            epoch, catalog = self._snapshot()
            try:
                return run(catalog, *args)
            except PartGone:  # not expected: a part deleted under a running query; start again
                if attempt == 2:
                    raise
            finally:
                self._done(epoch)
        raise AssertionError("unreachable")

    def query(self, q: LogQuery) -> list[dict]:
        """The first `limit` lines matching `q` in (time, id) order, newest first (backward) or oldest first."""
        return self._reading(self._query, q)

    def _query(self, catalog: tuple[Part, ...], q: LogQuery) -> list[dict]:
        low, high = self._bounds(q)
        pattern = text_pattern(q.text) if q.text else None
        if q.text and pattern is None:
            return []
        limit = min(q.limit, MAX_LIMIT)
        backward = q.backward
        parts = self._candidates(catalog, q, low, high)
        parts.sort(key=(lambda p: -p.max_ts) if backward else (lambda p: p.min_ts))
        best: list[tuple[int, int, int, int]] = []  # (ts, id, part id, index): sorted as plain tuples
        opened: dict[int, tuple[Part, View]] = {}
        edge = None  # (ts, id) of the limit-th line found so far

        def scan(part: Part) -> tuple[Part, View, list[int]]:
            view = self._view(part)
            return part, view, matching(view, q, pattern, low, high)

        # A text search decompresses and scans each part: two at a time (zstd and the regex let go of the GIL).
        wave = SCAN_THREADS * 2 if pattern is not None else 1
        for at in range(0, len(parts), wave):
            if edge is not None and (parts[at].max_ts < edge[0] if backward else parts[at].min_ts > edge[0]):
                break  # every line left is further than the limit-th found
            batch = parts[at:at + wave]
            for part, view, found in (self._scanner().map(scan, batch) if wave > 1 else map(scan, batch)):
                if not found:
                    continue
                opened[part.id] = (part, view)
                ts, ids = view.ts, view.ids
                best += [(ts[i], ids[i], part.id, i) for i in found]
            if len(best) >= limit:
                best.sort(reverse=backward)
                del best[limit:]
                edge = best[-1][:2]
        best.sort(reverse=backward)
        return [self._line(*opened[part_id], i) for _, _, part_id, i in best[:limit]]

    def _scanner(self) -> ThreadPoolExecutor:
        if self._scan_pool is None:
            self._scan_pool = ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="logstore-scan")
        return self._scan_pool

    def _line(self, part: Part, view: View, i: int) -> dict:
        service, level, _ = self._stream_labels[part.stream]
        return line_dict(view, i, service, level)

    def last_id(self) -> int:
        return self._next_id - 1

    def since(self, after_id: int, q: LogQuery) -> list[dict]:
        """Lines stored after line `after_id` that match `q`, in arrival order (the live tail)."""
        return self._reading(self._since, after_id, q)

    def _since(self, catalog: tuple[Part, ...], after_id: int, q: LogQuery) -> list[dict]:
        low, high = self._bounds(q)
        pattern = text_pattern(q.text) if q.text else None
        if q.text and pattern is None:
            return []
        limit = min(q.limit, MAX_LIMIT)
        found: list[tuple[int, int, int]] = []  # (id, part id, index)
        opened: dict[int, tuple[Part, View]] = {}
        for part in sorted(self._candidates(catalog, q, low, high, after_id), key=lambda p: p.min_id):
            if len(found) >= limit and part.min_id > found[limit - 1][0]:
                break
            view = self._view(part)
            opened[part.id] = (part, view)
            ids = view.ids
            found += [(ids[i], part.id, i) for i in matching(view, q, pattern, low, high, after_id)]
            found.sort()
        return [self._line(*opened[part_id], i) for _, part_id, i in found[:limit]]

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
        return sorted({name for _, _, labels in list(self._stream_labels.values()) for name in labels})

    def label_values(self, name: str) -> list[str]:
        streams = list(self._stream_labels.values())
        if name == "level":  # as the streams are found (`ERROR` pushed by Alloy is `error`)
            return sorted({level for _, level, labels in streams if name in labels})
        return sorted({labels[name] for _, _, labels in streams if name in labels})

    def stats(self) -> dict:
        catalog = self._catalog
        oldest = min((p.min_ts for p in catalog), default=None)
        newest = max((p.max_ts for p in catalog), default=None)
        return {
            "lines": sum(p.lines for p in catalog),
            "bytes": self.used_bytes(),
            "raw_bytes": sum(p.raw_bytes for p in catalog),
            "parts": len(catalog),
            "oldest": ns_to_rfc3339(oldest) if oldest is not None else None,
            "newest": ns_to_rfc3339(newest) if newest is not None else None,
        }

    # --- retention ----------------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the database file in use (its free pages, reused by the next parts, not counted)."""
        conn = self._reader()
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * conn.execute("PRAGMA page_size").fetchone()[0]

    def enforce_retention(self, now_ns: int | None = None) -> int:
        """Remove the parts whose every line is older than the retention, then the oldest parts while the parts
        take more than max_bytes. Lines older than the retention in a part that also holds newer ones are no
        longer shown. Returns the number of lines removed."""
        now_ns = now_ns if now_ns is not None else self.clock()
        cutoff = now_ns - int(self.retention_seconds * 1e9)
        with self._maintenance_lock:
            catalog = sorted(self._catalog, key=lambda p: (p.max_ts, p.id))
            doomed = [p for p in catalog if p.max_ts < cutoff]
            total = sum(p.size for p in catalog) - sum(p.size for p in doomed)
            for part in catalog[len(doomed):]:
                if total <= self.max_bytes:
                    break
                doomed.append(part)
                total -= part.size
            for at in range(0, len(doomed), 500):
                chunk = {p.id for p in doomed[at:at + 500]}
                with self._write_lock:
                    self._writer.execute(f"UPDATE parts SET retired = 1 WHERE id IN ({','.join(map(str, chunk))})")
                    self._retire(chunk)
            self._reap()
        deleted = sum(p.lines for p in doomed)
        if deleted:
            log.info("retention removed %d lines", deleted, extra={"event": "retention", "deleted": deleted})
        return deleted
