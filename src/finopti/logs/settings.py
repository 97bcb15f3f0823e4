"""The `logs:` section of mesh.yaml as the environment of the processes that apply it (the local platform's
collector and log store); the compose bundle renders the same section into Loki, Alloy and Promtail."""

from finopti.mesh.model import Logs

LOGSTORE_ENTRYPOINT = "finopti.services.logstore.app:create_app"


def store_environment(logs: Logs) -> dict[str, str]:
    return {
        "FINOPTI_LOGSTORE_RETENTION": f"{logs.retention:g}s",
        "FINOPTI_LOGSTORE_MAX_BYTES": str(logs.max_bytes),
        "FINOPTI_LOGSTORE_FUTURE_GRACE": f"{logs.future_grace:g}s",
    }


def collector_environment(logs: Logs) -> dict[str, str]:
    return {
        "FINOPTI_COLLECTOR_FIRSTLINE": logs.multiline.firstline,
        "FINOPTI_COLLECTOR_MULTILINE_MAX_WAIT": f"{logs.multiline.max_wait:g}s",
        "FINOPTI_COLLECTOR_MULTILINE_MAX_LINES": str(logs.multiline.max_lines),
        "FINOPTI_COLLECTOR_FUTURE_GRACE": f"{logs.future_grace:g}s",
    }
