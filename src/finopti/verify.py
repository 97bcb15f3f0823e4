"""`finopti verify-mesh`: probe the running platform and prove that nothing bypasses the gateway.

Each check returns a `Check`; the CLI prints them as a table (or JSON) and exits non-zero on a failure.
"""

import contextlib
import dataclasses
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from finopti.idp import DevIdentityProvider
from finopti.mesh.envoy_authz import EXT_AUTHZ_FILTER, RBAC_FILTER
from finopti.mesh.model import MeshSpec, Route, load_mesh
from finopti.mesh.supervisor import components
from finopti.meshtls import client_context
from finopti.paths import StateDir
from finopti.pki import make_foreign_ca_cert
from finopti.platform import Runtime
from finopti.ports import free_port

# A user who holds every role, so only the source identity decides the caller checks.
PROBE_USER = "erin@finopti.dev"
NO_ROLE_USER = "dave@finopti.dev"
SAMPLE_PROMPTS = {"gcloud-agent": "list buckets", "monitoring-agent": "list metrics"}


@dataclass
class Check:
    number: int
    name: str
    passed: bool
    detail: str


@dataclass
class Probe:
    state: StateDir
    rt: Runtime
    spec: MeshSpec

    @property
    def pki(self) -> Path:
        return self.state.pki

    def identity_context(self, name: str) -> ssl.SSLContext:
        return client_context(self.pki / f"{name}.crt", self.pki / f"{name}.key", self.pki / "ca.crt")

    def token(self, email: str = PROBE_USER) -> str:
        return DevIdentityProvider(self.state.idp, self.spec.identity).issue(email)

    def mesh_get(self, identity: str, path: str, mesh_url: str | None = None) -> httpx.Response:
        with httpx.Client(verify=self.identity_context(identity), timeout=10) as client:
            return client.get(f"{mesh_url or self.rt.mesh_url}{path}",
                              headers={"authorization": f"Bearer {self.token()}"})

    def ask(self, prompt: str, headers: dict | None = None, user: str = PROBE_USER,
            edge: str | None = None) -> httpx.Response:
        """Through the live edge, or `edge` (another gateway's edge URL)."""
        return httpx.post(f"{edge or self.rt.edge_url}/api/ask", json={"prompt": prompt}, timeout=30,
                          headers={"authorization": f"Bearer {self.token(user)}", **(headers or {})})

    def request(self, route: Route, path: str, urls: dict[str, str] | None = None) -> httpx.Response:
        """GET `path` on the route's listener, as one of the route's allowed callers (`urls`: another gateway's
        {"edge": …, "mesh": …})."""
        urls = urls or {"edge": self.rt.edge_url, "mesh": self.rt.mesh_url}
        if route.listener == "edge":
            return httpx.get(f"{urls['edge']}{path}", timeout=10,
                             headers={"authorization": f"Bearer {self.token()}"})
        return self.mesh_get((route.allowed_callers or ["cli"])[0], path, urls["mesh"])

    def log(self, component: str) -> list[dict]:
        lines = []
        path = self.state.logs / f"{component}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


def _service_ports(probe: Probe) -> dict[str, tuple[str, int]]:
    """component -> (service, port)."""
    return {c: (s, probe.rt.service_ports[s][v]) for c, s, v in components(probe.spec)}


def _handshake_refused(port: int, context: ssl.SSLContext) -> bool:
    """True when the service gives nothing back: the TLS handshake or the first read fails."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return not tls.recv(64)
    except (ssl.SSLError, OSError):
        return True


def _plain_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return b"200" not in raw.recv(64)
    except OSError:
        return True


def check_no_certificate(probe: Probe) -> tuple[bool, str]:
    no_cert = ssl.create_default_context(cafile=str(probe.pki / "ca.crt"))
    ports = _service_ports(probe)
    open_ports = [
        c for c, (_, port) in ports.items() if not (_plain_refused(port) and _handshake_refused(port, no_cert))
    ]
    if open_ports:
        return False, f"answered without a client certificate: {', '.join(open_ports)}"
    return True, f"{len(ports)} service ports refuse plain HTTP and TLS without a certificate"


def check_wrong_certificates(probe: Probe) -> tuple[bool, str]:
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_foreign_ca_cert(Path(tmp), "gateway")
        foreign = ssl.create_default_context(cafile=str(probe.pki / "ca.crt"))
        foreign.load_cert_chain(cert, key)
        for component, (service, port) in _service_ports(probe).items():
            if not _handshake_refused(port, foreign):
                failures.append(f"{component} accepted a foreign-CA certificate")
            other = next(s.name for s in probe.spec.services if s.name != service)
            if not _handshake_refused(port, probe.identity_context(other)):
                failures.append(f"{component} accepted {other}'s certificate")
    return not failures, "; ".join(failures) or "every service refuses a foreign CA and other services' certificates"


def _caller_refused(response: httpx.Response) -> bool:
    if response.status_code != 403:
        return False
    try:
        return "may not call route" in response.json().get("message", "")
    except ValueError:
        return False


def _upstream_unreachable(response: httpx.Response) -> bool:
    """A 503 the gateway gives after the policy let the call through, because the service outside the platform
    (an LLM API that is not running here) does not answer: the decision itself was to pass."""
    if response.status_code != 503:
        return False
    try:
        return "upstream connect error" in response.json().get("message", "")
    except ValueError:
        return False


def check_source_routes(probe: Probe) -> tuple[bool, str]:
    failures, pairs = [], 0
    callers = [s.name for s in probe.spec.services] + ["cli"]
    for route in probe.spec.routes_on("mesh"):
        if route.allowed_callers is None:
            continue
        for caller in callers:
            pairs += 1
            response = probe.mesh_get(caller, route.path if route.exact else f"{route.path}healthz")
            refused = _caller_refused(response)
            allowed = caller in route.allowed_callers
            if allowed and probe.spec.is_external(route.backend) and _upstream_unreachable(response):
                continue
            if allowed and (refused or response.status_code in (401, 503)):
                failures.append(f"{caller}→{route.name} should pass, got {response.status_code}")
            if not allowed and not refused:
                failures.append(f"{caller}→{route.name} should get 403, got {response.status_code}")
    return not failures, "; ".join(failures) or f"{pairs} source→route pairs decided as mesh.yaml says"


def check_every_hop_logged(probe: Probe) -> tuple[bool, str]:
    failures = []
    backends = {r.name: r.backend for r in probe.spec.routes}
    for agent, prompt in SAMPLE_PROMPTS.items():
        response = probe.ask(prompt)
        if response.status_code != 200:
            failures.append(f"sample for {agent} failed: {response.status_code} {response.text[:120]}")
            continue
        trace_id = response.json()["trace_id"]
        time.sleep(0.5)  # the gateway flushes its access log every 200 ms
        gateway_hops: dict[str, int] = {}
        for hop in probe.log("gateway"):
            if hop.get("trace_id") == trace_id:
                service = backends.get(hop.get("route"), "?")
                gateway_hops[service] = gateway_hops.get(service, 0) + 1
        for component, service, _ in components(probe.spec):
            # The policy service's /authz checks are the gateway asking, not a hop between services.
            served = [line for line in probe.log(component)
                      if line.get("trace_id") == trace_id and line.get("event") == "request_completed"
                      and not str(line.get("path", "")).startswith("/authz/")]
            if len(served) > gateway_hops.get(service, 0):
                failures.append(f"{component} served {len(served)} requests of trace {trace_id} but the gateway "
                                f"logged {gateway_hops.get(service, 0)}")
        if agent not in gateway_hops:
            failures.append(f"no gateway entry for {agent} in trace {trace_id}")
    return not failures, "; ".join(failures) or "every service request of the samples has its gateway entry"


def check_identity_headers_stripped(probe: Probe) -> tuple[bool, str]:
    response = probe.ask("list buckets", headers={"x-user-email": "mallory@evil.example",
                                                  "x-user-groups": "finops-admins", "x-finopti-source": "ui"})
    if response.status_code != 200:
        return False, f"request failed: {response.status_code}"
    request_id = response.json()["request_id"]

    def users_seen() -> set:
        return {line.get("user") for c in ("orchestrator", "gcloud-agent") for line in probe.log(c)
                if line.get("request_id") == request_id}

    # A service logs its request line just after answering: give the log a moment to catch up.
    _wait_until(lambda: len(users_seen()) > 0 and all(users_seen()), 5)
    seen = users_seen()
    return seen == {PROBE_USER}, f"services saw user(s) {sorted(u or '' for u in seen)}"


def _edge_get(probe: Probe, path: str, host: str, headers: dict | None = None) -> httpx.Response:
    return httpx.get(f"{probe.rt.edge_url}{path}", headers={"host": host, **(headers or {})}, timeout=10)


def check_host_allow_list(probe: Probe) -> tuple[bool, str]:
    """DNS rebinding: a page on any domain resolving to the edge must get nothing but a refusal."""
    port = probe.rt.edge_port
    failures = []
    for host in (f"rebind.verify-mesh.example:{port}", "localhost.", f"127.1:{port}", f"[::ffff:127.0.0.1]:{port}"):
        response = _edge_get(probe, "/auth/dev-users", host)
        if response.status_code != 421 or response.json().get("error") != "unknown_host":
            failures.append(f"Host {host} got {response.status_code}")
    hosts = probe.spec.gateway.edge.hosts
    for host in (hosts[0], f"{hosts[0]}:{port}"):
        if _edge_get(probe, "/", host).status_code != 200:
            failures.append(f"declared Host {host} is not served")
    return not failures, "; ".join(failures) or f"other Host names get 421; {', '.join(hosts)} are served"


def check_query_token_refused(probe: Probe) -> tuple[bool, str]:
    """A valid token in the query is refused with 400 naming the parameter, and never reaches the log."""
    token = probe.token()
    response = _edge_get(probe, f"/api/logs?limit=1&access_token={token}", probe.spec.gateway.edge.hosts[0])
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 400 or body.get("param") != "access_token":
        return False, f"a token in the query got {response.status_code} {response.text[:120]}"
    request_id = response.headers.get("x-request-id")
    logged = _wait_until(lambda: any(line.get("request_id") == request_id for line in probe.log("gateway")), 5)
    leaked = [c.stem for c in probe.state.logs.glob("*.log") if token in c.read_text(errors="replace")]
    if not logged or leaked:
        return False, f"access line found: {logged}; the token is in {leaked or 'no log'}"
    return True, "refused with 400 naming access_token; the access log holds [REDACTED]"


def _raw_edge(probe: Probe, head: str) -> tuple[int, dict]:
    """One request written byte for byte (no client library sends these), and the JSON body of its answer."""
    with socket.create_connection((probe.rt.edge_host, probe.rt.edge_port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1]) if head_bytes.startswith(b"HTTP/") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (f.partition(":") for f in head_bytes.decode("latin-1").split("\r\n")[1:])}
    try:
        error = json.loads(body)
    except ValueError:
        error = {}
    return status, {**error, "x-request-id": headers.get("x-request-id")} if isinstance(error, dict) else {}


def check_unreadable_requests(probe: Probe) -> tuple[bool, str]:
    """What the edge refuses while reading a request is answered in JSON with a request id: header names with
    `_` (an identity header spelled `x_user_email`), too many headers, broken HTTP."""
    host = probe.spec.gateway.edge.hosts[0]
    cases = {
        "x_user_email header": (f"GET /api/logs HTTP/1.1\r\nHost: {host}\r\nx_user_email: {PROBE_USER}\r\n", 400,
                                "header_with_underscore"),
        "200 headers": (f"GET / HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"x-h{i}: v\r\n" for i in range(200)),
                        431, "headers_too_large"),
        "space in a header name": (f"GET / HTTP/1.1\r\nHost: {host}\r\nbad header: v\r\n", 400, "malformed_request"),
    }
    failures = []
    for name, (head, status, code) in cases.items():
        got, body = _raw_edge(probe, head + "Connection: close\r\n\r\n")
        if got != status or body.get("error") != code or not body.get("message") \
                or not body.get("request_id") or body["request_id"] != body["x-request-id"]:
            failures.append(f"{name}: {got} {body.get('error')}")
    return not failures, "; ".join(failures) or "refused in JSON with a request id: " + ", ".join(
        f"{name} {status} {code}" for name, (_, status, code) in cases.items())


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@contextlib.contextmanager
def throwaway_gateway(probe: Probe, *, policy_port: int):
    """A second Envoy rendered from the running platform's mesh and runtime, on ports and an xDS directory of
    its own, whose policy cluster points at `policy_port`. The live gateway and services are untouched."""
    from finopti.mesh.envoy import render_envoy
    from finopti.platform import envoy_binary, gateway_runtime, resolve_for, write_envoy_files

    work = Path(tempfile.mkdtemp(prefix="finopti-verify-gateway-"))
    service_ports = {service: dict(versions) for service, versions in probe.rt.service_ports.items()}
    service_ports["policy"] = dict.fromkeys(service_ports.get("policy", {"v1": 0}), policy_port)
    grt = dataclasses.replace(gateway_runtime(probe.state, probe.rt, probe.spec.identity), edge_port=free_port(),
                              mesh_port=free_port(),
                              admin_port=free_port(), service_ports=service_ports, xds_dir=work / "xds")
    write_envoy_files(render_envoy(resolve_for(probe.spec, probe.rt), grt), work, work / "xds")
    log = (work / "envoy.log").open("w")
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(work / "bootstrap.yaml"), "--log-level", "warn", "--concurrency", "1",
         "--file-flush-interval-msec", "100", "--use-dynamic-base-id", "--base-id-path", str(work / "base-id")],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        admin = f"http://127.0.0.1:{grt.admin_port}/ready"
        if not _wait_until(lambda: proc.poll() is None and _answers(admin), 30):
            raise RuntimeError(f"the throwaway gateway did not get ready: {(work / 'envoy.log').read_text()[-500:]}")
        yield grt, work / "envoy.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _authz_config_problems(probe: Probe) -> list[str]:
    """From the gateway's live configuration: every listener runs the authorization filter, each virtual
    host's default grants nothing, and every route carries rules of its own or the Rego check. So a route
    whose rules were lost is refused."""
    dump = httpx.get(f"{probe.rt.admin_url}/config_dump", timeout=5).json()["configs"]
    problems, routes = [], 0
    for section in dump:
        for listener in section.get("dynamic_listeners", []):
            config = listener.get("active_state", {}).get("listener", {})
            filters = [f for chain in config.get("filter_chains", []) for net in chain.get("filters", [])
                       for f in net.get("typed_config", {}).get("http_filters", [])]
            if not any(f["name"] == RBAC_FILTER for f in filters):
                problems.append(f"listener {listener['name']} has no authorization filter")
        for route_config in section.get("dynamic_route_configs", []):
            for host in route_config.get("route_config", {}).get("virtual_hosts", []):
                default = host.get("typed_per_filter_config", {}).get(RBAC_FILTER, {}).get("rbac", {})
                rules = default.get("rules")  # Envoy's dump leaves out defaults: ALLOW, no policies
                if rules is None or rules.get("policies") or rules.get("action", "ALLOW") != "ALLOW":
                    problems.append(f"virtual host {host.get('name')}: the authorization default grants requests")
                for route in host.get("routes", []):
                    routes += 1
                    per_filter = route.get("typed_per_filter_config", {})
                    native = per_filter.get(RBAC_FILTER, {}).get("rbac", {}).get("rules") is not None
                    rego = EXT_AUTHZ_FILTER in per_filter
                    if not (native or rego):
                        problems.append(f"route {route.get('name')} carries no authorization rules")
    if not routes:
        problems.append("the gateway serves no routes")
    return problems


def check_authz_fail_closed(probe: Probe) -> tuple[bool, str]:
    """The live gateway's rules grant nothing by default and refuse a user without a role; a gateway whose policy
    service is unreachable still decides its native routes and refuses every Rego route (ext_authz's UAEX).
    The outage is a throwaway gateway rendered from the running config with the policy's address pointing at a
    closed port: the live policy service and live traffic are never touched."""
    problems = _authz_config_problems(probe)
    refused = probe.ask("list buckets", user=NO_ROLE_USER)
    if refused.status_code != 403 or refused.json().get("rule") != "no-role":
        problems.append(f"{NO_ROLE_USER} (no role) got {refused.status_code}, not the gateway's 403")
    rego_routes = [r for r in probe.spec.routes if r.authz == "rego"]
    request_ids: list[str] = []
    with throwaway_gateway(probe, policy_port=free_port()) as (grt, log):
        urls = {"edge": f"http://{probe.rt.edge_host}:{grt.edge_port}",
                "mesh": f"https://{probe.rt.mesh_host}:{grt.mesh_port}"}
        # Native decisions need no policy service; routes decided by Rego are refused without it.
        if (allowed := probe.ask("list buckets", edge=urls["edge"])).status_code != 200:
            problems.append(f"policy unreachable: {PROBE_USER} got {allowed.status_code} on a native route")
        if (still := probe.ask("list buckets", user=NO_ROLE_USER, edge=urls["edge"])).status_code != 403:
            problems.append(f"policy unreachable: {NO_ROLE_USER} got {still.status_code} on a native route")
        for route in rego_routes:
            response = probe.request(route, route.path if route.exact else f"{route.path}healthz", urls=urls)
            request_ids.append(response.headers.get("x-request-id", ""))
            if response.status_code not in (403, 503):
                problems.append(f"policy unreachable: route {route.name} (Rego) answered {response.status_code}")

        def flags() -> list[str]:
            lines = [json.loads(line) for line in log.read_text(errors="replace").splitlines()
                     if '"access"' in line and line.startswith("{")]
            return [str(x.get("response_flags")) for x in lines if x.get("request_id") in request_ids]

        if rego_routes and not _wait_until(lambda: len(flags()) >= len(rego_routes), 5):
            problems.append("the throwaway gateway did not log the Rego routes' requests")
        elif not all("UAEX" in f for f in flags()):
            problems.append(f"Rego routes refused without ext_authz's UAEX flag: {flags()}")
    if (live := probe.ask("list buckets")).status_code != 200:
        problems.append(f"the live gateway answered {live.status_code} meanwhile")
    return not problems, "; ".join(problems) or (
        "listener defaults grant nothing and every route has its own rules; no-role refused; with the policy "
        f"unreachable (throwaway gateway) native routes still decide and {len(rego_routes)} Rego route(s) are "
        "refused (UAEX); the live gateway kept answering")


CHECKS: list[tuple[str, Callable[[Probe], tuple[bool, str]]]] = [
    ("service ports refuse clients without a mesh certificate", check_no_certificate),
    ("service ports refuse foreign-CA and other services' certificates", check_wrong_certificates),
    ("disallowed source→route pairs get 403, allowed ones pass", check_source_routes),
    ("every hop of a sample request per agent is in the gateway log", check_every_hop_logged),
    ("client-sent identity headers are stripped", check_identity_headers_stripped),
    ("the edge serves only its declared Host names", check_host_allow_list),
    ("a token in the query is refused and never logged", check_query_token_refused),
    ("authorization fails closed (gateway rules; an unreachable policy on a throwaway gateway)",
     check_authz_fail_closed),
    ("header names with `_`, too many headers and broken HTTP are refused in JSON", check_unreadable_requests),
]


def verify_mesh(state: StateDir, progress: Callable[..., None] | None = None) -> list[Check]:
    """Every check in order; `progress(number, name)` before each and `progress(number, name, check)` after."""
    rt = Runtime.load(state)
    probe = Probe(state, rt, load_mesh(rt.mesh_file))
    results = []
    for number, (name, check) in enumerate(CHECKS, start=1):
        if progress:
            progress(number, name)
        try:
            passed, detail = check(probe)
        except Exception as exc:  # a probe that crashes is a failed check, not a crashed command
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        results.append(Check(number, name, passed, detail))
        if progress:
            progress(number, name, results[-1])
    return results


def as_json(checks: list[Check]) -> str:
    return json.dumps({"passed": all(c.passed for c in checks), "checks": [asdict(c) for c in checks]}, indent=2)
