"""Issue 11, tried as an attacker would, against the running platform: every probe gets its refusal.

Threat model and the test behind each row: docs/security.md."""

import json
import random
import resource
import shutil
import socket
import string
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO
from test_trace_context import raw_request

from finopti.meshtls import client_context

JSON = "application/json"


def _error(status: int, headers: dict, body: bytes, code: str, by_gateway: bool = True) -> dict:
    assert status != 200 and headers.get("content-type", "").startswith(JSON), (status, headers, body[:300])
    error = json.loads(body)
    assert error["error"] == code and error["status"] == status and error["message"], error
    if by_gateway:  # the gateway's own answers name the request
        assert error["request_id"] == headers["x-request-id"]
    return error


def _get(platform, target: str, host: str = "127.0.0.1", extra: str = "") -> tuple[int, dict, bytes]:
    return raw_request(platform.edge_port, f"GET {target} HTTP/1.1\nHost: {host}\n{extra}Connection: close\n")


def _post(platform, target: str, body: dict, host: str = "127.0.0.1", extra: str = "",
          method: str = "POST") -> tuple[int, dict, bytes]:
    data = json.dumps(body).encode()
    return raw_request(platform.edge_port, f"{method} {target} HTTP/1.1\nHost: {host}\n{extra}Content-Type: "
                       f"{JSON}\nContent-Length: {len(data)}\nConnection: close\n", data)


def _edge_line(platform, request_id: str) -> dict:
    lines = platform.wait_for_log("gateway", lambda line: line.get("request_id") == request_id
                                  and line.get("listener") == "edge")
    assert len(lines) == 1, f"edge access lines of {request_id}: {lines}"
    return lines[0]


def _lines_of(platform, request_id: str, components=("ui", "orchestrator", "policy", "logstore")) -> list[dict]:
    return [line for c in components for line in platform.log_lines(c) if line.get("request_id") == request_id]


# --- 1. credentials only in Authorization: Bearer -----------------------------------------------------------

# (query with {jwt} for the token, the parameter the answer names). Beyond the probe: percent-encoded and
# double-encoded names, case, repeated parameters, `;` separators, a JWT under an innocent name.
CREDENTIAL_QUERIES = [
    ("access_token={jwt}&limit=1", "access_token"),
    ("limit=1&access%5Ftoken={jwt}", "access_token"),
    ("%61ccess_token={jwt}", "access_token"),
    ("access%255Ftoken={jwt}", "access_token"),
    ("ACCESS_TOKEN={jwt}", "ACCESS_TOKEN"),
    ("limit=1;token={jwt}", "token"),
    ("id_token=x&id_token={jwt}", "id_token"),
    ("jwt={jwt}", "jwt"),
    ("api_key=k-5f1c2e9a", "api_key"),
    ("X-Api-Key=k-5f1c2e9a", "X-Api-Key"),
    ("q={jwt}", "q"),
    ("access_token%3D{jwt}", "access_token"),
]


@pytest.mark.parametrize("query, param", CREDENTIAL_QUERIES, ids=[q[1] + ":" + q[0][:18] for q in CREDENTIAL_QUERIES])
def test_a_token_in_the_query_is_refused_and_never_logged(platform, query, param):
    """Probe 1: `GET /api/logs?access_token=<JWT>` reached the log store and the JWT was logged."""
    token = platform.token("carol@finopti.dev")  # a real observability_admin token: accepted, it would work
    status, headers, body = _get(platform, f"/api/logs?{query.format(jwt=token)}")
    assert status == 400
    error = _error(status, headers, body, "credential_in_query")
    assert error["param"] == param and "Authorization" in error["message"] and param in error["message"]
    line = _edge_line(platform, headers["x-request-id"])
    assert "[REDACTED]" in line["path"] and token not in json.dumps(line)
    assert not _lines_of(platform, headers["x-request-id"]), "the request went past the gateway"


def test_the_metrics_probe_is_refused_and_the_store_never_holds_the_token(platform):
    """Probe 1 exactly: `/api/metrics/query?query=up&access_token=…` answered 200 with data."""
    token = platform.token("carol@finopti.dev")
    refused = httpx.get(f"{platform.edge}/api/metrics/query", params={"query": "up", "access_token": token})
    assert refused.status_code == 400 and refused.json()["param"] == "access_token"
    allowed = httpx.get(f"{platform.edge}/api/metrics/query", params={"query": "up"},
                        headers={"authorization": f"Bearer {token}"})
    assert allowed.status_code != 400
    request_id = refused.headers["x-request-id"]
    stored = _wait_for_store(platform, request_id)
    assert stored and all(token not in json.dumps(entry) for entry in stored)
    assert "access_token=[REDACTED]" in json.dumps(stored)


# A JWT in the path itself (a magic link, a token pasted into a URL) reached the services and was written, whole,
# into gateway.log and the service's own log; `{jwt}` is the token.
CREDENTIAL_PATHS = ["/static/{jwt}", "/console/trace/{jwt}", "/api/logs/{jwt}?limit=1", "/auth/x/{jwt}/y",
                    "/api/ask/{jwt}", "/static/x{jwt}.js"]


@pytest.mark.parametrize("path", CREDENTIAL_PATHS)
def test_a_token_in_the_path_is_refused_and_never_logged(platform, path):
    token = platform.token("carol@finopti.dev")
    status, headers, body = _get(platform, path.format(jwt=token), extra=f"Authorization: Bearer {token}\n")
    assert status == 400
    error = _error(status, headers, body, "credential_in_path")
    assert "Authorization" in error["message"] and token not in body.decode()
    line = _edge_line(platform, headers["x-request-id"])
    assert "[REDACTED]" in line["path"] and token not in json.dumps(line)
    assert not _lines_of(platform, headers["x-request-id"]), "the request went past the gateway"


def test_paths_that_only_look_like_a_token_are_served(platform):
    """Served as the route says. The last two are what a pattern tried at every "eyJ" took quadratic time on (5 s of
    a gateway worker each); the scanner reads them in one pass (docs/security.md)."""
    assert _get(platform, "/static/eyJnotajwt.js")[0] == 404  # the UI's answer: the guard let it through
    assert _get(platform, "/auth/dev-users?q=eyJhbGciOi")[0] == 200
    assert _get(platform, "/static/" + "eyJ" * 19_000)[0] == 404
    assert _get(platform, "/auth/dev-users?q=" + "eyJ" * 19_000)[0] == 200


def _wait_for_store(platform, request_id: str, minimum: int = 1, timeout: float = 15.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.get(f"{platform.edge}/api/logs", params={"request_id": request_id, "limit": 500},
                          headers=platform.headers("carol@finopti.dev"), timeout=10).json()["lines"]
        if len(found) >= minimum or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_authorization_and_cookie_values_reach_no_log(platform):
    token = platform.token("erin@finopti.dev")
    response = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "list buckets"}, timeout=60,
                          headers={"authorization": f"Bearer {token}", "cookie": f"session={token}"})
    assert response.status_code == 200
    _wait_for_store(platform, response.headers["x-request-id"], minimum=5)
    signature = token.rsplit(".", 1)[1]
    leaked = [p.name for p in platform.state.logs.glob("*.log") if signature in p.read_text(errors="replace")]
    assert not leaked, f"the token is in {leaked}"


def test_a_client_cannot_choose_the_path_the_access_log_shows(platform):
    """The access log shows the original path (x-envoy-original-path) of rewritten routes; a client that sends
    that header itself must not be able to hide the path it really called."""
    status, headers, _ = _get(platform, "/auth/dev-users", extra="X-Envoy-Original-Path: /hidden\n")
    assert status == 200
    assert _edge_line(platform, headers["x-request-id"])["path"] == "/auth/dev-users"


# Spellings of /api/logs (route logs-api: observability_admin only) that a parser might read as that route while
# another does not: dot segments, doubled slashes, escaped dots and slashes, `;` parameters, backslashes, case,
# trailing dots and spaces, overlong UTF-8, a route with fewer roles in front.
PATH_TRICKS = ["/api/./logs", "/api//logs", "//api/logs", "/api/x/../logs", "/api/%2e%2e/api/logs", "/api/%2E/logs",
               "/static/%2e%2e/api/logs", "/console/..;/api/logs", "/api/logs;x=1", "/api\\logs", "/api/logs.",
               "/api/logs%20", "/API/LOGS", "/api%2Flogs", "/static/..%2F..%2Fapi/logs",
               "/api/ask%2F..%2F..%2Fapi/logs", "/static/..%5C..%5Capi%5Clogs", "/api/%c0%ae%c0%ae/api/logs",
               "/api/ask/../logs",
               "http://127.0.0.1/api/logs"]


@pytest.mark.parametrize("target", PATH_TRICKS)
def test_no_spelling_of_a_path_reaches_a_backend_around_its_role_rule(platform, target):
    """alice (gcloud_admin) may not read the logs. Whatever the spelling, the request is decided as logs-api's
    (403), or is no route (404), or is refused unread (400: escaped slashes, which a backend may decode); it never
    reaches the log store."""
    status, headers, _ = _get(platform, target, extra=f"Authorization: Bearer {platform.token('alice@finopti.dev')}\n")
    assert status in (400, 403, 404), (target, status)
    assert not _lines_of(platform, headers["x-request-id"], components=("logstore",))


def test_escaped_slashes_cannot_reach_a_backends_other_endpoints(platform):
    """Prometheus read `/api/metrics/..%2F..%2F-%2Freload` (Envoy: route metrics-api) as `/-/reload`, its lifecycle
    API, and redirected there: the gateway refuses escaped slashes in the path before any route."""
    carol = f"Authorization: Bearer {platform.token('carol@finopti.dev')}\n"
    for target in ("/api/metrics/..%2F..%2F-%2Freload", "/api/metrics/..%2f..%2f-%2fhealthy",
                   "/api/metrics/..%5C..%5C-%5Chealthy"):
        status, headers, body = _post(platform, target, {}, extra=carol)
        assert status == 400, target
        assert _error(status, headers, body, "malformed_request")["reason"] == "path_normalization_failed"
    assert _get(platform, "/api/metrics/query?query=up&x=a%2Fb", extra=carol)[0] == 200  # in the query: a value


# --- 2. Host and Origin: DNS rebinding and CSRF --------------------------------------------------------------

def _foreign_hosts(port: int) -> list[str]:
    """Beyond the probe: other spellings of loopback, a trailing dot, another port, userinfo tricks."""
    return [f"rebind.attacker.example:{port}", "rebind.attacker.example", "localhost.", f"localhost.:{port}",
            f"127.1:{port}", f"2130706433:{port}", "0x7f000001", f"[0:0:0:0:0:0:0:1]:{port}",
            f"[::ffff:127.0.0.1]:{port}", f"127.0.0.1:{port + 1}", f"localhost:{port}@evil.example",
            "evil.example:80"]


def test_dns_rebinding_cannot_mint_a_token_or_stop_a_vm(platform):
    """Probe 2 exactly: every step of the chain now gets 421 before anything else runs."""
    host = f"rebind.attacker.example:{platform.edge_port}"
    origin = f"Origin: http://{host}\n"
    steps = [
        _get(platform, "/auth/dev-users", host, origin),
        _post(platform, "/auth/dev-token", {"email": "alice@finopti.dev"}, host, origin),
        _post(platform, "/api/ask", {"prompt": "stop instance bastion-dev-01"}, host,
              origin + f"Authorization: Bearer {platform.token('alice@finopti.dev')}\n"),
    ]
    for status, headers, body in steps:
        assert status == 421
        _error(status, headers, body, "unknown_host")
        assert _edge_line(platform, headers["x-request-id"])["route"] == "unknown_host"
        assert not _lines_of(platform, headers["x-request-id"]), "something behind the gateway ran"


@pytest.mark.parametrize("index", range(12))
def test_every_other_spelling_of_the_host_is_refused(platform, index):
    host = _foreign_hosts(platform.edge_port)[index]
    status, headers, body = _get(platform, "/auth/dev-users", host)
    assert status == 421, host
    _error(status, headers, body, "unknown_host")


def test_declared_hosts_are_served_with_and_without_the_port(platform):
    port = platform.edge_port
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]", f"[::1]:{port}",
                 f"LOCALHOST:{port}"):
        status, _, _ = _get(platform, "/auth/dev-users", host)
        assert status == 200, host


def _foreign_origins(port: int) -> list[str]:
    return [f"http://rebind.attacker.example:{port}", "null", f"http://127.0.0.1:{port + 1}",
            f"http://localhost:{port}.evil.example", "https://evil.example", f"http://127.0.0.1:{port}, http://evil",
            f"file://127.0.0.1:{port}"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_state_changing_requests_from_another_origin_get_403(platform, method):
    port = platform.edge_port
    for origin in _foreign_origins(port):
        status, headers, body = _post(platform, "/auth/dev-token", {"email": "alice@finopti.dev"},
                                      extra=f"Origin: {origin}\n", method=method)
        assert status == 403, origin
        _error(status, headers, body, "foreign_origin")
    status, headers, body = _post(platform, "/api/ask", {"prompt": "stop instance bastion-dev-01"}, method=method,
                                  extra="Sec-Fetch-Site: cross-site\n"
                                  f"Authorization: Bearer {platform.token('alice@finopti.dev')}\n")
    assert status == 403
    _error(status, headers, body, "cross_site_request")
    assert not _lines_of(platform, headers["x-request-id"])


def test_same_origin_and_non_browser_requests_pass(platform):
    port = platform.edge_port
    for extra in (f"Origin: http://127.0.0.1:{port}\n", f"Origin: http://localhost:{port}\n",
                  "Sec-Fetch-Site: same-origin\n", ""):
        status, _, body = _post(platform, "/auth/dev-token", {"email": "bob@finopti.dev"}, extra=extra)
        assert status == 200 and json.loads(body)["email"] == "bob@finopti.dev", extra


def _apply(platform, tmp_path: Path, change) -> None:
    raw = yaml.safe_load((REPO / "mesh.yaml").read_text())
    change(raw)
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(raw))
    platform.cli("mesh", "apply", "--mesh", str(path), check=True)


def test_hosts_and_dev_sign_in_follow_mesh_yaml(platform, tmp_path):
    """`gateway.edge.hosts` and `identity.dev_sign_in` change live with `finopti mesh apply`."""
    port = platform.edge_port

    def change(raw: dict) -> None:
        raw["gateway"]["edge"]["hosts"] = ["finopti.internal", "127.0.0.1"]
        raw["identity"]["dev_sign_in"] = False

    _apply(platform, tmp_path, change)
    try:
        assert _get(platform, "/", f"finopti.internal:{port}")[0] == 200
        assert _get(platform, "/", f"localhost:{port}")[0] == 421
        for status, headers, body in (_get(platform, "/auth/dev-users"),
                                      _post(platform, "/auth/dev-token", {"email": "alice@finopti.dev"})):
            assert status == 404
            error = _error(status, headers, body, "dev_sign_in_off", by_gateway=False)
            assert "identity.dev_sign_in" in error["message"]
        token = platform.token("bob@finopti.dev")  # tokens of the running identity provider still work
        assert platform.ask("list buckets", "bob@finopti.dev").status_code == 200, token
    finally:
        platform.cli("mesh", "apply", "--mesh", str(REPO / "mesh.yaml"), check=True)
    assert _get(platform, "/auth/dev-users", f"localhost:{port}")[0] == 200


# --- 3. the audit trail ------------------------------------------------------------------------------------------

def test_a_user_cannot_erase_their_own_actions_from_the_audit_trail(platform):
    """Probe 3 exactly: alice stops an instance with `x-request-id: finopti-collector-hunt1` (asked, then
    confirmed: a change is a plan first)."""
    alice = {**platform.headers("alice@finopti.dev"), "x-request-id": "finopti-collector-hunt1"}
    plan = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "stop instance notebook-dev-02"}, headers=alice,
                      timeout=60)
    assert plan.status_code == 200 and plan.json()["kind"] == "plan", plan.text
    stop = httpx.post(f"{platform.edge}/api/ask/confirm", json={"token": plan.json()["confirmation"]["token"]},
                      headers=alice, timeout=60)
    try:
        assert stop.status_code == 200, stop.text
        request_id, trace_id = stop.headers["x-request-id"], stop.json()["trace_id"]
        assert request_id != "finopti-collector-hunt1"  # the gateway makes the id; the client's is kept beside it
        assert stop.json()["request_id"] == request_id
        edge = _edge_line(platform, request_id)
        assert edge["client_request_id"] == "finopti-collector-hunt1" and edge["user"] == "alice@finopti.dev"
        stored = _wait_for_store(platform, request_id, minimum=10)
        services = {entry["service"] for entry in stored}
        assert {"gateway", "orchestrator", "gcloud-agent", "gcloud-tools"} <= services, services
        assert {entry["metadata"].get("user") for entry in stored if entry["service"] == "orchestrator"} == {
            "alice@finopti.dev"}
        assert _wait_for_store(platform, plan.headers["x-request-id"], minimum=3)  # the plan is stored too
        deadline = time.monotonic() + 15
        while True:  # the trace view, once the collector has shipped the agent's hop
            trace = httpx.get(f"{platform.edge}/api/traces/{trace_id}", headers=platform.headers("carol@finopti.dev"))
            if "/v1/actions/stop_instance" in trace.text or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert trace.status_code == 200 and "/v1/actions/stop_instance" in trace.text
        assert {hop["user"] for hop in trace.json()["hops"]} == {"alice@finopti.dev"}
    finally:
        start = platform.ask("start instance notebook-dev-02", "alice@finopti.dev")
        if start.status_code == 200 and start.json().get("kind") == "plan":
            platform.confirm(start)


def test_a_request_sharing_a_chosen_trace_id_is_still_listed_on_its_own(platform):
    """A client may continue a trace (W3C traceparent), so it may choose the id of a trace it has seen. The trace list
    showed one row per trace: alice's stop, followed by an ask of bob's under the same trace id, was listed only as
    bob's question. Each request is a row of its own, with its own user and prompt."""
    trace_id = "".join(random.choices("0123456789abcdef", k=32))
    parent = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    first = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "list buckets"}, timeout=60,
                       headers={**platform.headers("alice@finopti.dev"), **parent})
    second = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "find idle instances"}, timeout=60,
                        headers={**platform.headers("bob@finopti.dev"), **parent})
    assert first.json()["trace_id"] == second.json()["trace_id"] == trace_id
    wanted = {first.headers["x-request-id"]: ("alice@finopti.dev", "list buckets"),
              second.headers["x-request-id"]: ("bob@finopti.dev", "find idle instances")}
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{platform.edge}/api/traces/", params={"prefix": trace_id, "limit": 10},
                         headers=platform.headers("carol@finopti.dev"), timeout=30).json()["traces"]
        listed = {row["request_id"]: (row["user"], row["prompt"]) for row in rows}
        if listed == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert listed == wanted


@pytest.mark.parametrize("client_id, kept", [
    ("hunt-1.a:b_c", True), ("x" * 128, True), ("x" * 129, False), ("<script>", False), ("a b", False),
    ("ünïcode", False)])
def test_client_request_ids_are_kept_only_when_plain(platform, client_id, kept):
    status, headers, _ = _get(platform, "/", extra=f"X-Request-Id: {client_id}\n")
    assert status == 200 and headers["x-request-id"] != client_id
    line = _edge_line(platform, headers["x-request-id"])
    assert line["client_request_id"] == (client_id if kept else None)


# --- 4. bounded metric cardinality ------------------------------------------------------------------------------

def _random_paths(count: int, marker: str) -> list[str]:
    rng = random.Random(marker)
    word = lambda: "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))  # noqa: E731
    kinds = ["/static/{m}-{w}.js", "/console/{m}-{w}", "/auth/{m}-{w}", "/{m}-{w}", "/console/trace/{m}<img-{w}>",
             "/api/{m}/{w}"]
    return [rng.choice(kinds).format(m=marker, w=word()) for _ in range(count)]


def _series(platform) -> dict[str, int]:
    """Series of the request metrics of every service, read from each /metrics as Prometheus does."""
    pki = platform.state.pki
    ctx = client_context(pki / "prometheus.crt", pki / "prometheus.key", pki / "ca.crt")
    counts = {}
    with httpx.Client(verify=ctx, timeout=10) as client:
        for service, versions in platform.runtime.service_ports.items():
            for version, port in versions.items():
                text = client.get(f"https://127.0.0.1:{port}/metrics").text
                counts[f"{service}.{version}"] = sum(1 for line in text.splitlines()
                                                     if line.startswith("finopti_request"))
    return counts


def test_random_anonymous_paths_add_no_series(platform):
    """Probe 4: 500 random anonymous paths leave the number of series unchanged (after a first few made
    the one `unmatched` series per status)."""
    with httpx.Client(base_url=platform.edge) as client:
        for path in _random_paths(30, "warmup"):
            client.get(path)
    before = _series(platform)
    marker = "rnd" + "".join(random.choices(string.digits, k=6))
    with httpx.Client(base_url=platform.edge) as client:
        statuses = {client.get(path).status_code for path in _random_paths(500, marker)}
    assert statuses <= {400, 404, 405}, statuses
    assert _series(platform) == before
    port = platform.runtime.aux_ports.get("prometheus")
    if port:  # and nothing of the paths reached Prometheus
        found = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                          params={"query": f'count({{route=~".*{marker}.*"}}) or vector(0)'}).json()
        assert found["data"]["result"][0]["value"][1] == "0"


# --- 5. what the gateway answers before a request is read: JSON with ids, header names without `_` ---------------

def _exchange(platform, data: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes and read the answer, even if the gateway answers (and closes) before it has read them all."""
    with socket.create_connection(("127.0.0.1", platform.edge_port), timeout=30) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused mid-way: its answer is already in our receive buffer
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split()[1]), headers, body[:int(headers.get("content-length", len(body)))]


def _head(*fields: str) -> bytes:
    return ("GET /auth/dev-users HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f + "\r\n" for f in fields)
            + "Connection: close\r\n\r\n").encode("latin-1")


def _line(request_line: str, *fields: str) -> bytes:
    return (request_line + "\r\n" + "".join(f + "\r\n" for f in fields) + "Connection: close\r\n\r\n").encode()


# Requests Envoy refuses while reading them (its codec, or before it gives them an id), each with the status,
# error code and reason of its JSON answer. Beyond the first seven, found red-teaming the edge: a `#` fragment, an
# encoded NUL, no Host and a Host that is no authority were a 400 with an empty message and no request id; an https
# URL on the plain listener a text 403, an unknown Transfer-Encoding a text 501, HTTP/1.0 a 426 without an id; HTTP/2
# was served.
UNREAD = {
    "bad request line": (b"GARBAGE / HTTP/1.1 x\r\n\r\n", 400, "malformed_request", "http1."),
    "space in a header name": (_head("bad header: x"), 400, "malformed_request", "http1."),
    "content-length and chunked": (b"POST /auth/dev-token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "malformed_request", "http1."),
    "bad chunk size": (b"POST /auth/dev-token HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\n", 400, "malformed_request", "http1."),
    "200 headers": (_head(*(f"x-h{i}: v" for i in range(200))), 431, "headers_too_large", "http1."),
    "a 100 KB header": (_head("x-big: " + "a" * 100_000), 431, "headers_too_large", "http1."),
    "underscore": (_head("x_user_email: carol@finopti.dev"), 400, "header_with_underscore", "http1."),
    "fragment": (_line("GET /api/logs#x HTTP/1.1", "Host: 127.0.0.1"), 400, "malformed_request",
                 "path_normalization_failed"),
    "encoded NUL": (_line("GET /api/logs%00 HTTP/1.1", "Host: 127.0.0.1"), 400, "malformed_request",
                    "path_normalization_failed"),
    "no Host": (_line("GET /auth/dev-users HTTP/1.1"), 400, "malformed_request", "missing_host_header"),
    "Host no authority": (_line("GET /auth/dev-users HTTP/1.1", "Host: 127.0.0.1/x"), 400, "malformed_request",
                          "http.invalid_authority"),
    "https URL on plain HTTP": (_line("GET https://127.0.0.1/auth/dev-users HTTP/1.1", "Host: 127.0.0.1"), 400,
                                "malformed_request", "http1.https_url_on_plaintext_connection"),
    "unknown transfer-encoding": (_line("POST /auth/dev-token HTTP/1.1", "Host: 127.0.0.1",
                                        "Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n", 501,
                                  "unsupported_transfer_encoding", "http1.invalid_transfer_encoding"),
    "HTTP/1.0": (_line("GET /auth/dev-users HTTP/1.0", "Host: 127.0.0.1"), 426, "upgrade_required", "low_version"),
    # Envoy took HTTP/2 with prior knowledge too, with its own refusals (a stream reset for `x_user_email`).
    "HTTP/2 prior knowledge": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "malformed_request", "http1."),
}


@pytest.mark.parametrize("case", list(UNREAD))
def test_what_the_gateway_cannot_read_is_answered_in_json_with_ids(platform, case):
    """Envoy's own answers to broken HTTP were text (431, 403, 501) or JSON without a request id or message: every
    one is the project's error body, its request id in the header and on the gateway's access line."""
    data, status, code, reason = UNREAD[case]
    got, headers, body = _exchange(platform, data)
    assert got == status
    error = _error(got, headers, body, code)
    assert error["reason"].startswith(reason), error
    assert _edge_line(platform, headers["x-request-id"])["status"] == status


def _refused_at_once(port: int) -> bool:
    """True if the edge closes a new connection without an answer (its connections are all taken)."""
    try:
        return _exchange_on(port, _head())[0] == 0
    except (OSError, IndexError, ValueError):
        return True


def _exchange_on(port: int, data: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        received = sock.recv(65536)
    return (int(received.split()[1]) if received else 0), received


def test_clients_at_the_edge_cannot_take_the_mesh_listeners_connections(platform):
    """The exact probe: 10,200 idle connections opened at the edge (a second's work for one local client) took every
    connection the gateway holds, both listeners together, and the mesh listener refused every service's call —
    the whole platform down while they stayed open. The edge now has its own share (gateway.edge.max_connections)."""
    from finopti.mesh.model import GATEWAY_MAX_CONNECTIONS

    count = GATEWAY_MAX_CONNECTIONS + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 500:
        pytest.skip(f"needs {count + 500} open files, the limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 500 if hard == resource.RLIM_INFINITY else hard, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(count):  # the kernel accepts them all; the gateway closes what is past its limit
            held.append(socket.create_connection(("127.0.0.1", platform.edge_port), timeout=30))
        deadline = time.monotonic() + 60
        while not _refused_at_once(platform.edge_port):  # until the gateway has taken what it will take
            assert time.monotonic() < deadline, "the edge still answers with every connection open"
            time.sleep(0.5)
        answer = platform.mesh("cli", "GET", "/logstore/api/logs?limit=1", user="carol@finopti.dev")
        assert answer.status_code == 200, answer.text
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    deadline = time.monotonic() + 60
    while _refused_at_once(platform.edge_port):
        assert time.monotonic() < deadline, "the edge did not serve again once the connections closed"
        time.sleep(0.5)


UPGRADES = {
    "WebSocket": "GET /api/logs/tail HTTP/1.1\nHost: 127.0.0.1\nUpgrade: websocket\nConnection: Upgrade\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n",
    "CONNECT": "CONNECT 127.0.0.1:443 HTTP/1.1\nHost: 127.0.0.1:443\n",
    "CONNECT elsewhere": "CONNECT evil.example:443 HTTP/1.1\nHost: evil.example:443\n",
}


@pytest.mark.parametrize("case", list(UPGRADES))
def test_upgrades_and_tunnels_are_refused_in_json(platform, case):
    """A WebSocket upgrade got an empty 403; a CONNECT went unrouted and was held until request_timeout (408)."""
    status, headers, body = raw_request(platform.edge_port, UPGRADES[case])
    assert status == 403
    _error(status, headers, body, "upgrade_refused")


# Why the gateway refuses it -> the request's line and fields; the test adds a forged x-user-email to each.
REFUSED_WITH_A_FORGED_USER = {
    "credential in the query": "GET /api/logs?access_token=abc HTTP/1.1\nHost: 127.0.0.1\n",
    "fragment": "GET /api/logs#x HTTP/1.1\nHost: 127.0.0.1\n",
    "encoded NUL": "GET /api/logs%00 HTTP/1.1\nHost: 127.0.0.1\n",
    "no Host": "GET /api/logs HTTP/1.1\n",
    "unknown Host": "GET /api/logs HTTP/1.1\nHost: evil.example\n",
    "foreign Origin": "DELETE /api/ask HTTP/1.1\nHost: 127.0.0.1\nOrigin: http://evil.example\n",
    "no token": "GET /api/logs HTTP/1.1\nHost: 127.0.0.1\n",
    "bad token": "GET /api/logs HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Bearer a.b.c\n",
}


@pytest.mark.parametrize("case", list(REFUSED_WITH_A_FORGED_USER))
def test_a_forged_identity_header_never_names_the_user_in_the_access_log(platform, case):
    """The access line's `user` came from the x-user-email header: the gateway strips it from clients, but a
    request refused before that (a credential in the query, a path it cannot read) was logged as any user the
    client named. The user is now only ever a verified token's."""
    forged = "X-User-Email: bob@finopti.dev\nX-User-Groups: finops-viewers\nConnection: close\n"
    status, headers, _ = raw_request(platform.edge_port, REFUSED_WITH_A_FORGED_USER[case] + forged)
    assert status >= 400
    assert _edge_line(platform, headers["x-request-id"])["user"] is None


def test_the_access_log_names_the_verified_user_not_the_forged_one(platform):
    status, headers, _ = _get(platform, "/api/logs?limit=1", extra=f"Authorization: Bearer "
                              f"{platform.token('carol@finopti.dev')}\nX-User-Email: bob@finopti.dev\n")
    assert status == 200
    assert _edge_line(platform, headers["x-request-id"])["user"] == "carol@finopti.dev"


@pytest.mark.parametrize("name", ["x_user_email", "X_User_Groups", "x_finopti_source", "x_jwt_payload"])
def test_identity_headers_spelled_with_underscores_are_refused(platform, name):
    """The gateway strips `x-user-email` & co. from clients; the same names with `_` (which CGI-style servers,
    nginx with underscores_in_headers or a WSGI app read as the same header) are refused before any filter."""
    value = "observability-admins" if "groups" in name.lower() else "carol@finopti.dev"
    status, headers, body = _exchange(platform, _head(f"{name}: {value}").replace(b"/auth/dev-users", b"/api/logs"))
    assert status == 400
    _error(status, headers, body, "header_with_underscore")
    assert not _lines_of(platform, headers["x-request-id"]), "the request went past the gateway"


# --- 6. security headers on every UI response -----------------------------------------------------------------

UI_PATHS = ["/", "/console", "/console/live", "/console/trace/4bf92f3577b34da6a3ce929d0e0e4736", "/static/common.js",
            "/static/style.css", "/console/model.json", "/auth/dev-users", "/static/missing.js", "/console/nope"]


@pytest.mark.parametrize("path", UI_PATHS)
def test_every_ui_response_has_the_security_headers(platform, path):
    response = httpx.get(f"{platform.edge}{path}")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_dev_tokens_are_not_cached(platform):
    response = httpx.post(f"{platform.edge}/auth/dev-token", json={"email": "bob@finopti.dev"})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"


def test_pages_work_under_the_policy_without_violations(platform):
    """A real Chromium: every page renders, signs in, and the browser reports no CSP violation."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from finopti.services.ui.browser import CHROMIUM, launch_chromium

    if not Path(CHROMIUM).exists():
        pytest.skip(reason=f"Chromium is missing at {CHROMIUM} (apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="finopti-csp-"))
    try:
        with sync_api.sync_playwright() as p:
            context = launch_chromium(p, profile)
            page = context.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                                 "console.error('Content Security Policy violation: ' + e.violatedDirective))")
            page.goto(f"{platform.edge}/")
            page.select_option("#dev-user", "erin@finopti.dev")
            assert page.locator("[data-testid=dev-sign-in]").inner_text() == "Development sign-in"
            page.click("#sign-in")
            page.wait_for_selector("[data-testid=signed-in]")
            page.fill("#prompt", "find idle instances")
            page.click("#ask")
            page.wait_for_selector("[data-testid=answer-table]")
            for path in ("/console", "/console/live", "/console/trace/4bf92f3577b34da6a3ce929d0e0e4736"):
                page.goto(f"{platform.edge}{path}")  # each page's module replaces the "Loading…" shell
                page.wait_for_selector("#app >> text=Loading…", state="detached")
            context.close()
        assert not violations, violations
    finally:
        shutil.rmtree(profile, ignore_errors=True)
