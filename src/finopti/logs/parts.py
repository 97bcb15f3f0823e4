"""The log store's unit of storage: a part, the lines of one stream over a stretch of time, in columns, each
compressed on its own so that a query decompresses only what it reads.

    directory  magic "FLP2", flags (1: metadata derived from the JSON lines), codec (0: LZ4, 1: zstd), and the
               compressed size of each section below
    head       lines n, id runs k; n × int64 times (ns); k × (int64 first id, uint32 count); n × uint32 text
               lengths; n × uint32 metadata lengths
    text       the lines (UTF-8), each followed by a newline: a text search scans this section only
    meta       each line's structured metadata as a JSON object (or nothing). In a *derived* part it holds only
               what the line does not say itself (`component`, `original_ts`): the rest is read from the JSON
               line (`finopti.logs.metadata.from_object`), so trace ids are not stored twice.

A part written by a push (level 0) is compressed with LZ4, which costs next to nothing; a stream's level-0 parts
are then merged into parts of about PART_BYTES of lines (level 1), compressed with zstd (the lines of one stream
repeat their keys, services, routes and users). Each part has the sorted hashes (CRC-32) of the trace ids, request
ids and users it holds, kept with the catalog: a lookup opens only the parts that hold its id.
"""

import itertools
import struct
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cached_property

import cramjam
import orjson

from finopti.logs.metadata import fields_of, from_object, indexed_values, key_hashes

MAGIC = b"FLP2"
DIRECTORY = struct.Struct("<4sBBIII")
HEAD = struct.Struct("<II")
RUN = struct.Struct("<qI")
DERIVED = 1
LZ4, ZSTD = 0, 1
ZSTD_LEVEL = 1  # on these lines as small as level 3 (smaller, measured), and faster both ways


def _compress(data: bytes, codec: int) -> bytes:
    if not data:
        return b""
    if codec == LZ4:
        return bytes(cramjam.lz4.compress_block(data))
    return bytes(cramjam.zstd.compress(data, ZSTD_LEVEL))


def _decompress(data: bytes | memoryview, codec: int) -> bytes:
    if not len(data):
        return b""
    if codec == LZ4:
        return bytes(cramjam.lz4.decompress_block(data))
    return bytes(cramjam.zstd.decompress(data))


def _array(typecode: str, data: bytes | memoryview) -> array:
    out = array(typecode)
    out.frombytes(data)
    return out


def hashes(values: dict[str, object]) -> array:
    """Sorted distinct hashes of indexed values ({field: values}, see `finopti.logs.metadata`)."""
    distinct: set[int] = set()
    for field, vs in values.items():
        distinct.update(key_hashes(field, [v for v in vs if v] if not all(vs) else vs))
    return array("I", sorted(distinct))


@dataclass
class Columns:
    """A part's lines in arrival (id) order, uncompressed."""

    ts: array  # 'q'
    runs: list[tuple[int, int]]  # (first id, count)
    text_lengths: array  # 'I', each with its newline
    meta_lengths: array  # 'I'
    text: bytes
    meta: bytes
    derived: bool  # metadata of JSON lines read from the lines
    keys: array  # 'I': hashes of the indexed metadata values

    @property
    def count(self) -> int:
        return len(self.ts)

    @property
    def raw_bytes(self) -> int:
        return len(self.text) + len(self.meta) + 16 * self.count

    @classmethod
    def from_values(cls, first_id: int, ts: list[int], values: list) -> "Columns":
        """Loki values ([ts, line] or [ts, line, {metadata}], already checked): metadata stored as given."""
        dumps = orjson.dumps
        texts = [value[1].encode("utf-8", "surrogatepass") + b"\n" for value in values]
        metas = [dumps(value[2]) if len(value) == 3 and value[2] else b"" for value in values]
        keys = hashes(indexed_values(value[2] for value in values if len(value) == 3 and value[2]))
        return cls(array("q", ts), [(first_id, len(values))], array("I", map(len, texts)),
                   array("I", map(len, metas)), b"".join(texts), b"".join(metas), False, keys)

    @classmethod
    def concat(cls, parts: list["Columns"]) -> "Columns":
        """Parts of one stream, in id order, as one (all derived, or none)."""
        ts, text_lengths, meta_lengths = array("q"), array("I"), array("I")
        runs: list[tuple[int, int]] = []
        for part in parts:
            ts.extend(part.ts)
            text_lengths.extend(part.text_lengths)
            meta_lengths.extend(part.meta_lengths)
            for first, count in part.runs:
                if runs and runs[-1][0] + runs[-1][1] == first:
                    runs[-1] = (runs[-1][0], runs[-1][1] + count)
                else:
                    runs.append((first, count))
        keys = array("I", sorted(set().union(*(p.keys for p in parts))))
        return cls(ts, runs, text_lengths, meta_lengths, b"".join(p.text for p in parts),
                   b"".join(p.meta for p in parts), parts[0].derived, keys)

    def values(self) -> list[list]:
        """Back to Loki values, with each line's whole metadata (derived metadata read from its JSON line)."""
        out, at, meta_at = [], 0, 0
        for ts, text_length, meta_length in zip(self.ts, self.text_lengths, self.meta_lengths, strict=True):
            text = self.text[at:at + text_length].removesuffix(b"\n").decode("utf-8", "replace")
            stored = self.meta[meta_at:meta_at + meta_length]
            at, meta_at = at + text_length, meta_at + meta_length
            meta = orjson.loads(stored) if stored else {}
            if self.derived and text.startswith("{") and (fields := fields_of(text)) is not None:
                meta = {**from_object(fields), **meta}
            out.append([str(ts), text, meta] if meta else [str(ts), text])
        return out

    def head(self) -> bytes:
        return b"".join([HEAD.pack(self.count, len(self.runs)), self.ts.tobytes(),
                         b"".join(RUN.pack(first, count) for first, count in self.runs),
                         self.text_lengths.tobytes(), self.meta_lengths.tobytes()])

    def encode(self, codec: int) -> bytes:
        head, text, meta = (_compress(s, codec) for s in (self.head(), self.text, self.meta))
        flags = DERIVED if self.derived else 0
        return b"".join([DIRECTORY.pack(MAGIC, flags, codec, len(head), len(text), len(meta)), head, text, meta])


def parse_head(head: bytes | memoryview) -> tuple[array, list[tuple[int, int]], array, array]:
    n, k = HEAD.unpack_from(head)
    at = HEAD.size
    ts = _array("q", head[at:at + 8 * n])
    at += 8 * n
    runs = [RUN.unpack_from(head, at + i * RUN.size) for i in range(k)]
    at += k * RUN.size
    text_lengths = _array("I", head[at:at + 4 * n])
    meta_lengths = _array("I", head[at + 4 * n:at + 8 * n])
    if len(meta_lengths) != n or sum(runs_count for _, runs_count in runs) != n:
        raise ValueError("inconsistent part head")
    return ts, runs, text_lengths, meta_lengths


class View:
    """A stored part, read lazily: its head at once, its text and metadata sections when first needed."""

    def __init__(self, data: bytes):
        magic, flags, codec, head_size, text_size, _ = DIRECTORY.unpack_from(data)
        if magic != MAGIC:
            raise ValueError("not a log part")
        self.data = memoryview(data)
        self.codec = codec
        self.derived = bool(flags & DERIVED)
        at = DIRECTORY.size
        self._head_at = (at, at + head_size)
        self._text_at = (at + head_size, at + head_size + text_size)
        self._meta_at = (at + head_size + text_size, len(data))

    @cached_property
    def _head(self) -> tuple[array, list[tuple[int, int]], array, array]:
        return parse_head(_decompress(self.data[self._head_at[0]:self._head_at[1]], self.codec))

    @property
    def ts(self) -> array:
        return self._head[0]

    @property
    def runs(self) -> list[tuple[int, int]]:
        return self._head[1]

    @property
    def text_lengths(self) -> array:
        return self._head[2]

    @property
    def meta_lengths(self) -> array:
        return self._head[3]

    @cached_property
    def ids(self) -> list[int]:
        return list(itertools.chain.from_iterable(range(f, f + c) for f, c in self.runs))

    def __len__(self) -> int:
        return len(self.ts)

    @cached_property
    def text_blob(self) -> bytes:
        return _decompress(self.data[self._text_at[0]:self._text_at[1]], self.codec)

    @cached_property
    def meta_blob(self) -> bytes:
        return _decompress(self.data[self._meta_at[0]:self._meta_at[1]], self.codec)

    @cached_property
    def text_ends(self) -> list[int]:
        return list(itertools.accumulate(self.text_lengths))

    @cached_property
    def meta_ends(self) -> list[int]:
        return list(itertools.accumulate(self.meta_lengths))

    def columns(self, keys: array) -> Columns:
        return Columns(self.ts, list(self.runs), self.text_lengths, self.meta_lengths, self.text_blob,
                       self.meta_blob, self.derived, keys)

    def raw_text(self, i: int) -> bytes:
        end = self.text_ends[i]
        line = self.text_blob[end - self.text_lengths[i]:end]
        return line[:-1] if line.endswith(b"\n") else line

    def text(self, i: int) -> str:
        return self.raw_text(i).decode("utf-8", "replace")

    def line(self, i: int) -> tuple[object, dict]:
        """(the line: its JSON object, or its text; its metadata)."""
        text = self.text(i)
        parsed: object = text
        if text.startswith("{"):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                pass
        end = self.meta_ends[i]
        stored = self.meta_blob[end - self.meta_lengths[i]:end]
        try:
            meta = orjson.loads(stored) if stored else {}
        except orjson.JSONDecodeError:
            meta = {}
        if self.derived and text.startswith("{"):  # read as the collector read it (`fields_of`)
            fields = parsed if parsed.__class__ is dict else fields_of(text)
            if fields is not None:
                meta = {**from_object(fields), **meta}
        return parsed, meta if meta.__class__ is dict else {}

    def lines_matching(self, pattern) -> set[int]:
        """The lines where `pattern` (a compiled bytes regex) matches within the line."""
        text = self.text_blob
        if pattern.search(text) is None:  # most parts, for a rare word: the head is not even read
            return set()
        ends, found = self.text_ends, set()
        for match in pattern.finditer(text):
            line = bisect_right(ends, match.start())
            if bisect_right(ends, match.end() - 1) == line:
                found.add(line)
        return found

    def lines_with(self, field: str, value: str) -> set[int]:
        """The lines whose metadata `field` is `value`."""
        needle = orjson.dumps(value)
        found = self._find(self.meta_blob, self.meta_ends, b'"' + field.encode() + b'":' + needle, (b",", b"}"))
        if self.derived:  # JSON lines that hold the value (as text, or a number): their metadata is read from them
            for i in self._find(self.text_blob, self.text_ends, needle[1:-1], None):
                if self.line(i)[1].get(field) == value:
                    found.add(i)
        return found

    @staticmethod
    def _find(blob: bytes, ends: list[int], needle: bytes, followed_by: tuple[bytes, ...] | None) -> set[int]:
        found, at = set(), 0
        while (at := blob.find(needle, at)) >= 0:
            after = at + len(needle)
            if followed_by is None or blob[after:after + 1] in followed_by:
                found.add(bisect_right(ends, at))
            at = after
        return found


def may_hold(keys: array, key_hashes: list[int]) -> bool:
    """Could a part with these key hashes hold lines with every one of these keys?"""
    for h in key_hashes:
        at = bisect_left(keys, h)
        if at == len(keys) or keys[at] != h:
            return False
    return True
