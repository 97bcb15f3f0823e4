"""The production bundle: docker-compose.yml and every file it mounts, rendered from mesh.yaml.

`render_compose_bundle` is pure (path relative to the bundle -> text); `write_bundle` writes it. The bundle
is committed under deploy/compose/ and a test re-renders it to catch drift.
"""

import json
import os
from pathlib import Path, PurePosixPath

from finopti.dashboards.grafana import CONTAINER_DASHBOARDS, render_grafana
from finopti.deploy import BUNDLE_DIR
from finopti.deploy.apisix import (
    CERT_ENV,
    JWT_KEY_ENV,
    KEY_ENV,
    PKI_DIR,
    apisix_yaml_text,
    compose_site,
    dump_yaml,
    readiness_probe,
    render_apisix_yaml,
    render_config_yaml,
)
from finopti.deploy.edge_controls import DEV_SIGN_IN_ENV
from finopti.deploy.observability import (
    logstore_push_url,
    render_alloy,
    render_loki,
    render_prometheus,
    render_promtail,
)
from finopti.deploy.topology import (
    COLLECTOR_NETWORK,
    ENGINES,
    GATEWAY,
    LISTENERS,
    MESH_URL,
    METRICS_NETWORK,
    OBSERVABILITY_NETWORK,
    POLICY_NETWORK,
    PROJECT,
    SERVICE_PORT,
    Backend,
    Topology,
    plan,
)
from finopti.mesh.model import Identity, MeshSpec
from finopti.mesh.policy_data import render_route_data
from finopti.mesh.resolved import resolve

# Pinned images. APISIX matches the schemas the bundle is validated against (../shared/apisix: 3.18.0);
# Grafana matches the dashboards' schema (grafana-foundation-sdk for 11.6).
IMAGES = {
    "apisix": "apache/apisix:3.18.0-debian",
    "opa": "openpolicyagent/opa:1.11.0",
    "loki": "grafana/loki:3.5.1",
    "alloy": "grafana/alloy:v1.11.0",
    "promtail": "grafana/promtail:3.5.1",
    "prometheus": "prom/prometheus:v3.5.0",
    "grafana": "grafana/grafana:11.6.0",
}
PLATFORM_IMAGE = "finopti/platform:0.1.0"
GATEWAY_IDENTITY = "gateway"  # the gateway's certificate name, as on the local platform
EDGE_NETWORK = "edge"
CONSOLE_NETWORK = "console"
HEADER = "# Rendered from mesh.yaml by `finopti render compose`; do not edit.\n"
ROLE = "finopti.role"  # gateway | backend | policy | observability | collector | console | init


def _healthcheck(test: list[str], start: str = "10s") -> dict:
    return {"test": test, "interval": "5s", "timeout": "3s", "retries": 20, "start_period": start}


def _wget(url: str) -> dict:
    return _healthcheck(["CMD-SHELL", f"wget -q --spider {url} || exit 1"])


def _pki_mount(identity: str) -> dict:
    """Only this identity's directory of the `pki` volume, read-only."""
    return {"type": "volume", "source": "pki", "target": PKI_DIR, "read_only": True,
            "volume": {"subpath": identity}}


def _build(repo: str) -> dict:
    return {"context": repo, "dockerfile": "Dockerfile"}


def _hardening() -> dict:
    return {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], "restart": "unless-stopped"}


def service_environment(b: Backend, mesh_url: str, pki_dir: str) -> dict[str, str]:
    """What a container of the platform image is told: which service version it is, and the gateway's address
    (the only other one it knows). Compose and Kubernetes give the same, but for where things are."""
    return {
        "FINOPTI_SERVICE": b.service,
        "FINOPTI_VERSION": b.version,
        "FINOPTI_ENTRYPOINT": b.entrypoint,
        "FINOPTI_HOST": "0.0.0.0",
        "FINOPTI_PORT": str(SERVICE_PORT),
        "FINOPTI_HEALTH": b.health,
        # The only other address a service knows: the gateway's east-west listener.
        "FINOPTI_MESH_URL": mesh_url,
        "FINOPTI_HOME": "/home/finopti/state",
        "FINOPTI_TLS_CERT": f"{pki_dir}/tls.crt",
        "FINOPTI_TLS_KEY": f"{pki_dir}/tls.key",
        "FINOPTI_TLS_CALLERS": f"{pki_dir}/callers.pem",
        # Development sign-in mints tokens for anyone who reaches the edge: never in this bundle.
        DEV_SIGN_IN_ENV: "false",
    }


def _backends(topo: Topology, repo: str) -> dict[str, dict]:
    services = {}
    for b in topo.backends:
        services[b.name] = {
            "image": PLATFORM_IMAGE,
            "build": _build(repo),
            "environment": service_environment(b, MESH_URL, PKI_DIR),
            "volumes": [_pki_mount(b.name)],
            # Alone with the gateway: no published port, no other service on this network.
            "networks": [b.network],
            "depends_on": {"pki": {"condition": "service_completed_successfully"}},
            "healthcheck": _healthcheck(["CMD", "python", "-m", "finopti.deploy.healthcheck"]),
            "labels": {ROLE: "backend", "finopti.service": b.service, "finopti.version": b.version},
            **_hardening(),
        }
    return services


def _apisix(topo: Topology, identity: Identity) -> dict:
    # APISIX reads PEMs from environment variables ($env:// secret references): load the gateway's
    # certificate from its pki directory, then start APISIX as its image does.
    start = (f'export {CERT_ENV}="$$(cat {PKI_DIR}/tls.crt)" {KEY_ENV}="$$(cat {PKI_DIR}/tls.key)" '
             "&& exec /docker-entrypoint.sh docker-start")
    # Healthy means serving: workers up, every route and upstream loaded, some backend reachable.
    ready = readiness_probe(compose_site(topo))
    depends = {"pki": {"condition": "service_completed_successfully"},
               ENGINES["policy"].container: {"condition": "service_healthy"}}
    depends.update({b.name: {"condition": "service_healthy"} for b in topo.backends})
    return {
        "image": IMAGES["apisix"],
        "entrypoint": ["bash", "-c"],
        "command": [start],
        "environment": {
            "APISIX_STAND_ALONE": "true",
            **({JWT_KEY_ENV: f"${{{JWT_KEY_ENV}:?set {JWT_KEY_ENV} to the identity provider's PEM public key}}"}
               if identity.provider == "dev" else {}),
        },
        "volumes": [
            "./apisix/config.yaml:/usr/local/apisix/conf/config.yaml:ro",
            "./apisix/apisix.yaml:/usr/local/apisix/conf/apisix.yaml:ro",
            _pki_mount(GATEWAY_IDENTITY),
        ],
        "ports": [f"${{FINOPTI_EDGE_PORT:-8080}}:{LISTENERS['edge']}"],
        "networks": [EDGE_NETWORK, POLICY_NETWORK, METRICS_NETWORK, COLLECTOR_NETWORK,
                     *(b.network for b in topo.backends)],
        "depends_on": depends,
        "healthcheck": _healthcheck(["CMD", "bash", "-c", ready]),
        "labels": {ROLE: "gateway"},
        "restart": "unless-stopped",
    }


def _opa(repo: str) -> dict:
    engine = ENGINES["policy"]
    probe = f'http.send({{"method": "GET", "url": "http://127.0.0.1:{engine.port}/health"}}).status_code == 200'
    return {
        "image": IMAGES["opa"],
        "command": ["run", "--server", f"--addr=0.0.0.0:{engine.port}", "--log-format=json", "/policies"],
        # The repository's Rego and role data, with the route table rendered from this mesh.yaml.
        "volumes": [
            f"{repo}/policies/authz.rego:/policies/authz.rego:ro",
            f"{repo}/policies/data.json:/policies/data.json:ro",
            "./opa/routes.json:/policies/routes.json:ro",
        ],
        "networks": [POLICY_NETWORK],
        "healthcheck": _healthcheck(["CMD", "/opa", "eval", "--fail", probe], start="5s"),
        "labels": {ROLE: "policy"},
        **_hardening(),
    }


def _observability(spec: MeshSpec) -> dict[str, dict]:
    socket = "/var/run/docker.sock:/var/run/docker.sock:ro"
    loki_ready = {"loki": {"condition": "service_healthy"}}
    # The collector also pushes to the logstore service through the gateway, when mesh.yaml has that route.
    collector_networks = [OBSERVABILITY_NETWORK] + ([COLLECTOR_NETWORK] if logstore_push_url(spec) else [])
    return {
        "loki": {
            "image": IMAGES["loki"],
            "command": ["-config.file=/etc/loki/config.yml"],
            "volumes": ["./loki/config.yml:/etc/loki/config.yml:ro", "loki-data:/loki"],
            "networks": [OBSERVABILITY_NETWORK],
            "healthcheck": _wget("http://127.0.0.1:3100/ready"),
            "labels": {ROLE: "observability"},
            "restart": "unless-stopped",
        },
        "alloy": {
            "image": IMAGES["alloy"],
            "command": ["run", "--server.http.listen-addr=127.0.0.1:12345", "--storage.path=/var/lib/alloy/data",
                        "/etc/alloy/config.alloy"],
            "volumes": ["./alloy/config.alloy:/etc/alloy/config.alloy:ro", socket, "alloy-data:/var/lib/alloy/data"],
            "networks": collector_networks,
            "depends_on": loki_ready,
            "labels": {ROLE: "collector"},
            "restart": "unless-stopped",
        },
        "promtail": {
            "image": IMAGES["promtail"],
            "profiles": ["promtail"],
            "command": ["-config.file=/etc/promtail/config.yml"],
            "volumes": ["./promtail/config.yml:/etc/promtail/config.yml:ro", socket,
                        "promtail-data:/var/lib/promtail"],
            "networks": collector_networks,
            "depends_on": loki_ready,
            "labels": {ROLE: "collector"},
            "restart": "unless-stopped",
        },
        "prometheus": {
            "image": IMAGES["prometheus"],
            "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                        "--storage.tsdb.retention.time=15d", "--web.enable-lifecycle"],
            "volumes": ["./prometheus:/etc/prometheus:ro", "prometheus-data:/prometheus"],
            # `metrics`: its own network with the gateway, which names it `prometheus` by that network.
            "networks": [OBSERVABILITY_NETWORK, METRICS_NETWORK],
            "healthcheck": _wget("http://127.0.0.1:9090/-/ready"),
            "labels": {ROLE: "observability"},
            "restart": "unless-stopped",
        },
        "grafana": {
            "image": IMAGES["grafana"],
            "environment": {
                "GF_SECURITY_ADMIN_PASSWORD": "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}",
                "GF_USERS_ALLOW_SIGN_UP": "false",
                "GF_ANALYTICS_REPORTING_ENABLED": "false",
            },
            "volumes": ["./grafana/provisioning:/etc/grafana/provisioning:ro",
                        f"./grafana/dashboards:{CONTAINER_DASHBOARDS}:ro", "grafana-data:/var/lib/grafana"],
            "ports": ["${FINOPTI_GRAFANA_PORT:-3000}:3000"],
            "networks": [OBSERVABILITY_NETWORK, CONSOLE_NETWORK],
            "depends_on": {**loki_ready, "prometheus": {"condition": "service_healthy"}},
            "healthcheck": _wget("http://127.0.0.1:3000/api/health"),
            "labels": {ROLE: "console"},
            "restart": "unless-stopped",
        },
    }


def _networks(topo: Topology) -> dict[str, dict]:
    def fixed(subnet) -> dict:
        return {"internal": True, "ipam": {"config": [{"subnet": str(subnet)}]}}

    networks = {
        EDGE_NETWORK: {},  # published edge listener
        CONSOLE_NETWORK: {},  # published Grafana
        POLICY_NETWORK: {"internal": True},
        OBSERVABILITY_NETWORK: {"internal": True},
        METRICS_NETWORK: fixed(topo.metrics_subnet),
        COLLECTOR_NETWORK: fixed(topo.collector_subnet),
    }
    networks.update({b.network: fixed(b.subnet) for b in topo.backends})
    return networks


def render_compose(spec: MeshSpec, topo: Topology, repo: str = "../..") -> dict:
    """`repo`: the repository root as seen from the bundle directory (build context, policies)."""
    services = {
        "pki": {
            "image": PLATFORM_IMAGE,
            "build": _build(repo),
            "entrypoint": ["python", "-m", "finopti.deploy.pki"],
            "command": [PKI_DIR, GATEWAY_IDENTITY, *(b.name for b in topo.backends)],
            "volumes": ["pki:/pki"],
            "network_mode": "none",
            "healthcheck": {"disable": True},
            "labels": {ROLE: "init"},
        },
        ENGINES["policy"].container: _opa(repo),
        **_backends(topo, repo),
        GATEWAY: _apisix(topo, spec.identity),
        **_observability(spec),
    }
    volumes = {name: {} for name in ("pki", "loki-data", "alloy-data", "promtail-data", "prometheus-data",
                                     "grafana-data")}
    return {"name": PROJECT, "services": services, "networks": _networks(topo), "volumes": volumes}


def _env_example(identity: Identity) -> str:
    if identity.provider == "dev":
        key = f"""# The identity provider's public key (PEM) that signs users' tokens (RS256), e.g. for the development
# provider: openssl pkey -in .finopti/idp/signing-key.pem -pubout. One key: rotating it means editing this and
# restarting APISIX; with identity.provider: oidc in mesh.yaml, APISIX follows the provider's keys instead.
{JWT_KEY_ENV}="-----BEGIN PUBLIC KEY-----
...
-----END PUBLIC KEY-----"
"""
    else:
        key = f"# Users' tokens come from {identity.issuer} (OpenID Connect discovery, keys from its JWKS).\n"
    return "# Copy to .env beside docker-compose.yml and fill in.\n" + key + ENV_EXAMPLE


ENV_EXAMPLE = """GRAFANA_ADMIN_PASSWORD=change-me
# Published ports (defaults shown).
FINOPTI_EDGE_PORT=8080
FINOPTI_GRAFANA_PORT=3000
"""


def _yaml(doc: dict) -> str:
    return HEADER + dump_yaml(doc)


def render_compose_bundle(spec: MeshSpec, repo_root: Path | str, out_dir: Path | str | None = None) -> dict[str, str]:
    """Path relative to the bundle directory -> file content.

    `repo_root` and `out_dir` (default: repo_root/deploy/compose) only fix how the bundle refers to the
    repository (the image's build context, the Rego files OPA loads): by a relative path, so the committed
    bundle works from any checkout."""
    root = Path(repo_root).absolute()
    out = Path(out_dir).absolute() if out_dir is not None else root / BUNDLE_DIR
    repo = PurePosixPath(os.path.relpath(root, out)).as_posix()
    topo = plan(spec)
    mesh = resolve(spec)  # the policy reads its role data from data.json itself, next to routes.json
    files = {
        "docker-compose.yml": _yaml(render_compose(spec, topo, repo)),
        ".env.example": _env_example(spec.identity),
        "apisix/apisix.yaml": apisix_yaml_text(render_apisix_yaml(mesh, topo)),
        "apisix/config.yaml": _yaml(render_config_yaml(mesh, topo)),
        "opa/routes.json": json.dumps(render_route_data(mesh), indent=2) + "\n",
        "loki/config.yml": _yaml(render_loki(spec.logs)),
        "alloy/config.alloy": render_alloy(spec),
        "promtail/config.yml": _yaml(render_promtail(spec)),
    }
    for name, doc in render_prometheus(spec, mesh).items():
        files[f"prometheus/{name}"] = _yaml(doc)
    for path, text in render_grafana("grafana").items():
        files[PurePosixPath(path).as_posix()] = text
    return files


def write_bundle(files: dict[str, str], out_dir: Path | str) -> list[Path]:
    """Write the bundle; files of an earlier render that are no longer rendered are removed."""
    out = Path(out_dir)
    written = []
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    for stale in rendered_files(out) - set(files):
        (out / stale).unlink()
    return written


# Files in a bundle directory that a render never owns: the operator's secrets.
NOT_RENDERED = {".env"}


def rendered_files(out_dir: Path | str) -> set[str]:
    """Relative paths of the files under a bundle directory that a render owns (all but `.env`)."""
    out = Path(out_dir)
    if not out.is_dir():
        return set()
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - NOT_RENDERED
