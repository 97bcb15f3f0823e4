"""The sandbox cloud: an offline, deterministic, GCP-like backend for the FinOps tool servers."""

from .catalog import SANDBOX_NOW
from .errors import AlreadyExists, InvalidArgument, NotFound, SandboxError
from .sandbox import SandboxCloud, default_db_path

__all__ = ["SANDBOX_NOW", "AlreadyExists", "InvalidArgument", "NotFound", "SandboxCloud", "SandboxError",
           "default_db_path"]
