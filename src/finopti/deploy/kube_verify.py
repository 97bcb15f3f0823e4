"""`finopti verify-kubernetes`: prove the mesh rules from the rendered manifests alone, without a cluster.

- Isolation, from the NetworkPolicies (`finopti.deploy.netpol`): no backend pod (a service of mesh.yaml) can be
  reached by any pod but the gateway's (and Prometheus's, which scrapes each pod as on the local platform),
  and a backend can reach nothing but the gateway's mesh listener and DNS. "Any pod" means every pod of the
  release, an unlabelled pod someone starts in the namespace, a pod in another namespace wearing any of the
  release's labels, and addresses outside the cluster; "any port" means every port, checked at each boundary
  the policies draw (so the check is exhaustive, not a sample). The paths the platform needs must stay open:
  a policy set that denies everything fails too.
- Pod security: every container of every pod runs without privilege escalation, with a read-only root
  filesystem, every capability dropped, seccomp RuntimeDefault, not as root (the log collector alone, which
  reads the node's log files), no host namespaces, host paths only for the collector, and no service account
  token but where a pod reads the Kubernetes API (Prometheus and the collector discover pods).
- Every manifest validates strictly against the Kubernetes OpenAPI schemas (`finopti.deploy.kube_validate`).
"""

import ipaddress
import sys
from pathlib import Path

import yaml

from finopti.deploy.kube_workloads import COMPONENT, ROLE
from finopti.deploy.netpol import External, Pod, PolicyError, allowed
from finopti.deploy.topology import LISTENERS
from finopti.deploy.verify import Problem


def _at(where: str, message: str) -> Problem:
    return Problem(None, None, f"{where}: {message}")

NAMESPACE = "finopti"
FOREIGN_NAMESPACE = "intruder"
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod", "CronJob"}
DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.96.0.10",
          {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")})
OUTSIDE = (External("203.0.113.7", "the internet"), External("192.168.50.5", "a host on the node network"))
ROOT_ALLOWED_ROLES = {"collector"}  # reads /var/log/pods on the node, which only root may read
API_READERS = {("role", "collector"), ("name", "prometheus")}
# Values `verify-kubernetes` gives a chart for what an operator must provide (secrets), when not given.
VERIFY_VALUES = {"identity": {"publicKey": "verification only"}, "grafana": {"adminPassword": "verification only"}}


def pod_template(doc: dict) -> dict | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return {"metadata": doc.get("metadata") or {}, "spec": spec}
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return spec.get("template") if kind in WORKLOADS else None


def _name(doc: dict) -> str:
    return (doc.get("metadata") or {}).get("name", "?")


def release_pods(docs: list[dict], namespace: str = NAMESPACE) -> list[tuple[Pod, dict]]:
    """One Pod per workload (every replica of a workload has the same labels and ports), with its template."""
    pods = []
    addresses = POD_NETWORK.hosts()
    for doc in docs:
        template = pod_template(doc)
        if template is None:
            continue
        spec = template.get("spec") or {}
        ports = {p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
                 for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("name")}
        labels = (template.get("metadata") or {}).get("labels") or {}
        ns = (doc.get("metadata") or {}).get("namespace") or namespace
        pods.append((Pod(f"{doc['kind']}/{_name(doc)}", ns, dict(labels), str(next(addresses)), ports), template))
    return pods


def _probes(pods: list[Pod]) -> list[Pod | External]:
    """Who else might try: a bare pod in the namespace, a look-alike of every release pod in another namespace,
    the cluster DNS, and addresses outside the cluster."""
    addresses = ipaddress.ip_network("10.245.0.0/16").hosts()
    probes: list[Pod | External] = [Pod("an unlabelled pod of the namespace", NAMESPACE, {}, str(next(addresses)))]
    for pod in pods:
        probes.append(Pod(f"{pod.name} look-alike in namespace {FOREIGN_NAMESPACE}", FOREIGN_NAMESPACE, pod.labels,
                          str(next(addresses)), pod.ports))
    return [*probes, DNS, *OUTSIDE]


def _candidate_ports(policies: list[dict], dst: Pod | External) -> list[tuple[int, str]]:
    """Every port at which the policies' answer can change (each range's ends and their neighbours), for both
    protocols: checking these is checking every port."""
    numbers = {1, 65535}
    for policy in policies:
        spec = policy.get("spec") or {}
        for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
            for entry in rule.get("ports") or []:
                port = entry.get("port")
                if isinstance(port, str):
                    port = dst.ports.get(port, (None,))[0] if isinstance(dst, Pod) else None
                for edge in (port, entry.get("endPort")):
                    if isinstance(edge, int):
                        numbers.update({edge - 1, edge, edge + 1})
    if isinstance(dst, Pod):
        numbers.update(number for number, _ in dst.ports.values())
    return [(n, proto) for n in sorted(n for n in numbers if 1 <= n <= 65535) for proto in ("TCP", "UDP", "SCTP")]


def _open_ports(policies: list[dict], src: Pod | External, dst: Pod | External) -> str:
    """The ports `src` may open on `dst` (the first few), or '' when none."""
    found = [f"{n}/{p}" for n, p in _candidate_ports(policies, dst) if allowed(policies, src, dst, n, p)]
    return ", ".join(found[:6])


def _has(pod: Pod, role: str | None = None, name: str | None = None) -> bool:
    return (role is None or pod.labels.get(ROLE) == role) and (name is None or pod.labels.get(COMPONENT) == name)


def check_isolation(docs: list[dict], namespace: str = NAMESPACE) -> list[Problem]:
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    for policy in policies:
        policy.setdefault("metadata", {}).setdefault("namespace", namespace)
    pods = [p for p, _ in release_pods(docs, namespace)]
    gateways = [p for p in pods if _has(p, role="gateway") and p.namespace == namespace]
    scrapers = [p for p in pods if _has(p, name="prometheus") and p.namespace == namespace]
    # A backend is what runs a service of mesh.yaml (the platform image told which service it is), whatever its
    # labels say: a relabelled one would escape the policies that select backends by label.
    services = {p.name for p, template in release_pods(docs, namespace) if _runs_a_service(template)}
    backends = [p for p in pods if _has(p, role="backend") or p.name in services]
    if not gateways:
        return [Problem(None, None, f"no pod labelled {ROLE}=gateway: nothing to prove isolation against")]
    if not backends:
        return [Problem(None, None, f"no pod labelled {ROLE}=backend: no service of mesh.yaml is rendered")]
    everyone = [*pods, *_probes(pods)]
    problems: list[Problem] = []
    try:
        for backend in backends:
            for src in everyone:
                if src not in gateways and src not in scrapers and src != backend:
                    if ports := _open_ports(policies, src, backend):
                        problems.append(_at(backend.name, f"reachable from {_label(src)} on {ports}"))
            for dst in everyone:
                if dst != backend and dst not in gateways and dst != DNS:
                    if ports := _open_ports(policies, backend, dst):
                        problems.append(_at(backend.name, f"can reach {_label(dst)} on {ports}"))
            for gateway in gateways:
                for n, p in _candidate_ports(policies, gateway):
                    if allowed(policies, backend, gateway, n, p) and n != LISTENERS["mesh"]:
                        problems.append(_at(backend.name, f"can reach the gateway on {n}/{p}, not only its "
                                                                    f"mesh listener ({LISTENERS['mesh']})"))
            problems += _needed_paths(policies, backend, gateways)
    except PolicyError as exc:
        return [Problem(None, None, f"NetworkPolicy: {exc}")]
    return list(dict.fromkeys(problems))


def _runs_a_service(template: dict) -> bool:
    return any(e.get("name") == "FINOPTI_SERVICE" for c in (template.get("spec") or {}).get("containers") or []
               for e in c.get("env") or [])


def _needed_paths(policies: list[dict], backend: Pod, gateways: list[Pod]) -> list[Problem]:
    """What the mesh needs must stay open: the backend calls the gateway, the gateway calls the backend, DNS."""
    problems = []
    service_port = backend.ports.get("mesh")
    for gateway in gateways:
        if not allowed(policies, backend, gateway, LISTENERS["mesh"], "TCP"):
            problems.append(_at(backend.name, f"cannot reach the gateway's mesh listener "
                                                        f"({LISTENERS['mesh']}/TCP)"))
        if service_port and not allowed(policies, gateway, backend, *service_port):
            problems.append(_at(backend.name, f"the gateway cannot reach it on {service_port[0]}/TCP"))
    if not allowed(policies, backend, DNS, 53, "UDP"):
        problems.append(_at(backend.name, "cannot resolve names (DNS, 53/UDP)"))
    return problems


def _label(endpoint: Pod | External) -> str:
    if isinstance(endpoint, External):
        return f"{endpoint.name} ({endpoint.ip})"
    return endpoint.name if endpoint.namespace != FOREIGN_NAMESPACE or "look-alike" in endpoint.name else (
        f"{endpoint.name} in {endpoint.namespace}")


# ---------------------------------------------------------------- pod security


def check_pod_security(docs: list[dict]) -> list[Problem]:
    problems = []
    for doc in docs:
        template = pod_template(doc)
        if template is None:
            continue
        where = f"{doc['kind']}/{_name(doc)}"
        labels = (template.get("metadata") or {}).get("labels") or {}
        role = labels.get(ROLE)
        spec = template.get("spec") or {}
        pod_sc = spec.get("securityContext") or {}

        def fail(message: str, where=where) -> None:
            problems.append(_at(where, message))

        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                fail(f"{key}: true shares the node's namespaces")
        reads_api = ("role", role) in API_READERS or ("name", labels.get(COMPONENT)) in API_READERS
        if spec.get("automountServiceAccountToken") is not False and not reads_api:
            fail("mounts a service account token (automountServiceAccountToken must be false)")
        for volume in spec.get("volumes") or []:
            if "hostPath" in volume and role not in ROOT_ALLOWED_ROLES:
                fail(f"volume '{volume.get('name')}' is a hostPath; only the log collector may read the node")
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            sc = c.get("securityContext") or {}
            name = f"container '{c.get('name')}'"

            def effective(key: str, sc=sc, pod_sc=pod_sc):
                return sc.get(key, pod_sc.get(key))

            if sc.get("privileged"):
                fail(f"{name} is privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{name}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(f"{name}: readOnlyRootFilesystem must be true")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                fail(f"{name}: capabilities must drop ALL")
            if caps.get("add"):
                fail(f"{name}: adds capabilities {caps['add']}")
            if ((effective("seccompProfile") or {}).get("type")) not in ("RuntimeDefault", "Localhost"):
                fail(f"{name}: seccompProfile must be RuntimeDefault")
            if role not in ROOT_ALLOWED_ROLES:
                if effective("runAsNonRoot") is not True:
                    fail(f"{name}: runAsNonRoot must be true")
                if effective("runAsUser") == 0:
                    fail(f"{name}: runs as root (runAsUser 0)")
    return problems


# ---------------------------------------------------------------- inputs


def load_manifests(source: Path | str, values: list[dict] | None = None) -> list[dict]:
    """The manifests of a chart directory (rendered by Helm with `values`), a YAML file, or `-` (stdin)."""
    path = Path(source)
    if str(source) != "-" and path.is_dir():
        from finopti.deploy import helm

        merged: dict = {}
        for layer in [VERIFY_VALUES, *(values or [])]:
            merged = _merge(merged, layer)
        return helm.template(path, merged)
    text = sys.stdin.read() if str(source) == "-" else path.read_text()
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def verify_kubernetes(docs: list[dict], namespace: str = NAMESPACE, schemas: bool = True) -> list[Problem]:
    problems = check_isolation(docs, namespace) + check_pod_security(docs)
    if schemas:
        from finopti.deploy.kube_validate import validate_manifests

        problems += [Problem(None, None, p) for p in validate_manifests(docs)]
    return problems
