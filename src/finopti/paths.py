"""Where the platform keeps its state: `.finopti/` in the working directory, or `$FINOPTI_HOME`."""

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def gateway(self) -> Path:
        """Rendered Envoy bootstrap and the xDS files Envoy watches."""
        return self.root / "gateway"

    @property
    def idp(self) -> Path:
        return self.root / "idp"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def policy(self) -> Path:
        """The policy service's bundle: the Rego and data it evaluates, routes from the running mesh."""
        return self.root / "policy"

    @property
    def running_mesh(self) -> Path:
        """The mesh.yaml the platform runs now (as last started or applied), without drills."""
        return self.root / "mesh.running.yaml"

    @property
    def runtime_file(self) -> Path:
        """Ports and settings chosen by the running platform."""
        return self.root / "runtime.json"

    @property
    def supervisor_conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.root / "supervisord.pid"

    @property
    def sandbox_db(self) -> Path:
        return self.root / "sandbox.db"

    def ensure(self) -> "StateDir":
        for d in (self.root, self.logs, self.gateway, self.idp):
            d.mkdir(parents=True, exist_ok=True)
        return self


def state_dir() -> StateDir:
    home = os.environ.get("FINOPTI_HOME")
    return StateDir(Path(home).resolve() if home else (Path.cwd() / ".finopti").resolve())
