"""Every command the README shows runs, as written, on the shipped mesh.yaml.

The tour's `finopti` commands run in order against the session's platform (which `finopti up --detach` started,
exactly as the tour's first line; its teardown is the tour's `finopti down`). `make` lines are checked with
`make -n` (running `make test` from a test would recurse). The CLI table may only name commands the tour runs.
"""

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()
FINOPTI = ".venv/bin/finopti "


def _commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith((FINOPTI, "make "))]


def _tour() -> list[str]:
    commands = [c for c in _commands() if c.startswith(FINOPTI)]
    start, end = commands.index(f"{FINOPTI}up --detach"), commands.index(f"{FINOPTI}down")
    return commands[:start] + commands[start + 1:end]  # the intro's lines, then the tour between up and down


def test_the_readme_shows_commands_and_the_tour_starts_and_stops_the_platform():
    commands = _commands()
    assert f"{FINOPTI}up --detach" in commands and f"{FINOPTI}down" in commands
    assert len(_tour()) >= 20


GROUPS = {"render", "pki", "policy", "mesh", "fault", "canary"}


def _command_name(words: list[str]) -> str:
    """`pki rotate`, `mesh show`; `ask`, `logs` (a group's subcommand is part of the name)."""
    return " ".join(words[:2]) if words[0] in GROUPS and len(words) > 1 else words[0]


def test_the_cli_table_names_only_commands_the_tour_runs():
    table = {_command_name(m.split()) for m in re.findall(r"`finopti ([a-z][a-z -]*[a-z])", README)}
    toured = {_command_name(shlex.split(c)[1:]) for c in _commands() if c.startswith(FINOPTI)}
    assert {"ask", "logs", "trace", "pki rotate", "canary set"} <= table
    assert table <= toured, f"README table commands the tour never runs: {sorted(table - toured)}"


@pytest.mark.parametrize("target", sorted({c.split()[1] for c in _commands() if c.startswith("make ")}))
def test_make_targets_exist(target):
    result = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(600)
def test_every_readme_command_runs_on_the_shipped_mesh(platform, tmp_path):
    for command in _tour():
        args = [a.replace("/tmp/", f"{tmp_path}/") for a in shlex.split(command)[1:]]
        result = platform.cli(*args, timeout=240)
        assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        if args[0] == "logs" and "--grep" in args:
            assert "no lines matched" in result.stderr, result.stderr
    # The drills it ran are undone: no fault left, gcloud-agent back to v1 only.
    shown = platform.cli("mesh", "show", "--json", check=True).stdout
    assert '"fault"' not in shown
    assert Path(tmp_path / "finopti-compose" / "docker-compose.yml").exists()
