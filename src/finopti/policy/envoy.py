"""Turn what Envoy's HTTP ext_authz sends into the policy input.

The input is the document Apache APISIX's `opa` plugin sends (so the same .rego runs behind either
gateway) plus a ``finopti`` object with what the local gateway knows for sure:

    {"type": "http",
     "request": {"method", "path", "headers", "query", "scheme", "host", "port"},
     "var": {"remote_addr", "server_port", "timestamp"},
     "route": {"name": route},
     "finopti": {"user", "groups", "source", "route", "listener"}}
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from finopti.claims import groups_from_header
from finopti.meshtls import source_from_xfcc  # noqa: F401 - part of this module's API

# Credentials never enter the input: the policy needs the verified identity headers, not tokens,
# and inputs end up in logs and in OPA's decision log.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


@dataclass(frozen=True)
class Route:
    name: str
    listener: str  # "edge" | "mesh"
    path_prefix: str
    exact: bool = False  # match the whole path, not a prefix


def as_route(r: Any) -> Route:
    """A Route from a Route, a routes.json-style dict, or mesh.yaml's model (``path``, ``exact``)."""
    if isinstance(r, Route):
        return r
    get = r.get if isinstance(r, dict) else lambda key, default=None: getattr(r, key, default)
    return Route(get("name"), get("listener"), get("path_prefix") or get("path"), bool(get("exact", False)))


def load_route_table(policy_dir: Path) -> list[Route]:
    """Routes from ``routes.json``: ``{"finopti": {"routes": {name: {listener, path_prefix, exact}}}}``."""
    doc = json.loads((Path(policy_dir) / "routes.json").read_text())
    routes = doc.get("finopti", {}).get("routes", {})
    return [as_route({"name": name, **r}) for name, r in routes.items()]


def match_route(routes: Iterable[Any], listener: str | None, path: str) -> str | None:
    """Name of the route serving ``path`` on ``listener``, chosen as the gateway's Envoy does.

    The gateway lists exact routes first, then prefixes longest first, and Envoy takes the first
    match; the same order here keeps the policy's route the one Envoy forwards to. Matching is on
    the path without its query string.
    """
    return RouteIndex(routes).match(listener, path)


class RouteIndex:
    """The route table sorted once, per listener, in the gateway's order; `match` is then a scan."""

    def __init__(self, routes: Iterable[Any]):
        ordered = sorted((as_route(r) for r in routes), key=lambda r: (not r.exact, -len(r.path_prefix)))
        self._all = ordered
        self._by_listener: dict[str, list[Route]] = {}
        for route in ordered:
            self._by_listener.setdefault(route.listener, []).append(route)

    def match(self, listener: str | None, path: str) -> str | None:
        path = path.split("?", 1)[0]
        for route in self._by_listener.get(listener, []) if listener else self._all:
            if path == route.path_prefix if route.exact else path.startswith(route.path_prefix):
                return route.name
        return None


def _query_args(query: str) -> dict:
    """Like APISIX (ngx.req.get_uri_args): a repeated argument becomes a list."""
    args = parse_qs(query, keep_blank_values=True)
    return {k: v[0] if len(v) == 1 else v for k, v in args.items()}


def _host_port(host: str, scheme: str) -> tuple[str, int]:
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():  # "[::1]" has no port: its tail "1]" is not all digits
        return name, int(port)
    return host, 443 if scheme == "https" else 80


def build_input_from_envoy(
    method: str,
    path: str,
    headers: dict[str, str],
    route_name: str | None,
    listener: str,
    source: str | None,
) -> dict:
    """Policy input for one request as Envoy's ext_authz saw it (``path`` may carry a query)."""
    headers = {k.lower(): v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}
    path_only, _, query = path.partition("?")
    scheme = headers.get("x-forwarded-proto", "https" if listener == "mesh" else "http")
    host, port = _host_port(headers.get("host", headers.get(":authority", "")), scheme)
    user = headers.get("x-user-email") or None
    groups = groups_from_header(headers.get("x-user-groups"))
    forwarded_for = headers.get("x-forwarded-for", "")
    return {
        "type": "http",
        "request": {
            "method": method.upper(),
            "path": path_only or "/",
            "headers": headers,
            "query": _query_args(query),
            "scheme": scheme,
            "host": host,
            "port": port,
        },
        "var": {
            "remote_addr": forwarded_for.split(",")[0].strip() or None,
            "server_port": port,
            "timestamp": int(time.time()),
        },
        "route": {"name": route_name},
        "finopti": {
            "user": user,
            "groups": groups,
            "source": source,
            "route": route_name,
            "listener": listener,
        },
    }
