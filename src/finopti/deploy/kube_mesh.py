"""The mesh rules, enforced by the cluster: NetworkPolicies and the identities cert-manager issues.

NetworkPolicies: everything in the namespace is denied both ways, then each role gets exactly its paths:
- a backend (a service version of mesh.yaml) receives only from the gateway's pods, and from Prometheus's for
  its /metrics (as on the local platform, Prometheus scrapes each pod itself: through a load-balanced gateway,
  two replicas' counters would mix); it sends only to the gateway's mesh listener (and DNS);
- the gateway receives the edge from anywhere (the ingress controller), the mesh listener from backends and the
  log collector, its exporter from Prometheus; it sends to backends, OPA and the rate-limit store;
- OPA and the rate-limit store receive only from the gateway; the observability pods only what they need.

Identities (cert-manager): two CAs. The *mesh* CA issues every identity that calls the gateway (each service,
the log collector) and the services' serving certificates, which the gateway checks; the *callers* CA issues
the only identities services accept (the gateway's, Prometheus's). Each certificate carries the SPIFFE id of
the local platform (`spiffe://finopti.local/svc/<name>`) and the name as its common name, which the gateway reads.
"""

from finopti.deploy.helm_template import Block, Value
from finopti.deploy.kube_workloads import (
    COMPONENT,
    GATEWAY,
    REDIS,
    REDIS_PORT,
    ROLE,
    certificate_secret,
    metadata,
)
from finopti.deploy.topology import ENGINES, EXPORT_PORT, LISTENERS, SERVICE_PORT, Backend
from finopti.mesh.model import Identity
from finopti.pki import TRUST_DOMAIN

LOKI_PORT = 3100
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
COLLECTOR = "alloy"
# A name every service's certificate also carries: Prometheus checks it (one scrape job for every pod), while
# the gateway checks each service's own name.
SERVICE_SAN = "finopti-service"
CERT_MANAGER = "cert-manager.io/v1"


def _role(role: str) -> dict:
    return {"podSelector": {"matchLabels": {ROLE: role}}}


def _component(name: str) -> dict:
    return {"podSelector": {"matchLabels": {COMPONENT: name}}}


def _ports(*ports: int, protocol: str = "TCP") -> list[dict]:
    return [{"protocol": protocol, "port": p} for p in ports]


def _policy(name: str, selector: dict, ingress: list[dict] | None = None, egress: list[dict] | None = None) -> dict:
    """Both directions are always listed, so a policy with no rules for one denies it (not 'not affected')."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, name, "network"),
        "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"],
                 "ingress": ingress or [], "egress": egress or []},
    }


def _api_server() -> dict:
    """The Kubernetes API, for the pods that discover others (Prometheus, the collector)."""
    return {"to": [{"ipBlock": {"cidr": Value(".Values.networkPolicy.apiServer.cidr", quote=True)}}],
            "ports": Block(".Values.networkPolicy.apiServer.ports")}


def network_policies(identity: Identity, rate_limited: bool) -> list[tuple[dict, str | None]]:
    gateway = _role("gateway")
    prometheus = _component("prometheus")
    policies = [
        _policy("default-deny", {}),
        # Every pod resolves names (the cluster's DNS, in kube-system).
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata("dns", "dns", "network"),
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": _ports(53, protocol="UDP") + _ports(53)}]},
        },
        _policy("backends", {"matchLabels": {ROLE: "backend"}},
                ingress=[{"from": [gateway, prometheus], "ports": _ports(SERVICE_PORT)}],
                egress=[{"to": [gateway], "ports": _ports(LISTENERS["mesh"])}]),
        _policy("gateway", {"matchLabels": {ROLE: "gateway"}},
                ingress=[
                    # The edge: users, through the ingress controller or a load balancer.
                    {"ports": _ports(LISTENERS["edge"])},
                    {"from": [_role("backend"), _component(COLLECTOR)], "ports": _ports(LISTENERS["mesh"])},
                    {"from": [prometheus], "ports": _ports(EXPORT_PORT)},
                ],
                egress=[
                    {"to": [_role("backend")], "ports": _ports(SERVICE_PORT)},
                    {"to": [_role("policy")], "ports": _ports(ENGINES["policy"].port)},
                    *([{"to": [_role("store")], "ports": _ports(REDIS_PORT)}] if rate_limited else []),
                    # OpenID Connect: the provider's discovery document and keys.
                    *([{"to": [{"ipBlock": {"cidr": Value(".Values.networkPolicy.identityProvider.cidr",
                                                          quote=True)}}],
                        "ports": _ports(443)}] if identity.provider == "oidc" else []),
                ]),
        _policy("policy", {"matchLabels": {ROLE: "policy"}},
                ingress=[{"from": [gateway], "ports": _ports(ENGINES["policy"].port)}]),
        _policy("loki", {"matchLabels": {COMPONENT: "loki"}},
                ingress=[{"from": [_component(COLLECTOR), _component("grafana")], "ports": _ports(LOKI_PORT)}]),
        _policy("prometheus", {"matchLabels": {COMPONENT: "prometheus"}},
                ingress=[{"from": [_component("grafana")], "ports": _ports(PROMETHEUS_PORT)}],
                egress=[{"to": [_role("backend")], "ports": _ports(SERVICE_PORT)},
                        {"to": [gateway], "ports": _ports(EXPORT_PORT)}, _api_server()]),
        _policy("grafana", {"matchLabels": {COMPONENT: "grafana"}},
                ingress=[{"ports": _ports(GRAFANA_PORT)}],
                egress=[{"to": [_component("loki")], "ports": _ports(LOKI_PORT)},
                        {"to": [prometheus], "ports": _ports(PROMETHEUS_PORT)}]),
        _policy(COLLECTOR, {"matchLabels": {COMPONENT: COLLECTOR}},
                egress=[{"to": [_component("loki")], "ports": _ports(LOKI_PORT)},
                        {"to": [gateway], "ports": _ports(LISTENERS["mesh"])}, _api_server()]),
    ]
    if rate_limited:
        policies.append(_policy(REDIS, {"matchLabels": {ROLE: "store"}},
                                ingress=[{"from": [gateway], "ports": _ports(REDIS_PORT)}]))
    return [(p, None) for p in policies]


# ---------------------------------------------------------------- cert-manager


def _issuer(name: str, spec: dict) -> dict:
    return {"apiVersion": CERT_MANAGER, "kind": "Issuer", "metadata": metadata(name, name, "pki"), "spec": spec}


def _secret_template() -> dict:
    """The release's label on the Secret cert-manager writes, so `kubectl delete secret -l` finds it after an
    uninstall (cert-manager leaves Secrets behind unless it owns them by its own flag)."""
    return {"labels": {"app.kubernetes.io/instance": Value(".Release.Name", quote=True)}}


def _ca(name: str) -> list[dict]:
    """A CA certificate from the self-signed issuer, and the issuer that signs with it."""
    secret = f"finopti-{name}-ca"
    cert = {
        "apiVersion": CERT_MANAGER,
        "kind": "Certificate",
        "metadata": metadata(secret, secret, "pki"),
        "spec": {
            "isCA": True,
            "commonName": f"FinOptiAgents {name} CA",
            "secretName": secret,
            "secretTemplate": _secret_template(),
            "duration": Value(".Values.certificates.caDuration", quote=True),
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "issuerRef": {"name": "finopti-selfsigned", "kind": "Issuer", "group": "cert-manager.io"},
        },
    }
    return [cert, _issuer(f"finopti-{name}", {"ca": {"secretName": secret}})]


def leaf_certificate(identity: str, common_name: str, issuer: str, dns_names: list) -> dict:
    """An identity's certificate: server and client, SPIFFE id as URI SAN, renewed before it expires."""
    secret = certificate_secret(identity)
    return {
        "apiVersion": CERT_MANAGER,
        "kind": "Certificate",
        "metadata": metadata(secret, secret, "pki"),
        "spec": {
            "secretName": secret,
            "secretTemplate": _secret_template(),
            "commonName": common_name,
            "dnsNames": dns_names,
            "ipAddresses": ["127.0.0.1"],  # the service's own health probe, from inside its pod
            "uris": [f"spiffe://{TRUST_DOMAIN}/svc/{common_name}"],
            "usages": ["digital signature", "server auth", "client auth"],
            "duration": Value(".Values.certificates.duration", quote=True),
            "renewBefore": Value(".Values.certificates.renewBefore", quote=True),
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": {"name": f"finopti-{issuer}", "kind": "Issuer", "group": "cert-manager.io"},
        },
    }


def identities(backends: tuple[Backend, ...]) -> list[tuple[dict, str | None]]:
    namespaced = Value('printf "%s.%s.svc" "' + GATEWAY + '" .Release.Namespace', quote=True)
    docs = [_issuer("finopti-selfsigned", {"selfSigned": {}}), *_ca("mesh"), *_ca("callers"),
            leaf_certificate("gateway", "gateway", "callers", [GATEWAY, namespaced]),
            leaf_certificate("prometheus", "prometheus", "callers", ["prometheus"]),
            leaf_certificate("collector", "collector", "mesh", [COLLECTOR])]
    docs += [leaf_certificate(b.name, b.service, "mesh", [b.name, SERVICE_SAN, "localhost"]) for b in backends]
    return [(d, None) for d in docs]
