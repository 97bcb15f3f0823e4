"""The ui service in-process: pages, static assets, the dashboard model and the development sign-in."""

import json
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


@pytest.mark.parametrize("path", ["/", "/console", "/console/live", "/console/trace/0af7651916cd43dd8448eb211c80319c"])
def test_pages_are_html_shells_with_modules(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/' in response.text
    assert "production uses OIDC" in response.text


def test_trace_page_refuses_bad_ids(client):
    assert client.get("/console/trace/not a trace<script>").status_code in (400, 404)


def test_static_assets_have_no_external_urls(client):
    static = REPO / "src/finopti/services/ui/static"
    for asset in static.iterdir():
        response = client.get(f"/static/{asset.name}")
        assert response.status_code == 200
        assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in response.text, asset.name


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
