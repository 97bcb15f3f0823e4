"""What a log query asks for, and which lines of a part answer it.

Lines are ordered by (time, id): the id, given in arrival order, breaks ties between lines of the same time, so a
cursor `<ts_ns>:<id>` names a place in that order and paging from it neither skips nor repeats a line.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import regex

from finopti.logs.parts import View

Cursor = tuple[int, int]  # (ts_ns, id)


@dataclass
class LogQuery:
    start: int | None = None  # ns, inclusive
    end: int | None = None  # ns, exclusive
    services: Sequence[str] = ()
    levels: Sequence[str] = ()
    trace_id: str | None = None
    request_id: str | None = None
    user: str | None = None
    text: str | None = None
    limit: int = 100
    direction: str = "backward"  # newest first, as Loki
    cursor: Cursor | None = None  # exclusive: lines after it in the direction of the query

    @property
    def backward(self) -> bool:
        return self.direction == "backward"

    def metadata(self) -> list[tuple[str, str]]:
        """The metadata a line must carry: (field, value)."""
        return [(f, v) for f, v in (("trace_id", self.trace_id), ("request_id", self.request_id),
                                    ("user", self.user)) if v]


def format_cursor(cursor: Cursor) -> str:
    return f"{cursor[0]}:{cursor[1]}"


def parse_cursor(text: str) -> Cursor:
    ts, sep, line_id = text.partition(":")
    if not sep or not text.isascii() or not ts.lstrip("-").isdigit() or not line_id.isdigit():
        raise ValueError(f"expected <ts_ns>:<id>, got {text!r}")
    return int(ts), int(line_id)


_SEPARATOR = rb"[^0-9A-Za-z]+"
_NOT_AFTER = rb"(?<![0-9A-Za-z])"
_NOT_BEFORE = rb"(?![0-9A-Za-z])"


@dataclass(frozen=True)
class TextPattern:
    """A phrase to find, and its longest word alone: a literal, found several times faster than the phrase (whose
    first word may be short and common), so a part without it is passed over at that speed."""

    phrase: regex.Pattern
    longest: regex.Pattern

    # concurrent: the regex module lets other threads run meanwhile (the store scans parts on two threads).
    def finditer(self, text: bytes):
        return self.phrase.finditer(text, concurrent=True)

    def search(self, text: bytes):
        if self.longest.search(text, concurrent=True) is None:
            return None
        return self.phrase.search(text, concurrent=True)


def _json_escape(c: str) -> bytes:
    """`é` as an ASCII JSON writer puts it (`\\u00e9`; a surrogate pair beyond the BMP), as a pattern."""
    code = ord(c)
    if code < 0x10000:
        return rb"\\u%04x" % code
    code -= 0x10000
    return rb"\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


def _word(word: str) -> bytes:
    """A word as a pattern of bytes. A letter beyond ASCII is found in either case (`é`, `É`) and in either form a
    line may hold it: UTF-8, or the `\\u00e9` of a JSON writer that escapes it (Python's json.dumps does, so a
    service's `café` was never found)."""
    if word.isascii():
        return regex.escape(word.encode())
    out = []
    for c in word:
        if c.isascii():
            out.append(regex.escape(c.encode()))
            continue
        forms = sorted({v for v in (c, c.lower(), c.upper()) if len(v) == 1})  # not `ß` -> `SS`
        out.append(b"(?:" + b"|".join(f for v in forms for f in (regex.escape(v.encode()), _json_escape(v))) + b")")
    return b"".join(out)


def text_pattern(text: str) -> TextPattern | None:
    """What a person types -> the words in order, whole words, case-insensitive, anywhere in the line:
    `us-central1-a` is the phrase "us central1 a"; a trailing `*` makes the last word a prefix (`instance*`).
    None when there is no word to look for."""
    words = "".join(c if c.isalnum() else " " for c in text).split()
    if not words:
        return None
    body = _SEPARATOR.join(map(_word, words))
    tail = b"" if text.rstrip().endswith("*") else _NOT_BEFORE
    longest = _word(max(words, key=len))
    return TextPattern(regex.compile(_NOT_AFTER + body + tail, regex.IGNORECASE),
                       regex.compile(longest, regex.IGNORECASE))


def matching(view: View, q: LogQuery, pattern: TextPattern | None, low: int | None, high: int | None,
             after_id: int = 0) -> list[int]:
    """The indexes of the lines of `view` that answer `q` within [low, high) and after `after_id`."""
    chosen: set[int] | None = None
    for field, value in q.metadata():
        found = view.lines_with(field, value)
        chosen = found if chosen is None else chosen & found
        if not chosen:
            return []
    if pattern is not None:
        found = view.lines_matching(pattern)
        chosen = found if chosen is None else chosen & found
        if not chosen:
            return []
    candidates = sorted(chosen) if chosen is not None else range(len(view))
    ts, ids, cursor = view.ts, view.ids, q.cursor
    if low is None and high is None and cursor is None and not after_id:
        return list(candidates)
    low = low if low is not None else -(1 << 63)
    high = high if high is not None else 1 << 63
    out = [i for i in candidates if low <= ts[i] < high and ids[i] > after_id]
    if cursor is not None:
        if q.backward:
            out = [i for i in out if (ts[i], ids[i]) < cursor]
        else:
            out = [i for i in out if (ts[i], ids[i]) > cursor]
    return out
