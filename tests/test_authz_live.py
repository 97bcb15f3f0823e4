"""Decisions change live: a changed role table (the platform's policies directory, watched by the policy
service) re-renders the gateway's own rules and the Rego's data; a broken one changes nothing."""

import json
import os
import time
from pathlib import Path

import httpx

from finopti.meshtls import client_context


def _until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # the watcher never sees half a file


def _mesh_post(platform, path: str, user: str) -> httpx.Response:
    """A hop as the orchestrator makes it, for `user`."""
    pki = platform.state.pki
    ctx = client_context(pki / "orchestrator.crt", pki / "orchestrator.key", pki / "ca.crt")
    with httpx.Client(verify=ctx, timeout=10) as client:
        return client.post(f"{platform.runtime.mesh_url}{path}", json={},
                           headers={"authorization": f"Bearer {platform.token(user)}"})


def _rego_allows(platform, user: str) -> bool:
    """The Rego's answer for the same hop, through the policy service's OPA API (as the cli, erin)."""
    pki = platform.state.pki
    policy_input = {"request": {"method": "POST", "path": "/gcloud-agent/v1/actions/list_buckets", "headers": {}},
                    "finopti": {"user": user, "groups": [], "source": "orchestrator", "route": "gcloud-agent",
                                "listener": "mesh"}}
    with httpx.Client(verify=client_context(pki / "cli.crt", pki / "cli.key", pki / "ca.crt"), timeout=10) as c:
        response = c.post(f"{platform.runtime.mesh_url}/policy/v1/data/finopti/authz/allow",
                          headers={"authorization": f"Bearer {platform.token('erin@finopti.dev')}"},
                          json={"input": policy_input})
    return response.json()["result"] is True


def test_a_changed_role_table_changes_decisions_live(platform):
    data_file = platform.home / "policies" / "data.json"
    original = data_file.read_text()
    assert platform.ask("list buckets", user="dave@finopti.dev").status_code == 403
    data = json.loads(original)
    data["finopti"]["roles"]["users"]["dave@finopti.dev"] = ["finops_viewer"]
    try:
        _write(data_file, json.dumps(data))
        assert _until(lambda: platform.ask("list buckets", user="dave@finopti.dev").status_code == 200)
        assert _until(lambda: _rego_allows(platform, "dave@finopti.dev"))
        stop = _mesh_post(platform, "/gcloud-agent/v1/actions/stop_instance", "dave@finopti.dev")
        assert stop.status_code == 403 and "needs role gcloud_admin" in stop.json()["message"]
    finally:
        _write(data_file, original)
    assert _until(lambda: platform.ask("list buckets", user="dave@finopti.dev").status_code == 403)
    assert _until(lambda: not _rego_allows(platform, "dave@finopti.dev"))


def test_a_broken_role_table_keeps_the_rules_in_force(platform):
    data_file = platform.home / "policies" / "data.json"
    original = data_file.read_text()
    policy_log = platform.state.logs / "policy.log"
    seen = len(policy_log.read_text().splitlines())
    try:
        _write(data_file, original.replace('"dave@finopti.dev": []', '"dave@finopti.dev": "not a list"'))
        assert _until(lambda: any("not applied" in line for line in policy_log.read_text().splitlines()[seen:]))
        assert platform.ask("list buckets", user="alice@finopti.dev").status_code == 200
        assert platform.ask("list buckets", user="dave@finopti.dev").status_code == 403
    finally:
        seen = len(policy_log.read_text().splitlines())
        _write(data_file, original)
        # Leave the shared platform settled: the restored table is rendered before the next test runs.
        assert _until(lambda: any("re-rendered" in line for line in policy_log.read_text().splitlines()[seen:]))
