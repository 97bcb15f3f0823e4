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
from finopti.mesh.model import MeshSpec, load_mesh
from finopti.mesh.supervisor import components
from finopti.meshtls import client_context
from finopti.paths import StateDir
from finopti.pki import make_foreign_ca_cert
from finopti.platform import Runtime
from finopti.ports import free_port

# A user who holds every role, so only the source identity decides the caller checks.
PROBE_USER = "erin@finopti.dev"
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

    def mesh_get(self, identity: str, path: str) -> httpx.Response:
        with httpx.Client(verify=self.identity_context(identity), timeout=10) as client:
            return client.get(f"{self.rt.mesh_url}{path}", headers={"authorization": f"Bearer {self.token()}"})

    def ask(self, prompt: str, headers: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.rt.edge_url}/api/ask", json={"prompt": prompt}, timeout=30,
                          headers={"authorization": f"Bearer {self.token()}", **(headers or {})})

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
    grt = dataclasses.replace(gateway_runtime(probe.state, probe.rt), edge_port=free_port(), mesh_port=free_port(),
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


def check_policy_fail_closed(probe: Probe) -> tuple[bool, str]:
    """A gateway that cannot reach the policy refuses (503, ext_authz's UAEX), proven on a throwaway gateway
    rendered from the running config with the policy's address pointing at a closed port, while the live
    gateway keeps answering the same request."""
    closed = free_port()  # nothing listens there: every check to the policy fails to connect
    with throwaway_gateway(probe, policy_port=closed) as (grt, log):
        response = httpx.post(f"http://127.0.0.1:{grt.edge_port}/api/ask", json={"prompt": "list buckets"},
                              headers={"authorization": f"Bearer {probe.token()}"}, timeout=30)
        request_id = response.headers.get("x-request-id", "")

        def access_line() -> dict | None:
            for line in log.read_text(errors="replace").splitlines():
                if request_id and request_id in line and '"access"' in line:
                    try:
                        return json.loads(line)
                    except ValueError:
                        return None
            return None

        _wait_until(lambda: access_line() is not None, 5)
        line = access_line() or {}
    live = probe.ask("list buckets")
    flags = str(line.get("response_flags", ""))
    passed = response.status_code in (403, 503) and "UAEX" in flags and live.status_code == 200
    return passed, (f"policy unreachable → {response.status_code} (flags {flags or 'none logged'}); "
                    f"live gateway meanwhile → {live.status_code}")


CHECKS: list[tuple[str, Callable[[Probe], tuple[bool, str]]]] = [
    ("service ports refuse clients without a mesh certificate", check_no_certificate),
    ("service ports refuse foreign-CA and other services' certificates", check_wrong_certificates),
    ("disallowed source→route pairs get 403, allowed ones pass", check_source_routes),
    ("every hop of a sample request per agent is in the gateway log", check_every_hop_logged),
    ("client-sent identity headers are stripped", check_identity_headers_stripped),
    ("a gateway that cannot reach the policy refuses (throwaway gateway; live traffic untouched)",
     check_policy_fail_closed),
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
