"""Starting and stopping: refusals with clear messages, and nothing left behind (issue 2)."""

import os
import socket

import psutil
import pytest
import yaml
from conftest import REPO, run_cli, start_platform

from finopti.platform import platform_pids
from finopti.ports import free_port


def _route(raw: dict, name: str) -> dict:
    return next(r for r in raw["routes"] if r["name"] == name)


def _broken_mesh(tmp_path, mutate) -> str:
    raw = yaml.safe_load((REPO / "mesh.yaml").read_text())
    mutate(raw)
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda raw: raw["routes"][1].update(backend="billing-agent"),
         "routes[1].backend: unknown service 'billing-agent'"),
        (lambda raw: raw["routes"].append({**_route(raw, "ask"), "path": "/other"}), "duplicate in routes: 'ask'"),
        (lambda raw: raw["gateway"]["edge"].update(port="eighty"), "gateway.edge.port"),
        (lambda raw: raw["services"][0].update(colour="blue"), "services[0].colour"),
    ],
    ids=["unknown-backend", "duplicate-route", "bad-type", "unknown-field"],
)
def test_broken_mesh_fails_up_naming_the_field(tmp_path, mutate, expected):
    mesh = _broken_mesh(tmp_path, mutate)
    result = run_cli("up", "--detach", "--mesh", mesh, home=tmp_path / "state", edge_port=free_port())
    assert result.returncode != 0
    assert mesh in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_mesh_file_is_named(tmp_path):
    result = run_cli("up", "--mesh", str(tmp_path / "nope.yaml"), home=tmp_path / "state")
    assert result.returncode != 0 and "nope.yaml: file not found" in result.stderr


def test_taken_edge_port_is_reported_with_owner(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("up", "--detach", home=tmp_path / "state", edge_port=port)
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert f"(pid {os.getpid()})" in result.stderr  # the owner: this test process


@pytest.mark.timeout(180)
def test_second_up_refuses_and_down_leaves_nothing(tmp_path):
    plat = start_platform(tmp_path / "state")
    pids = platform_pids(plat.state)
    assert len(pids) >= 8  # supervisord, the gateway and every service
    again = plat.cli("up", "--detach")
    assert again.returncode != 0 and "already running" in again.stderr
    down = plat.cli("down", check=True)
    assert "stopped" in down.stdout
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert plat.cli("down").stdout.strip() == "the platform was not running"
    status = plat.cli("status")  # a table of what would run, all stopped
    assert status.returncode != 0 and "not running" in status.stdout and "stopped" in status.stdout


@pytest.mark.timeout(180)
def test_foreground_up_stops_everything_on_ctrl_c(tmp_path):
    """`make up` runs `finopti up` in the foreground; Ctrl-C (SIGINT) must stop every process it started."""
    import signal
    import subprocess
    import time

    from conftest import FINOPTI

    from finopti.paths import StateDir

    home = tmp_path / "state"
    env = {**os.environ, "FINOPTI_HOME": str(home), "FINOPTI_EDGE_PORT": str(free_port())}
    proc = subprocess.Popen([FINOPTI, "up"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output = ""
    deadline = time.monotonic() + 120
    while "press Ctrl-C to stop" not in output:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, f"finopti up did not come up:\n{output}"
        output += line
    pids = platform_pids(StateDir(home))
    assert len(pids) >= 8
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped" in rest, rest
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
