"""A real gateway for authorization tests and benchmarks: Envoy with the rendered configuration of a mesh, every
backend answered by one echo server (a second, tiny Envoy: a request that passes authorization answers 200, at a
cost that does not blur what the gateway adds), and the real policy service (Rego, OPA REST API) behind routes
that declare `authz: rego`.

    with AuthzGateway(tmp, mesh, policies) as gw:
        gw.request("mesh", "GET", "/gcloud-tools/x", caller="gcloud-agent", token=gw.token("bob@finopti.dev"))
        gw.opa_decision(input)            # the Rego decision through the policy service's OPA API
        gw.apply(other_mesh)              # re-render live (file-based xDS), as `finopti mesh apply` does

Binds 127.0.0.1 only, on free ports; stops everything it started.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import yaml

from finopti.gateway_sync import wait_for_gateway
from finopti.idp import KEY_ID, DevIdentityProvider
from finopti.mesh.envoy import POLICY_CLUSTER, GatewayRuntime, render_envoy
from finopti.mesh.policy_data import render_route_data
from finopti.mesh.resolved import ResolvedMesh
from finopti.mesh.supervisor import ENVOY_DRAIN_ARGS
from finopti.meshtls import client_context
from finopti.pki import ensure_pki
from finopti.platform import envoy_binary, write_envoy_files
from finopti.ports import free_port

ECHO_BODY = '{"echo": true}'


def echo_bootstrap(port: int, admin_port: int) -> dict:
    """An Envoy that answers every request 200 with ECHO_BODY."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "echo",
        "route_config": {"virtual_hosts": [{"name": "echo", "domains": ["*"], "routes": [{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": ECHO_BODY}}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "echo",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
        }]},
    }


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout:.0f}s")


class AuthzGateway:
    def __init__(self, work: Path, mesh: ResolvedMesh, policy_source: Path, *, authz: bool = True,
                 mtls: bool = True, concurrency: int = 1):
        self.work = Path(work)
        self.mesh = mesh
        self.policy_source = Path(policy_source)
        self.authz, self.mtls, self.concurrency = authz, mtls, concurrency
        self.identities = sorted({b.name for b in mesh.services} | {"cli", "collector", "prometheus"})
        self._procs: list[subprocess.Popen] = []
        self._clients: dict[str | None, httpx.Client] = {}
        self._opa: httpx.Client | None = None

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> AuthzGateway:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        self.pki = ensure_pki(self.work / "pki", ["gateway", *self.identities])
        self.idp = DevIdentityProvider(self.work / "idp", self.mesh.identity).ensure()
        self.echo_port, echo_admin = free_port(), free_port()
        (self.work / "echo.yaml").write_text(yaml.safe_dump(echo_bootstrap(self.echo_port, echo_admin)))
        self._spawn("echo", [envoy_binary(), "-c", str(self.work / "echo.yaml"), "--use-dynamic-base-id",
                             "--concurrency", "1", "--log-level", "error"], {})
        self.policy_dir = self.work / "policy"
        self._write_policy_dir(self.mesh)
        self.policy_port = free_port()
        self._spawn("policy", [sys.executable, "-m", "finopti.services.runner"], {
            "FINOPTI_SERVICE": "policy", "FINOPTI_PORT": str(self.policy_port),
            "FINOPTI_ENTRYPOINT": "finopti.services.policy.app:create_app",
            "FINOPTI_POLICY_DIR": str(self.policy_dir), "FINOPTI_HOME": str(self.work)})
        self.edge_port, self.mesh_port, self.admin_port = free_port(), free_port(), free_port()
        self._render()
        self._spawn("envoy", [envoy_binary(), "-c", str(self.work / "bootstrap.yaml"), *ENVOY_DRAIN_ARGS,
                              "--use-dynamic-base-id",
                              "--concurrency", str(self.concurrency), "--log-level", "error"], {})
        _wait(lambda: httpx.get(f"http://127.0.0.1:{self.policy_port}/healthz", timeout=1).status_code == 200,
              30, "policy service")
        _wait(lambda: httpx.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1).status_code == 200,
              30, "envoy")
        _wait(lambda: httpx.get(f"http://127.0.0.1:{self.echo_port}/", timeout=1).status_code == 200, 30, "echo")

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self._procs.append(subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=log))

    def close(self) -> None:
        for client in [*self._clients.values(), *([self._opa] if self._opa else [])]:
            client.close()
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    # ---------------------------------------------------------------- configuration

    def _write_policy_dir(self, mesh: ResolvedMesh, data: dict | None = None) -> None:
        self.policy_dir.mkdir(parents=True, exist_ok=True)
        for path in self.policy_source.glob("*.rego"):
            shutil.copy(path, self.policy_dir / path.name)
        data_text = json.dumps(data) if data is not None else (self.policy_source / "data.json").read_text()
        (self.policy_dir / "data.json").write_text(data_text)
        (self.policy_dir / "routes.json").write_text(json.dumps(render_route_data(mesh)))

    def _runtime(self) -> GatewayRuntime:
        ports = {b.name: dict.fromkeys(b.versions, self.echo_port) for b in self.mesh.services}
        return GatewayRuntime(
            edge_host="127.0.0.1", edge_port=self.edge_port, mesh_host="127.0.0.1", mesh_port=self.mesh_port,
            admin_port=self.admin_port, service_ports=ports, jwks_path=self.idp.jwks_path,
            xds_dir=self.work / "xds", pki_dir=self.pki.pki_dir,
            external_ports={b.name: self.echo_port for b in self.mesh.backends if b.external},
            mtls=self.mtls, authz=self.authz)

    def _render(self) -> dict[str, str]:
        documents = render_envoy(self.mesh, self._runtime())
        for cluster in documents["cds.yaml"]["resources"]:
            # Every backend is the echo server over plain HTTP; the policy cluster is the real policy service.
            cluster.pop("transport_socket", None)
            cluster.pop("health_checks", None)
            port = self.policy_port if cluster["name"] == POLICY_CLUSTER else self.echo_port
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
        return write_envoy_files(documents, self.work, self.work / "xds")

    def apply(self, mesh: ResolvedMesh, data: dict | None = None) -> None:
        """Render `mesh` (and, for the policy service, `data` as data.json) into the running gateway and wait
        until Envoy serves it."""
        self.mesh = mesh
        self._write_policy_dir(mesh, data)
        wait_for_gateway(f"http://127.0.0.1:{self.admin_port}", self._render(), 15)
        time.sleep(1.2)  # the policy service looks at its directory at most once a second

    # ---------------------------------------------------------------- requests

    def token(self, email: str | None, groups: list[str] | None = None) -> str:
        """A token of the gateway's identity provider; `email=None` leaves the email claim out."""
        if email is not None:
            return self.idp.issue(email, groups)
        now = int(time.time())
        claims = {"iss": self.mesh.identity.issuer, "aud": self.mesh.identity.audience, "sub": "no-email",
                  "groups": ",".join(groups or []), "iat": now, "nbf": now, "exp": now + 3600}
        return jwt.encode(claims, self.idp._key(), algorithm="RS256", headers={"kid": KEY_ID})

    def _client(self, caller: str | None) -> httpx.Client:
        if caller not in self._clients:
            verify = (client_context(*self.pki.paths(caller), self.pki.pki_dir / "ca.crt") if caller
                      else ssl.create_default_context(cafile=str(self.pki.pki_dir / "ca.crt")))
            self._clients[caller] = httpx.Client(verify=verify, timeout=10)
        return self._clients[caller]

    def url(self, listener: str, path: str) -> str:
        if listener == "edge":
            return f"http://127.0.0.1:{self.edge_port}{path}"
        scheme = "https" if self.mtls else "http"
        return f"{scheme}://127.0.0.1:{self.mesh_port}{path}"

    def request(self, listener: str, method: str, path: str, caller: str | None = None,
                token: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        client = self._client(caller if listener == "mesh" else None)
        return client.request(method, self.url(listener, path), headers=headers)

    def opa_decision(self, policy_input: dict) -> dict:
        """data.finopti.authz.decision for `policy_input`, asked through the policy service's OPA REST API."""
        if self._opa is None:
            self._opa = httpx.Client(base_url=f"http://127.0.0.1:{self.policy_port}", timeout=10)
        response = self._opa.post("/v1/data/finopti/authz/decision", json={"input": policy_input})
        response.raise_for_status()
        return response.json()["result"]
