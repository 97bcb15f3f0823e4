"""Start one service: `python -m finopti.services.runner` with FINOPTI_* variables set by the process
manager. Binds 127.0.0.1 on the port the platform chose for it."""

import importlib
import os
import sys

import uvicorn

from finopti.meshtls import server_context
from finopti.services.common import ServiceSettings
from finopti.telemetry import configure_logging

# Longer than the gateway keeps an idle connection to a service (mesh.envoy.UPSTREAM_IDLE_SECONDS): the gateway
# closes first, so it never sends a request on a connection the service is closing (uvicorn's default: 5 s).
KEEP_ALIVE_SECONDS = 75


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
    # FINOPTI_HOST: 127.0.0.1 locally; the compose bundle sets 0.0.0.0 so the gateway container can reach it.
    host = os.environ.get("FINOPTI_HOST", "127.0.0.1")
    config = uvicorn.Config(app, host=host, port=settings.port, log_config=None, access_log=False,
                            timeout_keep_alive=KEEP_ALIVE_SECONDS)
    config.load()
    if settings.tls_cert and settings.tls_key and settings.tls_callers:
        # uvicorn cannot pin callers itself; swap in our context after it loaded its own settings.
        config.ssl = server_context(settings.tls_cert, settings.tls_key, settings.tls_callers)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
