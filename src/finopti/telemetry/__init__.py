"""What every service shares for telemetry: JSON logs with trace context, request metrics."""

from finopti.telemetry.context import current_request, outgoing_headers
from finopti.telemetry.logging import configure_logging

__all__ = ["configure_logging", "current_request", "outgoing_headers"]
