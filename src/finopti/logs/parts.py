"""The log store's unit of storage: a part, the lines of one stream over a stretch of time, in columns, compressed.

    header   magic "FLP1", lines n, id runs k, bytes of text, bytes of metadata
    ts       n × int64     each line's time (ns)
    runs     k × (int64, uint32)   the lines' ids: runs of consecutive ids (one per push the part holds)
    lengths  n × uint32    each line's text length, then n × uint32 each line's metadata length
    text     the lines' text (UTF-8), each followed by a newline (a search cannot run from one into the next)
    meta     their structured metadata, each a JSON object (or nothing)

A part written by a push (level 0) is compressed with LZ4, which costs next to nothing; parts of a stream are then
merged into parts of about PART_BYTES (level 1), compressed with zstd (~15× smaller than the log files: the lines
of one stream repeat their keys, services, routes and users) and given a Bloom filter of the trace ids, request
ids and users they hold, so a lookup opens only the parts that may hold its id.
"""

import itertools
import re
import struct
import zlib
from array import array
from bisect import bisect_right
from dataclasses import dataclass

import cramjam
import orjson

MAGIC = b"FLP1"
HEADER = struct.Struct("<4sIIQQ")
RUN = struct.Struct("<qI")
ZSTD_LEVEL = 3
BLOOM_BITS_PER_KEY = 12
BLOOM_HASHES = 5
# The metadata indexed by the Bloom filter, and the prefix of its keys.
INDEXED = {b"trace_id": b"t:", b"request_id": b"r:", b"user": b"u:"}
_INDEXED_VALUES = re.compile(rb'"(trace_id|request_id|user)":"((?:[^"\\]|\\.)*)"')


def key(field: str, value: str) -> bytes:
    """The Bloom key of a metadata value: as its JSON text, as the metadata is stored."""
    return INDEXED[field.encode()] + orjson.dumps(value)[1:-1]


def needle(field: str, value: str) -> bytes:
    """The bytes a line's stored metadata holds when its `field` is `value`."""
    return b'"' + field.encode() + b'":' + orjson.dumps(value)


@dataclass
class Columns:
    """A part's lines, in arrival (id) order."""

    ts: array  # 'q'
    runs: list[tuple[int, int]]  # (first id, count)
    text_lengths: array  # 'I'
    meta_lengths: array  # 'I'
    text: bytes
    meta: bytes

    @property
    def count(self) -> int:
        return len(self.ts)

    @property
    def raw_bytes(self) -> int:
        return len(self.text) + len(self.meta) + 16 * self.count

    @classmethod
    def from_values(cls, first_id: int, ts: list[int], values: list) -> "Columns":
        """Loki values ([ts, line] or [ts, line, {metadata}], already checked) -> columns with ids from first_id."""
        dumps = orjson.dumps
        texts = [value[1].encode() + b"\n" for value in values]
        metas = [dumps(value[2]) if len(value) == 3 and value[2] else b"" for value in values]
        return cls(array("q", ts), [(first_id, len(values))], array("I", map(len, texts)),
                   array("I", map(len, metas)), b"".join(texts), b"".join(metas))

    @classmethod
    def concat(cls, parts: list["Columns"]) -> "Columns":
        """Parts of one stream, in id order, as one."""
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
        return cls(ts, runs, text_lengths, meta_lengths, b"".join(p.text for p in parts),
                   b"".join(p.meta for p in parts))

    def encode(self) -> bytes:
        return b"".join([
            HEADER.pack(MAGIC, self.count, len(self.runs), len(self.text), len(self.meta)),
            self.ts.tobytes(), b"".join(RUN.pack(first, count) for first, count in self.runs),
            self.text_lengths.tobytes(), self.meta_lengths.tobytes(), self.text, self.meta,
        ])

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> "Columns":
        view = memoryview(raw)
        magic, n, k, text_size, meta_size = HEADER.unpack_from(view)
        if magic != MAGIC:
            raise ValueError("not a log part")
        at = HEADER.size
        ts = _array("q", view[at:at + 8 * n])
        at += 8 * n
        runs = [RUN.unpack_from(view, at + i * RUN.size) for i in range(k)]
        at += k * RUN.size
        text_lengths = _array("I", view[at:at + 4 * n])
        at += 4 * n
        meta_lengths = _array("I", view[at:at + 4 * n])
        at += 4 * n
        text = bytes(view[at:at + text_size])
        meta = bytes(view[at + text_size:at + text_size + meta_size])
        return cls(ts, runs, text_lengths, meta_lengths, text, meta)

    def indexed_keys(self) -> set[bytes]:
        """The Bloom keys of the trace ids, request ids and users of these lines."""
        return {INDEXED[name] + value for name, value in _INDEXED_VALUES.findall(self.meta)}


def _array(typecode: str, data: memoryview) -> array:
    out = array(typecode)
    out.frombytes(data)
    return out


def compress(columns: Columns, level: int) -> bytes:
    raw = columns.encode()
    if level == 0:
        return bytes(cramjam.lz4.compress_block(raw))
    return bytes(cramjam.zstd.compress(raw, ZSTD_LEVEL))


def decompress(data: bytes, level: int) -> Columns:
    raw = cramjam.lz4.decompress_block(data) if level == 0 else cramjam.zstd.decompress(data)
    return Columns.decode(bytes(raw))


class View:
    """A decoded part, read lazily: ids, offsets, and each line's text and metadata on demand."""

    def __init__(self, columns: Columns):
        self.columns = columns
        self.ts = columns.ts
        self.ids = list(itertools.chain.from_iterable(range(f, f + c) for f, c in columns.runs))
        self.text_ends = list(itertools.accumulate(columns.text_lengths))
        self.meta_ends = list(itertools.accumulate(columns.meta_lengths))

    def __len__(self) -> int:
        return len(self.ids)

    def text(self, i: int) -> str:
        end = self.text_ends[i]
        return self.columns.text[end - self.columns.text_lengths[i]:end - 1].decode()

    def meta(self, i: int) -> bytes:
        end = self.meta_ends[i]
        return self.columns.meta[end - self.columns.meta_lengths[i]:end]

    def lines_matching(self, pattern) -> set[int]:
        """The lines where `pattern` (a compiled bytes regex) matches within the line."""
        ends, found = self.text_ends, set()
        for match in pattern.finditer(self.columns.text):
            line = bisect_right(ends, match.start())
            if bisect_right(ends, match.end() - 1) == line:
                found.add(line)
        return found

    def lines_with_meta(self, needle: bytes) -> set[int]:
        """The lines whose metadata holds `needle` (see `needle()`), followed by `,` or `}`."""
        found, meta, ends, at = set(), self.columns.meta, self.meta_ends, 0
        while (at := meta.find(needle, at)) >= 0:
            after = at + len(needle)
            if meta[after:after + 1] in (b",", b"}"):
                found.add(bisect_right(ends, at))
            at = after
        return found


class Bloom:
    """A Bloom filter: `BLOOM_BITS_PER_KEY` bits and `BLOOM_HASHES` probes per key (~0.5% false positives)."""

    def __init__(self, bits: bytes):
        self.bits = bits
        self.mask = len(bits) * 8 - 1

    @staticmethod
    def _probes(key: bytes, mask: int) -> list[int]:
        h1, h2 = zlib.crc32(key), zlib.crc32(key, 0x9E3779B9) | 1
        return [(h1 + i * h2) & mask for i in range(BLOOM_HASHES)]

    @classmethod
    def build(cls, keys: set[bytes]) -> "Bloom":
        size = 64
        while size < len(keys) * BLOOM_BITS_PER_KEY:
            size <<= 1
        bits, mask = bytearray(size // 8), size - 1
        crc32 = zlib.crc32
        for k in keys:
            h1, h2 = crc32(k), crc32(k, 0x9E3779B9) | 1
            for i in range(BLOOM_HASHES):
                p = (h1 + i * h2) & mask
                bits[p >> 3] |= 1 << (p & 7)
        return cls(bytes(bits))

    def __contains__(self, key: bytes) -> bool:
        bits = self.bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._probes(key, self.mask))
