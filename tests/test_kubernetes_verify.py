"""`finopti verify-kubernetes`: the isolation proof from the rendered NetworkPolicies alone, and the pod security
checks, on the committed chart and on broken variants of it (each names what broke), as verify-compose is."""

import copy
import subprocess

import pytest
import yaml
from conftest import FINOPTI, REPO

from finopti.deploy import CHART_DIR
from finopti.deploy.kube_verify import check_isolation, check_pod_security, load_manifests, verify_kubernetes

CHART = REPO / CHART_DIR


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return load_manifests(CHART)


@pytest.fixture
def docs(rendered) -> list[dict]:
    return copy.deepcopy(rendered)


def policy(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)


def pod(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)["spec"]["template"]["spec"]


def messages(problems) -> str:
    return "\n".join(map(str, problems))


def test_the_committed_chart_keeps_every_backend_behind_the_gateway(rendered):
    assert verify_kubernetes(rendered) == []


def test_a_gateway_look_alike_in_another_namespace_is_caught(docs):
    # namespaceSelector {} beside the podSelector: any namespace's pod labelled as the gateway.
    policy(docs, "backends")["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = {}
    found = messages(check_isolation(docs))
    assert "Deployment/ui-v1: reachable from Deployment/apisix look-alike in namespace intruder on 8443/TCP" in found


def test_the_same_selectors_as_two_peers_open_backends_to_every_namespace(docs):
    backends = policy(docs, "backends")["spec"]["ingress"][0]
    backends["from"].append({"namespaceSelector": {}})
    found = messages(check_isolation(docs))
    assert "Deployment/ui-v1: reachable from kube-dns on 8443/TCP" in found  # a pod of kube-system
    assert "Deployment/ui-v1: reachable from DaemonSet/alloy look-alike in namespace intruder on 8443/TCP" in found
    # The namespace's own pods stay out: their egress is denied by default.
    assert "reachable from an unlabelled pod of the namespace" not in found


def test_without_the_backend_and_default_policies_backends_are_open(docs):
    for name in ("backends", "default-deny", "dns"):
        docs.remove(policy(docs, name))
    found = messages(check_isolation(docs))
    assert "Deployment/gcloud-tools-v1: reachable from an unlabelled pod of the namespace on 1/TCP" in found
    assert "Deployment/gcloud-tools-v1: can reach the internet (203.0.113.7) on 1/TCP" in found


def test_an_egress_policy_for_every_pod_isolates_egress_by_itself(docs):
    # Without the default deny, the DNS policy (podSelector {}, Egress) still denies every other destination.
    for name in ("backends", "default-deny"):
        docs.remove(policy(docs, name))
    found = messages(check_isolation(docs))
    assert "can reach" not in found and "cannot reach the gateway's mesh listener" in found


def test_the_default_deny_alone_keeps_backends_closed_but_the_proof_notices_the_mesh_is_cut(docs):
    for name in ("backends", "gateway"):
        docs.remove(policy(docs, name))
    found = messages(check_isolation(docs))
    assert "cannot reach the gateway's mesh listener (9081/TCP)" in found
    assert "the gateway cannot reach it on 8443/TCP" in found
    assert "reachable from" not in found


def test_policy_types_left_out_leave_egress_open(docs):
    # Only ingress rules and no policyTypes: the policy does not restrict egress at all.
    backends = policy(docs, "backends")["spec"]
    del backends["policyTypes"]
    backends["egress"] = []
    for name in ("default-deny", "dns"):
        docs.remove(policy(docs, name))
    found = messages(check_isolation(docs))
    assert "Deployment/orchestrator-v1: can reach the internet (203.0.113.7) on 1/TCP" in found


def test_an_egress_rule_without_ports_or_peers_is_caught(docs):
    policy(docs, "backends")["spec"]["egress"].append({"to": [{"podSelector": {}}]})
    found = messages(check_isolation(docs))
    assert "Deployment/ui-v1: can reach Deployment/grafana on 3000/TCP" in found  # Grafana accepts anyone
    assert "Deployment/ui-v1: can reach the gateway on 9080/TCP, not only its mesh listener" in found
    assert "can reach Deployment/opa" not in found  # OPA's own policy still refuses it


def test_an_ip_block_that_covers_the_pod_network_is_caught(docs):
    policy(docs, "backends")["spec"]["ingress"].append({"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                                              "except": ["10.96.0.0/12"]}}]})
    found = messages(check_isolation(docs))
    # Pods of other namespaces (their addresses are in the block) and the collector (its API-server rule allows
    # 0.0.0.0/0 on 443 and 6443) get in; the internet's address is outside 10.0.0.0/8.
    assert "Deployment/ui-v1: reachable from Deployment/ui-v1 look-alike in namespace intruder on 1/TCP" in found
    assert "Deployment/ui-v1: reachable from DaemonSet/alloy on 443/TCP, 6443/TCP" in found
    assert "reachable from the internet" not in found


def test_a_port_range_or_named_port_that_opens_more_is_caught(docs):
    rule = policy(docs, "backends")["spec"]["egress"][0]
    rule["ports"] = [{"protocol": "TCP", "port": 9000, "endPort": 9100}]
    found = messages(check_isolation(docs))
    assert "can reach the gateway on 9080/TCP" in found
    rule["ports"] = [{"protocol": "TCP", "port": "edge"}]
    found = messages(check_isolation(docs))
    assert "can reach the gateway on 9080/TCP" in found and "cannot reach the gateway's mesh listener" in found


def test_a_backend_policy_that_lets_another_role_in_is_caught_once_that_role_may_send(docs):
    policy(docs, "backends")["spec"]["ingress"][0]["from"].append({"podSelector": {"matchLabels": {
        "finopti.dev/role": "console"}}})
    assert check_isolation(docs) == []  # Grafana's own egress policy still keeps it out
    policy(docs, "grafana")["spec"]["egress"].append({"to": [{"podSelector": {"matchLabels": {
        "finopti.dev/role": "backend"}}}]})
    found = messages(check_isolation(docs))
    assert "Deployment/orchestrator-v1: reachable from Deployment/grafana on 8443/TCP" in found
    assert "reachable from StatefulSet/prometheus" not in found  # it scrapes every pod, by design


def test_a_service_that_loses_its_backend_label_is_still_proved(docs):
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ui-v1")
    deployment["spec"]["template"]["metadata"]["labels"]["finopti.dev/role"] = "frontend"
    found = messages(check_isolation(docs))
    # No policy selects it as a backend any more: the default deny cuts it off the mesh, and the proof says so.
    assert "Deployment/ui-v1: cannot reach the gateway's mesh listener (9081/TCP)" in found
    assert "Deployment/ui-v1: the gateway cannot reach it on 8443/TCP" in found


@pytest.mark.parametrize("break_it, expected", [
    (lambda p: p["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
     "container 'service': readOnlyRootFilesystem must be true"),
    (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
     "container 'service': allowPrivilegeEscalation must be false"),
    (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
     "container 'service': adds capabilities ['NET_ADMIN']"),
    (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     "container 'service': capabilities must drop ALL"),
    (lambda p: p["securityContext"].pop("seccompProfile"),
     "container 'service': seccompProfile must be RuntimeDefault"),
    (lambda p: p["securityContext"].update(runAsNonRoot=False), "container 'service': runAsNonRoot must be true"),
    (lambda p: p["containers"][0]["securityContext"].update(runAsUser=0), "container 'service': runs as root"),
    (lambda p: p.update(hostNetwork=True), "hostNetwork: true shares the node's namespaces"),
    (lambda p: p.update(automountServiceAccountToken=True), "mounts a service account token"),
    (lambda p: p["volumes"].append({"name": "node", "hostPath": {"path": "/"}}), "volume 'node' is a hostPath"),
    (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "container 'service' is privileged"),
])
def test_each_weakened_security_context_is_named(docs, break_it, expected):
    break_it(pod(docs, "Deployment", "orchestrator-v1"))
    found = messages(check_pod_security(docs))
    assert f"Deployment/orchestrator-v1: {expected}" in found


def test_only_the_log_collector_runs_as_root_and_reads_the_node(rendered):
    collector = pod(rendered, "DaemonSet", "alloy")
    assert collector["securityContext"]["runAsUser"] == 0
    assert {v["hostPath"]["path"] for v in collector["volumes"] if "hostPath" in v} == {"/var/log/pods",
                                                                                       "/var/lib/finopti-alloy"}
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in collector["containers"][0]["volumeMounts"]}
    assert mounts["/var/log/pods"] is True
    gateway = pod(copy.deepcopy(rendered), "Deployment", "apisix")
    gateway["securityContext"]["runAsUser"] = 0
    assert "runs as root" in messages(check_pod_security([{"kind": "Deployment", "metadata": {"name": "apisix"},
                                                           "spec": {"template": {"metadata": {"labels": {
                                                               "finopti.dev/role": "gateway"}}, "spec": gateway}}}]))


def test_the_command_checks_rendered_manifests_from_a_file_or_stdin(tmp_path, rendered):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all(rendered))
    result = subprocess.run([FINOPTI, "verify-kubernetes", str(good)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every backend is reachable only from the gateway" in result.stdout
    broken = copy.deepcopy(rendered)
    policy(broken, "backends")["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = {}
    result = subprocess.run([FINOPTI, "verify-kubernetes", "-"], input=yaml.safe_dump_all(broken),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "FAIL Deployment/gcloud-agent-v1: reachable from Deployment/apisix look-alike" in result.stdout
    missing = subprocess.run([FINOPTI, "verify-kubernetes", str(tmp_path / "nope.yaml")], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "nope.yaml: file not found" in missing.stderr


def test_the_command_renders_the_chart_with_the_operators_values(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("networkPolicy:\n  apiServer:\n    cidr: 10.0.0.0/8\n")
    result = subprocess.run([FINOPTI, "verify-kubernetes", str(CHART), "-f", str(values)], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    # 10.0.0.0/8 covers the pod network: the collector and Prometheus could reach the backends' ports? No: the
    # rule names the API ports only (443, 6443), and backends accept nothing on them.
    values.write_text("networkPolicy:\n  apiServer:\n    cidr: 10.0.0.0/8\n    ports: []\n")
    result = subprocess.run([FINOPTI, "verify-kubernetes", str(CHART), "-f", str(values)], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr  # ingress at the backends still refuses them
