"""The compose bundle's data plane on one machine, for tests: a real Apache APISIX (the runtime in
`../shared/apisix-runtime`, see its README) loaded with the bundle's rendered configuration for a local site
(`finopti.deploy.apisix_local`), in front of every service version of the mesh as its own process.

What is the bundle's, unchanged: apisix.yaml and config.yaml as rendered (only the site's addresses, ports and
paths differ), the `pki` service's certificates (`finopti.deploy.pki.distribute`: the gateway's, one per service
version, `callers.pem`), each service's environment from docker-compose.yml. What stands in for Docker: each
service listens on a loopback port and calls the mesh from its own loopback address (its network, for the
gateway's `geo`), and the `policy` service serves the Rego through OPA's REST API in OPA's place.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization

from finopti.deploy.apisix import (
    CERT_ENV,
    JWT_KEY_ENV,
    KEY_ENV,
    READY_PATH,
    ApisixSite,
    apisix_yaml_text,
    dump_yaml,
    readiness_probe,
)
from finopti.deploy.apisix_local import LocalPorts, caller_sources, local_site, overlay, render_site
from finopti.deploy.compose import GATEWAY_IDENTITY, render_compose
from finopti.deploy.pki import distribute
from finopti.deploy.topology import ENGINES, GATEWAY, Topology, plan
from finopti.idp import DevIdentityProvider
from finopti.mesh.model import MeshSpec
from finopti.mesh.resolved import resolve
from finopti.meshtls import client_context
from finopti.platform import render_policy_bundle
from finopti.ports import free_port

RUNTIME_ENV = "FINOPTI_APISIX_RUNTIME"
MAX_WORKDIR = 75  # APISIX's unix sockets live in the workdir (README of the runtime)
START_TIMEOUT = 60.0


class ApisixUnavailable(RuntimeError):
    """The APISIX runtime is not on this machine."""


def find_runtime(repo: Path) -> Path:
    """The runtime folder: FINOPTI_APISIX_RUNTIME, else ../shared/apisix-runtime beside the repository."""
    configured = os.environ.get(RUNTIME_ENV)
    runtime = Path(configured) if configured else repo.parent / "shared" / "apisix-runtime"
    if not (runtime / "bin" / "apisix-run").is_file():
        raise ApisixUnavailable(f"no APISIX runtime at {runtime} (bin/apisix-run); {RUNTIME_ENV} points elsewhere")
    return runtime


def short_tempdir(prefix: str) -> Path:
    """A fresh directory whose path stays short enough for APISIX's sockets."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if len(str(path)) > MAX_WORKDIR - 20:
        raise RuntimeError(f"{path}: too long a path for an APISIX workdir")
    return path


def json_lines(path: Path) -> list[dict]:
    """The JSON lines of a log file (other lines skipped); [] while it does not exist."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f}s")
        time.sleep(0.1)


class ApisixInstance:
    """One APISIX started by the runtime's `apisix-run` in its own workdir (conf/, logs/)."""

    def __init__(self, runtime: Path, workdir: Path, env: dict[str, str]):
        self.runtime = runtime
        self.workdir = workdir
        self.env = env
        self.error_log = workdir / "logs" / "error.log"
        self.access_log = workdir / "logs" / "access.log"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env}
        shim = self._openresty_shim()
        if shim:
            env["PATH"] = f"{env.get('PATH', '')}:{shim}"
        return subprocess.run([str(self.runtime / "bin" / "apisix-run"), *args, "--workdir", str(self.workdir)],
                              env=env, capture_output=True, text=True, timeout=60)

    def _openresty_shim(self) -> str | None:
        """APISIX's CLI runs `openresty` from PATH; the runtime links it to its nginx. A copy of the folder that
        lost that link (a plain file naming its target) gets one here, after the runtime's own bin on PATH."""
        own = self.runtime / "openresty" / "bin" / "openresty"
        if os.access(own, os.X_OK):
            return None
        shim = self.workdir.parent / f"{self.workdir.name}.bin"
        shim.mkdir(exist_ok=True)
        link = shim / "openresty"
        if not link.exists():
            link.symlink_to(self.runtime / "openresty" / "nginx" / "sbin" / "nginx")
        return str(shim)

    def start(self, config: Path, routes: Path) -> None:
        result = self._run("--config", str(config), "--routes", str(routes))
        if result.returncode != 0:
            raise RuntimeError(f"apisix-run failed ({result.returncode}):\n{result.stderr[-4000:]}")

    def stop(self) -> None:
        if (self.workdir / "logs" / "nginx.pid").exists():
            self._run("--stop")

    def errors(self) -> list[str]:
        """error.log lines at level error or worse."""
        if not self.error_log.exists():
            return []
        return [line for line in self.error_log.read_text(errors="replace").splitlines()
                if any(f"[{level}]" in line for level in ("error", "crit", "alert", "emerg"))]

    def load_failures(self) -> list[str]:
        """Items APISIX rejected when it loaded apisix.yaml (it skips them and serves the rest)."""
        return [line for line in self.errors() if "failed to check item data" in line]

    def access_lines(self) -> list[dict]:
        return json_lines(self.access_log)


@dataclass
class ServiceProcess:
    name: str  # compose container name, e.g. gcloud-agent-v1
    service: str
    version: str
    port: int
    log: Path
    env: dict[str, str]
    process: subprocess.Popen

    def log_lines(self) -> list[dict]:
        return json_lines(self.log)


class ApisixPlatform:
    """The bundle's gateway and services, on loopback. `start()` / `stop()`; see the module docstring."""

    def __init__(self, spec: MeshSpec, runtime: Path, root: Path | None = None, repo: Path | None = None):
        self.spec = spec
        self.runtime = runtime
        self.root = root or short_tempdir("apx-")
        self.repo = repo or Path(__file__).resolve().parents[3]
        self.topo: Topology = plan(spec)
        self.mesh = resolve(spec)  # as the compose bundle renders it
        self.pki = self.root / "pki"
        self.idp = DevIdentityProvider(self.root / "idp", spec.identity)
        self.services: dict[str, ServiceProcess] = {}
        self.sources = caller_sources(self.topo)
        self.site: ApisixSite | None = None
        self.gateway = ApisixInstance(runtime, self.root / "gw", {})
        self._tokens: dict[tuple, str] = {}

    # --- addresses ---------------------------------------------------------------------------------

    def url(self, listener: str) -> str:
        ip, port = self.site.listen[listener]
        return f"http://{ip}:{port}"

    @property
    def edge(self) -> str:
        return self.url("edge")

    @property
    def mesh_url(self) -> str:
        return self.url("mesh")

    @property
    def export_url(self) -> str:
        ip, port = self.site.export
        return f"http://{ip}:{port}/apisix/prometheus/metrics"

    @property
    def ready_url(self) -> str:
        return self.url("ready") + READY_PATH

    def ready_probe(self) -> list[str]:
        """The compose healthcheck's command, for this site."""
        return ["bash", "-c", readiness_probe(self.site)]

    def gateway_tls(self):
        """The gateway's identity, which services accept (for talking to a service directly, as the gateway)."""
        directory = self.pki / GATEWAY_IDENTITY
        return client_context(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")

    def service_url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.services[name].port}"

    def token(self, email: str, groups: list[str] | None = None, ttl: float | None = None) -> str:
        key = (email, tuple(groups or ()), ttl)
        if key not in self._tokens:
            self._tokens[key] = self.idp.issue(email, groups, ttl)
        return self._tokens[key]

    def caller_client(self, caller: str, **kwargs) -> httpx.Client:
        """A client whose connections come from `caller`'s address, as that service's calls would."""
        transport = httpx.HTTPTransport(local_address=self.sources[caller])
        return httpx.Client(transport=transport, **kwargs)

    # --- start / stop ------------------------------------------------------------------------------

    def start(self, only: set[str] | None = None) -> "ApisixPlatform":
        """Every service (or `only` those, by container name: the others' upstreams are unreachable), then
        APISIX."""
        try:
            self.prepare()
            self._start_services(only)
            self.start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def prepare(self) -> None:
        """Certificates, the identity provider's key, the policy bundle, and every port (chosen once)."""
        if self.site is not None:
            return
        distribute(self.pki, GATEWAY_IDENTITY, [b.name for b in self.topo.backends], days=2)
        self.idp.ensure()
        self.policy_dir = self.root / "policy"
        render_policy_bundle(self.mesh, self.repo / "policies", self.policy_dir)
        ports = LocalPorts(**{name: free_port() for name in LocalPorts.__dataclass_fields__})
        nodes = {b.name: free_port() for b in self.topo.backends}
        opa = free_port()
        self.site = local_site(self.topo, ports, nodes, self.pki / GATEWAY_IDENTITY / "ca.crt", opa)

    def _start_services(self, only: set[str] | None) -> None:
        compose = render_compose(self.spec, self.topo)["services"]
        engine = ENGINES["policy"]
        # The policy service in OPA's place: OPA's REST API over plain HTTP, as OPA on the `policy` network.
        policy = self.spec.service("policy")
        if only is None or engine.container in only:
            self._spawn(engine.container, "policy", "v1", {
                "FINOPTI_SERVICE": "policy", "FINOPTI_VERSION": "v1", "FINOPTI_ENTRYPOINT": policy.entrypoint,
                "FINOPTI_POLICY_DIR": str(self.policy_dir),
            })
        for backend in (b for b in self.topo.backends if only is None or b.name in only):
            env = {k: str(v) for k, v in compose[backend.name]["environment"].items()}
            identity = self.pki / backend.name
            env.update({
                "FINOPTI_HOST": "127.0.0.1",
                "FINOPTI_MESH_URL": self.mesh_url,
                "FINOPTI_MESH_SOURCE": self.sources[backend.service],
                "FINOPTI_TLS_CERT": str(identity / "tls.crt"),
                "FINOPTI_TLS_KEY": str(identity / "tls.key"),
                "FINOPTI_TLS_CALLERS": str(identity / "callers.pem"),
            })
            self._spawn(backend.name, backend.service, backend.version, env)
        tls = self.gateway_tls()
        for name, proc in self.services.items():
            secure = name != engine.container
            url = f"{'https' if secure else 'http'}://127.0.0.1:{proc.port}{self._health(proc.service)}"
            _wait(lambda u=url, s=secure, p=proc: self._healthy(u, tls if s else False, p),
                  f"{name} not healthy (log: {proc.log})", START_TIMEOUT)

    def _health(self, service: str) -> str:
        return self.spec.service(service).health

    def _healthy(self, url: str, verify, proc: ServiceProcess) -> bool:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}): {proc.log.read_text()[-2000:]}")
        try:
            return httpx.get(url, verify=verify, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _spawn(self, name: str, service: str, version: str, env: dict[str, str]) -> None:
        port = self.site.nodes[name][1]
        home = self.root / "state" / name
        home.mkdir(parents=True, exist_ok=True)
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        full_env = {**os.environ, **env, "FINOPTI_PORT": str(port), "FINOPTI_HOME": str(home),
                    "PYTHONUNBUFFERED": "1"}
        for key in ("FINOPTI_TLS_CERT", "FINOPTI_TLS_KEY", "FINOPTI_TLS_CALLERS", "FINOPTI_MESH_CA"):
            if key not in env:
                full_env.pop(key, None)
        self.services[name] = ServiceProcess(name, service, version, port, log, full_env, _run_service(full_env, log))

    def stop_service(self, name: str) -> None:
        _terminate(self.services[name].process)

    def start_service(self, name: str) -> None:
        """Start a stopped service again, on its port, and wait until it is healthy."""
        proc = self.services[name]
        proc.process = _run_service(proc.env, proc.log)
        secure = "FINOPTI_TLS_CERT" in proc.env
        url = f"{'https' if secure else 'http'}://127.0.0.1:{proc.port}{self._health(proc.service)}"
        tls = self.gateway_tls() if secure else False
        _wait(lambda: self._healthy(url, tls, proc), f"{name} not healthy (log: {proc.log})", START_TIMEOUT)

    def render(self) -> dict[str, dict]:
        """The bundle's gateway configuration for this machine (the overlay is `overlay()`)."""
        return render_site(self.mesh, self.topo, self.site)

    def overlay(self) -> list[dict]:
        return overlay(self.mesh, self.topo, self.site)

    def start_gateway(self, routes_text: str | None = None) -> None:
        """Render for this site and start APISIX; `routes_text` replaces the rendered apisix.yaml (tests of
        broken configurations)."""
        self.prepare()
        docs = self.render()
        conf = self.root / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "config.yaml").write_text(dump_yaml(docs["config.yaml"]))
        (conf / "apisix.yaml").write_text(routes_text or apisix_yaml_text(docs["apisix.yaml"]))
        (conf / "overlay.json").write_text(json.dumps(self.overlay(), indent=2))
        gateway = self.pki / GATEWAY_IDENTITY
        public = serialization.load_pem_private_key(self.idp.key_path.read_bytes(), None).public_key()
        self.gateway.env = {
            JWT_KEY_ENV: public.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            CERT_ENV: (gateway / "tls.crt").read_text(),
            KEY_ENV: (gateway / "tls.key").read_text(),
        }
        self.gateway.start(conf / "config.yaml", conf / "apisix.yaml")
        ip, port = self.site.status
        _wait(lambda: _answers(f"http://{ip}:{port}/status/ready"), f"{GATEWAY}: /status/ready not 200",
              START_TIMEOUT)
        if routes_text is None and (failures := self.gateway.load_failures()):
            raise RuntimeError("APISIX rejected items of the rendered configuration:\n" + "\n".join(failures))

    def stop_gateway(self) -> None:
        self.gateway.stop()

    def stop(self) -> None:
        self.stop_gateway()
        for proc in self.services.values():
            _terminate(proc.process, wait=False)
        for proc in self.services.values():
            _terminate(proc.process)


def _run_service(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "finopti.services.runner"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _terminate(process: subprocess.Popen, wait: bool = True) -> None:
    """Stop a service we started (its own process group, by id)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    if not wait:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
