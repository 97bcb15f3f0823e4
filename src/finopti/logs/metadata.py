"""Structured metadata: the per-line values (trace id, request id, user...) that travel next to a line, never as
labels. A JSON line's metadata is taken from its own fields; the log store does the same when it reads a line
stored without it (the collector does not send what the line already says)."""

import zlib
from collections.abc import Iterator
from itertools import repeat
from operator import methodcaller
from typing import Any

import msgspec

METADATA_KEYS = ("trace_id", "span_id", "request_id", "user", "route")
# The metadata a lookup goes straight to: the log store keeps, per part, a hash of each of these values (the hash of
# `t:<trace id>`, `r:<request id>`, `u:<user>`).
INDEXED = {"trace_id": "t:", "request_id": "r:", "user": "u:"}
_SEEDS = {field: zlib.crc32(prefix.encode()) for field, prefix in INDEXED.items()}


class Fields(msgspec.Struct, gc=False):
    """The fields of a JSON line that the pipeline reads. Decoding a line into it checks the whole line (JSON,
    UTF-8) but builds only these: a gateway access line has ~20 fields, and building them all (a dict) was a third
    of the collector's time per line."""

    ts: Any = None
    # A line's time under the other names loggers give it (read when there is no `ts`): `time` (Go's slog, logrus,
    # bunyan; pino's epoch ms), `timestamp` (structlog), `@timestamp` (Elastic's ECS, logstash).
    time: Any = None
    timestamp: Any = None
    at_timestamp: Any = msgspec.field(default=None, name="@timestamp")
    level: Any = None
    service: Any = None
    message: Any = None
    source: Any = None
    trace_id: Any = None
    span_id: Any = None
    request_id: Any = None
    user: Any = None
    route: Any = None


_decode_fields = msgspec.json.Decoder(Fields).decode
# msgspec's ValidationError (an array...) is a DecodeError; a line nested ~1,000 deep raises RecursionError.
NOT_AN_OBJECT = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode_fields(raw: bytes | str) -> Fields:
    """A JSON object line's fields; raises one of NOT_AN_OBJECT for any other line (text, broken JSON, an array, a
    lone surrogate, invalid UTF-8). msgspec checks the UTF-8 of the strings it builds, not of those it skips."""
    if raw.__class__ is bytes and not raw.isascii():
        raw.decode()
    return _decode_fields(raw)


def fields_of(raw: bytes | str) -> Fields | None:
    try:
        return decode_fields(raw)
    except NOT_AN_OBJECT:
        return None


# A number is an id as its digits; an object, a list or true is not an id (its Python repr, `{'id': …}`, was kept).
SCALARS = (int, float)


def from_object(obj: dict | Fields) -> dict[str, str]:
    """A JSON line's metadata: its non-empty `METADATA_KEYS` fields that are text or numbers, as text. The collector
    and the store read it with the same decoder (`fields_of`), so they agree on which lines are JSON (orjson refuses
    integers beyond 64 bits, for one)."""
    get = obj.get if obj.__class__ is dict else obj.__getattribute__
    return {k: v if v.__class__ is str else str(v) for k in METADATA_KEYS
            if (v := get(k)) and (v.__class__ is str or v.__class__ in SCALARS)}


def key_hash(field: str, value: object) -> int:
    """The hash of an indexed value: CRC-32 of `<prefix><value as text>`, the prefix taken as a starting value."""
    return next(key_hashes(field, [value]))


_ENCODE = methodcaller("encode", "utf-8", "surrogatepass")


def key_hashes(field: str, values: list) -> Iterator[int]:
    """`key_hash` of each value, without a Python call per value: the store hashes every distinct id of every push."""
    texts = [v if v.__class__ is str else str(v) for v in values] if not set(map(type, values)) <= {str} else values
    return map(zlib.crc32, map(_ENCODE, texts), repeat(_SEEDS[field]))


def indexed_values(metas) -> dict[str, set]:
    """The distinct INDEXED values of these metadata dicts, by field."""
    out: dict[str, set] = {field: set() for field in INDEXED}
    for meta in metas:
        for field, values in out.items():
            if (value := meta.get(field)) and (value.__class__ is str or value.__class__ in SCALARS):
                values.add(value if value.__class__ is str else str(value))
    return out
