"""Start one service: `python -m finopti.services.runner` with FINOPTI_* variables set by the process
manager. Binds 127.0.0.1 on the port the platform chose for it."""

import importlib
import os
import sys

import uvicorn

from finopti.services.common import ServiceSettings
from finopti.telemetry import configure_logging


def load_factory(entrypoint: str):
    module_name, _, attr = entrypoint.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def main() -> None:
    settings = ServiceSettings()
    entrypoint = os.environ.get("FINOPTI_ENTRYPOINT")
    if not entrypoint or not settings.port:
        sys.exit("finopti.services.runner: FINOPTI_ENTRYPOINT and FINOPTI_PORT must be set")
    configure_logging(settings.service, settings.version)
    app = load_factory(entrypoint)(settings)
    uvicorn.run(app, host="127.0.0.1", port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
