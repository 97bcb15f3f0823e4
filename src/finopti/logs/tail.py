"""Follow one log file by name, as `tail -F` does, keeping track of where each complete line ends.

- Rotation: the file is renamed away (`x.log` -> `x.log.1`, supervisord's scheme) and a new one created:
  the old file is read to its end, then the new one from 0. A line split across the two is joined.
- Truncation: the file got smaller than what was read: start again at 0.
- Restart: a saved position names an inode and an offset; if the file rotated meanwhile, the rotated file
  holding that inode is finished first, then the newer ones, then the file itself.
- A line longer than `max_line_bytes` is skipped (counted in `too_long`) without ever being held whole.
"""

import os
from pathlib import Path
from typing import BinaryIO

CHUNK = 256 * 1024

Position = tuple[int, int]  # (inode, offset just after the last consumed line)


def rotated_siblings(path: Path) -> list[Path]:
    """`x.log.3`, `x.log.2`, `x.log.1`: oldest first."""
    numbered = []
    for sibling in path.parent.glob(path.name + ".*"):
        suffix = sibling.name[len(path.name) + 1:]
        if suffix.isdigit():
            numbered.append((int(suffix), sibling))
    return [p for _, p in sorted(numbered, reverse=True)]


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class FileTail:
    def __init__(self, path: Path, max_line_bytes: int):
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.fh: BinaryIO | None = None
        self.inode = 0
        self.offset = 0  # of the next byte to read from fh
        self.pending: list[BinaryIO] = []  # files to read after fh (it rotated), oldest first
        self.buffer = b""  # bytes of a line not yet complete
        self.discarding = False  # inside a line that is too long
        self.too_long = 0
        self.rotations = 0
        self.truncations = 0

    def _open(self, path: Path) -> BinaryIO | None:
        try:
            return open(path, "rb", buffering=0)  # held open across reads; closed by _use or close
        except FileNotFoundError:
            return None

    def _use(self, fh: BinaryIO, offset: int) -> None:
        if self.fh is not None and self.fh is not fh:
            self.fh.close()
        self.fh, self.inode, self.offset = fh, os.fstat(fh.fileno()).st_ino, offset
        fh.seek(offset)

    def open(self, saved: Position | None) -> bool:
        """Start at `saved` (see the module doc) or at the beginning. False if the file is gone."""
        if saved is not None:
            inode, offset = saved
            chain = [*rotated_siblings(self.path), self.path]
            inodes = [_inode(p) for p in chain]
            if inode in inodes:
                at = inodes.index(inode)
                fh = self._open(chain[at])
                if fh is not None:
                    size = os.fstat(fh.fileno()).st_size
                    self._use(fh, offset if offset <= size else 0)
                    self.pending = [f for f in map(self._open, chain[at + 1:]) if f is not None]
                    return True
        fh = self._open(self.path)
        if fh is None:
            return False
        self._use(fh, 0)
        return True

    def close(self) -> None:
        for fh in [self.fh, *self.pending]:
            if fh is not None:
                fh.close()
        self.fh, self.pending = None, []

    @property
    def idle(self) -> bool:
        """Everything readable has been read, and nothing is waiting for a newline."""
        return not self.pending and not self.buffer

    def _check_file(self) -> bool:
        """At the end of the file: has it been rotated or truncated?"""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed and not re-created yet (or deleted): keep reading what we have
        if st.st_ino != self.inode:
            # Renamed away. If it rotated more than once since, the newer rotated files come first.
            chain = rotated_siblings(self.path)
            inodes = [_inode(p) for p in chain]
            newer = chain[inodes.index(self.inode) + 1:] if self.inode in inodes else []
            self.pending = [f for f in map(self._open, [*newer, self.path]) if f is not None]
            self.rotations += 1
            return True
        if st.st_size < self.offset:
            self._use(self.fh, 0)
            self.buffer, self.discarding = b"", False
            self.truncations += 1
            return True
        return False

    def read(self, max_lines: int) -> tuple[list[bytes], list[int], Position | None]:
        """Up to `max_lines` complete lines (without their newline), the offset just after each (all in the file
        of `self.inode`), and the position just after the last line consumed (skipped too-long lines count as
        consumed). (_, _, None): nothing new is complete."""
        lines: list[bytes] = []
        ends: list[int] = []
        end: Position | None = None
        while self.fh is not None and not lines and end is None:
            data = self.fh.read(CHUNK)
            if not data:
                if not self.pending and not self._check_file():
                    break
                if not self.pending:
                    continue  # truncated: read again from 0
                # Whatever was written to the old file before the switch has been read above; on to the next.
                if not self.fh.read(1):
                    self._use(self.pending.pop(0), 0)
                else:
                    self.fh.seek(self.offset)
                continue
            start = self.offset
            self.offset += len(data)
            parts = data.split(b"\n")
            rest = parts.pop()
            cursor = start
            for i, part in enumerate(parts):
                cursor += len(part) + 1
                if i == 0:
                    if self.discarding:
                        self.discarding, end = False, (self.inode, cursor)
                        continue
                    part, self.buffer = self.buffer + part, b""
                end = (self.inode, cursor)
                if len(part) > self.max_line_bytes:
                    self.too_long += 1
                    continue
                lines.append(part)
                ends.append(cursor)
                if len(lines) >= max_lines and cursor < self.offset:
                    self.fh.seek(cursor)  # give the rest back: the next read starts after this line
                    self.offset, rest = cursor, b""
                    break
            if parts:
                self.buffer = rest
            elif not self.discarding:
                self.buffer += rest
            if len(self.buffer) > self.max_line_bytes:
                self.buffer, self.discarding = b"", True
                self.too_long += 1
        return lines, ends, end
