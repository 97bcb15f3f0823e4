"""The errors finopti raises for users: each message names the file, field, port or service at fault."""


class FinoptiError(Exception):
    """Base class: the CLI prints the message in one red line and exits non-zero."""

    exit_code = 1


class MeshSpecError(FinoptiError):
    """mesh.yaml is missing, unreadable or invalid."""

    exit_code = 2


class PortInUseError(FinoptiError):
    """A port the platform needs is taken by another process."""


class PlatformStateError(FinoptiError):
    """The platform is (or is not) running when a command needs the opposite."""


class PlatformNotRunning(PlatformStateError):
    """No platform runs from this state dir (never started, stopped, or its process manager is gone)."""


class StartupError(FinoptiError):
    """A component did not become healthy in time."""
