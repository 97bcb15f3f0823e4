"""Ports: pick free ones, and say who holds a taken one."""

import socket

import psutil

from finopti.errors import PortInUseError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
