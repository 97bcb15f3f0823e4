"""The gateway replicas' shared rate-limit counter store, for tests: a Redis-protocol server on loopback (the
chart runs Valkey; here `valkey-server` or `redis-server` where installed, else Debian's redis-tools, whose
`redis-check-rdb` is the same Redis binary and acts as the server when started under that name)."""

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from finopti.ports import free_port

LOOPBACK = "127.0.0.1"


class StoreUnavailable(RuntimeError):
    """No Redis-protocol server on this machine."""


def find_server() -> tuple[str, str]:
    """(executable, the name to start it under)."""
    for name in ("valkey-server", "redis-server"):
        if path := shutil.which(name):
            return path, name
    if path := shutil.which("redis-check-rdb"):
        return path, "redis-server"  # Redis picks its role from argv[0]
    raise StoreUnavailable("no valkey-server, redis-server or redis-check-rdb (Debian package redis-tools; "
                           "`make system-deps` installs it)")


class CounterStore:
    """One server with no persistence (counters only, as the chart's store), started and stopped by its id."""

    def __init__(self, directory: Path):
        self.executable, self.name = find_server()
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def start(self, timeout: float = 30.0) -> "CounterStore":
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "store.log").open("ab")
        self.process = subprocess.Popen(
            [self.name, "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            executable=self.executable, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}): "
                                   f"{(self.directory / 'store.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not answer PING within {timeout:.0f}s")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
