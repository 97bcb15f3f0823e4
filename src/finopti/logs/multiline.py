"""Multiline entries: a traceback (and any other continuation line) joins the entry it belongs to, and the level of
a plain-text entry is inferred from what it says.

The rule is Promtail's `multiline` stage: a line that matches `firstline` starts an entry; any other line continues
the entry before it; an entry ends at the next first line, after `max_lines` lines, or when no line came for
`max_wait` seconds. The same rule is rendered into the compose bundle's Alloy and Promtail configurations
(`finopti.deploy.observability`), so `firstline` must be a regular expression both Python and Go (RE2) accept.

One addition Promtail cannot express: a JSON object line (`{` first) is a whole entry — structured loggers put a
traceback inside the object — so continuation lines after one start an entry of their own (a raw traceback
printed after the service's last JSON line is its own entry, not glued to that line).
"""

import re
import time
from dataclasses import dataclass

# A first line starts like a log line: JSON, a bracket (`[2026-11-26 ...]`, Envoy), a digit (a date, a time, an
# address), a syslog priority (`<13>`), an upper-case level (`INFO:`, `ERROR `), logfmt (`level=info`, `ts=...`) or a
# syslog date (`Nov 26 12:07:55`). Everything else — indented frames, `Traceback (most recent call last):`,
# `RuntimeError: boom`, `During handling of the above exception...`, `Caused by: ...` — continues an entry.
DEFAULT_FIRSTLINE = (
    r"^(\{|\[|<\d|\d|(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|PANIC|TRACE)\b"
    r"|[a-z_]+=|[A-Z][a-z]{2} [ \d]\d )"
)
DEFAULT_MAX_WAIT = 0.5  # seconds: a program writes its traceback at once; Promtail waits 3 s by default
DEFAULT_MAX_LINES = 500

_LEVEL_WORD = re.compile(r"\b(debug|info|notice|warn|warning|err|error|crit|critical|fatal|panic|severe)\b",
                         re.IGNORECASE)
_WORD_LEVELS = {"warn": "warning", "err": "error", "crit": "critical", "fatal": "critical", "panic": "critical",
                "severe": "critical", "notice": "info"}
_CRITICAL = re.compile(r"\b(CRITICAL|FATAL|PANIC)\b")
_ERROR = re.compile(r"Traceback \(most recent call last\)|\b(?:[A-Z]\w*)?(?:Error|Exception)\b(?=:|\s|$)")
SEVERITY = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}


def infer_level(text: str) -> str:
    """The level of a plain-text entry: a level word near its start (`[warning]`, `ERROR`), raised to `error` by a
    traceback or an exception (`Traceback`, `RuntimeError:`, `Exception in ...`) and to `critical` by
    `CRITICAL`, `FATAL` or `PANIC` anywhere in it."""
    word = _LEVEL_WORD.search(text, 0, 200)
    level = _WORD_LEVELS.get(word[1].lower(), word[1].lower()) if word else "info"
    if _CRITICAL.search(text):
        return "critical"
    if SEVERITY.get(level, 1) < SEVERITY["error"] and _ERROR.search(text):
        return "error"
    return level


BOM = b"\xef\xbb\xbf"
_LEAD = (b"\x00", BOM[:1])


def strip_lead(raw: bytes) -> bytes:
    """A line without what comes before its text that no writer meant: NULs (the hole a writer leaves when it writes
    at its old offset into a file truncated under it) and a byte order mark (a file's first line, from PowerShell,
    .NET, Notepad). A JSON line behind them is still JSON: its trace id indexed, its time and level read."""
    return raw.lstrip(b"\x00").removeprefix(BOM) if raw[:1] in _LEAD else raw


@dataclass(frozen=True)
class MultilineRule:
    firstline: str = DEFAULT_FIRSTLINE
    max_wait: float = DEFAULT_MAX_WAIT
    max_lines: int = DEFAULT_MAX_LINES

    def compiled(self) -> re.Pattern[bytes]:
        return re.compile(self.firstline.encode())


@dataclass
class Entry:
    """Lines joined into one entry; `end` is the file offset just after its last line."""

    text: bytes
    end: int
    last: bytes  # its last line (for the position's anchor)
    read_ns: int  # when its first line was read: the time of an entry without its own
    blank: int = 0  # blank lines dropped from its end


class Joiner:
    """Joins the lines of one file into entries. The last entry is held until the line after it shows it is
    complete, or `max_wait` passes; a position must not pass a held entry (`holding`)."""

    def __init__(self, rule: MultilineRule, firstline: re.Pattern[bytes], max_bytes: int):
        self.rule, self.firstline, self.max_bytes = rule, firstline, max_bytes
        self.lines: list[bytes] = []  # the entry being joined
        self.size = 0
        self.end = 0
        self.read_ns = 0
        self.touched = 0.0  # monotonic time of its last line

    @property
    def holding(self) -> bool:
        return bool(self.lines)

    def feed(self, lines: list[bytes], ends: list[int], now_ns: int) -> list[Entry]:
        out: list[Entry] = []
        first = self.firstline.match
        for line, end in zip(lines, ends, strict=True):
            if line[:1] == b"{" or (line[:1] in _LEAD and strip_lead(line)[:1] == b"{"):  # a JSON line: a whole entry
                if self.lines:
                    out.append(self._take())
                out.append(Entry(line, end, line, now_ns))
                continue
            if self.lines and (first(line) or len(self.lines) >= self.rule.max_lines
                               or self.size + len(line) > self.max_bytes):
                out.append(self._take())
            if not self.lines:
                self.read_ns = now_ns
            self.lines.append(line)
            self.size += len(line) + 1
            self.end = end
        if self.lines:
            self.touched = time.monotonic()
        return out

    def expired(self) -> Entry | None:
        """The held entry, once no line came for `max_wait`."""
        if self.lines and time.monotonic() - self.touched >= self.rule.max_wait:
            return self._take()
        return None

    def _take(self) -> Entry:
        lines = self.lines
        while len(lines) > 1 and not lines[-1].strip():  # blank lines after a traceback belong to nobody
            lines = lines[:-1]
        entry = Entry(b"\n".join(lines), self.end, self.lines[-1], self.read_ns, len(self.lines) - len(lines))
        self.lines, self.size = [], 0
        return entry
