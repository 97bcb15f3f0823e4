"""One JSON object per line on stdout: ts, level, service, version, message, trace and request ids."""

import logging
import sys
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from finopti.telemetry.context import current_request, trace_ids


class _ContextFilter(logging.Filter):
    def __init__(self, service: str, version: str):
        super().__init__()
        self.service = service
        self.version = version

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id, span_id = trace_ids()
        ctx = current_request()
        record.level = record.levelname.lower()
        record.service = self.service
        record.version = self.version
        # Fields set explicitly in `extra` win (the policy service logs decisions for other requests).
        for name, value in (
            ("trace_id", trace_id),
            ("span_id", span_id),
            ("request_id", ctx.request_id),
            ("user", ctx.user),
        ):
            if not getattr(record, name, None):
                setattr(record, name, value)
        return True


class _Formatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(service: str, version: str, level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, libraries') to JSON lines on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_ContextFilter(service, version))
    handler.setFormatter(
        _Formatter(
            "%(asctime)s %(level)s %(service)s %(version)s %(message)s "
            "%(trace_id)s %(span_id)s %(request_id)s %(user)s",
            rename_fields={"asctime": "ts"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The gateway logs every request; uvicorn's own access lines would only repeat it without trace ids.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("mcp").setLevel(logging.WARNING)
