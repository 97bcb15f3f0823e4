"""Structured metadata: the per-line values (trace id, request id, user...) that travel next to a line, never as
labels. A JSON line's metadata is taken from its own fields; the log store does the same when it reads a line
stored without it (the collector does not send what the line already says)."""

import zlib

METADATA_KEYS = ("trace_id", "span_id", "request_id", "user", "route")
# The metadata a lookup goes straight to: the log store keeps, per part, a hash of each of these values.
INDEXED = {"trace_id": "t:", "request_id": "r:", "user": "u:"}


def from_object(obj: dict) -> dict[str, str]:
    """A JSON line's metadata: its non-empty `METADATA_KEYS` fields, as text."""
    get = obj.get
    return {k: v if v.__class__ is str else str(v) for k in METADATA_KEYS if (v := get(k))}


def index_key(field: str, value: str) -> str:
    return INDEXED[field] + value


def key_hash(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def indexed_keys(meta: dict) -> list[str]:
    return [INDEXED[f] + v for f in INDEXED if (v := meta.get(f)) and v.__class__ is str]
