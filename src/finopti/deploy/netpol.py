"""Kubernetes NetworkPolicy semantics (networking.k8s.io/v1), as pure functions: may `src` open a connection to
`dst` on a port, given a set of policies?

The rules, as the API documents them (and the CNI plugins implement them):
- A pod is *isolated for ingress* when a policy of its namespace selects it (`spec.podSelector`; `{}` selects every
  pod of the namespace) and lists "Ingress" in `policyTypes`; likewise for egress. `policyTypes` left out means
  ["Ingress"], plus "Egress" when the policy has egress rules.
- A connection needs both ends to allow it: the source's egress (if it is isolated for egress, some rule of a
  policy selecting it must match the destination and port) and the destination's ingress (same, for the
  source). A pod that is not isolated allows everything in that direction. Policies only add: their union.
- A rule with no `from`/`to` matches every peer; with no `ports`, every port. A policy that selects a pod for a
  direction but has no rules for it denies everything in that direction.
- A peer: `podSelector` alone means pods of the policy's own namespace; `namespaceSelector` alone, every pod of
  the matching namespaces; both *in one peer*, pods matching the first in namespaces matching the second (two
  separate peers would be their union); `ipBlock`, addresses in `cidr` but not in `except` (pod addresses
  included here: CNI plugins differ on whether ipBlock matches pod traffic, so the proof assumes it may).
- A port: a number or the name of a container port of the destination, `protocol` TCP unless said, `endPort`
  for a range.
- Label selectors: `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist) must all hold; an
  empty selector matches everything.

Traffic from the node itself (kubelet probes, host-network pods) is outside this model, as it is outside what
most CNI plugins apply NetworkPolicies to.
"""

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    ip: str
    ports: dict[str, tuple[int, str]] = field(default_factory=dict)  # container port name -> (number, protocol)
    namespace_labels: dict[str, str] | None = None  # default: kubernetes.io/metadata.name only

    @property
    def ns_labels(self) -> dict[str, str]:
        return self.namespace_labels if self.namespace_labels is not None else {
            "kubernetes.io/metadata.name": self.namespace}


@dataclass(frozen=True)
class External:
    """An address outside the cluster's pods."""

    ip: str
    name: str = ""


Endpoint = Pod | External


class PolicyError(ValueError):
    """A policy this module cannot read (an unknown operator, a malformed CIDR)."""


def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise PolicyError(f"label selector operator {operator!r} is not one of In, NotIn, Exists, DoesNotExist")
        if not ok:
            return False
    return True


def policy_types(policy: dict) -> set[str]:
    spec = policy.get("spec") or {}
    declared = spec.get("policyTypes")
    if declared:
        return set(declared)
    return {"Ingress"} | ({"Egress"} if spec.get("egress") else set())


def _namespace(policy: dict) -> str:
    return (policy.get("metadata") or {}).get("namespace") or ""


def selects(policy: dict, pod: Pod) -> bool:
    return _namespace(policy) == pod.namespace and selector_matches((policy.get("spec") or {}).get("podSelector")
                                                                    or {}, pod.labels)


def _in_block(block: dict, ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
        if address not in ipaddress.ip_network(block["cidr"], strict=False):
            return False
        return not any(address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])
    except (KeyError, ValueError) as exc:
        raise PolicyError(f"ipBlock {block}: {exc}") from None


def peer_matches(peer: dict, policy_namespace: str, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        return _in_block(peer["ipBlock"], endpoint.ip)
    if not isinstance(endpoint, Pod):
        return False  # pod and namespace selectors select pods only
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is None:
        in_namespace = endpoint.namespace == policy_namespace
    else:
        in_namespace = selector_matches(namespaces, endpoint.ns_labels)
    return in_namespace and (pods is None or selector_matches(pods, endpoint.labels))


def port_matches(rule_ports: list[dict] | None, dst: Endpoint, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True  # every port of the protocol
        if isinstance(wanted, str):
            named = dst.ports.get(wanted) if isinstance(dst, Pod) else None
            if named is not None and named == (port, protocol):
                return True
            continue
        end = entry.get("endPort", wanted)
        if wanted <= port <= end:
            return True
    return False


def _direction_allows(policies: list[dict], subject: Pod, peer: Endpoint, dst: Endpoint, port: int, protocol: str,
                      direction: str) -> bool:
    """Whether `subject`'s policies let the connection through in `direction` ("Ingress": peer is the source)."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    relevant = [p for p in policies if selects(p, subject) and direction in policy_types(p)]
    if not relevant:
        return True  # not isolated in this direction
    for policy in relevant:
        for rule in (policy.get("spec") or {}).get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(peer_matches(p, _namespace(policy), peer) for p in peers):
                continue
            if port_matches(rule.get("ports"), dst, port, protocol):
                return True
    return False


def allowed(policies: list[dict], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """May `src` open a connection to `dst` on `port`/`protocol`? (Egress at the source, ingress at the
    destination; an external end has no policies of its own here.)"""
    if isinstance(src, Pod) and not _direction_allows(policies, src, dst, dst, port, protocol, "Egress"):
        return False
    if isinstance(dst, Pod) and not _direction_allows(policies, dst, src, dst, port, protocol, "Ingress"):
        return False
    return True


def reachable_ports(policies: list[dict], src: Endpoint, dst: Endpoint, candidates: list[tuple[int, str]]) -> list:
    """Which of `candidates` (port, protocol) `src` may reach on `dst`."""
    return [(port, proto) for port, proto in candidates if allowed(policies, src, dst, port, proto)]
