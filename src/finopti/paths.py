"""Where the platform keeps its state: `.finopti/` in the working directory, or `$FINOPTI_HOME`."""

import os
from dataclasses import dataclass
from pathlib import Path

from finopti.errors import PlatformStateError


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
    def supervisor_secret(self) -> Path:
        """The password of supervisord's control socket (made once, kept across renders: supervisord reads it
        only when it starts)."""
        return self.root / "supervisor.secret"

    # Each database in a directory of its own: a storage fault of one (a full or read-only directory) leaves the
    # other working.
    @property
    def sandbox_db(self) -> Path:
        """The sandbox cloud (the tool servers' data)."""
        return self.root / "cloud" / "sandbox.db"

    @property
    def logstore_db(self) -> Path:
        return self.root / "logstore" / "logstore.db"

    def ensure(self) -> "StateDir":
        for d in (self.root, self.logs, self.gateway, self.idp):
            d.mkdir(parents=True, exist_ok=True)
        for db in (self.sandbox_db, self.logstore_db):
            _move_database(self.root / db.name, db)
        return self


def _move_database(old: Path, new: Path) -> None:
    """A database from before it had a directory of its own moves there (with its WAL), if not there yet."""
    if not old.exists() or new.exists():
        return
    new.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm", ""):  # the database file last: its presence says the move is done
        source = old.with_name(old.name + suffix)
        if source.exists():
            os.replace(source, new.with_name(new.name + suffix))


def state_dir() -> StateDir:
    home = os.environ.get("FINOPTI_HOME")
    return StateDir(Path(home).resolve() if home else (Path.cwd() / ".finopti").resolve())


def unusable(root: Path, why: str) -> PlatformStateError:
    """The error for a state dir that cannot be one (a file, no permission)."""
    return PlatformStateError(f"{root}: {why}, so it cannot be the platform's state dir; FINOPTI_HOME names another")
