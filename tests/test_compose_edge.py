"""The front door in the compose bundle: the rendered controls are there (verify-compose), the collectors'
redaction rules redact what the local collector does, and the APISIX guard refuses the issue's probes in the
real APISIX runtime (../shared/apisix-runtime)."""

import copy
import json
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO
from test_trace_context import raw_request

from finopti.deploy.apisix import identity_function
from finopti.deploy.apisix_identity import authentication_plugin
from finopti.deploy.compose import render_compose_bundle
from finopti.deploy.edge_controls import (
    DEV_SIGN_IN_ENV,
    REDACTION_RULES,
    check_edge_controls,
    edge_global_rule,
    guard_hosts,
)
from finopti.deploy.verify import verify_compose
from finopti.idp import generate_key
from finopti.logs.line_guard import redact
from finopti.mesh.model import EdgeListener, Identity, load_mesh
from finopti.ports import free_port
from finopti.testing.apisix import ApisixInstance, ApisixUnavailable, find_runtime, short_tempdir
from finopti.testing.oidc_provider import JWKS_PATH, OidcProvider

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZpbm9wdGktZGV2LTEifQ.eyJpc3MiOiJodHRwczovL2lkcCJ9.c2lnbmF0dXJlc2lnbmF0dXJl"


def test_the_committed_bundle_has_every_edge_control():
    bundle = REPO / "deploy" / "compose"
    compose = yaml.safe_load((bundle / "docker-compose.yml").read_text())
    assert check_edge_controls(bundle, compose) == []
    rules = yaml.safe_load((bundle / "apisix" / "apisix.yaml").read_text())["global_rules"]
    guard = next(r for r in rules if r["id"] == "finopti-edge")["plugins"]["serverless-pre-function"]
    assert guard_hosts(guard["functions"][0]) == load_mesh(REPO / "mesh.yaml").gateway.edge.hosts
    ui = next(s for s in compose["services"].values() if s["labels"].get("finopti.service") == "ui")
    assert ui["environment"][DEV_SIGN_IN_ENV] == "false"


def test_verify_compose_names_each_missing_control(tmp_path):
    spec = load_mesh(REPO / "mesh.yaml")
    files = render_compose_bundle(spec, repo_root=REPO, out_dir=tmp_path)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert verify_compose(tmp_path) == []
    apisix = tmp_path / "apisix" / "apisix.yaml"
    doc = yaml.safe_load(apisix.read_text())
    guard = next(r for r in doc["global_rules"] if r["id"] == "finopti-edge")
    guard["plugins"]["serverless-pre-function"]["functions"][0] = guard["plugins"]["serverless-pre-function"][
        "functions"][0].replace('["localhost"] = true', '["*"] = true')
    apisix.write_text(yaml.safe_dump(doc) + "#END\n")
    config = tmp_path / "apisix" / "config.yaml"
    config.write_text(config.read_text().replace("$finopti_path", "$request_uri"))
    promtail = tmp_path / "promtail" / "config.yml"
    promtail.write_text(re.sub(r"(?m)^\s*- replace:\n(\s+.*\n)+", "", promtail.read_text()))
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(compose.read_text().replace(f"{DEV_SIGN_IN_ENV}: 'false'", f"{DEV_SIGN_IN_ENV}: 'true'"))
    problems = "\n".join(str(p) for p in verify_compose(tmp_path))
    for expected in ("global rule 'finopti-edge'", "$finopti_path", "promtail/config.yml", "development sign-in"):
        assert expected in problems, problems


SAMPLES = [
    json.dumps({"path": f"/api/logs?access_token={JWT}&limit=1"}),
    json.dumps({"path": "/x?limit=1&API_KEY=k-5f1c2e9a"}),
    json.dumps({"headers": {"authorization": f"Bearer {JWT}", "cookie": "session=abc123"}}),
    json.dumps({"password": "hunter2"}),
    "call failed with Authorization: Bearer opaque-secret-1234",
    json.dumps({"message": f"token {JWT}"}),
    json.dumps({"path": "/x?limit=1&q=token", "message": "access"}),
]


@pytest.mark.parametrize("line", SAMPLES)
def test_alloy_and_promtail_rules_redact_what_the_collector_does(line):
    """The RE2 rules of the compose collectors, applied as Alloy's stage.replace does (each capture group
    replaced), give the local collector's result."""
    out = line
    for _, expression in REDACTION_RULES:
        out = re.sub(expression, lambda m: m[0].replace(m[1], "[REDACTED]") if m[1] else m[0], out)
    assert out == redact(line)[0]


# --- the guard in the real APISIX ---------------------------------------------------------------------------

class _Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps({"path": self.path, "cookie": self.headers.get("cookie"),
                           **{h: self.headers.get(h) for h in ("x-user-email", "x-user-groups", "x-userinfo",
                                                                "x-access-token")}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer  # noqa: N815

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def apisix():
    try:
        runtime = find_runtime(REPO)
    except ApisixUnavailable as exc:
        pytest.skip(reason=str(exc))
    with OidcProvider() as idp:
        yield from _apisix(runtime, idp)


def _apisix(runtime: Path, idp: OidcProvider):
    """One APISIX with the rendered edge guard, and a route authenticated as the compose bundle renders it for
    an OpenID Connect identity (`openid-connect` and the identity function), in front of an echo server."""
    identity = Identity(provider="oidc", issuer=idp.issuer, dev_sign_in=False, jwks_cache=300)
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    edge, mesh, status = free_port(), free_port(), free_port()
    work = short_tempdir("fe-")
    config = {
        "apisix": {"node_listen": [edge, mesh], "enable_admin": False, "enable_control": False,
                   "ssl": {"enable": False}, "status": {"ip": "127.0.0.1", "port": status}},
        "deployment": {"role": "data_plane", "role_data_plane": {"config_provider": "yaml"}},
        "plugins": ["request-id", "serverless-pre-function", "serverless-post-function", "openid-connect"],
        "stream_plugins": [],
        "nginx_config": {
            "http": {"access_log_format": '{"path": "$finopti_path", "status": $status, "id": "$http_x_request_id"}',
                     "access_log_format_escape": "json"},
            "http_configuration_snippet": f'map $server_port $finopti_listener {{\n    default "";\n'
                                          f"    {edge} edge;\n    {mesh} mesh;\n}}\n",
            # The variables the edge guard and the identity function write (the bundle declares them all).
            "http_server_location_configuration_snippet": "set $finopti_path '';\nset $finopti_user '';\n",
        },
    }
    upstream = {"type": "roundrobin", "nodes": {f"127.0.0.1:{echo.server_address[1]}": 1}}
    who = {"serverless-post-function": {"phase": "rewrite", "functions": [identity_function(identity)]}}
    routes = {
        "routes": [
            {"id": "user", "uri": "/api/*", "priority": 10, "upstream": copy.deepcopy(upstream),
             "plugins": {**authentication_plugin(identity), **copy.deepcopy(who)}},
            {"id": "app", "uri": "/*", "upstream": upstream, "plugins": who},
        ],
        "global_rules": [
            {"id": "finopti", "plugins": {"request-id": {"header_name": "x-request-id", "include_in_response": True}}},
            edge_global_rule(EdgeListener(hosts=load_mesh(REPO / "mesh.yaml").gateway.edge.hosts)),
        ],
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    (work / "apisix.yaml").write_text(yaml.safe_dump(routes) + "#END\n")
    instance = ApisixInstance(runtime, work / "run", {"APISIX_WORKER_PROCESSES": "1"})
    instance.start(work / "config.yaml", work / "apisix.yaml")
    try:
        _wait_ready(status)
        assert instance.load_failures() == []
        yield {"edge": edge, "mesh": mesh, "log": instance.access_log, "idp": idp}
    finally:
        instance.stop()
        echo.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/status/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("APISIX did not become ready")


def _access(apisix, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in apisix["log"].read_text().splitlines() if apisix["log"].exists() else []:
            entry = json.loads(line)
            if entry["id"] == request_id:
                return entry
        time.sleep(0.1)
    raise AssertionError(f"no access line for {request_id}")


def test_apisix_refuses_a_token_in_the_query_and_logs_it_redacted(apisix):
    for query, param in (("access_token={jwt}&limit=1", "access_token"), ("limit=1;access%5Ftoken={jwt}",
                                                                          "access_token"), ("jwt={jwt}", "jwt")):
        status, headers, body = raw_request(apisix["edge"], f"GET /api/logs?{query.format(jwt=JWT)} HTTP/1.1\n"
                                            "Host: localhost\nConnection: close\n")
        error = json.loads(body)
        assert status == 400 and error["error"] == "credential_in_query" and error["param"] == param
        assert error["request_id"] == headers["x-request-id"]
        line = _access(apisix, headers["x-request-id"])
        assert JWT not in line["path"] and "[REDACTED]" in line["path"]
    # The mesh listener does not refuse (services never put tokens in URLs) but still logs no token.
    status, headers, _ = raw_request(apisix["mesh"], f"GET /x?access_token={JWT} HTTP/1.1\nHost: apisix\n"
                                     "Connection: close\n")
    assert status == 200 and JWT not in _access(apisix, headers["x-request-id"])["path"]


def test_apisix_refuses_a_token_in_the_path_and_logs_it_redacted(apisix):
    status, headers, body = raw_request(apisix["edge"], f"GET /console/trace/{JWT} HTTP/1.1\nHost: localhost\n"
                                        "Connection: close\n")
    error = json.loads(body)
    assert status == 400 and error["error"] == "credential_in_path" and error["message"], error
    assert error["request_id"] == headers["x-request-id"]
    line = _access(apisix, headers["x-request-id"])
    assert JWT not in line["path"] and "[REDACTED]" in line["path"]


@pytest.mark.parametrize("host", ["rebind.attacker.example:9080", "localhost.", "127.1", "[::ffff:127.0.0.1]",
                                  "evil.example"])
def test_apisix_refuses_other_hosts(apisix, host):
    status, headers, body = raw_request(apisix["edge"], f"GET /auth/dev-users HTTP/1.1\nHost: {host}\n"
                                        "Connection: close\n")
    assert status == 421 and json.loads(body)["error"] == "unknown_host"


def test_apisix_serves_the_declared_hosts_and_refuses_foreign_origins(apisix):
    port = apisix["edge"]
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}", "LOCALHOST"):
        status, _, _ = raw_request(port, f"GET / HTTP/1.1\nHost: {host}\nConnection: close\n")
        assert status == 200, host
    post = "POST /auth/dev-token HTTP/1.1\nHost: localhost:{port}\n{extra}Content-Length: 2\nConnection: close\n"
    for extra, expected in ((f"Origin: http://rebind.attacker.example:{port}\n", 403), ("Origin: null\n", 403),
                            ("Sec-Fetch-Site: cross-site\n", 403), (f"Origin: http://localhost:{port}\n", 200),
                            ("", 200)):
        status, _, body = raw_request(port, post.format(port=port, extra=extra), b"{}")
        assert status == expected, (extra, body)


def test_apisix_refuses_header_names_with_underscores(apisix):
    """As the local gateway: `x_user_email` could pass for the identity header the gateway strips."""
    status, headers, body = raw_request(apisix["edge"], "GET /api/logs HTTP/1.1\nHost: localhost\n"
                                        "x_user_email: carol@finopti.dev\nConnection: close\n")
    error = json.loads(body)
    assert status == 400 and error["error"] == "header_with_underscore" and error["message"], error
    assert error["request_id"] == headers["x-request-id"]
    status, _, _ = raw_request(apisix["edge"], "GET / HTTP/1.1\nHost: localhost\nx-user-agent-ok: 1\n"
                               "Connection: close\n")
    assert status == 200


def test_apisix_drops_a_token_cookie(apisix):
    status, _, body = raw_request(apisix["edge"], f"GET / HTTP/1.1\nHost: localhost\nCookie: a=1; jwt={JWT}; b=2\n"
                                  "Connection: close\n")
    assert status == 200 and json.loads(body)["cookie"] == "a=1; b=2"


def _user_get(apisix, token: str | None = None, extra: str = "") -> tuple[int, dict]:
    auth = f"Authorization: Bearer {token}\n" if token else ""
    status, _, body = raw_request(apisix["edge"], f"GET /api/logs HTTP/1.1\nHost: localhost\n{auth}{extra}"
                                  "Connection: close\n")
    return status, (json.loads(body) if body.startswith(b"{") else {})


def test_apisix_verifies_the_oidc_providers_tokens_and_maps_their_claims(apisix):
    idp = apisix["idp"]
    status, seen = _user_get(apisix, idp.mint("carol@corp.example", ["sre", "finops-viewers"]))
    assert status == 200, seen
    assert seen["x-user-email"] == "carol@corp.example" and seen["x-user-groups"] == "sre,finops-viewers"
    assert seen["x-userinfo"] is None and seen["x-access-token"] is None  # the claims go no further
    forged = generate_key()
    now = int(time.time())
    for name, token, expected in (
            ("no token", None, 401),
            ("another key, same kid", idp.mint("carol@corp.example", ["sre"], key=forged), 401),
            ("wrong issuer", idp.mint("carol@corp.example", ["sre"], iss="https://evil.example"), 401),
            ("expired", idp.mint("carol@corp.example", ["sre"], exp=now - 900, iat=now - 1200, nbf=now - 1200), 401),
            ("wrong audience", idp.mint("carol@corp.example", ["sre"], aud="another-app"), 403)):
        assert _user_get(apisix, token)[0] == expected, name
    # Only Authorization: Bearer counts: openid-connect's X-Access-Token input is dropped at the edge.
    assert _user_get(apisix, extra=f"X-Access-Token: {idp.mint('carol@corp.example', ['sre'])}\n")[0] == 401


def test_apisix_trusts_a_rotated_key_at_once(apisix):
    idp = apisix["idp"]
    before = idp.requests[JWKS_PATH]
    new = idp.add_key()
    assert _user_get(apisix, idp.mint("carol@corp.example", ["sre"], kid=new))[0] == 200
    assert idp.requests[JWKS_PATH] == before + 1  # fetched again for the unknown kid, once


def test_forged_claims_on_an_anonymous_route_are_ignored(apisix):
    status, _, body = raw_request(apisix["edge"], "GET / HTTP/1.1\nHost: localhost\nX-Userinfo: eyJlbWFpbCI6ImFk"
                                  "bWluQGNvcnAuZXhhbXBsZSJ9\nX-User-Email: admin@corp.example\nConnection: close\n")
    seen = json.loads(body)
    assert status == 200 and seen["x-user-email"] is None and seen["x-userinfo"] is None
