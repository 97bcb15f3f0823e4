"""Loki's protobuf push body (what Promtail and Grafana Alloy send by default): snappy-compressed
`logproto.PushRequest`, decoded by hand — four small messages do not warrant generated code.

    PushRequest  { repeated StreamAdapter streams = 1; }
    StreamAdapter{ string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
    EntryAdapter { Timestamp timestamp = 1; string line = 2; repeated LabelPairAdapter structuredMetadata = 3; }
    LabelPairAdapter { string name = 1; string value = 2; }
    Timestamp    { int64 seconds = 1; int32 nanos = 2; }
"""

import re
from collections.abc import Iterator

import cramjam

_ESCAPE = re.compile(r"\\(.)")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The protobuf varint at `pos` (also how snappy states its uncompressed size), and the position after it."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for every field of a message: ints for varints, bytes for length-delimited."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            size, pos = varint(buf, pos)
            if pos + size > end:
                raise ValueError("truncated message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def parse_labels(text: str) -> dict[str, str]:
    """`{job="finopti", service="ui"}` -> {"job": "finopti", "service": "ui"}."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError(f"labels must look like {{name=\"value\"}}: {text!r}")
    body, labels, pos = body[1:-1], {}, 0
    while pos < len(body):
        match = _LABEL.match(body, pos)
        if not match:
            raise ValueError(f"bad label syntax at {body[pos:]!r}")
        labels[match[1]] = _ESCAPE.sub(lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), match[2])
        pos = match.end()
    return labels


def _entry(buf: bytes) -> list:
    ts, line, metadata = 0, "", {}
    for number, value in _fields(buf):
        if number == 1:
            parts = dict(_fields(value))
            ts = parts.get(1, 0) * 1_000_000_000 + parts.get(2, 0)
        elif number == 2:
            line = value.decode("utf-8", errors="replace")
        elif number == 3:
            pair = dict(_fields(value))
            metadata[pair.get(1, b"").decode()] = pair.get(2, b"").decode("utf-8", errors="replace")
    return [str(ts), line, metadata] if metadata else [str(ts), line]


def decode_push(body: bytes, compressed: bool = True) -> list[tuple[dict[str, str], list]]:
    """A protobuf push body -> [(labels, [[ts_ns, line, metadata?], ...]), ...] as the JSON push gives."""
    raw = bytes(cramjam.snappy.decompress_raw(body)) if compressed else body
    streams = []
    for number, value in _fields(raw):
        if number != 1:
            continue
        labels, entries = {}, []
        for field, part in _fields(value):
            if field == 1:
                labels = parse_labels(part.decode())
            elif field == 2:
                entries.append(_entry(part))
        streams.append((labels, entries))
    return streams


def encode_push(streams: list[tuple[dict[str, str], list]], compress: bool = True) -> bytes:
    """The inverse of decode_push, for tests and for pushing protobuf to a real Loki."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    def vfield(number: int, value: int) -> bytes:
        return varint(number << 3) + varint(value) if value else b""

    out = bytearray()
    for labels, values in streams:
        quoted = {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
        text = "{" + ", ".join(f'{k}="{v}"' for k, v in quoted.items()) + "}"
        stream = field(1, text.encode())
        for value in values:
            ts = int(value[0])
            entry = field(1, vfield(1, ts // 1_000_000_000) + vfield(2, ts % 1_000_000_000))
            entry += field(2, value[1].encode())
            for name, meta in (value[2] if len(value) > 2 else {}).items():
                entry += field(3, field(1, name.encode()) + field(2, str(meta).encode()))
            stream += field(2, entry)
        out += field(1, stream)
    return bytes(cramjam.snappy.compress_raw(bytes(out))) if compress else bytes(out)
