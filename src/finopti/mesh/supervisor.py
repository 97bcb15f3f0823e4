"""Render the platform's processes to a supervisord configuration (start, restart with backoff, logs)."""

from dataclasses import dataclass
from pathlib import Path

from finopti.logs.settings import LOGSTORE_ENTRYPOINT, store_environment
from finopti.mesh.model import MeshSpec
from finopti.meshtls import TRUST_BUNDLE

LOG_MAX_BYTES = "20MB"
LOG_BACKUPS = 3
# A changed listener drains its old connections (each answer says `Connection: close`) and closes those still
# open after DRAIN_SECONDS, so no request is served by the old filters after that (Envoy's default: a gradual
# drain over 10 minutes). Longer than a client keeps an idle connection (httpx: 5 s), so that close never races
# a request.
DRAIN_SECONDS = 6
# In every program's environment (from supervisord's), naming the state dir: a process of the platform can be
# found even when the supervisord that started it is gone (`platform.leftover_pids`).
PLATFORM_MARK = "FINOPTI_PLATFORM"
ENVOY_DRAIN_ARGS = ("--drain-strategy", "immediate", "--drain-time-s", str(DRAIN_SECONDS))


@dataclass(frozen=True)
class AuxProgram:
    """A platform process that is not a mesh service (the log collector, Prometheus)."""

    name: str
    command: str
    environment: dict[str, str]


@dataclass(frozen=True)
class ProcessRuntime:
    state_dir: Path
    logs_dir: Path
    socket_path: Path
    pidfile: Path
    python: str
    envoy: str
    envoy_bootstrap: Path
    mesh_url: str
    service_ports: dict[str, dict[str, int]]
    policy_dir: Path
    pki_dir: Path
    aux: tuple[AuxProgram, ...] = ()
    # "root" when supervisord runs as root: said, it does not log CRIT "running as root" (any other user it does
    # not log; naming one that has no passwd entry would stop it). The credentials of its control socket: without
    # them it logs CRIT "running without any HTTP authentication checking".
    user: str | None = None
    rpc_credentials: tuple[str, str] | None = None


def component_name(service: str, version: str, first_version: str) -> str:
    """`gcloud-agent` for the first version, `gcloud-agent-v2` for the others."""
    return service if version == first_version else f"{service}-{version}"


def components(spec: MeshSpec) -> list[tuple[str, str, str]]:
    """(component, service, version) for every service process, in mesh.yaml order."""
    return [
        (component_name(s.name, v, s.versions[0]), s.name, v) for s in spec.services for v in s.versions
    ]


def _quoted(name: str, value: str) -> str:
    """A value for supervisord's `environment=`: a quoted token of its (non-POSIX) shlex, without escapes, whose
    quotes it strips; `%` is its interpolation."""
    quote = "'" if '"' in value else '"'
    if quote in value or value[:1] in "'\"" and value or value[-1:] in "'\"" and value:
        raise ValueError(f"{name}: supervisord cannot pass a value with both kinds of quotes, or starting or ending"
                         f" with one: {value!r}")
    return quote + value.replace("%", "%%") + quote


# How long a service must run before supervisord counts it started: longer than a Python service takes to start
# on a busy machine, so one that exits at start because it cannot do its job (a store that cannot write) is
# started again after growing pauses, not in a tight loop. Traffic does not wait for it: the gateway's health
# check does.
SERVICE_START_SECONDS = 5


def _program(name: str, command: str, rt: ProcessRuntime, environment: dict[str, str] | None = None,
             start_seconds: int = 1) -> str:
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"directory={rt.state_dir}",
        "autostart=true",
        "autorestart=true",
        f"startsecs={start_seconds}",
        # A process that exits within startsecs of a start is started again after 1 s, 2 s, 3 s...: about half an
        # hour of tries before supervisord gives up (FATAL).
        "startretries=60",
        "stopsignal=TERM",
        "stopwaitsecs=10",
        "stopasgroup=true",
        "killasgroup=true",
        f"stdout_logfile={rt.logs_dir / (name + '.log')}",
        f"stdout_logfile_maxbytes={LOG_MAX_BYTES}",
        f"stdout_logfile_backups={LOG_BACKUPS}",
    ]
    if name == "gateway":
        # Envoy's access log is JSON on stdout; its own diagnostics go to a separate file.
        lines += [
            f"stderr_logfile={rt.logs_dir / 'gateway.err.log'}",
            f"stderr_logfile_maxbytes={LOG_MAX_BYTES}",
            f"stderr_logfile_backups={LOG_BACKUPS}",
        ]
    else:
        lines.append("redirect_stderr=true")
    if environment:
        env = ",".join(f"{k}={_quoted(k, v)}" for k, v in environment.items())
        lines.append(f"environment={env}")
    return "\n".join(lines)


def render_supervisor(spec: MeshSpec, rt: ProcessRuntime) -> str:
    credentials = f"\nusername={rt.rpc_credentials[0]}\npassword={rt.rpc_credentials[1]}" if rt.rpc_credentials else ""
    sections = [
        "; Rendered by finopti from mesh.yaml; do not edit.",
        f"[unix_http_server]\nfile={rt.socket_path}\nchmod=0700{credentials}",
        "\n".join(["[supervisord]", *([f"user={rt.user}"] if rt.user else []),
                   f"logfile={rt.logs_dir / 'supervisord.log'}", f"pidfile={rt.pidfile}", f"childlogdir={rt.logs_dir}",
                   "logfile_maxbytes=5MB\nlogfile_backups=2\nloglevel=info\nnodaemon=false\nsilent=true",
                   f"environment={PLATFORM_MARK}={_quoted(PLATFORM_MARK, str(rt.state_dir))}"]),
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        f"[supervisorctl]\nserverurl=unix://{rt.socket_path}{credentials}",
        _program(
            "gateway",
            # Flush the access log every 200 ms (default 10 s) so a request is in the log right after it.
            # One worker thread: plenty for one machine, and it leaves the other core to the services.
            # A dynamic base id lets two platforms (two test runs) share one machine.
            f"{rt.envoy} -c {rt.envoy_bootstrap} --log-level warn --file-flush-interval-msec 200 --concurrency 1"
            f" {' '.join(ENVOY_DRAIN_ARGS)}"
            f" --use-dynamic-base-id --base-id-path {rt.state_dir / 'envoy.base-id'}",
            rt,
        ),
    ]
    for component, service_name, version in components(spec):
        service = spec.service(service_name)
        env = {
            "FINOPTI_SERVICE": service.name,
            "FINOPTI_VERSION": version,
            "FINOPTI_PORT": str(rt.service_ports[service.name][version]),
            "FINOPTI_ENTRYPOINT": service.entrypoint,
            "FINOPTI_MESH_URL": rt.mesh_url,
            "FINOPTI_HOME": str(rt.state_dir),
            "FINOPTI_POLICY_DIR": str(rt.policy_dir),
            "FINOPTI_TLS_CERT": str(rt.pki_dir / f"{service.name}.crt"),
            "FINOPTI_TLS_KEY": str(rt.pki_dir / f"{service.name}.key"),
            "FINOPTI_TLS_CALLERS": str(rt.pki_dir / TRUST_BUNDLE),
            "FINOPTI_MESH_CA": str(rt.pki_dir / "ca.crt"),
            "PYTHONUNBUFFERED": "1",
        }
        if service.entrypoint == LOGSTORE_ENTRYPOINT:
            env.update(store_environment(spec.logs))
        sections.append(_program(component, f"{rt.python} -m finopti.services.runner", rt, env,
                                 start_seconds=SERVICE_START_SECONDS))
    for program in rt.aux:
        sections.append(_program(program.name, program.command, rt, program.environment))
    sections.append(_watchdog(rt))
    return "\n\n".join(sections) + "\n"


def _watchdog(rt: ProcessRuntime) -> str:
    """`finopti.watchdog`: restarts a component that hangs (supervisord restarts only those that exit). An event
    listener: stdout is supervisord's protocol, its log is stderr."""
    env = {"FINOPTI_SERVICE": "watchdog", "FINOPTI_HOME": str(rt.state_dir), "PYTHONUNBUFFERED": "1"}
    return "\n".join([
        "[eventlistener:watchdog]",
        f"command={rt.python} -m finopti.watchdog",
        f"directory={rt.state_dir}",
        "events=TICK_5",
        "autostart=true",
        "autorestart=true",
        "startretries=60",
        "stopsignal=TERM",
        "stopwaitsecs=5",
        f"stderr_logfile={rt.logs_dir / 'watchdog.log'}",
        f"stderr_logfile_maxbytes={LOG_MAX_BYTES}",
        f"stderr_logfile_backups={LOG_BACKUPS}",
        f"environment={','.join(f'{k}={_quoted(k, v)}' for k, v in env.items())}",
    ])
