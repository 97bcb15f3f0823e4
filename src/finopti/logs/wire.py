"""The collector's push body to the embedded log store: each stream's lines already in columns, LZ4-compressed,
so that neither side encodes or parses a JSON entry per line (the Loki JSON body costs the store more than storing
the lines). The collector sends it only to a receiver that keeps its delivery record (the embedded store); to a
real Loki it sends Loki's JSON.

    body   blocks, one per stream (with `Content-Encoding: lz4`, an LZ4 block of them: the collector sends them as
           they are, on loopback compressing costs more than the bytes it saves)
    block  flags (1: metadata derived from the JSON lines), then the sizes (uint32) of: labels (JSON object),
           indexed values (JSON object: `{"trace_id": [...], "request_id": [...], "user": [...]}`, each value once),
           head, text, meta; then those sections (head, text, meta as in `finopti.logs.parts`, with one id run
           starting at 0)
"""

import struct
from array import array

import cramjam
import orjson

from finopti.logs.metadata import INDEXED
from finopti.logs.parts import DERIVED, HEAD, RUN, Columns, hashes, parse_head

CONTENT_TYPE = "application/x-finopti-lines"
BLOCK = struct.Struct("<BIIIII")


def encode_block(labels: dict[str, str], ts: list[int], texts: list[bytes], metas: list[bytes],
                 indexed: dict[str, list], derived: bool) -> bytes:
    """One stream's lines (each text without its newline; metadata as JSON bytes or b"")."""
    n = len(ts)
    text = b"\n".join([*texts, b""]) if texts else b""
    head = b"".join([HEAD.pack(n, 1), array("q", ts).tobytes(), RUN.pack(0, n),
                     array("I", map((1).__add__, map(len, texts))).tobytes(), array("I", map(len, metas)).tobytes()])
    meta = b"".join(metas)
    sections = [orjson.dumps(labels), orjson.dumps(indexed), head, text, meta]
    return BLOCK.pack(DERIVED if derived else 0, *map(len, sections)) + b"".join(sections)


def encode(blocks: list[bytes]) -> bytes:
    return b"".join(blocks)


def decompress(body: bytes) -> bytes:
    """A body sent with `Content-Encoding: lz4`."""
    try:
        return bytes(cramjam.lz4.decompress_block(body))
    except Exception as exc:  # cramjam raises its own error type
        raise ValueError(f"body is not an LZ4 block: {exc}") from None


def decode(raw: bytes) -> list[tuple[dict[str, str], Columns]]:
    """A body -> [(labels, columns with ids from 0)]; ValueError naming what is wrong."""
    view, at, out = memoryview(raw), 0, []
    while at < len(raw):
        where = f"block {len(out)}"
        if at + BLOCK.size > len(raw):
            raise ValueError(f"{where}: truncated")
        flags, *sizes = BLOCK.unpack_from(view, at)
        at += BLOCK.size
        if at + sum(sizes) > len(raw):
            raise ValueError(f"{where}: truncated")
        sections = []
        for size in sizes:
            sections.append(view[at:at + size])
            at += size
        labels_json, keys_json, head, text, meta = sections
        try:
            labels, keys = orjson.loads(labels_json), orjson.loads(keys_json)
            ts, runs, text_lengths, meta_lengths = parse_head(head)
        except (orjson.JSONDecodeError, ValueError, struct.error) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ValueError(f"{where}: labels must be an object of strings")
        if not isinstance(keys, dict) or not all(k in INDEXED and isinstance(v, list) for k, v in keys.items()):
            raise ValueError(f"{where}: indexed values must be an object of lists, by field ({', '.join(INDEXED)})")
        if sum(text_lengths) != len(text) or sum(meta_lengths) != len(meta):
            raise ValueError(f"{where}: the lengths do not add up to the text and metadata sections")
        out.append((labels, Columns(ts, runs, text_lengths, meta_lengths, bytes(text), bytes(meta),
                                    bool(flags & DERIVED), hashes(keys))))
    return out
