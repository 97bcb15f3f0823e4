"""The chart's workloads: one Deployment per service version of mesh.yaml (the compose bundle's image and
environment), OPA, the APISIX gateway and the rate-limit counter store, each with its ServiceAccount, Service,
PodDisruptionBudget and, when it holds no state, a HorizontalPodAutoscaler.

Every pod runs hardened: not root, read-only root filesystem, no privilege escalation, every capability
dropped, seccomp RuntimeDefault, no service account token. What a component must write goes to an emptyDir
(or, for a service whose mesh.yaml `state` is persistent, a PersistentVolumeClaim).
"""

from dataclasses import dataclass

from finopti.deploy.apisix import CERT_ENV, JWT_KEY_ENV, KEY_ENV
from finopti.deploy.compose import IMAGES, service_environment
from finopti.deploy.helm_template import Block, Fragment, Value, values_path
from finopti.deploy.topology import ENGINES, EXPORT_PORT, GATEWAY, LISTENERS, SERVICE_PORT, Backend
from finopti.mesh.model import Identity

PART_OF = "finopti"
COMPONENT = "app.kubernetes.io/name"
ROLE = "finopti.dev/role"  # gateway | backend | policy | store | observability | collector | console
SERVICE = "finopti.dev/service"
VERSION = "finopti.dev/version"
PKI_DIR = "/pki"
STATE_DIR = "/home/finopti/state"
REDIS = "redis"
REDIS_PORT = 6379
# The gateway's host name inside the cluster: its Service, the name callers dial and its certificate's SNI.
MESH_URL = f"https://{GATEWAY}:{LISTENERS['mesh']}"
# The CA that issues the certificates services accept (the gateway's and Prometheus's), and the mesh CA that
# issues every other identity's; each pod gets only the public certificates it needs.
CALLERS_CA_FILE = f"{PKI_DIR}/callers-ca.crt"
MESH_CA_FILE = f"{PKI_DIR}/mesh-ca.crt"
MESH_CA_ENV = "FINOPTI_MESH_CA_PEM"


@dataclass(frozen=True)
class Image:
    """A pinned image and the user it runs as (numeric: Kubernetes checks runAsNonRoot against it)."""

    ref: str | Value
    uid: int


IMAGE_USERS = {"apisix": 636, "opa": 1000, "redis": 999, "loki": 10001, "prometheus": 65534, "grafana": 472,
               "alloy": 0}
PLATFORM_UID = 10001  # the Dockerfile's `finopti` user
KUBE_IMAGES = {**IMAGES, REDIS: "valkey/valkey:8.1.3-alpine"}


def image(name: str) -> Image:
    return Image(KUBE_IMAGES[name], IMAGE_USERS[name])


def platform_image() -> Image:
    ref = Value('printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion)', quote=True)
    return Image(ref, PLATFORM_UID)


def labels(component: str, role: str, **extra: str) -> dict:
    return {COMPONENT: component, "app.kubernetes.io/part-of": PART_OF, ROLE: role, **extra}


def selector(component: str) -> dict:
    return {COMPONENT: component, "app.kubernetes.io/part-of": PART_OF}


def metadata(name: str, component: str, role: str, **extra: str) -> dict:
    return {"name": name, "labels": {**labels(component, role, **extra),
                                      "app.kubernetes.io/instance": Value(".Release.Name", quote=True),
                                      "app.kubernetes.io/managed-by": Value(".Release.Service", quote=True)}}


def pod_security(uid: int) -> dict:
    if uid == 0:  # the log collector reads the node's pod log files, which only root may read
        return {"runAsUser": 0, "runAsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}}
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
                      "capabilities": {"drop": ["ALL"]}}


def container(name: str, img: Image, **fields) -> dict:
    return {"name": name, "image": img.ref, "imagePullPolicy": Value(".Values.image.pullPolicy"),
            **fields, "securityContext": dict(CONTAINER_SECURITY)}


def pod_spec(component: str, uid: int, containers: list[dict], volumes: list[dict], **fields) -> dict:
    return {
        "serviceAccountName": component,
        # No component talks to the Kubernetes API but the collector and Prometheus (discovery).
        "automountServiceAccountToken": fields.pop("automount", False),
        "securityContext": pod_security(uid),
        **fields,
        "containers": containers,
        "volumes": volumes,
    }


def empty_dir(name: str) -> dict:
    return {"name": name, "emptyDir": {}}


def service_account(component: str, role: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(component, component, role),
            "automountServiceAccountToken": False}


def cluster_service(name: str, component: str, role: str, ports: dict[str, int], headless: bool = False) -> dict:
    spec: dict = {"selector": selector(component),
                  "ports": [{"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}
                            for port_name, port in ports.items()]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name, component, role), "spec": spec}


def deployment(component: str, role: str, pod: dict, replicas: Value | int, stateful: bool = False,
               **pod_labels: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(component, component, role, **pod_labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(component)},
            # One writer of a volume at a time: the old pod goes before the new one starts.
            "strategy": {"type": "Recreate"} if stateful else {
                "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(component, role, **pod_labels)}, "spec": pod},
        },
    }


def disruption_budget(component: str, role: str, stateful: bool) -> dict:
    # A single replica with a volume may be moved (maxUnavailable 1); replicated ones keep one serving.
    budget = {"maxUnavailable": 1} if stateful else {"minAvailable": 1}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(component, component, role),
            "spec": {**budget, "selector": {"matchLabels": selector(component)}}}


def autoscaler(component: str, role: str, settings: str) -> tuple[dict, str]:
    """Scale on CPU between the values' bounds; rendered only when the values enable it."""
    doc = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(component, component, role),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": component},
            "minReplicas": Value(f"{settings}.autoscaling.minReplicas"),
            "maxReplicas": Value(f"{settings}.autoscaling.maxReplicas"),
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": Value(f"{settings}.autoscaling.targetCPU")}}}],
        },
    }
    return doc, f"{settings}.autoscaling.enabled"


def persistent_claim(name: str, component: str, role: str, size: Value) -> dict:
    """A volume that outlives the release: `helm uninstall` leaves it (the sandbox database, logs, metrics)."""
    meta = metadata(name, component, role)
    meta["annotations"] = {**meta.get("annotations", {}), "helm.sh/resource-policy": "keep"}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                 Fragment("finopti.storageClass"): None},
    }


def _secret_file(secret: str, key: str, path: str) -> dict:
    return {"secret": {"name": secret, "items": [{"key": key, "path": path}]}}


def certificate_secret(identity: str) -> str:
    return f"finopti-{identity}-tls"


def identity_volume(identity: str, trusted: dict[str, tuple[str, str]]) -> dict:
    """The identity's certificate and key (its cert-manager Secret), with the public CA certificates it trusts
    (`file -> (secret, key)`), in one read-only directory."""
    sources = [{"secret": {"name": certificate_secret(identity), "items": [
        {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key", "mode": 0o440},
        {"key": "ca.crt", "path": "ca.crt"}]}}]
    sources += [_secret_file(secret, key, file) for file, (secret, key) in trusted.items()]
    return {"name": "pki", "projected": {"sources": sources, "defaultMode": 0o444}}


def ca_certificate(ca: str) -> tuple[str, str]:
    """A CA's public certificate: the `ca.crt` of its own Secret (cert-manager writes the CA itself there)."""
    return f"finopti-{ca}-ca", "ca.crt"


def _probe(command: list[str], period: int, failures: int) -> dict:
    return {"exec": {"command": command}, "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}


# ---------------------------------------------------------------- services of mesh.yaml


def service_settings(service: str) -> str:
    return values_path("services", service)


def backend_workload(b: Backend, stateful: bool) -> list[tuple[dict, str | None]]:
    """A service version: its Deployment from the platform image, as compose runs it, but mTLS both ways:
    it calls the gateway with its certificate and accepts only the callers' CA (and itself, for its probe)."""
    settings = service_settings(b.service)
    env = service_environment(b, MESH_URL, PKI_DIR)
    env.update({
        "FINOPTI_HOME": STATE_DIR,
        # The CA of the only certificates it accepts (the gateway's, Prometheus's), and its own for its probe.
        "FINOPTI_TLS_CALLERS": f"{CALLERS_CA_FILE}:{PKI_DIR}/tls.crt",
        "FINOPTI_MESH_CA": CALLERS_CA_FILE,  # the gateway's certificate comes from that CA too
    })
    health = ["python", "-m", "finopti.deploy.healthcheck"]
    main = container(
        "service", platform_image(),
        env=[{"name": k, "value": v} for k, v in env.items()],
        ports=[{"name": "mesh", "containerPort": SERVICE_PORT, "protocol": "TCP"}],
        # Its own health path over its own mTLS port (healthcheck presents the service's certificate).
        startupProbe=_probe(health, 5, 30),
        readinessProbe=_probe(health, 10, 3),
        livenessProbe=_probe(health, 20, 3),
        resources=Block(f"{settings}.resources"),
        volumeMounts=[{"name": "pki", "mountPath": PKI_DIR, "readOnly": True},
                      {"name": "state", "mountPath": STATE_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    )
    state = ({"name": "state", "persistentVolumeClaim": {"claimName": f"{b.name}-state"}} if stateful
             else empty_dir("state"))
    volumes = [identity_volume(b.name, {"callers-ca.crt": ca_certificate("callers")}), state, empty_dir("tmp")]
    pod = pod_spec(b.name, PLATFORM_UID, [main], volumes,
                   imagePullSecrets=Block(".Values.imagePullSecrets"),
                   enableServiceLinks=False)  # no other service's address in its environment
    replicas = 1 if stateful else Value(f"{settings}.replicas")
    docs: list[tuple[dict, str | None]] = [
        (service_account(b.name, "backend"), None),
        (deployment(b.name, "backend", pod, replicas, stateful, **{SERVICE: b.service, VERSION: b.version}), None),
        (cluster_service(b.name, b.name, "backend", {"mesh": SERVICE_PORT}), None),
        (disruption_budget(b.name, "backend", stateful), None),
    ]
    if stateful:
        docs.append((persistent_claim(f"{b.name}-state", b.name, "backend",
                                      Value(f"{settings}.storage", quote=True)), None))
    else:
        docs.append(autoscaler(b.name, "backend", settings))
    return docs


# ---------------------------------------------------------------- the policy engine


def opa_workload() -> list[tuple[dict, str | None]]:
    engine = ENGINES["policy"]
    name = engine.container
    probe = {"httpGet": {"path": "/health", "port": engine.port}, "periodSeconds": 10, "timeoutSeconds": 3}
    main = container(
        "opa", image("opa"),
        args=["run", "--server", f"--addr=0.0.0.0:{engine.port}", "--log-format=json", "/policies"],
        ports=[{"name": "http", "containerPort": engine.port, "protocol": "TCP"}],
        readinessProbe=probe, livenessProbe={**probe, "periodSeconds": 20},
        resources=Block(".Values.policy.resources"),
        volumeMounts=[{"name": "policies", "mountPath": "/policies", "readOnly": True}],
    )
    pod = pod_spec(name, image("opa").uid, [main], [{"name": "policies", "configMap": {"name": "opa-policies"}}])
    dep = deployment(name, "policy", pod, Value(".Values.policy.replicas"))
    # Roll the pods when the policies change.
    dep["spec"]["template"]["metadata"]["annotations"] = {
        "checksum/policies": Value('include (print $.Template.BasePath "/opa-policies.yaml") . | sha256sum',
                                   quote=True)}
    return [
        (service_account(name, "policy"), None),
        (dep, None),
        (cluster_service(name, name, "policy", {"http": engine.port}), None),
        (disruption_budget(name, "policy", False), None),
        autoscaler(name, "policy", ".Values.policy"),
    ]


# ---------------------------------------------------------------- the gateway

APISIX_HOME = "/usr/local/apisix"
# nginx's prefix: it writes nginx.conf, its logs, sockets and temporary files under it (each an emptyDir).
APISIX_WRITABLE = ("conf", "logs", "client_body_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp")


def gateway_workload(identity: Identity, site_ready: str) -> list[tuple[dict, str | None]]:
    """APISIX in standalone mode: its two files from the `apisix-config` ConfigMap (the same renderer as compose),
    its certificate from cert-manager. A liveness failure restarts it when its certificate was renewed."""
    load_pems = (f'export {CERT_ENV}="$(cat {PKI_DIR}/tls.crt)" {KEY_ENV}="$(cat {PKI_DIR}/tls.key)" '
                 f'{MESH_CA_ENV}="$(cat {MESH_CA_FILE})"')
    start = f"{load_pems} && exec /docker-entrypoint.sh docker-start"
    # The certificate it loaded at start is still the one on disk (cert-manager renews the Secret in place).
    same_cert = f'test "${CERT_ENV}" = "$(cat {PKI_DIR}/tls.crt)"'
    env = [{"name": "APISIX_STAND_ALONE", "value": "true"}]
    if identity.provider == "dev":
        env.append({"name": JWT_KEY_ENV, "valueFrom": {"secretKeyRef": {
            "name": Value('include "finopti.identitySecret" .'), "key": "public-key.pem"}}})
    mounts = [{"name": d, "mountPath": f"{APISIX_HOME}/{d}"} for d in APISIX_WRITABLE]
    mounts += [{"name": "config", "mountPath": f"{APISIX_HOME}/conf/{f}", "subPath": f, "readOnly": True}
               for f in ("config.yaml", "apisix.yaml")]
    mounts += [{"name": "pki", "mountPath": PKI_DIR, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
    ports = {"edge": LISTENERS["edge"], "mesh": LISTENERS["mesh"], "export": EXPORT_PORT}
    main = container(
        "apisix", image("apisix"),
        command=["bash", "-c"], args=[start], env=env,
        ports=[{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()],
        # Serving: workers up, every route and upstream loaded, some backend reachable (as in compose).
        readinessProbe=_probe(["bash", "-c", site_ready], 5, 3),
        livenessProbe=_probe(["bash", "-c", same_cert], 30, 2),
        resources=Block(".Values.gateway.resources"),
        volumeMounts=mounts,
    )
    # APISIX writes nginx.conf beside the image's other conf files: copy them to the writable conf first.
    seed = container("conf", image("apisix"), command=["bash", "-c", f"cp -a {APISIX_HOME}/conf/. /seed/"],
                     resources=Block(".Values.gateway.resources"),
                     volumeMounts=[{"name": "conf", "mountPath": "/seed"}])
    volumes = [empty_dir(d) for d in APISIX_WRITABLE] + [
        {"name": "config", "configMap": {"name": "apisix-config"}},
        identity_volume("gateway", {"mesh-ca.crt": ca_certificate("mesh")}),
        empty_dir("tmp"),
    ]
    pod = pod_spec(GATEWAY, image("apisix").uid, [main], volumes, initContainers=[seed])
    dep = deployment(GATEWAY, "gateway", pod, Value(".Values.gateway.replicas"))
    dep["spec"]["template"]["metadata"]["annotations"] = {
        "checksum/config": Value('include (print $.Template.BasePath "/apisix-config.yaml") . | sha256sum', quote=True)}
    service = cluster_service(GATEWAY, GATEWAY, "gateway", {"edge": LISTENERS["edge"], "mesh": LISTENERS["mesh"]})
    service["spec"]["type"] = Value(".Values.gateway.service.type")
    return [
        (service_account(GATEWAY, "gateway"), None),
        (dep, None),
        (service, None),
        (disruption_budget(GATEWAY, "gateway", False), None),
        autoscaler(GATEWAY, "gateway", ".Values.gateway"),
    ]


def ingress() -> tuple[dict, str]:
    """The edge listener behind the cluster's ingress controller, for the host names of the values."""
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {**metadata(GATEWAY, GATEWAY, "gateway"), "annotations": Block(".Values.ingress.annotations")},
        "spec": {
            "ingressClassName": Value(".Values.ingress.className", quote=True),
            "tls": Block(".Values.ingress.tls"),
            "rules": Block('(include "finopti.ingressRules" . | fromYamlArray)'),
        },
    }
    return doc, ".Values.ingress.enabled"


# ---------------------------------------------------------------- the rate-limit counter store


def redis_workload() -> list[tuple[dict, str | None]]:
    """One Valkey (Redis protocol) for APISIX's limit-count counters, shared by every gateway replica. Counters
    only: nothing is persisted, a restart starts every window afresh."""
    main = container(
        REDIS, image(REDIS),
        args=["--save", "", "--appendonly", "no", "--protected-mode", "no", "--port", str(REDIS_PORT)],
        ports=[{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        readinessProbe={"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 10},
        livenessProbe={"exec": {"command": ["valkey-cli", "ping"]}, "periodSeconds": 20, "timeoutSeconds": 3},
        resources=Block(".Values.rateLimitStore.resources"),
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    pod = pod_spec(REDIS, image(REDIS).uid, [main], [empty_dir("data")])
    return [
        (service_account(REDIS, "store"), None),
        (deployment(REDIS, "store", pod, 1), None),
        (cluster_service(REDIS, REDIS, "store", {"redis": REDIS_PORT}), None),
    ]

