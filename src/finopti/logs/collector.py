"""The local Promtail: tail every `*.log` of the logs directory and push the lines to a Loki push API.

- Each line keeps its original text. Stream labels are only `job="finopti"`, `service` and `level`: few
  streams, as Loki wants. `trace_id`, `span_id`, `request_id`, `user`, `route` (and `component`, the file's
  name, when it differs from the service) travel as per-line structured metadata: unbounded values as labels
  would make a stream per request.
- Files are followed through rotation and truncation (`finopti.logs.tail`: known by inode and fingerprint);
  lines are joined into entries by the multiline rule (`finopti.logs.multiline`); a line dated too far ahead
  is kept at its read time, its own time as metadata `original_ts`.
- Lines are batched (by count, push-body bytes or age, or as soon as the files are read to their end) and
  pushed by two sender threads (two pushes in flight; the store keeps them in order) while the next batch is
  read: to the embedded store as columns (`finopti.logs.wire`), to any other receiver as Loki's JSON. A batch
  that fails is retried with exponential backoff, for as long as the receiver is down; positions advance only
  once a push, and every push before it, has succeeded.
- Positions (file -> device, inode, fingerprint and offset, in `collector-positions.json`) are written
  atomically after each push
  (at most every 0.5 s when the store keeps the record below) and on shutdown. The embedded log store also
  records them in the transaction that stores the batch, with a batch number: a batch retried after a lost
  answer is stored once, and a collector killed between a push and its positions file resumes from the
  store's record. Nothing is lost or repeated across a SIGKILL.

`python -m finopti.logs.collector` runs it; environment:
FINOPTI_HOME (logs in $FINOPTI_HOME/logs, positions in $FINOPTI_HOME/collector-positions.json),
FINOPTI_LOKI_URL (a Loki to push to) else FINOPTI_LOGSTORE_URL (the embedded store), FINOPTI_PORT (/metrics,
/healthz), FINOPTI_SERVICE (this process's name, default `collector`: its own log file is not collected),
FINOPTI_COLLECTOR_EXCLUDE (more component names to skip, comma-separated), FINOPTI_COLLECTOR_NAME (how the
store knows this collector; default host:logs dir), FINOPTI_COLLECTOR_BATCH_BYTES (push body limit, 1000000),
FINOPTI_COLLECTOR_FIRSTLINE / _MULTILINE_MAX_WAIT / _MULTILINE_MAX_LINES (the multiline rule),
FINOPTI_COLLECTOR_FUTURE_GRACE (how far ahead a line's own time is believed, 10m),
FINOPTI_TLS_CERT / FINOPTI_TLS_KEY / FINOPTI_MESH_CA (its mesh identity, to push through the gateway).
"""

import collections
import contextlib
import errno
import functools
import json
import logging
import os
import queue
import re
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

import httpx
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from finopti.logs import wire
from finopti.logs.levels import KNOWN, level_word
from finopti.logs.line_guard import identity_of_certificate, lines_with_marks, own_sources, redact, redact_bytes
from finopti.logs.metadata import INDEXED, NOT_AN_OBJECT, SCALARS, Fields, decode_fields, from_object
from finopti.logs.multiline import (
    DEFAULT_FIRSTLINE,
    DEFAULT_MAX_LINES,
    DEFAULT_MAX_WAIT,
    Entry,
    Joiner,
    MultilineRule,
    infer_level,
    strip_lead,
)
from finopti.logs.tail import ROTATE_WAIT, Chunk, FileTail, Position, digest
from finopti.logs.times import (
    FUTURE_GRACE_SECONDS,
    epoch_ns,
    leading_time_ns,
    ns_to_rfc3339,
    parse_since,
    rfc3339_ns,
)
from finopti.logs.times import second_cache as _SECONDS

log = logging.getLogger("finopti.collector")

PUSH_PATH = "/loki/api/v1/push"
DROP_STATUSES = {400, 413, 422}
JOB = "finopti"
_KNOWN_LEVELS = KNOWN


_NUMERIC_LEVELS = {1: "debug", 2: "debug", 3: "info", 4: "warning", 5: "error", 6: "critical"}  # pino, bunyan


def normalize_level(level: object, message: object = "") -> str:
    """A JSON line's `level` as its stream's label: a word (`WARN` -> `warning`; another word of at most 12
    letters as it is, `notice`), a number as pino and bunyan write them (30 info, 50 error); absent or anything
    else (a list, an object, `4f2a…`) inferred from the message: a label per odd value would be a stream each."""
    if level.__class__ is str:
        word = level_word(level) if level.strip() else "info"
        if word is not None:
            return word
        text = level.strip()
        if text.isascii() and text.isdigit() and len(text) <= 3:  # "50": pino's number, written as a string
            return _NUMERIC_LEVELS.get(int(text) // 10, "info")
    elif level.__class__ is int:
        return _NUMERIC_LEVELS.get(level // 10, "info")
    return infer_level(message if message.__class__ is str else "")


# Services named by the lines' own `service` field, each a label: at most this many per run of the collector (a
# writer that put a new name in every line would make a stream per line); past it, a line's file names its service.
MAX_SERVICES = 256
_services: set[str] = set()


def _admit_service(name: str) -> bool:
    if len(_services) >= MAX_SERVICES or len(name) > 64:
        return False
    _services.add(name)
    return True


def service_of(component: str) -> str:
    """The service a non-JSON line belongs to: `gateway.err` (Envoy's diagnostics) -> `gateway`."""
    return component.removesuffix(".err")


@dataclass
class ParseStats:
    not_json: int = 0
    invalid_utf8: int = 0
    empty: int = 0
    own: int = 0
    future: int = 0
    capped: int = 0  # lines whose own service name was not taken as a label (MAX_SERVICES)
    redacted: dict[str, int] = field(default_factory=dict)  # kind -> credentials replaced (see line_guard)

    def count_redactions(self, counts: dict[str, int]) -> None:
        for kind, n in counts.items():
            self.redacted[kind] = self.redacted.get(kind, 0) + n


class Parsed(NamedTuple):
    """An entry ready for a push: its stream, time, text (UTF-8) and metadata. A JSON line's metadata is its own
    fields (`obj`, see `finopti.logs.metadata`) plus `extras`; a plain-text entry's is `extras` alone."""

    service: str
    level: str
    ts_ns: int
    text: bytes
    obj: Fields | None
    extras: dict | None  # component (the file, when not the service), original_ts (a clock ahead)

    def metadata(self) -> dict:
        if self.obj is None:
            return self.extras or {}
        return {**from_object(self.obj), **self.extras} if self.extras else from_object(self.obj)


_TRAILING = (b"\r", b"\x00")
_new = tuple.__new__  # a NamedTuple without its Python-level __new__: this is the hot path


def parse_line(raw: bytes, component: str, now_ns: int, stats: ParseStats,
               grace_ns: int = int(FUTURE_GRACE_SECONDS * 1e9), own: frozenset[str] = frozenset(),
               redact: bool = True) -> Parsed | None:
    """A raw entry (a line, or lines joined by the multiline rule) -> what to push; None for an entry to skip
    (empty, or caused by our own pushes: its `source` is one of `own`, see line_guard). Credentials in the entry
    are redacted (`redact=False`: the line is known to hold none of line_guard's marks). `now_ns` is when it was
    read: the time of an entry without its own, and
    of one dated more than `grace_ns` ahead (its own time is kept as metadata `original_ts`).
    The hot path of the collector: a JSON object line is parsed once, only the fields it reads, and never
    re-encoded."""
    if raw[-1:] in _TRAILING:  # CRLF endings; NULs
        raw = raw.rstrip(b"\r\x00")
    if raw[:1] != b"{":
        raw = strip_lead(raw)
        if raw.lstrip(b" \t")[:1] != b"{":
            return _parse_text(raw, component, now_ns, stats, grace_ns)
        raw = raw.lstrip(b" \t")
    try:
        obj = decode_fields(raw)  # also checks the bytes are UTF-8
    except NOT_AN_OBJECT:
        try:
            raw.decode()
        except UnicodeDecodeError:  # a JSON line with a bad byte stays JSON, the byte replaced (U+FFFD), as the store
            stats.invalid_utf8 += 1  # will read the stored line: its trace id is indexed, its level and time kept
            return parse_line(raw.decode(errors="replace").encode(), component, now_ns, stats, grace_ns, own, redact)
        return _parse_text(raw, component, now_ns, stats, grace_ns)
    source = obj.source
    if source.__class__ is str and source in own:
        stats.own += 1
        return None
    if redact:
        raw, redactions = redact_bytes(raw)
        if redactions:
            stats.count_redactions(redactions)
            obj = decode_fields(raw)  # the redacted values, as the store will read them back from the line
    service = obj.service
    if service.__class__ is not str or not service or (service not in _services and not _admit_service(service)):
        if service.__class__ is str and service:
            stats.capped += 1
        service = service_of(component)
    ts = obj.ts
    if ts is None:  # slog, logrus, bunyan, pino: `time`; structlog: `timestamp`; ECS: `@timestamp`
        ts = obj.time if obj.time is not None else obj.timestamp if obj.timestamp is not None else obj.at_timestamp
    base = _SECONDS.get(ts[:19], -1) if ts.__class__ is str and len(ts) == 24 and ts[19] == "." else -1
    millis = ts[20:23] if base >= 0 and ts[23] == "Z" else ""
    if millis.isascii() and millis.isdigit():  # the services' `…T12:07:55.548Z`, its second seen before
        ts_ns = base + int(millis) * 1_000_000
    elif ts.__class__ is str:
        try:
            ts_ns = rfc3339_ns(ts)
        except ValueError:
            ts_ns = epoch_ns(ts) or now_ns
    else:
        ts_ns = epoch_ns(ts) or now_ns  # zap's 1764592075.123 s, pino's ms…; not a time (null, a list): when read
    extras = {"component": component} if component != service else None
    if ts_ns > now_ns + grace_ns:  # a clock ahead: such a line would stay the newest for good
        extras = {**(extras or {}), "original_ts": ns_to_rfc3339(ts_ns)}
        ts_ns = now_ns
        stats.future += 1
    level = obj.level
    level = (level.__class__ is str and _KNOWN_LEVELS.get(level)) or normalize_level(level, obj.message)
    return _new(Parsed, (service, level, ts_ns, raw, obj, extras))


def _parse_text(raw: bytes, component: str, now_ns: int, stats: ParseStats, grace_ns: int) -> Parsed | None:
    """An entry that is not a JSON object: kept as it is, its level inferred from what it says, dated by the time
    it starts with (Envoy's diagnostics, supervisord), else when it was read."""
    if not raw.strip():
        stats.empty += 1
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode(errors="replace")
        raw = text.encode()
        stats.invalid_utf8 += 1
    text, redactions = redact(text)
    if redactions:
        stats.count_redactions(redactions)
        raw = text.encode()
    stats.not_json += 1
    service = service_of(component)
    extras = {"component": component} if component != service else None
    ts_ns = leading_time_ns(text[:40])
    if ts_ns is None:
        ts_ns = now_ns
    elif ts_ns > now_ns + grace_ns:  # a clock ahead, as for JSON lines
        extras = {**(extras or {}), "original_ts": ns_to_rfc3339(ts_ns)}
        ts_ns = now_ns
        stats.future += 1
    return _new(Parsed, (service, infer_level(text), ts_ns, raw, None, extras))


@dataclass
class Batch:
    """Entries ready to send, and what to record once they are stored. `bytes` counts the push body's size: a
    gateway in front of the receiver refuses bodies over its limit (1 MiB), and such a refusal cannot be retried."""

    seq: int = 0
    lines: int = 0
    bytes: int = 0
    positions: dict[str, Position | None] = field(default_factory=dict)  # None: forget this key
    started: float = field(default_factory=time.monotonic)
    prev: int = 0  # the pushed batch sent before this one
    sent_positions: str = "{}"  # every file's position once this batch and all before it are stored
    done: bool = False

    content_type = "application/json"
    empty_body = b""

    def add(self, parsed: Parsed, limit: int) -> bool:
        """Add an entry unless the body would then be larger than `limit` (a batch always takes its first)."""
        raise NotImplementedError

    def body(self) -> bytes:
        raise NotImplementedError


@functools.cache
def _stream_head(key: tuple[str, str]) -> bytes:
    service, level = key
    return b'{"stream":' + orjson.dumps({"job": JOB, "service": service, "level": level}) + b',"values":['


@dataclass
class LokiBatch(Batch):
    """Loki's JSON push body, for any Loki: each entry `[ts, line, metadata]`, encoded as it is added."""

    streams: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    bytes: int = len(b'{"streams":[]}')

    empty_body = b'{"streams":[]}'

    def add(self, parsed: Parsed, limit: int) -> bool:
        meta = parsed.metadata()
        text = parsed.text.decode()
        entry = orjson.dumps([str(parsed.ts_ns), text, meta] if meta else [str(parsed.ts_ns), text])
        key = (parsed.service, parsed.level)
        size = len(entry) + 1 + (0 if key in self.streams else len(_stream_head(key)) + 3)
        if self.lines and self.bytes + size > limit:
            return False
        self.streams.setdefault(key, []).append(entry)
        self.bytes += size
        self.lines += 1
        return True

    def body(self) -> bytes:
        streams = (_stream_head(key) + b",".join(entries) + b"]}" for key, entries in self.streams.items())
        return b'{"streams":[' + b",".join(streams) + b"]}"


StreamLines = tuple[list[int], list[bytes], list[bytes], list[Fields]]  # times, texts, extras, JSON lines' fields
_NO_EXTRAS = b""


def _indexed_values(lines: list[Fields]) -> dict[str, list]:
    """The distinct values of JSON lines' INDEXED fields, by field."""
    out = {}
    for name in INDEXED:
        values = map(attrgetter(name), lines)
        try:
            distinct = set(values)
        except TypeError:  # a list or an object as a trace id: not an id (see from_object)
            distinct = {v for v in map(attrgetter(name), lines) if v.__class__ is str or v.__class__ in SCALARS}
        distinct.discard(None)
        distinct.discard("")
        if not set(map(type, distinct)) <= {str}:  # as text, as its metadata reads it (but not 0 or false)
            distinct = {v if v.__class__ is str else str(v) for v in distinct
                        if v and (v.__class__ is str or v.__class__ in SCALARS)}
        out[name] = list(distinct)
    return out


@dataclass
class LinesBatch(Batch):
    """The embedded store's body (`finopti.logs.wire`): columns per stream, a JSON line's own metadata not repeated.
    `bytes` counts the columns before compression, which can only make them smaller (or a few bytes larger)."""

    streams: dict[tuple[str, str], StreamLines] = field(default_factory=dict)

    content_type = wire.CONTENT_TYPE
    empty_body = wire.encode([])

    def add(self, parsed: Parsed, limit: int) -> bool:
        service, level, ts_ns, text, obj, extras = parsed
        extras = orjson.dumps(extras) if extras else _NO_EXTRAS
        key = (service, level)
        lines = self.streams.get(key)
        size = len(text) + len(extras) + (17 if lines is not None else 167)
        if self.lines and self.bytes + size > limit:
            return False
        if lines is None:
            lines = self.streams[key] = ([], [], [], [])
        times, texts, extra, indexed = lines
        times.append(ts_ns)
        texts.append(text)
        extra.append(extras)
        if obj is not None:
            indexed.append(obj)
        self.bytes += size
        self.lines += 1
        return True

    def body(self) -> bytes:
        return wire.encode([
            wire.encode_block({"job": JOB, "service": service, "level": level}, times, texts, extras,
                              _indexed_values(indexed), derived=True)
            for (service, level), (times, texts, extras, indexed) in self.streams.items()])


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.read = Counter("finopti_collector_lines_read_total", "Lines read from log files", registry=registry)
        self.pushed = Counter("finopti_collector_lines_pushed_total", "Lines accepted by the receiver",
                              registry=registry)
        self.rejected = Counter("finopti_collector_lines_rejected_total", "Lines not pushed, by reason",
                                ["reason"], registry=registry)
        self.redactions = Counter("finopti_collector_redactions_total",
                                  "Credentials replaced in collected lines, by kind (a gateway or service leak)",
                                  ["kind"], registry=registry)
        self.unstructured = Counter("finopti_collector_lines_unstructured_total",
                                    "Lines pushed as plain text (not_json), lines whose invalid UTF-8 was replaced"
                                    " (invalid_utf8)", ["reason"], registry=registry)
        self.push_errors = Counter("finopti_collector_push_errors_total", "Failed push attempts, by reason",
                                   ["reason"], registry=registry)
        self.push_seconds = Histogram("finopti_collector_push_seconds", "Time of one push request",
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                      registry=registry)
        self.batch_latency = Histogram("finopti_collector_batch_latency_seconds",
                                       "From a batch's first line read to its push accepted",
                                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                       registry=registry)
        self.files = Gauge("finopti_collector_files", "Log files followed", registry=registry)
        self.rotations = Counter("finopti_collector_rotations_total", "Rotations followed", registry=registry)
        self.truncations = Counter("finopti_collector_truncations_total", "Truncations seen", registry=registry)
        self.future = Counter("finopti_collector_lines_future_total",
                              "Lines dated beyond the grace period ahead: stored at read time, their own time kept as"
                              " metadata original_ts", registry=registry)
        self.capped = Counter("finopti_collector_services_capped_total",
                              "Lines whose own service name was not taken as a label: more than MAX_SERVICES names"
                              " (or one over 64 characters); their file names their service", registry=registry)
        self.multiline = Counter("finopti_collector_multiline_entries_total",
                                 "Entries of several lines joined by the multiline rule", registry=registry)
        self.file_errors = Counter("finopti_collector_file_errors_total",
                                   "Looks at a log file (or the positions file) that failed, by errno (EMFILE: no"
                                   " file descriptor left); the file is tried again at the next look",
                                   ["reason"], registry=registry)


def _mesh_tls():
    """The collector's mesh identity when the platform gives it one: it pushes through the gateway."""
    cert, key, ca = (os.environ.get(f"FINOPTI_{n}") for n in ("TLS_CERT", "TLS_KEY", "MESH_CA"))
    if not (cert and key and ca):
        return True
    from finopti.meshtls import client_context

    return client_context(Path(cert), Path(key), Path(ca))


def apply_positions(positions: dict[str, Position], changes: dict[str, Position | None]) -> None:
    for key, position in changes.items():
        if position is None:
            positions.pop(key, None)
        else:
            positions[key] = position


def path_of(key: str) -> str:
    """A position key's log file path: `/logs/x.log` for `/logs/x.log` and `/logs/x.log@2049:1234` (a rotated
    file still being read)."""
    path, at, file_id = key.rpartition("@")
    return path if at and re.fullmatch(r"\d+:\d+", file_id) else key


def push_base(url: str) -> str:
    """A Loki base URL; a full push URL is accepted too."""
    url = url.rstrip("/")
    return url[: -len(PUSH_PATH)] if url.endswith(PUSH_PATH) else url


class Collector:
    def __init__(
        self,
        logs_dir: Path,
        positions_path: Path,
        url: str,
        *,
        name: str | None = None,
        exclude: set[str] | None = None,
        batch_lines: int = 5000,
        batch_bytes: int = 1_000_000,
        batch_wait: float = 0.2,
        poll_interval: float = 0.05,
        scan_interval: float = 0.25,
        max_line_bytes: int = 256 * 1024,
        max_backoff: float = 4.0,
        shutdown_timeout: float = 5.0,
        in_flight: int = 2,
        multiline: MultilineRule | None = MultilineRule(),
        future_grace: float = FUTURE_GRACE_SECONDS,
        rotate_wait: float = ROTATE_WAIT,
        registry: CollectorRegistry | None = None,
        identity: str | None = None,
        max_open_files: int | None = None,
    ):
        self.logs_dir = Path(logs_dir).resolve()  # positions are keyed by absolute path
        self.positions_path = Path(positions_path)
        self.base_url = push_base(url)
        # Sent as a header, which must be ASCII (a logs directory under /home/josé): escaped, the same everywhere.
        self.name = (name or f"{socket.gethostname()}:{self.logs_dir}").encode("ascii", "backslashreplace").decode()
        self.exclude = exclude or set()
        # Our mesh identity (SPIFFE id): the lines our own pushes cause carry it as their verified `source`.
        self.own = own_sources(identity)
        self.batch_lines, self.batch_bytes, self.batch_wait = batch_lines, batch_bytes, batch_wait
        self.poll_interval, self.scan_interval, self.max_line_bytes = poll_interval, scan_interval, max_line_bytes
        self.max_backoff, self.shutdown_timeout = max_backoff, shutdown_timeout
        self.multiline = multiline
        self._firstline = multiline.compiled() if multiline else None
        self.grace_ns = int(future_grace * 1e9)
        self.rotate_wait = rotate_wait
        self.metrics = Metrics(registry or CollectorRegistry())
        self.tails: dict[str, FileTail] = {}
        # Files held open at most (default: the open-files limit, less what pushes, the HTTP server and imports need).
        # Past it, files read to their end are closed ("parked") and opened again when they change: with hundreds of
        # files the collector took every descriptor and died (EMFILE), then again under its process manager.
        self.max_open_files = max_open_files or open_files_budget()
        self.parked: dict[str, tuple[Position, tuple]] = {}  # path -> (where it was read to, its stat when parked)
        self.last_active: dict[str, float] = {}  # path -> monotonic time of its last line
        self.joiners: dict[str, Joiner] = {}  # per position key: the entry being joined
        self.committed: dict[str, Position] = {}  # where every pushed line of each file ends
        self.committed_seq = 0
        self.next_seq = 0
        self._batch_type: type[Batch] = LokiBatch  # until the receiver is known to be the embedded store
        self.batch: Batch = LokiBatch()
        self.stats = ParseStats()
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self.stopping = threading.Event()
        self.abandon = threading.Event()  # stop retrying: shutdown deadline passed
        self.receiver_up = True
        self.last_push: float | None = None  # monotonic
        self.file_trouble = float("-inf")  # monotonic time of the last failed look at a file
        self._file_error_logged = float("-inf")
        self.ready = threading.Event()
        self.in_flight = in_flight
        self._positions_lock = threading.Lock()
        self._positions_saved = 0.0
        self._save_every = 0.0
        self._take_lock = threading.Lock()  # batches leave the queue in order...
        self._commit_lock = threading.Lock()  # ...and are committed in that order
        self._sending: collections.deque[Batch] = collections.deque()
        self._sent_positions: dict[str, Position] = {}
        self._last_pushed = 0
        self._client = self._new_client()

    @staticmethod
    def _new_client() -> httpx.Client:
        return httpx.Client(timeout=httpx.Timeout(30.0, connect=2.0), verify=_mesh_tls())

    # --- positions ----------------------------------------------------------------------------------------

    def _load_positions(self) -> tuple[int, dict[str, Position]]:
        try:
            doc = json.loads(self.positions_path.read_text())
            return int(doc.get("seq", 0)), {p: Position.from_json(v) for p, v in doc["positions"].items()}
        except FileNotFoundError:
            return 0, {}
        except (ValueError, KeyError, TypeError, OSError) as exc:  # OSError: unreadable (a directory, EIO, EACCES)
            log.warning("ignoring unreadable positions file %s: %s", self.positions_path, exc)
            return 0, {}

    def _receiver_positions(self) -> tuple[int, dict[str, Position]] | None:
        """What the embedded store recorded for us; None from a receiver without that record (a real Loki).
        Waits while the receiver is down: nothing could be pushed anyway."""
        delay = 0.1
        while not self.stopping.is_set():
            try:
                r = self._client.get(f"{self.base_url}/api/collector/positions", params={"collector": self.name},
                                     timeout=5.0)
                if r.status_code == 200:
                    doc = r.json()
                    return int(doc["seq"]), {p: Position.from_json(v) for p, v in doc["positions"].items()}
                if r.status_code < 500:
                    if r.status_code != 404:  # 404: a real Loki, which keeps no such record
                        log.warning("cannot read the receiver's record of our positions (%s %s): resuming from %s; "
                                    "the last batch before a crash may be pushed twice", r.status_code,
                                    r.text[:200], self.positions_path)
                    return None
            except httpx.HTTPError:
                pass
            self.receiver_up = False
            self.stopping.wait(delay)
            delay = min(delay * 2, self.max_backoff)
        return None

    def _save_positions(self) -> None:
        with self._positions_lock:  # the sender after each push, run() at shutdown
            self._write_positions()

    def _write_positions(self) -> None:
        doc = {"seq": self.committed_seq, "positions": {key: p.to_json() for key, p in self.committed.items()}}
        tmp = self.positions_path.with_name(self.positions_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, self.positions_path)
        except OSError as exc:  # a full disk, no descriptor left: the next write catches up (the store keeps them too)
            self._file_error(exc, self.positions_path)

    def _file_error(self, exc: OSError, path: Path) -> None:
        """A look at a file failed (no descriptor left, a full disk...): counted, logged at most every 10 s; the
        collector goes on and looks again (it used to die, and under a process manager die again at once)."""
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        self.metrics.file_errors.labels(reason=reason).inc()
        self.file_trouble = time.monotonic()
        if time.monotonic() - self._file_error_logged >= 10.0:
            self._file_error_logged = time.monotonic()
            log.warning("cannot use %s (%s): trying again", path, exc, extra={"event": "collector_file_error"})

    def restore(self) -> None:
        seq, positions = self._load_positions()
        remote = self._receiver_positions()
        if remote is not None and remote[0] > seq:
            log.info("resuming from the log store's record (batch %d, local file had %d)", remote[0], seq)
            seq, positions = remote
        self.committed_seq, self.committed = seq, dict(positions)
        self._sent_positions = dict(positions)
        self._last_pushed = remote[0] if remote else 0  # a batch the store has (or 0: nothing to wait for)
        # With the store's record the file may lag; without it, the file is all there is: write it every push.
        self._save_every = 0.5 if remote is not None else 0.0
        self.next_seq = max(seq, self._last_pushed)
        # The embedded store (it keeps our record) takes columns; any other receiver, Loki's JSON.
        self._batch_type = LinesBatch if remote is not None else LokiBatch
        self.batch = self._batch_type()

    # --- reading ------------------------------------------------------------------------------------------

    def scan(self) -> None:
        """Follow new `*.log` files; forget ones that are gone and fully read."""
        # Regular files only: opening a named pipe waits for a writer, a symlink to itself raises.
        try:
            present = {str(p): p for p in self.logs_dir.glob("*.log")
                       if p.name[:-4] not in self.exclude and p.is_file()}
        except OSError as exc:  # no descriptor left to list the directory: the next look
            self._file_error(exc, self.logs_dir)
            return
        held = sum(len(t.files) for t in self.tails.values())
        for key, path in present.items():
            if key not in self.tails:
                parked = self.parked.get(key)
                if parked is not None and _stat_token(path) == parked[1]:
                    continue  # unchanged since it was closed
                if held >= self.max_open_files and not self._park_one():
                    continue  # every open file is busy: this one waits for the next look
                tail = FileTail(path, self.max_line_bytes, self.rotate_wait)
                if parked is not None:
                    saved = {key: parked[0]}
                else:
                    saved = {k: p for k, p in self.committed.items() if path_of(k) == key}
                try:
                    opened = tail.open(saved)
                except OSError as exc:  # no descriptor left (EMFILE): this file waits for the next look
                    tail.close()
                    self._file_error(exc, path)
                    continue
                self.parked.pop(key, None)
                if opened:
                    self.tails[key] = tail
                    held += len(tail.files)
                else:
                    tail.close()
                for gone in saved.keys() - set(tail.keys()):  # files no longer there
                    self.batch.positions[gone] = None
        for key in [k for k, t in self.tails.items() if k not in present and t.idle]:
            tail = self.tails.pop(key)
            for gone in tail.keys():
                self.batch.positions[gone] = None
            tail.close()
        open_files = {(f.dev, f.inode) for t in self.tails.values() for f in t.files}
        for file_id in self.joiners.keys() - open_files:
            del self.joiners[file_id]
        self.metrics.files.set(len(self.tails) + len(self.parked))

    def _park_one(self) -> bool:
        """Close the least recently active file that is read to its end (one file, nothing held): it is opened
        again, from where it was read to, once its size or times change. False when every open file is busy."""
        for key in sorted(self.tails, key=lambda k: self.last_active.get(k, 0.0)):
            tail = self.tails[key]
            if len(tail.files) != 1 or not tail.idle:
                continue
            f = tail.files[0]
            joiner = self.joiners.get((f.dev, f.inode))
            st = os.fstat(f.fh.fileno())
            if (joiner is not None and joiner.holding) or st.st_size != f.offset:
                continue
            dev, inode, fp, fp_len = f.identity()
            self.parked[key] = (Position(dev, inode, f.offset, fp, fp_len, digest(f.window), len(f.window)),
                                (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            del self.tails[key]
            tail.close()
            return True
        return False

    def _read(self, tail: FileTail, now_ns: int) -> bool:
        component = os.fsencode(tail.path.name[:-4]).decode(errors="replace")  # a label: valid UTF-8
        progressed = False
        for _ in range(8):  # then the next file: one busy file does not starve the others
            try:
                chunk = tail.read(self.batch_lines - self.batch.lines)
            except OSError as exc:  # no descriptor left to open a rotated file: nothing changed, read again later
                self._file_error(exc, tail.path)
                break
            if chunk is None:
                break
            progressed = True
            self.last_active[str(tail.path)] = time.monotonic()
            self._take(chunk, component, now_ns)
        for key in tail.take_forgotten():
            self.batch.positions[key] = None
        if self.multiline is not None:
            for f in tail.files:
                joiner = self.joiners.get((f.dev, f.inode))
                entry = joiner.expired() if joiner is not None else None
                if entry is not None:
                    self._add_expired(entry, component)
                    self.batch.positions[joiner.key] = joiner.chunk.position(entry.end, entry.last)
        return progressed

    def _joiner(self, chunk: Chunk) -> Joiner | None:
        if self.multiline is None:
            return None
        file_id = chunk.identity[:2]
        joiner = self.joiners.get(file_id)
        if joiner is None:
            joiner = self.joiners[file_id] = Joiner(self.multiline, self._firstline, self.max_line_bytes)
        joiner.key, joiner.chunk = chunk.key, chunk
        return joiner

    def _take(self, chunk: Chunk, component: str, now_ns: int) -> None:
        """A chunk's lines -> entries in the batch; the chunk's position once its entries are all in."""
        joiner = self._joiner(chunk)
        limit, stats, grace, own = self.batch_bytes, self.stats, self.grace_ns, self.own
        done_end, done_last = -1, b""  # end and last line of the last entry put in the batch (-1: none yet)
        suspects = lines_with_marks(chunk.lines)  # the lines redaction must look at, found for the whole chunk
        for i, (raw, line_end) in enumerate(zip(chunk.lines, chunk.ends, strict=True)):
            if joiner is None or (raw[:1] == b"{" and not joiner.lines):  # the common case: a whole JSON line
                try:
                    parsed = parse_line(raw, component, now_ns, stats, grace, own, i in suspects)
                except Exception:
                    parsed = self._unparseable(raw, component, now_ns)
                if parsed is not None and not self.batch.add(parsed, limit):
                    self._full(chunk, done_end, done_last)
                    self.batch.add(parsed, limit)
                done_end, done_last = line_end, raw
                continue
            for entry in joiner.feed([raw], [line_end], now_ns):
                if b"\n" in entry.text:
                    self.metrics.multiline.inc()
                stats.empty += entry.blank
                try:
                    parsed = parse_line(entry.text, component, entry.read_ns, stats, grace, own)
                except Exception:
                    parsed = self._unparseable(entry.text, component, entry.read_ns)
                if parsed is not None and not self.batch.add(parsed, limit):
                    self._full(chunk, done_end, done_last)
                    self.batch.add(parsed, limit)
                done_end, done_last = entry.end, entry.last
        for key in chunk.forget:
            self.batch.positions[key] = None
        if joiner is not None and joiner.lines:  # an entry is held: the position stops before it
            if done_end >= 0:
                self.batch.positions[chunk.key] = chunk.position(done_end, done_last)
        else:
            self.batch.positions[chunk.key] = chunk.position()
        self.metrics.read.inc(len(chunk.lines))
        if self.batch.lines >= self.batch_lines or self.batch.bytes >= self.batch_bytes:
            self.flush()

    def _unparseable(self, raw: bytes, component: str, now_ns: int) -> Parsed | None:
        """A line that made parse_line raise (a case no test foresaw, or no descriptor left for a lazy import): kept
        as plain text of its file's service, dated when read, its credentials redacted (`unstructured`,
        reason="unparseable"), so that it can neither stop the reader (a restarted collector would read it again,
        and stop again) nor be lost. Skipped and counted only if even that raises."""
        log.exception("a line of %s could not be parsed, kept as text: %r", component, raw[:200])
        try:
            text, _ = redact(raw.decode(errors="replace"))
            service = service_of(component)
            extras = {"component": component} if component != service else None
            parsed = _new(Parsed, (service, "info", now_ns, text.encode(), None, extras))
        except Exception:
            log.exception("skipping a line of %s that could not be kept", component)
            self.metrics.rejected.labels("unparseable").inc()
            return None
        self.metrics.unstructured.labels("unparseable").inc()
        return parsed

    def _full(self, chunk: Chunk, done_end: int, done_last: bytes) -> None:
        """The batch cannot take the next entry: send it, with the position just after the entry before."""
        if done_end >= 0:  # else the previous chunk's position, already set
            self.batch.positions[chunk.key] = chunk.position(done_end, done_last)
        self.flush()

    def _add_expired(self, entry: Entry, component: str) -> None:
        """A held multiline entry whose wait is over."""
        if b"\n" in entry.text:
            self.metrics.multiline.inc()
        self.stats.empty += entry.blank
        try:
            parsed = parse_line(entry.text, component, entry.read_ns, self.stats, self.grace_ns, self.own)
        except Exception:
            parsed = self._unparseable(entry.text, component)
        if parsed is not None and not self.batch.add(parsed, self.batch_bytes):
            self.flush()
            self.batch.add(parsed, self.batch_bytes)

    def _count(self) -> None:
        stats, m = self.stats, self.metrics
        for reason, n in (("empty", stats.empty), ("own_traffic", stats.own)):
            if n:
                m.rejected.labels(reason).inc(n)
        if stats.future:
            m.future.inc(stats.future)
        if stats.capped:
            m.capped.inc(stats.capped)
        for reason, n in (("not_json", stats.not_json), ("invalid_utf8", stats.invalid_utf8)):
            if n:
                m.unstructured.labels(reason).inc(n)
        for kind, n in stats.redacted.items():
            m.redactions.labels(kind).inc(n)
        self.stats = ParseStats()
        for tail in self.tails.values():
            for value, counter in ((tail.too_long, m.rejected.labels("too_long")), (tail.rotations, m.rotations),
                                   (tail.truncations, m.truncations)):
                if value:
                    counter.inc(value)
            tail.too_long = tail.rotations = tail.truncations = 0

    def flush(self) -> None:
        if not self.batch.lines and not self.batch.positions:
            return
        self._count()
        batch, self.batch = self.batch, self._batch_type()
        # Numbered from the clock, so a run that could not read the store's record still never reuses a number
        # the store has seen (it would take a new batch for a retried one and drop it).
        batch.seq = self.next_seq = max(time.time_ns(), self.next_seq + 1)
        self._put(batch)

    def _put(self, item: Batch | None) -> None:
        """Hand over to the sender; blocks while two batches wait (the reader slows to the receiver's pace),
        until the shutdown deadline: an abandoned batch is read again by the next run."""
        while not self.abandon.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        """Collect until stop(); then push what was read, within shutdown_timeout, and save positions."""
        self.restore()
        senders = [threading.Thread(target=self._send_loop, name=f"collector-sender-{i}", daemon=True)
                   for i in range(self.in_flight)]
        for sender in senders:
            sender.start()
        self.ready.set()
        last_scan = 0.0
        try:
            while not self.stopping.is_set():
                if time.monotonic() - last_scan >= self.scan_interval:
                    self.scan()
                    last_scan = time.monotonic()
                now_ns = time.time_ns()
                progressed = False
                for tail in list(self.tails.values()):
                    progressed |= self._read(tail, now_ns)
                # Flush when caught up (low latency when quiet) or when the batch is old (steady trickle).
                if not progressed or time.monotonic() - self.batch.started >= self.batch_wait:
                    self.flush()
                if not progressed:
                    self.stopping.wait(self.poll_interval)
        finally:
            self.stop()
            self.flush()
            self._put(None)
            deadline = time.monotonic() + self.shutdown_timeout + 1
            for sender in senders:
                sender.join(max(0.0, deadline - time.monotonic()))
            self._save_positions()
            for tail in self.tails.values():
                tail.close()
            self._client.close()

    def stop(self) -> None:
        """Stop reading; what was read is pushed if the receiver takes it within shutdown_timeout."""
        if not self.stopping.is_set():
            self.stopping.set()
            timer = threading.Timer(self.shutdown_timeout, self.abandon.set)
            timer.daemon = True
            timer.start()

    # --- pushing ------------------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        """One of `in_flight` senders: while the store writes one batch it already receives the next. Each push
        names the batch sent before it, which the store stores first; here batches are committed in order."""
        client = self._new_client()
        try:
            while True:
                with self._take_lock:
                    batch = self.queue.get()
                    if batch is None:
                        self.queue.put(None)  # for the other senders
                        return
                    apply_positions(self._sent_positions, batch.positions)
                    # ASCII JSON (a header): a file named `café.log`, or with bytes that are not UTF-8, is escaped
                    batch.sent_positions = json.dumps(
                        {key: p.to_json() for key, p in self._sent_positions.items()}, separators=(",", ":"))
                    if batch.lines:
                        batch.prev, self._last_pushed = self._last_pushed, batch.seq
                    with self._commit_lock:
                        self._sending.append(batch)
                if batch.lines and not self._push(batch, client):
                    return  # abandoned at shutdown: positions stay before this batch
                self._commit(batch)
        finally:
            client.close()

    def _commit(self, batch: Batch) -> None:
        with self._commit_lock:
            batch.done = True
            while self._sending and self._sending[0].done:
                first = self._sending.popleft()
                apply_positions(self.committed, first.positions)
                self.committed_seq = first.seq
                self.metrics.batch_latency.observe(time.monotonic() - first.started)
            if time.monotonic() - self._positions_saved < self._save_every:
                return
            self._positions_saved = time.monotonic()
            try:
                self._save_positions()
            except OSError as exc:
                log.error("cannot write positions file %s: %s", self.positions_path, exc)

    def _push(self, batch: Batch, client: httpx.Client) -> bool:
        try:
            body = batch.body()
        except Exception:  # as for a line: a batch that cannot be encoded must not stop the sender, nor the reader
            log.exception("dropping a batch of %d lines that could not be encoded", batch.lines)
            self.metrics.rejected.labels("unencodable").inc(batch.lines)
            body = batch.empty_body  # stored as no lines, so the store does not wait for this batch number
        headers = {
            "content-type": batch.content_type,
            "user-agent": "finopti-collector",
            "x-finopti-collector": self.name,
            "x-finopti-seq": str(batch.seq),
            "x-finopti-prev-seq": str(batch.prev),
            "x-finopti-positions": batch.sent_positions,
        }
        delay = 0.1
        while True:
            started = time.perf_counter()
            try:
                r = client.post(self.base_url + PUSH_PATH, content=body, headers=headers)
                self.metrics.push_seconds.observe(time.perf_counter() - started)
                if r.status_code < 300:
                    if body is not batch.empty_body:
                        self.metrics.pushed.inc(batch.lines)
                    self.receiver_up, self.last_push = True, time.monotonic()  # a clock jump moves no age
                    return True
                if r.status_code in DROP_STATUSES:
                    if body is batch.empty_body:
                        return True
                    # The receiver will never take this batch (Loki: line too long, too old...): retrying
                    # would block every later line. Dropped and counted, as Promtail does; an empty batch of the
                    # same number takes its place, so the store knows it need not wait for it. Other answers
                    # (401/403 while the policy service restarts, 404 while a route is missing, 409, 429, 5xx)
                    # are retried: they say nothing about the batch.
                    self.metrics.push_errors.labels(f"http_{r.status_code}").inc()
                    self.metrics.rejected.labels("refused_by_receiver").inc(batch.lines)
                    log.error("receiver refused a batch of %d lines: %s %s", batch.lines, r.status_code, r.text[:500])
                    body = batch.empty_body
                    continue
                reason = f"http_{r.status_code}"
            except Exception as exc:  # whatever it is, the batch must not be lost: retry
                reason = type(exc).__name__
            self.metrics.push_errors.labels(reason).inc()
            if self.receiver_up and reason != "http_409":
                log.warning("push failed (%s); retrying with backoff", reason)
                self.receiver_up = False
            if self.abandon.wait(delay):
                return False
            delay = min(delay * 2, self.max_backoff)

    def health(self) -> dict:
        files_ok = time.monotonic() - self.file_trouble > 10.0
        return {
            "status": "ok" if self.receiver_up and files_ok else "degraded",
            "files_ok": files_ok,  # no look at a file failed in the last 10 s (finopti_collector_file_errors_total)
            "service": "collector",
            "receiver": self.base_url,
            "receiver_up": self.receiver_up,
            "files": len(self.tails) + len(self.parked),
            "files_open": len(self.tails),
            "batches_waiting": self.queue.qsize() + len(self._sending),
            "last_push_seconds_ago": round(time.monotonic() - self.last_push, 3) if self.last_push else None,
        }


def serve_http(collector: Collector, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """/metrics (Prometheus) and /healthz on a background thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?")[0]
            if path == "/metrics":
                body, ctype, status = generate_latest(collector.metrics.registry), CONTENT_TYPE_LATEST, 200
            elif path == "/healthz":
                body, ctype, status = orjson.dumps(collector.health()), "application/json", 200
            else:
                body, ctype, status = b'{"error": "not_found", "status": 404}', "application/json", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes and scrapes are not worth a line
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="collector-http", daemon=True).start()
    return server


def _stat_token(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


OPEN_FILES_RESERVE = 64  # descriptors kept for pushes, the HTTP server, the positions file, imports


def open_files_budget() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(4, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - OPEN_FILES_RESERVE)


def raise_open_files_limit() -> None:
    """Every followed file is held open (and a rotated one still read): the soft limit on open files (often 1,024,
    whatever supervisord's minfds) is raised to the hard one, as Go programs (Promtail, Alloy) do at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    from finopti.telemetry import configure_logging

    service = os.environ.get("FINOPTI_SERVICE", "collector")
    configure_logging(service, os.environ.get("FINOPTI_VERSION", "v1"))
    raise_open_files_limit()
    home = Path(os.environ.get("FINOPTI_HOME", ".finopti"))
    url = os.environ.get("FINOPTI_LOKI_URL") or os.environ.get("FINOPTI_LOGSTORE_URL")
    if not url:
        sys.exit("finopti.logs.collector: set FINOPTI_LOGSTORE_URL (the log store) or FINOPTI_LOKI_URL")
    exclude = {service} | {c.strip() for c in os.environ.get("FINOPTI_COLLECTOR_EXCLUDE", "").split(",") if c.strip()}
    (home / "logs").mkdir(parents=True, exist_ok=True)
    env = os.environ.get
    multiline = MultilineRule(env("FINOPTI_COLLECTOR_FIRSTLINE", DEFAULT_FIRSTLINE),
                              parse_since(env("FINOPTI_COLLECTOR_MULTILINE_MAX_WAIT", f"{DEFAULT_MAX_WAIT}")),
                              int(env("FINOPTI_COLLECTOR_MULTILINE_MAX_LINES", str(DEFAULT_MAX_LINES))))
    collector = Collector(home / "logs", home / "collector-positions.json", url,
                          name=env("FINOPTI_COLLECTOR_NAME"), exclude=exclude,
                          identity=identity_of_certificate(env("FINOPTI_TLS_CERT")),
                          batch_bytes=int(env("FINOPTI_COLLECTOR_BATCH_BYTES", "1000000")), multiline=multiline,
                          future_grace=parse_since(env("FINOPTI_COLLECTOR_FUTURE_GRACE", f"{FUTURE_GRACE_SECONDS}")))
    # The reader thread is CPU-bound; with the default 5 ms switch interval the sender waited that long for
    # the GIL at each step of a push, and the store sat idle meanwhile.
    sys.setswitchinterval(0.0005)
    server = serve_http(collector, int(os.environ.get("FINOPTI_PORT", "0")))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: collector.stop())
    log.info("collecting %s -> %s", home / "logs", collector.base_url,
             extra={"event": "collector_started", "port": server.server_address[1]})
    collector.run()
    server.shutdown()
    log.info("collector stopped", extra={"event": "collector_stopped"})


if __name__ == "__main__":
    main()
