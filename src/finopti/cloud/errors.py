"""Errors raised by the sandbox cloud; messages are meant to be shown to a user or an agent as-is."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: anything the sandbox refuses to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SandboxError):
    """The named instance, disk, zone or similar does not exist."""


class InvalidArgument(SandboxError):
    """An argument is malformed, out of range, or not allowed in the resource's current state."""


class AlreadyExists(SandboxError):
    """Something with that name exists already (a budget, say)."""
