"""The compose bundle's gateway configuration for one machine, without Docker: the overlay.

A local run renders the *same* configuration as the bundle for another `ApisixSite`: listeners on 127.0.0.1
ports, every service version at a loopback port, each caller network replaced by one loopback source address
(a service binds its mesh calls to it, `FINOPTI_MESH_SOURCE`), the mesh CA and the policy service (OPA's REST
API) where this machine has them. Nothing else may differ: `overlay` lists every difference between the two
renders, and the tests check it holds only those facts (docs/deploy.md, "How the bundle was verified").
"""

import difflib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from finopti.deploy.apisix import ApisixSite, compose_site, render_apisix_yaml, render_config_yaml
from finopti.deploy.topology import ENGINES, LISTENERS, Topology
from finopti.mesh.resolved import ResolvedMesh

LOOPBACK = "127.0.0.1"
# One loopback source address per caller network (Linux routes all of 127.0.0.0/8 to `lo`).
SOURCE_POOL = ipaddress.ip_network("127.10.0.0/16")


@dataclass(frozen=True)
class LocalPorts:
    edge: int
    mesh: int
    metrics: int
    ready: int
    status: int
    export: int


def caller_sources(topo: Topology) -> dict[str, str]:
    """Caller name -> its loopback source address, standing for the compose network it would call from."""
    hosts = SOURCE_POOL.hosts()
    return {caller: str(next(hosts)) for caller in topo.callers().values()}


def local_site(topo: Topology, ports: LocalPorts, nodes: dict[str, int], ca_file: Path, opa_port: int) -> ApisixSite:
    """`nodes`: a backend's compose container name -> its loopback port (`Backend.name`)."""
    listen = {name: (LOOPBACK, getattr(ports, name)) for name in (*LISTENERS, "ready")}
    node_ports = {**nodes, ENGINES["policy"].container: opa_port}
    return ApisixSite(
        listen=listen,
        status=(LOOPBACK, ports.status),
        export=(LOOPBACK, ports.export),
        nodes={name: (LOOPBACK, port) for name, port in node_ports.items()},
        callers={f"{address}/32": caller for caller, address in caller_sources(topo).items()},
        ca_file=str(ca_file),
        opa_url=f"http://{LOOPBACK}:{opa_port}",
    )


def render_site(mesh: ResolvedMesh, topo: Topology, site: ApisixSite) -> dict[str, dict]:
    return {"config.yaml": render_config_yaml(mesh, topo, site), "apisix.yaml": render_apisix_yaml(mesh, topo, site)}


def overlay(mesh: ResolvedMesh, topo: Topology, site: ApisixSite) -> list[dict]:
    """Every difference between the compose render and the render for `site`: one entry per changed value
    (`file`, `path`, `compose`, `local`); multi-line values (nginx snippets, Lua) by changed line."""
    changes: list[dict] = []
    compose, local = render_site(mesh, topo, compose_site(topo)), render_site(mesh, topo, site)
    for name in compose:
        _diff(name, (), compose[name], local[name], changes)
    return changes


def _diff(file: str, path: tuple, a, b, out: list[dict]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            _diff(file, (*path, key), a.get(key), b.get(key), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(file, (*path, _label(x, index)), x, y, out)
    elif isinstance(a, str) and isinstance(b, str) and "\n" in a + b:
        old, new = a.splitlines(), b.splitlines()
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
            if tag != "equal":
                out.append({"file": file, "path": "/".join(map(str, path)),
                            "compose": "\n".join(old[i1:i2]), "local": "\n".join(new[j1:j2])})
    elif a != b:
        out.append({"file": file, "path": "/".join(map(str, path)), "compose": a, "local": b})


def _label(item, index: int) -> str | int:
    """List items by their id where they have one, so a path reads `upstreams/ask.orchestrator.v1/...`."""
    return item.get("id", item.get("username", index)) if isinstance(item, dict) else index
