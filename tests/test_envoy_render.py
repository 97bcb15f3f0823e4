"""The Envoy renderer: golden files, and the rendered config accepted by the real Envoy."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from finopti.idp import generate_key, jwks_for
from finopti.mesh.envoy import GatewayRuntime, render_envoy
from finopti.mesh.model import load_mesh
from finopti.mesh.resolved import load_authz_data, resolve
from finopti.pki import ensure_pki
from finopti.platform import envoy_binary, plan_placeholder_runtime

GOLDEN = Path(__file__).parent / "golden" / "envoy"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
MESHES = {"platform": REPO / "mesh.yaml", "traffic": REPO / "tests" / "fixtures" / "traffic-mesh.yaml"}


def _render(mesh: str = "platform") -> dict[str, dict]:
    spec = load_mesh(MESHES[mesh])
    rt = plan_placeholder_runtime(spec, MESHES[mesh])
    grt = GatewayRuntime(
        edge_host=rt.edge_host, edge_port=8080, mesh_host=rt.mesh_host, mesh_port=rt.mesh_port,
        admin_port=rt.admin_port, service_ports=rt.service_ports,
        jwks_path=Path("/state/idp/jwks.json"), xds_dir=Path("/state/gateway/xds"), pki_dir=Path("/state/pki"),
        external_ports={"prometheus": rt.aux_ports["prometheus"]},
    )
    return render_envoy(resolve(spec, load_authz_data(REPO / "policies")), grt)


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_envoy_rendering_matches_golden_files(update_golden, mesh):
    """Regenerate with `pytest tests/test_envoy_render.py --update-golden` and review the diff."""
    documents = _render(mesh)
    golden = GOLDEN / mesh
    if update_golden:
        golden.mkdir(parents=True, exist_ok=True)
        for name, doc in documents.items():
            (golden / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    assert sorted(p.name for p in golden.glob("*.yaml")) == sorted(documents)
    for name, doc in documents.items():
        assert yaml.safe_load((golden / name).read_text()) == doc, f"{name} differs from {golden / name}"


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_real_envoy_accepts_the_rendered_config(tmp_path, mesh):
    """Inline the watched xDS files into one static bootstrap and let Envoy validate every resource."""
    docs = _render(mesh)
    ensure_pki(tmp_path / "pki", ["gateway"])
    docs = json.loads(json.dumps(docs).replace("/state/pki", str(tmp_path / "pki")))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(generate_key())))
    routes = {r["name"]: r for name in ("rds-edge.yaml", "rds-mesh.yaml") for r in docs[name]["resources"]}
    listeners = []
    for listener in docs["lds.yaml"]["resources"]:
        hcm = next(f["typed_config"] for f in listener["filter_chains"][0]["filters"] if f["name"] == HCM_FILTER)
        rds = hcm.pop("rds")
        hcm["route_config"] = {k: v for k, v in routes[rds["route_config_name"]].items() if k != "@type"}
        for f in hcm["http_filters"]:
            for provider in f["typed_config"].get("providers", {}).values():
                provider["local_jwks"] = {"filename": str(jwks)}
        listeners.append({k: v for k, v in listener.items() if k != "@type"})
    bootstrap = docs["bootstrap.yaml"]
    bootstrap.pop("dynamic_resources")
    # The gateway's certificate, an SDS secret in its own watched file, becomes a static secret of the same name.
    bootstrap["static_resources"]["secrets"] = [
        {k: v for k, v in s.items() if k != "@type"} for s in docs["sds-gateway.yaml"]["resources"]]
    _drop_key(listeners, "sds_config")
    bootstrap["static_resources"]["listeners"] = listeners
    bootstrap["static_resources"]["clusters"] += [
        {k: v for k, v in c.items() if k != "@type"} for c in docs["cds.yaml"]["resources"]
    ]
    _drop_key(bootstrap["static_resources"]["clusters"], "sds_config")
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(bootstrap))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def _drop_key(node, key: str) -> None:
    """Remove `key` from every mapping in a nested document."""
    if isinstance(node, dict):
        node.pop(key, None)
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            _drop_key(child, key)


def test_render_envoy_cli_writes_bootstrap_and_xds_files(tmp_path):
    from conftest import run_cli

    out = tmp_path / "envoy"
    result = run_cli("render", "envoy", "--out", str(out), home=tmp_path / "state", check=True)
    assert "wrote 6 files" in result.stdout
    bootstrap = yaml.safe_load((out / "bootstrap.yaml").read_text())
    assert bootstrap["dynamic_resources"]["lds_config"]["path_config_source"]["path"] == str(out / "xds" / "lds.yaml")
    assert {p.name for p in (out / "xds").iterdir()} == {"lds.yaml", "cds.yaml", "rds-edge.yaml", "rds-mesh.yaml",
                                                      "sds-gateway.yaml"}
