"""The two data planes behind one interface, for the parity suite (tests/test_data_planes.py): the local
platform's Envoy (`finopti up`) and the compose bundle's APISIX (finopti.testing.apisix), each in front of the
same services. A scenario asks a plane, never a gateway's own API, except through these few methods."""

import ssl
import time
from pathlib import Path

import httpx
import jwt
import yaml
from conftest import REPO, Platform
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from finopti.idp import KEY_ID
from finopti.meshtls import client_context
from finopti.platform import supervisor_rpc
from finopti.testing.apisix import ApisixPlatform

REFUSED = "refused"  # the connection itself was refused (TLS handshake)
TRAFFIC_MESH = REPO / "tests" / "fixtures" / "traffic-mesh.yaml"
FAULT_HEADER = ("x-finopti-fault", "on")
FAULT_DELAY = 0.4  # seconds


def traffic_mesh_file(directory: Path) -> Path:
    """tests/fixtures/traffic-mesh.yaml with deterministic faults on a header (`fault` delays then aborts,
    `delay` only delays), a route the policy service decides on Envoy too (`decided`) and a mesh route
    (`mesh-echo`, for the caller `flaky`). Both data planes load this file."""
    raw = yaml.safe_load(TRAFFIC_MESH.read_text())
    header = {"name": FAULT_HEADER[0], "value": FAULT_HEADER[1]}
    delay = {"duration": f"{int(FAULT_DELAY * 1000)}ms", "percent": 100}
    for route in raw["routes"]:
        if route["name"] == "fault":
            route["policy"] = {"fault": {"delay": delay, "abort": {"status": 503, "percent": 100}, "header": header}}
    raw["routes"].append({"name": "delay", "listener": "edge", "path": "/delay/", "rewrite": "/echo/",
                          "backend": "steady", "roles": ["*"], "policy": {"fault": {"delay": delay, "header": header}}})
    # Decided by the policy service (Rego) on Envoy too, as every route is by OPA on APISIX.
    # A drill marked by one W3C baggage member.
    raw["routes"].append({"name": "baggage", "listener": "edge", "path": "/baggage/", "rewrite": "/echo/",
                          "backend": "steady", "roles": ["*"], "policy": {"fault": {
                              "abort": {"status": 503, "percent": 100},
                              "header": {"name": "baggage", "value": "drill=1"}}}})
    raw["routes"].append({"name": "decided", "listener": "edge", "path": "/decided/", "rewrite": "/echo/",
                          "backend": "steady", "roles": ["*"], "authz": "rego"})
    # The mesh listener to a backend that echoes what reached it: the identity headers each gateway sets.
    raw["routes"].append({"name": "mesh-echo", "listener": "mesh", "path": "/steady/", "rewrite": "/echo/",
                          "backend": "steady", "roles": ["*"], "allowed_callers": ["flaky"]})
    path = directory / "parity-mesh.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Backend:
    """Direct access to a test backend, as the gateway (it accepts only the gateway's certificate): control and
    hit counts, never traffic."""

    def __init__(self, url: str, tls: ssl.SSLContext):
        self.client = httpx.Client(base_url=url, verify=tls, timeout=10)
        self.client.post("/reset").raise_for_status()

    def control(self, **settings) -> None:
        self.client.post("/control", json=settings).raise_for_status()

    @property
    def hits(self) -> int:
        return self.client.get("/hits").json().get("echo", 0)

    @property
    def in_flight(self) -> int:
        """Requests the backend is serving (held, with control(hold=True))."""
        return self.client.get("/hits").json()["in_flight"]


def counter(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class Plane:
    name: str
    edge: str
    idp_key: Path  # the identity provider's signing key, for tokens that are wrong on purpose

    def token(self, email: str, groups: list[str] | None = None, ttl: float | None = None) -> str:
        raise NotImplementedError

    def signed(self, key: Path | None = None, **claims) -> str:
        """A token like the identity provider's for alice, with `claims` changed, signed with `key`."""
        now = int(time.time())
        body = {"iss": "https://idp.finopti.local", "aud": "finopti", "sub": "alice@finopti.dev",
                "email": "alice@finopti.dev", "groups": "", "iat": now, "nbf": now, "exp": now + 600, **claims}
        private = serialization.load_pem_private_key((key or self.idp_key).read_bytes(), None)
        return jwt.encode(body, private, algorithm="RS256", headers={"kid": KEY_ID})

    def auth(self, email: str = "alice@finopti.dev") -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(email)}"}

    def mesh_call(self, caller: str | None, method: str, path: str, **kwargs) -> httpx.Response | str:
        """A call on the mesh listener as the service `caller` (None: as no service at all); REFUSED when the
        gateway refused the connection."""
        raise NotImplementedError

    def access_lines(self) -> list[dict]:
        raise NotImplementedError

    def service_lines(self, service: str) -> list[dict]:
        raise NotImplementedError

    def route_requests(self, route: str, status_class: str) -> float:
        """The gateway's own Prometheus count of answers on `route` in `status_class` (e.g. "2")."""
        raise NotImplementedError

    def scrape(self, service: str, caller: str) -> int | str:
        """Fetch a service's /metrics the way Prometheus does, as the identity `caller`."""
        raise NotImplementedError

    def backend(self, service: str, version: str = "v1") -> Backend:
        raise NotImplementedError

    def stop_policy(self) -> None:
        raise NotImplementedError

    def start_policy(self) -> None:
        raise NotImplementedError

    def stop_backend(self, service: str) -> None:
        """Stop a backend's (first version's) process: the gateway can no longer connect to it."""
        raise NotImplementedError

    def start_backend(self, service: str) -> None:
        """Start it again and wait until it answers."""
        raise NotImplementedError

    def wait_access(self, predicate, until, timeout: float = 15.0) -> list[dict]:
        """Access log lines matching `predicate`, once `until(lines)` holds (each gateway flushes its log late:
        APISIX every 3 s) or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.access_lines() if predicate(line)]
            if until(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def _mesh_request(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response | str:
    try:
        with client:
            return client.request(method, url, **kwargs)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError):
        return REFUSED


class EnvoyPlane(Plane):
    """The local platform (`finopti up`): Envoy; mesh callers present their certificate."""

    name = "envoy"

    def __init__(self, platform: Platform):
        self.platform = platform
        self.edge = platform.edge
        self.rt = platform.runtime
        self.pki = platform.state.pki
        self.idp_key = platform.state.idp / "signing-key.pem"

    def token(self, email, groups=None, ttl=None) -> str:
        return self.platform.token(email, groups, ttl)

    def _tls(self, identity: str | None) -> ssl.SSLContext:
        if identity is None:
            return ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        return client_context(self.pki / f"{identity}.crt", self.pki / f"{identity}.key", self.pki / "ca.crt")

    def mesh_call(self, caller, method, path, **kwargs):
        return _mesh_request(httpx.Client(verify=self._tls(caller), timeout=30), method, f"{self.rt.mesh_url}{path}",
                             **kwargs)

    def access_lines(self) -> list[dict]:
        return self.platform.log_lines("gateway")

    def service_lines(self, service: str) -> list[dict]:
        return self.platform.log_lines(service)

    def route_requests(self, route: str, status_class: str) -> float:
        text = httpx.get(f"{self.rt.admin_url}/stats/prometheus", timeout=10).text
        return counter(text, "envoy_vhost_route_upstream_rq_xx_total", envoy_route=route,
                       envoy_response_code_class=status_class)

    def scrape(self, service: str, caller: str) -> int | str:
        port = self.rt.service_ports[service]["v1"]
        return _mesh_request(httpx.Client(verify=self._tls(caller), timeout=10), "GET",
                             f"https://127.0.0.1:{port}/metrics")

    def backend(self, service: str, version: str = "v1") -> Backend:
        return Backend(f"https://127.0.0.1:{self.rt.service_ports[service][version]}", self._tls("gateway"))

    def stop_policy(self) -> None:
        supervisor_rpc(self.platform.state).stopProcess("policy")

    def start_policy(self) -> None:
        supervisor_rpc(self.platform.state).startProcess("policy")
        port = self.rt.service_ports["policy"]["v1"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _mesh_request(httpx.Client(verify=self._tls("gateway"), timeout=2), "GET",
                             f"https://127.0.0.1:{port}/healthz") != REFUSED:
                return
            time.sleep(0.1)
        raise TimeoutError("the policy service did not come back")

    def stop_backend(self, service: str) -> None:
        supervisor_rpc(self.platform.state).stopProcess(service)

    def start_backend(self, service: str) -> None:
        supervisor_rpc(self.platform.state).startProcess(service)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.backend(service)  # it answers (and is reset)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} did not come back") from None
                time.sleep(0.1)


class ApisixPlane(Plane):
    """The compose bundle's APISIX: mesh callers are known by the address they call from."""

    name = "apisix"

    def __init__(self, platform: ApisixPlatform):
        self.platform = platform
        self.edge = platform.edge
        self.idp_key = platform.idp.key_path

    def token(self, email, groups=None, ttl=None) -> str:
        return self.platform.token(email, groups, ttl)

    def mesh_call(self, caller, method, path, **kwargs):
        client = (self.platform.caller_client(caller, timeout=30) if caller is not None
                  else httpx.Client(timeout=30))
        return _mesh_request(client, method, f"{self.platform.mesh_url}{path}", **kwargs)

    def access_lines(self) -> list[dict]:
        return self.platform.gateway.access_lines()

    def _container(self, service: str, version: str = "v1") -> str:
        return next(name for name, p in self.platform.services.items() if (p.service, p.version) == (service, version))

    def service_lines(self, service: str) -> list[dict]:
        return self.platform.services[self._container(service)].log_lines()

    def route_requests(self, route: str, status_class: str) -> float:
        text = httpx.get(self.platform.export_url, timeout=10).text
        total = 0.0
        for code in range(int(status_class) * 100, int(status_class) * 100 + 100):
            total += counter(text, "apisix_http_status_total", route=route, code=str(code))
        return total

    def scrape(self, service: str, caller: str) -> int | str:
        client = self.platform.caller_client(caller, timeout=10)
        return _mesh_request(client, "GET", f"{self.platform.url('metrics')}/metrics/{service}/v1")

    def backend(self, service: str, version: str = "v1") -> Backend:
        return Backend(self.platform.service_url(self._container(service, version)), self.platform.gateway_tls())

    def stop_policy(self) -> None:
        self.platform.stop_service("opa")

    def start_policy(self) -> None:
        self.platform.start_service("opa")

    def stop_backend(self, service: str) -> None:
        self.platform.stop_service(self._container(service))

    def start_backend(self, service: str) -> None:
        self.platform.start_service(self._container(service))
