"""The `logs:` section of mesh.yaml, declared once: the local collector and log store get it as their environment,
and the compose bundle renders the same rule into Alloy and Promtail and the same limits into Loki."""

import re
from pathlib import Path

import pytest
import yaml
from supervisor.datatypes import dict_of_key_value_pairs

from finopti.deploy.compose import render_compose_bundle
from finopti.errors import MeshSpecError
from finopti.logs.multiline import DEFAULT_FIRSTLINE
from finopti.mesh.model import load_mesh, parse_mesh
from finopti.mesh.supervisor import ProcessRuntime, render_supervisor

REPO = Path(__file__).resolve().parents[1]
FIRSTLINE = r'^(\d{4}-\d\d-\d\d|\{|"level")'  # a quote, as a user may write one


def mesh_with_logs(logs: dict) -> dict:
    raw = yaml.safe_load((REPO / "mesh.yaml").read_text())
    return {**raw, "logs": logs}


def test_defaults():
    logs = load_mesh(REPO / "mesh.yaml").logs
    assert (logs.retention, logs.max_bytes, logs.future_grace) == (7 * 86400, 1 << 30, 600)
    assert logs.multiline.firstline == DEFAULT_FIRSTLINE


def test_one_rule_for_the_collector_alloy_and_promtail(tmp_path):
    spec = parse_mesh(mesh_with_logs({"retention": "2d", "max_bytes": "256MiB", "future_grace": "5m",
                                      "multiline": {"firstline": FIRSTLINE, "max_wait": "2s", "max_lines": 50}}))
    files = render_compose_bundle(spec, REPO)
    alloy = files["alloy/config.alloy"]
    block = alloy[alloy.index("stage.multiline {"):]
    block = block[: block.index("\n  }") + 4]
    firstline = re.search(r'firstline\s+= "((?:[^"\\]|\\.)*)"', block)[1]
    assert re.sub(r"\\(.)", r"\1", firstline) == FIRSTLINE  # the Alloy string unescaped
    assert 'max_wait_time = "2s"' in block and "max_lines     = 50" in block
    assert alloy.index("stage.multiline") < alloy.index("stage.json")  # lines are joined before they are parsed
    stages = yaml.safe_load(files["promtail/config.yml"])["scrape_configs"][0]["pipeline_stages"]
    assert stages[0] == {"multiline": {"firstline": FIRSTLINE, "max_wait_time": "2s", "max_lines": 50}}
    limits = yaml.safe_load(files["loki/config.yml"])["limits_config"]
    assert (limits["retention_period"], limits["reject_old_samples_max_age"], limits["creation_grace_period"]) == (
        "48h", "48h", "5m")

    # The local platform: the log store and the collector get the same values through supervisord.
    rt = ProcessRuntime(tmp_path, tmp_path / "logs", tmp_path / "s.sock", tmp_path / "s.pid", "python", "envoy",
                        tmp_path / "envoy.yaml", "http://127.0.0.1:1", {s.name: {v: 1 for v in s.versions}
                                                                       for s in spec.services}, tmp_path, tmp_path)
    conf = render_supervisor(spec, rt)
    section = conf[conf.index("[program:logstore]"):]
    env = dict_of_key_value_pairs(re.search(r"^environment=(.*)$", section, re.M)[1].replace("%%", "%"))
    assert (env["FINOPTI_LOGSTORE_RETENTION"], env["FINOPTI_LOGSTORE_MAX_BYTES"],
            env["FINOPTI_LOGSTORE_FUTURE_GRACE"]) == ("172800s", str(256 << 20), "300s")

    from finopti.logs.settings import collector_environment

    collector = collector_environment(spec.logs)
    assert collector["FINOPTI_COLLECTOR_FIRSTLINE"] == FIRSTLINE
    assert collector["FINOPTI_COLLECTOR_MULTILINE_MAX_WAIT"] == "2s"


@pytest.mark.parametrize(("logs", "problem"), [
    ({"multiline": {"firstline": "^(?!\\s)"}}, "RE2"),
    ({"multiline": {"firstline": "^(unclosed"}}, "not a regular expression"),
    ({"max_bytes": "a lot"}, "invalid size"),
    ({"retention": "0s"}, "positive"),
    ({"future_grace": "soon"}, "duration"),
])
def test_bad_settings_are_named(logs, problem):
    with pytest.raises(MeshSpecError, match=problem) as raised:
        parse_mesh(mesh_with_logs(logs))
    assert "logs" in str(raised.value)
