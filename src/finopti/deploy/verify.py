"""`finopti verify-compose`: prove the bundle's isolation rules on the rendered docker-compose.yml, without
a Docker engine.

- no backend service publishes a port; only the gateway and the console (Grafana) do;
- every backend is attached only to networks whose other members are the gateway alone (so services cannot
  reach each other except through it), and those networks are internal;
- every URL a backend is given points at the gateway;
- only the log collector mounts the Docker socket, and read-only;
- the gateway's `apisix/apisix.yaml` would load whole in APISIX: what APISIX checks in code at load
  (certificates, expressions, references; `finopti.deploy.apisix_checks`) and, when its schemas are at
  hand, its JSON schemas (`finopti.deploy.validate`);
- the front door's controls are rendered (`finopti.deploy.edge_controls`): APISIX's Host allow-list, refusal of
  credentials in the query and CSRF check, the redacted access-log path, the collectors' redaction stage, and
  development sign-in off.

Roles come from the `finopti.role` label the renderer puts on every service.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from finopti.deploy.compose import ROLE
from finopti.deploy.edge_controls import check_edge_controls
from finopti.deploy.topology import GATEWAY
from finopti.deploy.validate import load_apisix_schemas, validate_apisix_dir

PUBLISHERS = {"gateway", "console"}
DOCKER_SOCKET = "/var/run/docker.sock"
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([^:/\s?#]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    service: str | None
    network: str | None
    message: str

    def __str__(self) -> str:
        where = ", ".join(p for p in (self.service and f"service '{self.service}'",
                                      self.network and f"network '{self.network}'") if p)
        return f"{where}: {self.message}" if where else self.message


def _networks_of(service: dict) -> list[str]:
    networks = service.get("networks")
    if networks is None:
        return [] if "network_mode" in service else ["default"]
    return list(networks) if isinstance(networks, dict) else list(networks)


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _volume_source_target(volume) -> tuple[str, str, bool]:
    if isinstance(volume, dict):
        return str(volume.get("source", "")), str(volume.get("target", "")), bool(volume.get("read_only"))
    parts = str(volume).split(":")
    source = parts[0]
    target = parts[1] if len(parts) > 1 else parts[0]
    return source, target, len(parts) > 2 and "ro" in parts[2].split(",")


def check_compose(doc: dict) -> list[Problem]:
    """The isolation problems of a parsed docker-compose.yml (empty: all rules hold)."""
    services: dict[str, dict] = doc.get("services") or {}
    networks_def: dict = doc.get("networks") or {}
    roles = {name: (s.get("labels") or {}).get(ROLE) for name, s in services.items()}
    gateways = [n for n, r in roles.items() if r == "gateway"]
    backends = [n for n, r in roles.items() if r == "backend"]
    problems: list[Problem] = []
    if len(gateways) != 1:
        return [Problem(None, None, f"expected exactly one service labelled {ROLE}=gateway, found {gateways}")]
    gateway = gateways[0]

    for name, service in services.items():
        if service.get("ports") and roles[name] not in PUBLISHERS:
            problems.append(Problem(name, None, f"publishes ports {service['ports']}; only the gateway and "
                                                "Grafana may"))
        for volume in service.get("volumes") or []:
            source, _, read_only = _volume_source_target(volume)
            if source == DOCKER_SOCKET and roles[name] != "collector":
                problems.append(Problem(name, None, "mounts the Docker socket; only the log collector may"))
            elif source == DOCKER_SOCKET and not read_only:
                problems.append(Problem(name, None, "mounts the Docker socket read-write; it must be read-only"))

    members: dict[str, list[str]] = {}
    for name, service in services.items():
        for network in _networks_of(service):
            members.setdefault(network, []).append(name)

    for name in backends:
        service = services[name]
        if "network_mode" in service:
            problems.append(Problem(name, None, f"network_mode '{service['network_mode']}' bypasses the gateway"))
        for key in ("links", "external_links"):
            if service.get(key):
                problems.append(Problem(name, None, f"{key} {service[key]}: services reach others only "
                                                    "through the gateway"))
        nets = _networks_of(service)
        if not nets:
            problems.append(Problem(name, None, f"on no network shared with the gateway '{gateway}'"))
        for network in nets:
            others = sorted(set(members[network]) - {name, gateway})
            if others:
                problems.append(Problem(name, network, f"shares the network with {', '.join(others)}; a "
                                                       f"backend's network may hold only it and '{gateway}'"))
            if gateway not in members[network]:
                problems.append(Problem(name, network, f"the gateway '{gateway}' is not on this network"))
            if not (networks_def.get(network) or {}).get("internal"):
                problems.append(Problem(name, network, "the network is not internal"))
        for key, value in _environment(service).items():
            for host in URL.findall(value):
                if host != gateway:
                    problems.append(Problem(name, None, f"{key}={value} points at '{host}', not at the "
                                                        f"gateway '{gateway}'"))
        mesh_url = _environment(service).get("FINOPTI_MESH_URL", "")
        if not URL.findall(mesh_url):
            problems.append(Problem(name, None, f"FINOPTI_MESH_URL is not set to the gateway '{gateway}'"))
    # One report per (service, network, message), in a stable order.
    return list(dict.fromkeys(problems))


def verify_compose(bundle_dir: Path | str, apisix_schemas: Path | None = None) -> list[Problem]:
    """Check `docker-compose.yml` in a bundle directory (or the file itself), and the gateway's config beside it
    (`apisix/`), against APISIX's schemas too when `apisix_schemas` (schema.json) is given."""
    path = Path(bundle_dir)
    if path.is_dir():
        path = path / "docker-compose.yml"
    problems = _verify_compose_file(path)
    apisix_dir = path.parent / "apisix"
    if apisix_dir.is_dir():
        schemas = load_apisix_schemas(apisix_schemas) if apisix_schemas else None
        problems += [Problem(GATEWAY, None, f"apisix/apisix.yaml: {problem}")
                     for problem in validate_apisix_dir(apisix_dir, schemas)]
    return problems


def _verify_compose_file(path: Path) -> list[Problem]:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return [Problem(None, None, f"{path}: file not found")]
    except yaml.YAMLError as exc:
        return [Problem(None, None, f"{path}: not valid YAML: {exc}")]
    if not isinstance(doc, dict):
        return [Problem(None, None, f"{path}: expected a mapping at the top level")]
    return check_compose(doc) + [Problem(None, None, p) for p in check_edge_controls(path.parent, doc)]
