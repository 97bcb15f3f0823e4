"""Shared fixtures: one running platform per test session (real Envoy, real service processes)."""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from finopti.idp import DevIdentityProvider
from finopti.mesh.model import load_mesh
from finopti.paths import StateDir
from finopti.platform import Runtime
from finopti.ports import free_port

REPO = Path(__file__).resolve().parent.parent
FINOPTI = str(Path(sys.executable).with_name("finopti"))


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from the renderers")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


def run_cli(*args: str, home: Path, edge_port: int | None = None, timeout: float = 120,
            check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FINOPTI_HOME": str(home), "COLUMNS": "200"}
    if edge_port is not None:
        env["FINOPTI_EDGE_PORT"] = str(edge_port)
    result = subprocess.run([FINOPTI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                            input=input)
    if check and result.returncode != 0:
        command = " ".join(args)
        raise AssertionError(f"finopti {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


_TOKENS: dict[Path, dict[tuple, str]] = {}


@dataclass
class Platform:
    home: Path
    edge_port: int

    @property
    def state(self) -> StateDir:
        return StateDir(self.home)

    @property
    def runtime(self) -> Runtime:
        return Runtime.load(self.state)

    @property
    def edge(self) -> str:
        return self.runtime.edge_url

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_cli(*args, home=self.home, edge_port=self.edge_port, **kwargs)

    def token(self, email: str, groups: list[str] | None = None, ttl: float | None = None) -> str:
        """A fresh token per (user, groups) is made once per test session: signing is slow enough to skew
        timing-sensitive tests."""
        key = (email, tuple(groups or ()), ttl)
        if key not in _TOKENS.setdefault(self.home, {}):
            idp = DevIdentityProvider(self.state.idp, load_mesh(REPO / "mesh.yaml").identity)
            _TOKENS[self.home][key] = idp.issue(email, groups, ttl)
        return _TOKENS[self.home][key]

    def headers(self, email: str = "alice@finopti.dev") -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(email)}"}

    def mesh(self, identity: str, method: str, path: str, user: str = "erin@finopti.dev", **kwargs) -> httpx.Response:
        """A call on the gateway's mesh listener as service `identity` (its certificate) for `user`."""
        from finopti.meshtls import client_context

        pki = self.state.pki
        ctx = client_context(pki / f"{identity}.crt", pki / f"{identity}.key", pki / "ca.crt")
        with httpx.Client(verify=ctx, timeout=60) as client:
            return client.request(method, f"{self.runtime.mesh_url}{path}", headers=self.headers(user), **kwargs)

    def ask(self, prompt: str, user: str = "alice@finopti.dev") -> httpx.Response:
        return httpx.post(f"{self.edge}/api/ask", json={"prompt": prompt}, headers=self.headers(user), timeout=60)

    def confirm(self, plan: httpx.Response | str, user: str = "alice@finopti.dev", verb: str = "confirm"
                ) -> httpx.Response:
        """Confirm (or cancel, verb="cancel") a plan the assistant answered, with its token, as `user`."""
        token = plan if isinstance(plan, str) else plan.json()["confirmation"]["token"]
        return httpx.post(f"{self.edge}/api/ask/{verb}", json={"token": token}, headers=self.headers(user),
                          timeout=60)

    def log_lines(self, component: str) -> list[dict]:
        lines = []
        for line in (self.state.logs / f"{component}.log").read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def wait_for_log(self, component: str, predicate, until=bool, timeout: float = 5.0) -> list[dict]:
        """Lines of a component's log matching `predicate`, polled until `until(lines)` holds or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log_lines(component) if predicate(line)]
            if until(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


@pytest.fixture
def cpu_burner():
    """A process spinning on one core for the length of a test: live operations must hold on a busy machine."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield proc
    proc.kill()  # our own child, by its pid
    proc.wait()


@pytest.fixture(scope="session")
def seeded_sandbox(tmp_path_factory) -> Path:
    """One freshly seeded sandbox database per session, to copy rather than seed again (seeding takes ~1 s)."""
    from finopti.cloud import SandboxCloud

    return SandboxCloud(tmp_path_factory.mktemp("sandbox-template") / "sandbox.db").db_path


@pytest.fixture
def fresh_sandbox(seeded_sandbox: Path, tmp_path: Path):
    """A private, writable copy of the freshly seeded sandbox (SQLite's backup API: consistent with WAL)."""
    import sqlite3

    from finopti.cloud import SandboxCloud

    target = tmp_path / "sandbox.db"
    source, copy = sqlite3.connect(seeded_sandbox), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return SandboxCloud(target)


def start_platform(home: Path) -> Platform:
    port = free_port()
    # The platform's own copy of the policies: it watches them, and a test may change them.
    policies = home / "policies"
    shutil.copytree(REPO / "policies", policies, dirs_exist_ok=True)
    run_cli("up", "--detach", "--policies", str(policies), home=home, edge_port=port, check=True)
    return Platform(home=home, edge_port=port)


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> Platform:
    """The platform shared by every test that does not break it."""
    plat = start_platform(tmp_path_factory.mktemp("platform"))
    yield plat
    plat.cli("down")


# --- the compose bundle's gateway: a real APISIX (../shared/apisix-runtime) ----------------------------------


@pytest.fixture(scope="session")
def apisix_runtime() -> Path:
    from finopti.testing.apisix import ApisixUnavailable, find_runtime

    try:
        return find_runtime(REPO)
    except ApisixUnavailable as exc:
        pytest.skip(f"real APISIX not available: {exc}")


@pytest.fixture(scope="session")
def apisix_platform(apisix_runtime, tmp_path_factory):
    """mesh.yaml's compose bundle on APISIX: its gateway config for this machine, every service as a process."""
    from finopti.testing.apisix import ApisixPlatform

    plat = ApisixPlatform(load_mesh(REPO / "mesh.yaml"), apisix_runtime, root=tmp_path_factory.mktemp("apisix"),
                          repo=REPO).start()
    yield plat
    plat.stop()
