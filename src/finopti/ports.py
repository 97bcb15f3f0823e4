"""Ports: pick free ones, and say who holds a taken one."""

import contextlib
import os
import random
import socket
import tempfile
import time
from pathlib import Path

import psutil

from finopti.errors import PortInUseError

# A picked port is bound later, often by another process (Envoy, APISIX, a service), sometimes a minute later on
# a busy machine. Three things can take it in between, and the server then fails with "address already in use":
# - the source port of any outgoing connection on the machine, which the kernel takes from its ephemeral range
#   (a busy test run opens thousands); so ports are picked below that range;
# - another pick in this process: the OS's own pick (bind to port 0) may hand out the same port twice in a row;
#   so this process never hands a port out twice;
# - another process's pick (two platforms starting at once, a test run beside another): so each pick is
#   reserved for RESERVATION_SECONDS by a file named after the port, which every pick of this user honours.
PICK_FLOOR = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
RESERVATIONS = Path(tempfile.gettempdir()) / f"finopti-ports-{os.getuid()}"
RESERVATION_SECONDS = 600
_handed_out: set[int] = set()
_random = random.Random()  # its own generator: a test seeding `random` must not make processes pick alike


def _ephemeral_floor() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _reserve(port: int) -> bool:
    """False if another pick reserved `port` less than RESERVATION_SECONDS ago; else it is reserved now. Where
    no reservation can be written (no temp dir), every port is free to take."""
    path = RESERVATIONS / str(port)
    for _ in range(2):
        try:
            RESERVATIONS.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < RESERVATION_SECONDS:
                    return False
                path.unlink()  # an old reservation: its port was bound long ago, or never will be
            except FileNotFoundError:
                pass
            continue
        except OSError:
            return True
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _forget_old_reservations() -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for path in RESERVATIONS.iterdir():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime >= RESERVATION_SECONDS:
                    path.unlink()


def _take(host: str, port: int) -> bool:
    if port in _handed_out or not _bindable(host, port) or not _reserve(port):
        return False
    _handed_out.add(port)
    if _random.random() < 0.02:  # now and then, so that the reservations do not pile up
        _forget_old_reservations()
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on or connects from now, and that no pick (of this process, or another's in the
    last minutes) has handed out."""
    ceiling = _ephemeral_floor()
    if ceiling - PICK_FLOOR >= 1000:
        for _ in range(200):
            port = _random.randrange(PICK_FLOOR, ceiling)
            if _take(host, port):
                return port
    # The ephemeral range covers (nearly) every port, or the range below it is full: the OS's pick.
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if _take(host, port):
            return port
    raise PortInUseError(f"no free port found on {host}")


def claim(port: int) -> None:
    """A port chosen elsewhere (declared, or picked by the caller's process) that no pick may hand out: it may
    not be bound yet."""
    _handed_out.add(port)
    _reserve(port)  # when another process picked it, its reservation stands already


def port_owner(port: int) -> str | None:
    """'envoy (pid 123)' for a listening TCP port, when the OS lets us see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except psutil.Error:
        return None
    return None


def ensure_free(host: str, port: int, what: str) -> None:
    """Raise, naming its holder, unless `port` is free; then it is claimed: free now, bound later, no pick may
    hand it out meanwhile."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            owner = port_owner(port)
            held = f" by {owner}" if owner else ""
            raise PortInUseError(
                f"port {port} ({what}) on {host} is already in use{held}; "
                "stop that process or choose another port (FINOPTI_EDGE_PORT for the edge)"
            ) from None
    claim(port)
