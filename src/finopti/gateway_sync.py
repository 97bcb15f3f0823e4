"""Whether the running gateway serves the configuration last written to its files.

Every xDS file carries the hash of its content as `version_info` (`platform.write_envoy_files`). Envoy reports
the version of the last file each subscription accepted as a stat (`<subscription>.version_text`); the
resources' own `version_info` in /config_dump only moves when that resource changed, so it cannot tell an
unchanged listener from one not yet taken. Taken is not yet serving: a new cluster or listener warms first
(health checks, key sets), and connections opened before a listener changed keep its old filters until they
are drained (`--drain-time-s`). "Applied" means all three are over."""

import time

import httpx

from finopti.errors import PlatformStateError

# Gauges that are 0 once nothing is on its way in or out.
SETTLING = ("cluster_manager.warming_clusters", "listener_manager.total_listeners_warming",
            "listener_manager.total_listeners_draining", "listener_manager.total_filter_chains_draining")


def version_stat(file_name: str) -> str:
    """The stat holding the version a subscription (one watched file) last accepted."""
    stem = file_name.removesuffix(".yaml")
    if stem == "lds":
        return "listener_manager.lds.version_text"
    if stem == "cds":
        return "cluster_manager.cds.version_text"
    if stem.startswith("rds-"):  # the route config of listener <name>, under the listener's stat prefix
        name = stem.removeprefix("rds-")
        return f"http.{name}.rds.{name}.version_text"
    if stem.startswith("sds-"):
        return f"sds.{stem.removeprefix('sds-')}.version_text"
    raise ValueError(f"no version stat for {file_name}")


def pending(admin_url: str, versions: dict[str, str]) -> list[str]:
    """What keeps the gateway from serving `versions` (file -> version written), in words; empty when it does."""
    try:
        stats = httpx.get(f"{admin_url}/stats", params={"format": "json", "filter": "(version_text|warming_clusters|"
                          "listeners_warming|_draining)$"}, timeout=2).json()["stats"]
    except (httpx.HTTPError, ValueError, KeyError):
        return ["the gateway's admin API does not answer"]
    values = {s["name"]: s.get("value") for s in stats}
    out = []
    for name, version in sorted(versions.items()):
        served = values.get(version_stat(name))
        if served != version:
            out.append(f"{name}: serving version {served or 'none'}, written {version}")
    out += [f"{gauge} = {values[gauge]}" for gauge in SETTLING if values.get(gauge)]
    return out


def wait_for_gateway(admin_url: str, versions: dict[str, str], timeout: float = 30.0) -> float:
    """Until the gateway serves exactly the files written (see the module docstring); returns the seconds it took."""
    started = time.monotonic()
    while left := pending(admin_url, versions):
        if time.monotonic() - started > timeout:
            raise PlatformStateError(f"the gateway did not take its new configuration within {timeout:.0f}s "
                                     f"({'; '.join(left)}); see gateway.err.log in the logs directory")
        time.sleep(0.05)
    return time.monotonic() - started
