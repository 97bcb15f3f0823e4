"""The typed model of `mesh.yaml`: what the mesh is, in words free of any data plane's vocabulary.

Renderers (Envoy, APISIX, process manager) take a validated `MeshSpec` and return data.
"""

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from finopti.errors import MeshSpecError
from finopti.logs.multiline import DEFAULT_FIRSTLINE, DEFAULT_MAX_LINES, DEFAULT_MAX_WAIT

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,40}$"
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """`1GiB`, `512MiB`, `1048576` -> bytes (K, M, G, T are powers of 1024 either way)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError(f"invalid size {value!r} (expected e.g. 1GiB, 512MiB, 1048576)")
    unit = (match[2] or "b").lower()[0]
    return int(match[1]) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]


def parse_duration(value: object) -> float:
    """'300ms', '2s', '1.5m', '7d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '300ms' or '2s'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError(f"expected a duration such as '300ms' or '2s', got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


RETRY_CONDITIONS = ("connect-failure", "reset", "refused-stream", "502", "503", "504")
# Conditions where nothing reached the backend, so even a mutating request may be sent again.
SAFE_FOR_MUTATIONS = ("connect-failure", "refused-stream")


class Backoff(Strict):
    base: Duration = 0.025
    max: Duration = 0.25


class Retries(Strict):
    attempts: int = Field(default=2, ge=1, le=10, description="retries after the first try")
    conditions: list[Literal["connect-failure", "reset", "refused-stream", "502", "503", "504"]] = Field(
        default=["connect-failure", "refused-stream", "503"]
    )
    backoff: Backoff = Backoff()
    budget_percent: float = Field(
        default=20.0, gt=0, le=100, description="retries in flight, as a share of active requests"
    )


class CircuitBreaker(Strict):
    consecutive_failures: int = Field(default=5, ge=1, description="failures in a row that open it")
    failures: Literal["5xx", "unreachable"] = Field(
        default="5xx",
        description="what opens the circuit. 5xx: consecutive_failures 5xx answers in a row (relayed ones "
        "included). unreachable: no answer does, for a service that passes on its dependencies' failures (an "
        "agent whose tool server is down is not itself broken). Either way a service that stops answering is "
        "taken out by the gateway's active health check",
    )
    open_for: Duration = Field(default=10.0, description="first open period; it grows with each trip")
    max_open: Duration = Field(default=300.0, description="the longest open period")
    max_requests: int = Field(default=1024, ge=1, description="concurrent requests to the backend")
    max_pending: int = Field(default=1024, ge=1, description="requests waiting for one of those max_requests to end; "
                             "past them the gateway sheds: 503 overloaded with Retry-After")


class RateLimit(Strict):
    requests: int = Field(ge=1, description="tokens per window (the bucket size)")
    per: Duration = Field(default=60.0, description="window in which the tokens refill")
    key: Literal["user", "caller"] = Field(default="user", description="one bucket per user or per calling service")

    @model_validator(mode="after")
    def _positive_window(self) -> "RateLimit":
        if self.per <= 0:
            raise ValueError("per must be a positive duration")
        return self


class Canary(Strict):
    weights: dict[str, int] = Field(description="version -> percent of traffic; they sum to 100")
    pin_header: str = Field(default="x-canary", pattern=r"^[a-z0-9-]+$", description="header value pins a version")

    @model_validator(mode="after")
    def _sum_100(self) -> "Canary":
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("weights cannot be negative")
        if sum(self.weights.values()) != 100:
            raise ValueError(f"weights must sum to 100, got {sum(self.weights.values())}")
        return self


class FaultDelay(Strict):
    duration: Duration
    percent: float = Field(default=100.0, ge=0, le=100)


class FaultAbort(Strict):
    status: int = Field(ge=200, le=599)
    percent: float = Field(default=100.0, ge=0, le=100)


BAGGAGE = "baggage"
_BAGGAGE_MEMBER = re.compile(r"^([A-Za-z0-9!#$%&'*+.^_`|~-]+)=([^\s,;\\\"]+)$")


class HeaderMatch(Strict):
    """Requests carrying this header with this value; for `baggage` (W3C), carrying the member `key=value`
    among the others (properties after `;` allowed): `--header baggage=drill=1`."""

    name: str = Field(pattern=r"^[a-z0-9-]+$")
    value: str

    @model_validator(mode="after")
    def _one_member(self) -> "HeaderMatch":
        if self.name == BAGGAGE and not _BAGGAGE_MEMBER.match(self.value):
            raise ValueError(f"a baggage match is one member key=value (e.g. drill=1), got {self.value!r}")
        return self

    def member_regex(self) -> str | None:
        """For baggage: a regular expression (RE2 and PCRE alike) the whole header value matches when it holds the
        member; None for any other header (an exact match)."""
        if self.name != BAGGAGE:
            return None
        key, value = _BAGGAGE_MEMBER.match(self.value).groups()
        return rf"^(.*,)?[ \t]*{re.escape(key)}[ \t]*=[ \t]*{re.escape(value)}[ \t]*(;[^,]*)?(,.*)?$"


class Fault(Strict):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    header: HeaderMatch | None = Field(default=None, description="only requests carrying this header")

    @model_validator(mode="after")
    def _something(self) -> "Fault":
        if self.delay is None and self.abort is None:
            raise ValueError("a fault needs a delay, an abort or both")
        return self


class RoutePolicy(Strict):
    """Traffic policy; services give defaults, routes override them field by field."""

    timeout: Duration | None = Field(default=None, description="whole request, including retries")
    per_try_timeout: Duration | None = None
    idempotent: bool | None = Field(
        default=None,
        description="true: every method may be retried; false: never retry; unset: only GET/HEAD/OPTIONS "
        "are retried on a response, other methods only when nothing reached the backend",
    )
    retries: Retries | None = None
    circuit_breaker: CircuitBreaker | None = None
    rate_limit: RateLimit | None = None
    canary: Canary | None = None
    fault: Fault | None = None

    @model_validator(mode="after")
    def _coherent(self) -> "RoutePolicy":
        if self.retries is not None and self.idempotent is False:
            raise _FieldError(("retries",), "retries are not allowed on a route marked idempotent: false")
        if self.timeout is not None and self.per_try_timeout is not None and self.per_try_timeout > self.timeout:
            raise _FieldError(("per_try_timeout",), "per_try_timeout cannot exceed timeout")
        return self


class Service(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    entrypoint: str = Field(pattern=r"^[\w.]+:\w+$", description="module:factory returning an ASGI app")
    health: str = Field(default="/healthz", pattern=r"^/")
    versions: list[str] = Field(default=["v1"], min_length=1)
    policy: RoutePolicy = RoutePolicy()
    state: Literal["ephemeral", "persistent"] = Field(
        default="ephemeral", description="persistent: the service keeps data in its home directory that must "
        "outlive a restart and exist once (a database): deployments give it a volume and run one replica; "
        "ephemeral services can run as many replicas as the load needs")

    @model_validator(mode="after")
    def _unique_versions(self) -> "Service":
        if len(set(self.versions)) != len(self.versions):
            raise ValueError(f"versions of service '{self.name}' repeat: {self.versions}")
        return self


class Route(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    listener: Literal["edge", "mesh"]
    path: str = Field(pattern=r"^/", description="path prefix the route matches")
    exact: bool = Field(default=False, description="match the path exactly instead of as a prefix")
    rewrite: str | None = Field(default=None, pattern=r"^/", description="replaces the matched prefix")
    backend: str
    auth: Literal["required", "anonymous"] = "required"
    allowed_callers: list[str] | None = Field(
        default=None, description="services that may call this mesh route; None means any service"
    )
    roles: list[str] | None = Field(
        default=None, description="roles that may use this route ('*': any role); unset: the policy's own rules"
    )
    authz: Literal["native", "rego"] = Field(
        default="native",
        description="who decides each request: 'native', the gateway's own rules rendered from callers, roles "
        "and actions (no network call); 'rego', the policy service asks policies/*.rego on every request",
    )
    policy: RoutePolicy = RoutePolicy()


class Listener(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port at start")


# A host name, an IPv4 address or a bracketed IPv6 address, lowercase and without a port.
HOST_PATTERN = r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)$"
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
# Connections the gateway holds at most, both listeners together (Envoy's overload manager).
GATEWAY_MAX_CONNECTIONS = 10000


class EdgeListener(Listener):
    """The north-south listener: browsers and the CLI reach the platform here."""

    hosts: list[str] = Field(
        default=LOOPBACK_HOSTS, min_length=1,
        description="host names the edge serves, each with or without the listener's port; a request for any "
        "other Host is refused (DNS rebinding), and a state-changing browser request from another origin too",
    )
    # Slow clients (slowloris, a body at 1 byte/s) must not hold connections for ever: 408 or a close.
    header_timeout: Duration = Field(default=10.0, gt=0, description="a request's headers must arrive within "
                                     "this long of its first byte (408 otherwise)")
    request_timeout: Duration = Field(default=30.0, gt=0, description="a whole request, body included, must "
                                      "arrive within this long (408 otherwise); the answer may take longer")
    idle_timeout: Duration = Field(default=60.0, gt=0, description="a connection with no request in flight is "
                                   "closed after this long")
    # Clients at the front door must not take the connections the services need to reach each other.
    max_connections: int = Field(default=8000, gt=0, lt=GATEWAY_MAX_CONNECTIONS, description="connections the "
                                 f"edge holds at most (a new one past them is closed at once); the rest of the "
                                 f"gateway's {GATEWAY_MAX_CONNECTIONS} are the mesh listener's")

    @model_validator(mode="after")
    def _valid_hosts(self) -> "EdgeListener":
        for index, host in enumerate(self.hosts):
            if not re.match(HOST_PATTERN, host):
                raise _FieldError(("hosts", index), f"'{host}' is not a lowercase host name, IPv4 address or "
                                  "[IPv6] address without a port")
            if host in self.hosts[:index]:
                raise _FieldError(("hosts", index), f"duplicate host '{host}'")
        return self


class Gateway(Strict):
    edge: EdgeListener = EdgeListener(port=8080)
    mesh: Listener = Listener()
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)


class Identity(Strict):
    """Who signs users' tokens. `dev`: the platform's development identity provider (a key made once in the
    state dir). `oidc`: the organisation's OpenID Connect provider (Google, Keycloak, Entra ID...), its keys
    found by issuer discovery and fetched again as they rotate."""

    provider: Literal["dev", "oidc"] = "dev"
    issuer: str = Field(default="https://idp.finopti.local", pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    audience: str = "finopti"
    token_ttl: Duration = Field(default=3600.0, description="lifetime of development tokens")
    dev_sign_in: bool = Field(
        default=True, description="the UI's development sign-in (/auth/dev-users, /auth/dev-token): anyone who "
        "reaches the edge may mint a token for any user of the role data; for loopback development only",
    )
    jwks_uri: str | None = Field(default=None, pattern=r"^https?://",
                                 description="oidc: the key set; unset, it comes from the issuer's discovery "
                                 "document ({issuer}/.well-known/openid-configuration)")
    jwks_cache: Duration = Field(default=300.0, description="oidc: how long the gateway keeps the keys before it "
                                 "fetches them again (a rotated key is trusted at the latest after this)")
    email_claim: str = Field(default="email", pattern=r"^[A-Za-z0-9_.:-]+$")
    groups_claim: str = Field(default="groups", pattern=r"^[A-Za-z0-9_.:-]+$",
                              description="the claim whose groups map to roles in the role data")

    @model_validator(mode="after")
    def _coherent(self) -> "Identity":
        if self.provider == "oidc" and self.dev_sign_in:
            raise _FieldError(("dev_sign_in",), "development sign-in needs the development identity provider "
                              "(provider: dev); set dev_sign_in: false with provider: oidc")
        if self.provider == "oidc" and self.jwks_cache <= 0:
            raise _FieldError(("jwks_cache",), "must be a positive duration")
        return self


class Multiline(Strict):
    """Promtail's multiline stage: a line matching `firstline` starts an entry, any other line continues it."""

    firstline: str = Field(default=DEFAULT_FIRSTLINE, description="regular expression (Python and Go RE2 syntax)")
    max_wait: Duration = Field(default=DEFAULT_MAX_WAIT, description="an entry ends when no line came for this long")
    max_lines: int = Field(default=DEFAULT_MAX_LINES, ge=1, le=10_000)

    @model_validator(mode="after")
    def _portable(self) -> "Multiline":
        try:
            re.compile(self.firstline)
        except re.error as exc:
            raise _FieldError(("firstline",), f"not a regular expression: {exc}") from None
        # Alloy and Promtail read the same rule with Go's RE2: no lookaround, no backreferences.
        if re.search(r"\(\?<?[=!]|\\[1-9]", self.firstline):
            raise _FieldError(("firstline",), "lookarounds and backreferences are not supported by Go's RE2, which "
                                              "Alloy and Promtail use")
        return self


class Logs(Strict):
    """The log pipeline: how long and how much the log store keeps, and what an entry is."""

    retention: Duration = Field(default=7 * 86400.0, description="lines older than this are dropped")
    max_bytes: ByteSize = Field(default=1 << 30, description="the store keeps at most this much (oldest go first)")
    future_grace: Duration = Field(default=600.0, description="a line dated further ahead is stored at arrival")
    multiline: Multiline = Multiline()

    @model_validator(mode="after")
    def _positive(self) -> "Logs":
        if self.retention <= 0:
            raise _FieldError(("retention",), "must be a positive duration")
        return self


class ExternalService(Strict):
    """A service outside the platform that a route may lead to (an LLM API): calls to it leave through the
    gateway like every other call, with the route's timeout, retries, circuit breaker and rate limit."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(pattern=r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$",
                     description="scheme, host and port (https is verified against the system's CAs); "
                     "the route's rewrite gives the path")


class MeshSpec(Strict):
    gateway: Gateway = Gateway()
    identity: Identity = Identity()
    services: list[Service] = Field(min_length=1)
    # Platform components that are not mesh services but may back a route (e.g. prometheus, for the
    # console's charts; the platform knows their addresses at start), and services outside the platform
    # declared with their address (an LLM API).
    external: list[Literal["prometheus"] | ExternalService] = Field(default=[])
    routes: list[Route] = Field(min_length=1)
    logs: Logs = Logs()

    @model_validator(mode="after")
    def _check_references(self) -> "MeshSpec":
        _no_duplicates("services", [s.name for s in self.services])
        _no_duplicates("external", self.external_names)
        for index, name in enumerate(self.external_names):
            if name in {s.name for s in self.services}:
                raise _FieldError(("external", index), f"'{name}' is already a service")
        _no_duplicates("routes", [r.name for r in self.routes])
        _no_duplicates("routes (listener + path)", [f"{r.listener} {r.path}" for r in self.routes])
        names = {s.name for s in self.services}
        for index, route in enumerate(self.routes):
            if self.is_external(route.backend):
                continue
            if route.backend not in names:
                raise _FieldError(
                    ("routes", index, "backend"),
                    f"unknown service '{route.backend}' (known: {', '.join(sorted(names))})",
                )
            for caller in route.allowed_callers or []:
                if caller not in names and caller not in EXTERNAL_CALLERS:
                    raise _FieldError(
                        ("routes", index, "allowed_callers"), f"unknown caller '{caller}'"
                    )
            self._check_canary(("routes", index, "policy", "canary"), route.policy, route.backend)
        for index, service in enumerate(self.services):
            self._check_canary(("services", index, "policy", "canary"), service.policy, service.name)
        return self

    def _check_canary(self, loc: tuple, policy: RoutePolicy, service_name: str) -> None:
        if policy.canary is None:
            return
        versions = self.service(service_name).versions
        for version in policy.canary.weights:
            if version not in versions:
                raise _FieldError(
                    (*loc, "weights", version),
                    f"unknown version '{version}' of service '{service_name}' (versions: {', '.join(versions)})",
                )

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def routes_on(self, listener: str) -> list[Route]:
        return [r for r in self.routes if r.listener == listener]

    @property
    def external_names(self) -> list[str]:
        return [e if isinstance(e, str) else e.name for e in self.external]

    def external_service(self, name: str) -> ExternalService | None:
        """An external service declared with its address (None for platform components like prometheus)."""
        return next((e for e in self.external if isinstance(e, ExternalService) and e.name == name), None)

    def is_external(self, backend: str) -> bool:
        return backend in self.external_names

    def effective_policy(self, route: Route) -> RoutePolicy:
        """The route's policy with unset fields taken from its backend service's defaults."""
        if self.is_external(route.backend):
            return route.policy
        defaults = self.service(route.backend).policy.model_dump(exclude_none=True)
        return RoutePolicy.model_validate({**defaults, **route.policy.model_dump(exclude_none=True)})


# Callers that are not platform services but hold a mesh identity (operators' tools, Prometheus).
EXTERNAL_CALLERS = {"cli", "prometheus", "collector"}


class _FieldError(ValueError):
    """A cross-field problem that knows which field it is about."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def _no_duplicates(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            field = what.split(" ")[0]
            raise _FieldError((field, index, "name"), f"duplicate in {what}: '{name}'")
        seen.add(name)


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_mesh(path: Path | str) -> MeshSpec:
    """Read and validate a mesh file; every problem names the file and the field path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MeshSpecError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MeshSpecError(f"{path}: is a directory, not a mesh file") from None
    except OSError as exc:  # no permission, an I/O error
        raise MeshSpecError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise MeshSpecError(f"{path}: not UTF-8 text (byte {exc.start}): not a mesh file") from None
    except yaml.YAMLError as exc:
        raise MeshSpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_mesh(raw, source=str(path))


def parse_mesh(raw: object, source: str = "mesh.yaml") -> MeshSpec:
    if not isinstance(raw, dict):
        raise MeshSpecError(f"{source}: expected a mapping at the top level")
    try:
        return MeshSpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            ctx_error = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_error, _FieldError):  # its loc is relative to the model that raised it
                problems.append(f"{_format_loc(tuple(err['loc']) + ctx_error.loc)}: {ctx_error.message}")
            else:
                message = err["msg"].removeprefix("Value error, ")
                problems.append(f"{_format_loc(tuple(err['loc']))}: {message}")
        raise MeshSpecError(f"{source}: invalid mesh spec:\n  " + "\n  ".join(problems)) from None
