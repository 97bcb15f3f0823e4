"""One operation at a time on a platform: `up`, `down`, `mesh apply`, drills, `pki rotate` and the policy service's
re-render each rewrite the state dir and then wait for the gateway to serve what they wrote. Two at once would
interleave their files (one's wait then sees the other's versions, one's drills are lost, a half-written set is
served), so each holds an exclusive lock on `operation.lock` in the state dir; a second one waits for the first
and says so. The lock is the kernel's (flock): an operation killed at any moment (Ctrl-C, SIGTERM, SIGKILL)
releases it, so no stale lock survives its holder."""

import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from finopti.errors import PlatformStateError
from finopti.paths import unusable

LOCK_FILE = "operation.lock"
WAIT_SECONDS = 180.0  # longer than the slowest operation (`up` waits up to 90 s for health)
# (lock file, thread) -> depth: an operation may run another in the same thread (`up` failing runs `down`).
_held: dict[tuple[Path, int], int] = {}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def holder(root: Path) -> str:
    """Who holds (or last held) the lock, as it wrote itself in: '`finopti mesh apply` (pid 123)'."""
    try:
        return (root / LOCK_FILE).read_text().strip() or "another operation"
    except OSError:
        return "another operation"


@contextmanager
def operation(root: Path, what: str, wait: float = WAIT_SECONDS, on_wait: Callable[[str], None] = _say,
              create: bool = False) -> Iterator[None]:
    """Hold the platform's operation lock for `what` (e.g. '`finopti mesh apply`'); waits up to `wait` seconds for
    another operation to finish, then raises PlatformStateError naming it. A state dir that does not exist is made
    only with `create` (`up`): no other operation has anything to change there, nor litters a directory."""
    path = (root / LOCK_FILE).resolve()
    key = (path, threading.get_ident())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    if not root.exists() and not create:
        yield
        return
    if root.exists() and not root.is_dir():
        raise unusable(root, "is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise unusable(root, exc.strerror or str(exc)) from None
    try:
        if not _try_lock(fd):
            other = holder(root)
            on_wait(f"waiting for {other} to finish before {what} runs…")
            deadline = time.monotonic() + wait
            while not _try_lock(fd):
                if time.monotonic() > deadline:
                    raise PlatformStateError(f"{other} still runs after {wait:.0f}s, so {what} did not start; "
                                             f"nothing was changed (lock: {path})")
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()})\n".encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing releases the lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
