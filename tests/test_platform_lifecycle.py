"""Starting and stopping: refusals with clear messages, and nothing left behind (issue 2)."""

import os
import re
import socket
import subprocess
import sys

import psutil
import pytest
import yaml
from conftest import FINOPTI, REPO, run_cli, start_platform

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


@pytest.mark.parametrize(("make", "expected"), [
    (lambda path: path.mkdir(), "is a directory"),
    (lambda path: path.write_bytes(b"\xff\xfe\x00"), "not UTF-8 text"),
], ids=["directory", "binary"])
def test_unreadable_mesh_file_is_named(tmp_path, make, expected):
    mesh = tmp_path / "mesh.yaml"
    make(mesh)
    result = run_cli("up", "--detach", "--mesh", str(mesh), home=tmp_path / "state", edge_port=free_port())
    assert result.returncode != 0 and f"{mesh}: {expected}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_damaged_runtime_file_is_named(tmp_path):
    home = tmp_path / "state"
    home.mkdir()
    (home / "runtime.json").write_text('{"edge_host": "127.0.0.1", "edge_po')
    for command in (("status",), ("mesh", "apply"), ("pki", "rotate"), ("fault", "clear")):
        result = run_cli(*command, home=home)
        assert result.returncode != 0 and "runtime.json is damaged" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert run_cli("down", home=home).returncode == 0  # nothing runs from it: down says so and clears it


def _hold_lock(home, what: str) -> subprocess.Popen:
    """A process holding the platform's operation lock (as an operation does) until it is killed."""
    code = ("import sys, time; from pathlib import Path; from finopti.oplock import operation\n"
            f"with operation(Path({str(home)!r}), {what!r}, create=True):\n"
            "    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_an_operation_waits_for_the_one_running_and_a_killed_one_holds_nothing(tmp_path):
    """The lock is the kernel's: a second operation says whom it waits for; the holder SIGKILLed (a CLI killed in
    the middle of an operation), the next one goes on at once."""
    home = tmp_path / "state"
    holder = _hold_lock(home, "`finopti mesh apply`")
    waiting = subprocess.Popen([FINOPTI, "pki", "rotate"], cwd=REPO, env={**os.environ, "FINOPTI_HOME": str(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = waiting.stderr.readline()
        assert f"waiting for `finopti mesh apply` (pid {holder.pid}) to finish" in line, line
        assert waiting.poll() is None
    finally:
        holder.kill()  # our own child, by its pid
        holder.wait()
    _, rest = waiting.communicate(timeout=60)
    assert waiting.returncode != 0 and "the platform is not running" in rest, rest  # it ran: nothing to rotate


def test_an_operation_that_cannot_wait_longer_names_the_one_running(tmp_path):
    from finopti.errors import PlatformStateError
    from finopti.oplock import operation

    holder = _hold_lock(tmp_path, "`finopti up`")
    try:
        with pytest.raises(PlatformStateError, match=rf"`finopti up` \(pid {holder.pid}\) still runs"):
            with operation(tmp_path, "`finopti down`", wait=0.5, on_wait=lambda _: None):
                pass
    finally:
        holder.kill()
        holder.wait()


def _alive(pids) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def _wait_gone(pids, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pids)


@pytest.mark.timeout(300)
def test_a_platform_whose_process_manager_died_is_said_so_and_recovered(tmp_path):
    """supervisord SIGKILLed leaves its processes running (ports, files, the collector's positions): `status` says
    the platform is not running and names them, operations refuse at once changing nothing, `up` stops them before
    starting afresh, and `down` stops them."""
    import json
    import signal

    from finopti.platform import supervisor_pid

    plat = start_platform(tmp_path / "state")
    try:
        for round_ in range(2):
            manager, pids = supervisor_pid(plat.state), platform_pids(plat.state)
            os.kill(manager, signal.SIGKILL)  # the platform's own process manager, by its pid
            _wait_gone([manager])
            left = sorted(set(_alive(pids)) - {manager})
            assert left  # its processes run on
            status = plat.cli("status", "--json")
            assert status.returncode == 1 and json.loads(status.stdout)["running"] is False
            said = re.search(r"of its processes are left \(pids ([\d, ]+)\)", plat.cli("status").stdout)
            # Some may have ended meanwhile (Envoy, on its next write to the pipe supervisord held): those left, named.
            assert said and {int(pid) for pid in said.group(1).split(", ")} <= set(left), said
            serial = (plat.state.pki / "gateway.crt").read_bytes()
            for command in (("mesh", "apply"), ("pki", "rotate"), ("fault", "clear"), ("logs",), ("trace", "--last")):
                refused = plat.cli(*command, timeout=20)  # at once, not after a wait for a gateway that is gone
                assert refused.returncode != 0 and "the platform is not running" in refused.stderr, refused.stderr
            assert (plat.state.pki / "gateway.crt").read_bytes() == serial
            if round_ == 0:
                again = plat.cli("up", "--detach", check=True)
                assert "processes left by the last run" in again.stdout, again.stdout
                assert not _alive(left)
            else:
                assert plat.cli("down", check=True).stdout.startswith("stopped ")
                _wait_gone(left)
    finally:
        plat.cli("down")  # leaves nothing behind, even when an assertion failed midway
    assert plat.cli("status").returncode == 1


@pytest.mark.timeout(300)
def test_two_ups_at_once_start_one_platform(tmp_path):
    import json

    home, port = tmp_path / "state", free_port()
    env = {**os.environ, "FINOPTI_HOME": str(home), "FINOPTI_EDGE_PORT": str(port)}
    ups = [subprocess.Popen([FINOPTI, "up", "--detach"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [(up.wait(timeout=240), *up.communicate()) for up in ups]
        assert sorted(code for code, _, _ in results) == [0, 1], results
        refused = next(stderr for code, _, stderr in results if code)
        assert "already running" in refused and "Traceback" not in refused
        # The one platform's records are its own: every component healthy at the ports runtime.json names.
        status = run_cli("status", "--json", home=home, edge_port=port)
        assert status.returncode == 0, status.stdout
        assert all(c["state"] == "healthy" for c in json.loads(status.stdout)["components"])
    finally:
        run_cli("down", home=home)


@pytest.mark.timeout(180)
def test_up_terminated_while_starting_stops_what_it_started(tmp_path):
    """SIGTERM (a service manager, a CI timeout) while `up --detach` waits for health: like Ctrl-C, not a
    platform left starting with no one waiting for it."""
    import signal

    from finopti.paths import StateDir

    home = tmp_path / "state"
    env = {**os.environ, "FINOPTI_HOME": str(home), "FINOPTI_EDGE_PORT": str(free_port())}
    proc = subprocess.Popen([FINOPTI, "up", "--detach"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = ""
    while "healthy after" not in line:
        line = proc.stdout.readline()
        assert line, f"finopti up ended before a component was healthy: {proc.communicate()}"
    pids = platform_pids(StateDir(home))
    try:
        assert pids
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 130 and "interrupted: the platform was stopped" in stderr, stderr
        assert not _alive(pids)
        assert run_cli("status", home=home).returncode == 1
    finally:
        run_cli("down", home=home)


def test_a_state_dir_that_is_a_file_is_named_by_every_command(tmp_path):
    home = tmp_path / "state"
    home.write_text("not a directory")
    for command in (("up", "--detach"), ("status",), ("down",), ("mesh", "apply"), ("pki", "rotate"),
                    ("fault", "clear"), ("logs",), ("token", "alice@finopti.dev")):
        result = run_cli(*command, home=home, edge_port=free_port())
        assert result.returncode != 0 and str(home) in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr and "not a directory" in result.stderr.lower(), (command, result.stderr)


def test_commands_without_a_platform_leave_no_state_dir_behind(tmp_path):
    home = tmp_path / "never-started"
    for command in (("down",), ("mesh", "apply"), ("fault", "clear"), ("pki", "rotate"), ("status",)):
        result = run_cli(*command, home=home)
        assert "Traceback" not in result.stderr and "not running" in result.stdout + result.stderr, result
    assert not home.exists()
