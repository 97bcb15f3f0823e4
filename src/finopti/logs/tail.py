"""Follow one log file by name, as `tail -F` does, through rotation and truncation, keeping track of where each
complete line ends.

A file is known by its device and inode *and* by its content: a fingerprint of its first bytes (up to 1 KiB, as
Filebeat and Vector do) and the bytes just before the read offset. Inodes alone are not enough: a deleted file's
inode is reused at once by the next file created, and a truncated file keeps its inode.

- Rename rotation (`x.log` -> `x.log.1`, a new `x.log`): the old file is read to its end and then still followed
  for `rotate_wait` seconds, because a writer may still hold it open (a program that reopens its log only on its
  next line, logrotate's `delaycompress`...). If it ended mid-line (supervisord rotates by size, mid-line), the
  rest of that line is the start of the new file: they are joined.
- Truncation, seen as a size below the offset *or* changed first bytes or changed bytes before the offset (a
  truncation followed at once by new lines, or a file replaced by another of the same size): read again from 0.
  If a rotated sibling holds our content up to the offset (`copytruncate`: `cp x.log x.log.1; truncate x.log`),
  the lines written between our last read and the copy are read from the copy first.
- Restart: a saved position names a file by device, inode and fingerprint; if the file rotated meanwhile, the
  rotated file holding that position (renamed, or a copy) is finished first, then the newer ones, then the file.
- A line longer than `max_line_bytes` is skipped (counted in `too_long`) without ever being held whole.
"""

import hashlib
import os
import time
from dataclasses import dataclass, field
from itertools import accumulate, count
from operator import add
from pathlib import Path
from typing import BinaryIO

CHUNK = 256 * 1024
FINGERPRINT_BYTES = 1024
WINDOW_BYTES = 64  # bytes before the read offset compared at each look
ANCHOR_BYTES = 64  # bytes before a saved position compared at restart
ROTATE_WAIT = 5.0  # how long a rotated file is still followed after its last new bytes
RECENT_NS = 100_000_000  # a file modified this recently is checked even if its size and times look unchanged
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True)
class Position:
    """Where the next line to deliver starts in one file, and what that file is."""

    dev: int
    inode: int
    offset: int
    fp: str = ""  # digest of the file's first fp_len bytes
    fp_len: int = 0
    anchor: str = ""  # digest of the anchor_len bytes just before offset (the end of the last line); "" if unknown
    anchor_len: int = 0

    def to_json(self) -> dict:
        return {"dev": self.dev, "inode": self.inode, "offset": self.offset, "fp": self.fp, "fp_len": self.fp_len,
                "anchor": self.anchor, "anchor_len": self.anchor_len}

    @classmethod
    def from_json(cls, doc: object) -> "Position":
        """Also the older `{"inode", "offset"}` and `[inode, offset]` forms (no fingerprint: the inode is trusted)."""
        if isinstance(doc, list | tuple):
            return cls(0, int(doc[0]), int(doc[1]))
        if not isinstance(doc, dict):
            raise TypeError(f"expected a position object, got {type(doc).__name__}")
        return cls(int(doc.get("dev", 0)), int(doc["inode"]), int(doc["offset"]), str(doc.get("fp", "")),
                   int(doc.get("fp_len", 0)), str(doc.get("anchor", "")), int(doc.get("anchor_len", 0)))


def rotated_siblings(path: Path) -> list[Path]:
    """Rotated files of `path`, oldest first: `x.log-20261126` (dated, in name order), then `x.log.3`, `x.log.2`,
    `x.log.1`. Compressed ones are skipped: their bytes are not the file's."""
    dated, numbered = [], []
    for sibling in path.parent.glob(path.name + "[.-]*"):
        suffix = sibling.name[len(path.name) + 1:]
        if sibling.name.endswith(COMPRESSED) or suffix.endswith(".tmp") or not sibling.is_file():
            continue
        if suffix.isascii() and suffix.isdigit():
            numbered.append((-int(suffix), sibling))
        else:
            dated.append((sibling.name, sibling))
    return [p for _, p in sorted(dated)] + [p for _, p in sorted(numbered)]


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _pread(fd: int, size: int, offset: int) -> bytes:
    return os.pread(fd, size, offset) if size > 0 else b""


@dataclass(eq=False)
class OpenFile:
    """One file being read: the one at the path, or a rotated one still followed."""

    fh: BinaryIO
    key: str  # its key in the positions: the path, or `path@dev:inode` once rotated away
    dev: int
    inode: int
    offset: int = 0  # of the next byte to read
    prefix: bytes = b""  # the file's bytes [0, min(FINGERPRINT_BYTES, offset))
    window: bytes = b""  # the bytes just before offset
    buffer: bytes = b""  # a line not complete yet
    discarding: bool = False  # inside a line that is too long
    seen: tuple = ()  # (size, mtime, ctime) when last checked
    rotated: bool = False  # no longer at the path: read to its end, then followed for ROTATE_WAIT
    last_growth: float = field(default_factory=time.monotonic)
    forget_on_emit: list[str] = field(default_factory=list)  # keys to forget once a line of this file is out

    @classmethod
    def at(cls, fh: BinaryIO, key: str, offset: int) -> "OpenFile":
        st = os.fstat(fh.fileno())
        f = cls(fh, key, st.st_dev, st.st_ino, offset)
        f.prefix = _pread(fh.fileno(), min(FINGERPRINT_BYTES, offset), 0)
        f.window = _pread(fh.fileno(), min(WINDOW_BYTES, offset), offset - min(WINDOW_BYTES, offset))
        return f

    def identity(self) -> tuple[int, int, str, int]:
        return self.dev, self.inode, digest(self.prefix), len(self.prefix)

    def changed(self) -> bool:
        """Is this no longer the content we were reading (truncated, or rewritten in place)? Two small reads, only
        when the file's size or times moved since the last look (or it was modified within the last 100 ms: a
        truncation and rewrite within one clock tick leaves both times as they were)."""
        st = os.fstat(self.fh.fileno())
        token = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if token == self.seen and time.time_ns() - st.st_mtime_ns > RECENT_NS:
            return False
        if st.st_size < self.offset:
            return True
        fd = self.fh.fileno()
        if self.prefix and _pread(fd, len(self.prefix), 0) != self.prefix:
            return True
        if self.window and _pread(fd, len(self.window), self.offset - len(self.window)) != self.window:
            return True
        self.seen = token
        return False

    def advance(self, data: bytes) -> None:
        """`data` was read at offset."""
        if len(self.prefix) < FINGERPRINT_BYTES:
            self.prefix += data[: FINGERPRINT_BYTES - len(self.prefix)]
        self.window = (self.window + data[-WINDOW_BYTES:])[-WINDOW_BYTES:]
        self.offset += len(data)

    def give_back(self, offset: int) -> None:
        """Read again from `offset` (before the end of what was read)."""
        self.fh.seek(offset)
        self.offset = offset
        self.prefix = self.prefix[:offset]
        self.window = _pread(self.fh.fileno(), min(WINDOW_BYTES, offset), offset - min(WINDOW_BYTES, offset))

    def restart(self) -> None:
        """The content we read is gone (truncated): from 0, with nothing held."""
        self.offset, self.prefix, self.window, self.buffer, self.discarding, self.seen = 0, b"", b"", b"", False, ()
        self.fh.seek(0)

    def close(self) -> None:
        self.fh.close()


@dataclass
class Chunk:
    """Complete lines of one file, the offset just after each, and what to record once they are delivered."""

    key: str
    lines: list[bytes]
    ends: list[int]
    identity: tuple[int, int, str, int]  # dev, inode, fingerprint, fingerprint length
    end: int  # offset just after the last line consumed (skipped too-long lines count as consumed)
    last: bytes | None  # the last line consumed (for the position's anchor); None when it was skipped
    forget: list[str]  # position keys no longer needed (a rotated file that is finished)

    def position(self, end: int | None = None, last: bytes | None = None) -> Position:
        """The position after the line ending at `end` (default: the chunk's end)."""
        if end is None:
            end, last = self.end, self.last
        dev, inode, fp, fp_len = self.identity
        return Position(dev, inode, end, fp, fp_len, *anchor_of(last))


def anchor_of(line: bytes | None) -> tuple[str, int]:
    """The digest and length of a line's last bytes with its newline: what lies just before the offset after it."""
    if line is None:
        return "", 0
    tail = line[-(ANCHOR_BYTES - 1):] + b"\n"
    return digest(tail), len(tail)


def _without_holes(parts: list[bytes], rest: bytes, continuing: bool) -> tuple[list[bytes], bytes]:
    """Lines without the NULs they start with: a writer that does not append (no O_APPEND) writes at its old offset
    into a file truncated under it (`copytruncate`), leaving a hole of NULs as long as the file was before its next
    line — one "line" far over the limit, which was skipped whole, the real line at its end with it. Only leading
    NULs go (the first part's only when it starts a line), so a line's last bytes, its anchor, stay the file's."""
    parts = [p.lstrip(b"\x00") if i or not continuing else p for i, p in enumerate(parts)]
    return parts, rest.lstrip(b"\x00") if parts or not continuing else rest


def _open(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb", buffering=0)  # held open across reads; closed by FileTail
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


def matches(fh: BinaryIO, saved: Position, *, same_inode: bool) -> bool:
    """Does this open file hold the saved position's content up to its offset?"""
    st = os.fstat(fh.fileno())
    if same_inode and (st.st_ino != saved.inode or (saved.dev and st.st_dev != saved.dev)):
        return False
    if st.st_size < saved.offset:
        return False
    fd = fh.fileno()
    if saved.fp and digest(_pread(fd, saved.fp_len, 0)) != saved.fp:
        return False
    if saved.anchor and (saved.anchor_len > saved.offset
                         or digest(_pread(fd, saved.anchor_len, saved.offset - saved.anchor_len)) != saved.anchor):
        return False
    return True


class FileTail:
    """Every file that is or was at `path`: the current one, and rotated ones still being read, oldest first."""

    def __init__(self, path: Path, max_line_bytes: int, rotate_wait: float = ROTATE_WAIT):
        self.path = path
        self.key = str(path)
        self.max_line_bytes = max_line_bytes
        self.rotate_wait = rotate_wait
        self.files: list[OpenFile] = []  # oldest first; the last is at the path unless it is rotated
        self.forgotten: list[str] = []
        self.too_long = 0
        self.rotations = 0
        self.truncations = 0

    # --- starting --------------------------------------------------------------------------------------------

    def open(self, saved: dict[str, Position] | None = None) -> bool:
        """Start where `saved` (this path's positions: `path` and `path@dev:inode` keys) says, or at the
        beginning. False if there is no file at the path."""
        chain = [*rotated_siblings(self.path), self.path]
        handles: list[BinaryIO | None] = []
        try:
            for p in chain:
                handles.append(_open(p))
        except OSError:  # no file descriptor left (EMFILE): nothing kept open, tried again at the next look
            for fh in handles:
                if fh is not None:
                    fh.close()
            raise
        starts: dict[int, OpenFile] = {}
        # The furthest first: two keys naming one file (it rotated before the newer key was saved) resume once.
        for key, position in sorted((saved or {}).items(), key=lambda kv: -kv[1].offset):
            index = self._locate(handles, position, taken=starts)
            if index is not None:
                starts[index] = OpenFile.at(handles[index], key, position.offset)
        first = min(starts) if starts else len(chain) - 1
        for index in range(first, len(chain)):
            f = starts.get(index)
            if f is None and handles[index] is not None:
                f = OpenFile.at(handles[index], "", 0)
            if f is None:
                continue
            f.rotated = index < len(chain) - 1
            f.key = self._rotated_key(f) if f.rotated else self.key
            f.fh.seek(f.offset)
            self.files.append(f)
        for index, fh in enumerate(handles):
            if fh is not None and index < first:
                fh.close()
        return bool(self.files) and not self.files[-1].rotated

    @staticmethod
    def _locate(handles: list[BinaryIO | None], position: Position, taken: dict) -> int | None:
        """The index of the file that holds `position`: the same inode with the same content, else (with a
        fingerprint) a copy of it (`copytruncate`)."""
        for same_inode in (True, False) if position.fp else (True,):
            for index in range(len(handles) - 1, -1, -1):
                fh = handles[index]
                if fh is not None and index not in taken and matches(fh, position, same_inode=same_inode):
                    return index
        return None

    def _rotated_key(self, f: OpenFile) -> str:
        return f"{self.key}@{f.dev}:{f.inode}"

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []

    @property
    def idle(self) -> bool:
        """Everything readable has been read, nothing waits for a newline, and no rotated file is followed."""
        return all(not f.rotated and not f.buffer for f in self.files)

    def keys(self) -> list[str]:
        return [f.key for f in self.files]

    # --- following -------------------------------------------------------------------------------------------

    def _check_path(self) -> None:
        """Has the path been given another file (renamed away, or deleted and re-created)? If it rotated more than
        once since the last look, the rotated files newer than ours come first."""
        current = self.files[-1] if self.files and not self.files[-1].rotated else None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # renamed and not re-created yet (or deleted): keep reading what we have
        if current is not None and (st.st_dev, st.st_ino) == (current.dev, current.inode):
            return
        if any((st.st_dev, st.st_ino) == (f.dev, f.inode) for f in self.files):
            return  # a rotated file we follow was moved back: nothing new
        fh = _open(self.path)
        if fh is None:
            return
        try:
            newer = self._newer_siblings()
        except OSError:  # no file descriptor left: nothing changed, looked at again at the next read
            fh.close()
            raise
        if current is not None:
            current.rotated = True
            current.key = self._rotated_key(current)
            current.last_growth = time.monotonic()
            self.rotations += 1
        for sibling in newer:
            f = OpenFile.at(sibling, "", 0)
            f.rotated, f.key = True, self._rotated_key(f)
            self.files.append(f)
            self.rotations += 1
        self.files.append(OpenFile.at(fh, self.key, 0))

    def _newer_siblings(self) -> list[BinaryIO]:
        """Rotated files newer than the newest file we read (it rotated again before we looked)."""
        if not self.files:
            return []
        chain = rotated_siblings(self.path)
        ids = [_file_id(p) for p in chain]
        newest = (self.files[-1].dev, self.files[-1].inode)
        if newest not in ids:
            return []
        known = {(f.dev, f.inode) for f in self.files}
        out = []
        try:
            for path, file_id in zip(chain[ids.index(newest) + 1:], ids[ids.index(newest) + 1:], strict=True):
                fh = _open(path) if file_id not in known else None
                if fh is None:
                    continue
                st = os.fstat(fh.fileno())
                if (st.st_dev, st.st_ino) != file_id:  # rotated again meanwhile
                    fh.close()
                    continue
                out.append(fh)
        except OSError:
            for fh in out:
                fh.close()
            raise
        return out

    def _truncated(self, f: OpenFile) -> None:
        """`f` no longer holds what we read. If a rotated sibling holds it up to our offset (a copy), the rest is
        read from there; `f` is read again from 0. (No file descriptor left to look at the siblings: OSError, and
        nothing changed; the next read sees the truncation again.)"""
        if f.offset and f.prefix:
            saved = Position(f.dev, f.inode, f.offset, digest(f.prefix), len(f.prefix), "")
            for sibling in reversed(rotated_siblings(self.path)):
                fh = _open(sibling)
                if fh is None:
                    continue
                st = os.fstat(fh.fileno())
                known = any((st.st_dev, st.st_ino) == (o.dev, o.inode) for o in self.files)
                if not known and matches(fh, saved, same_inode=False) and (
                        not f.window or _pread(fh.fileno(), len(f.window), f.offset - len(f.window)) == f.window):
                    copy = OpenFile(fh, "", st.st_dev, st.st_ino, f.offset, f.prefix, f.window, f.buffer,
                                    f.discarding, rotated=True)
                    copy.key = self._rotated_key(copy)
                    fh.seek(f.offset)
                    self.files.insert(self.files.index(f), copy)
                    break
                fh.close()
        self.truncations += 1
        f.restart()

    def read(self, max_lines: int) -> Chunk | None:
        """Up to `max_lines` complete lines of one file (without their newline), oldest file first; None when
        nothing new is complete."""
        self._check_path()
        index = 0
        while index < len(self.files):
            f = self.files[index]
            if f.changed():
                self._truncated(f)
                index = 0  # a copy of what it held, if found, now comes before it
                continue
            chunk = self._read_file(f, max_lines)
            if chunk is not None:
                return chunk
            if not f.rotated:
                index += 1
                continue
            newer = self.files[index + 1] if index + 1 < len(self.files) else None
            if f.buffer and newer is not None:
                # Rotated mid-line: the rest of the line starts the next file, which waits (unread) while an
                # older file holds half a line. The old file is still followed for rotate_wait: a writer that holds
                # it (logrotate's `create`, until its reopen) may yet write the rest there, and lines after it,
                # which were lost when the file was let go here.
                newer.buffer, newer.discarding = f.buffer + newer.buffer, f.discarding or newer.discarding
                newer.forget_on_emit.append(f.key)
                f.buffer, f.discarding, f.last_growth = b"", False, time.monotonic()
                continue
            if not f.buffer and time.monotonic() - f.last_growth >= self.rotate_wait:
                self.forgotten.append(f.key)
                self._drop(f)
                continue
            if f.buffer:  # half a line and no newer file yet: its rest may still come, here or in a new file
                return None
            index += 1
        return None

    def _drop(self, f: OpenFile) -> None:
        self.files.remove(f)
        f.close()

    def _read_file(self, f: OpenFile, max_lines: int) -> Chunk | None:
        lines: list[bytes] = []
        ends: list[int] = []
        end: int | None = None
        last: bytes | None = None
        while not lines and end is None:
            data = f.fh.read(CHUNK)
            if not data:
                return None
            if f.changed():  # truncated between the look and the read: these bytes may be the new content's
                f.fh.seek(f.offset)
                return None
            start = f.offset
            f.advance(data)
            f.last_growth = time.monotonic()
            parts = data.split(b"\n")
            rest = parts.pop()
            # Each line's end (in the file), with no loop in Python; the first line is what was held plus its rest.
            all_ends = list(map(add, accumulate(map(len, parts)), count(start + 1)))
            if b"\x00" in data:
                parts, rest = _without_holes(parts, rest, continuing=bool(f.buffer) or f.discarding)
            if parts and not f.discarding:
                if f.buffer:
                    parts[0], f.buffer = f.buffer + parts[0], b""
                if max(map(len, parts)) <= self.max_line_bytes:  # the common case
                    if len(parts) > max_lines and all_ends[max_lines - 1] < f.offset:
                        lines, ends = parts[:max_lines], all_ends[:max_lines]
                        f.give_back(ends[-1])  # the next read starts after the last line taken
                        rest = b""
                    else:
                        lines, ends = parts, all_ends
                    end, last = ends[-1], lines[-1]
                    f.buffer = rest
                    if len(f.buffer) > self.max_line_bytes:
                        f.buffer, f.discarding = b"", True
                        self.too_long += 1
                    continue
            for i, part in enumerate(parts):  # a line too long, or the end of one being skipped
                cursor = all_ends[i]
                if i == 0 and f.discarding:
                    f.discarding, end, last = False, cursor, None
                    continue
                end = cursor
                if len(part) > self.max_line_bytes:
                    self.too_long += 1
                    last = None
                    continue
                lines.append(part)
                ends.append(cursor)
                last = part
                if len(lines) >= max_lines and cursor < f.offset:
                    f.give_back(cursor)  # the next read starts after this line
                    rest = b""
                    break
            if parts:
                f.buffer = rest
            elif not f.discarding:
                f.buffer += rest
            if len(f.buffer) > self.max_line_bytes:
                f.buffer, f.discarding = b"", True
                self.too_long += 1
        forget, f.forget_on_emit = f.forget_on_emit, []
        return Chunk(f.key, lines, ends, f.identity(), end, last, forget)

    def take_forgotten(self) -> list[str]:
        keys, self.forgotten = self.forgotten, []
        return keys
