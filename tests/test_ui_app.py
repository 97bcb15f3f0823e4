"""The ui service in-process: pages, static assets, the dashboard model and the development sign-in."""

import json
import re
import shutil
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from finopti.dashboards import console_model
from finopti.services.common import ServiceSettings
from finopti.services.ui.app import create_app

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(tmp_path) -> TestClient:
    shutil.copy(REPO / "mesh.yaml", tmp_path / "mesh.running.yaml")
    settings = ServiceSettings(service="ui", home=tmp_path, policy_dir=REPO / "policies")
    return TestClient(create_app(settings))


PAGES = ["/", "/console", "/console/live", "/console/traces", "/console/trace/0af7651916cd43dd8448eb211c80319c"]
STATIC = REPO / "src/finopti/services/ui/static"
VENDOR = STATIC / "vendor"


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_html_shells_with_modules(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/' in response.text
    assert "production uses OIDC" in response.text


@pytest.mark.parametrize("path", PAGES)
def test_pages_hold_under_a_strict_content_security_policy(client, path):
    """No inline script, style or event handler: `script-src 'self'; style-src 'self'` holds."""
    text = client.get(path).text
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", text), "inline script"
    assert "<style" not in text and not re.search(r"\sstyle=", text), "inline style"
    assert not re.search(r"\son[a-z]+=", text, re.IGNORECASE), "inline event handler"


def _own_assets() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file() and VENDOR not in p.parents)


def test_own_scripts_use_no_eval_inline_styles_or_html_strings():
    for asset in _own_assets():
        if asset.suffix != ".js":
            continue
        text = asset.read_text()
        for pattern in (r"\beval\(", r"new Function\(", r"\.innerHTML\b", r"\.outerHTML\b", r"insertAdjacentHTML",
                        r"setAttribute\(\s*[\"']style", r"\.cssText\b", r"setTimeout\(\s*[\"'`]"):
            assert not re.search(pattern, text), f"{asset.name}: {pattern}"


def test_uplot_is_the_npm_package_with_its_licence():
    """vendor/uplot is copied from the npm package pinned in package.json (scripts/vendor-ui.sh), unchanged."""
    pinned = json.loads((REPO / "package.json").read_text())["dependencies"]["uplot"]
    lock = json.loads((REPO / "package-lock.json").read_text())["packages"]["node_modules/uplot"]
    assert lock["version"] == pinned and lock["license"] == "MIT"
    vendored = VENDOR / "uplot"
    assert "MIT License" in (vendored / "LICENSE").read_text()
    assert f"(v{pinned})" in (vendored / "uPlot.esm.js").read_text()[:400]
    package = REPO / "node_modules" / "uplot"
    if not package.is_dir():
        pytest.skip("node_modules/uplot is not installed (npm ci): cannot compare the vendored copy")
    for name, source in (("uPlot.esm.js", "dist/uPlot.esm.js"), ("uPlot.min.css", "dist/uPlot.min.css"),
                         ("LICENSE", "LICENSE")):
        assert (vendored / name).read_bytes() == (package / source).read_bytes(), name


def test_trace_page_refuses_bad_ids(client):
    assert client.get("/console/trace/not a trace<script>").status_code in (400, 404)


def test_static_assets_are_served_and_name_no_other_origin(client):
    """Our own files load nothing from elsewhere (the browser test also checks every request a page makes)."""
    for asset in _own_assets() + sorted(VENDOR.rglob("*.*")):
        response = client.get(f"/static/{asset.relative_to(STATIC).as_posix()}")
        assert response.status_code == 200, asset
        if VENDOR not in asset.parents:
            assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", ""), asset.name
            assert "https://" not in response.text, asset.name
    big = client.get("/static/vendor/uplot/uPlot.esm.js", headers={"accept-encoding": "gzip"})
    assert big.headers.get("content-encoding") == "gzip"


def test_console_access_names_the_roles_of_each_area(client):
    access = client.get("/console/access.json").json()
    assert access == {"trace": ["observability_admin"], "logs": ["observability_admin"],
                      "metrics": ["observability_admin"]}


def test_model_json_is_the_console_model(client):
    assert client.get("/console/model.json").json() == json.loads(json.dumps(console_model()))


def test_dev_users_come_from_the_role_data(client):
    users = client.get("/auth/dev-users").json()["users"]
    roles = json.loads((REPO / "policies/data.json").read_text())["finopti"]["roles"]["users"]
    assert {u["email"]: u["roles"] for u in users} == roles


def test_dev_token_is_minted_for_known_users_only(client, tmp_path):
    response = client.post("/auth/dev-token", json={"email": "carol@finopti.dev"})
    assert response.status_code == 200
    token = response.json()["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["email"] == "carol@finopti.dev" and claims["aud"] == "finopti"
    assert (tmp_path / "idp" / "jwks.json").exists()
    refused = client.post("/auth/dev-token", json={"email": "mallory@evil.dev"})
    assert refused.status_code == 400
    assert refused.json()["error"] == "unknown_user" and "mallory@evil.dev" in refused.json()["message"]
    assert client.post("/auth/dev-token", json={}).status_code == 422
