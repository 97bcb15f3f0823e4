"""NetworkPolicy semantics (finopti.deploy.netpol) on the cases people get wrong: an empty podSelector, the
policyTypes defaults, a namespaceSelector and a podSelector in one peer versus two, ports (numbers, names,
ranges, protocols), ipBlock with except, and that policies add up (a union) while each end must allow."""

import pytest

from finopti.deploy.netpol import External, Pod, PolicyError, allowed, policy_types, selector_matches

NS = "shop"
WEB = Pod("web", NS, {"app": "web"}, "10.0.0.1", {"http": (8080, "TCP")})
DB = Pod("db", NS, {"app": "db", "tier": "data"}, "10.0.0.2", {"pg": (5432, "TCP"), "metrics": (9187, "TCP")})
OTHER_WEB = Pod("web", "other", {"app": "web"}, "10.0.1.1", namespace_labels={"team": "blue",
                                                                             "kubernetes.io/metadata.name": "other"})
PLAIN = Pod("plain", NS, {}, "10.0.0.3")
INTERNET = External("203.0.113.9")


def policy(spec: dict, namespace: str = NS, name: str = "p") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_no_policy_allows_everything():
    assert allowed([], WEB, DB, 5432) and allowed([], INTERNET, DB, 1) and allowed([], DB, INTERNET, 443)


def test_an_empty_pod_selector_selects_every_pod_of_its_namespace_only():
    deny_all = policy({"podSelector": {}, "policyTypes": ["Ingress"]})
    assert not allowed([deny_all], WEB, DB, 5432)
    assert not allowed([deny_all], DB, WEB, 8080)
    assert allowed([deny_all], WEB, OTHER_WEB, 8080)  # another namespace is not selected


def test_policy_types_default_to_ingress_and_to_egress_only_when_egress_rules_exist():
    only_ingress_rules = policy({"podSelector": {}, "ingress": []})
    assert policy_types(only_ingress_rules) == {"Ingress"}
    assert not allowed([only_ingress_rules], WEB, DB, 5432)
    assert allowed([only_ingress_rules], DB, INTERNET, 443)  # egress is not affected
    with_egress = policy({"podSelector": {}, "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]})
    assert policy_types(with_egress) == {"Ingress", "Egress"}
    assert not allowed([with_egress], WEB, INTERNET, 443)
    # An empty egress list does not count as egress rules: egress stays open.
    assert policy_types(policy({"podSelector": {}, "egress": []})) == {"Ingress"}


def test_declared_types_with_no_rules_deny_that_direction():
    deny_egress = policy({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]})
    assert not allowed([deny_egress], WEB, DB, 5432)
    assert allowed([deny_egress], DB, WEB, 8080)  # ingress to web untouched


def test_namespace_and_pod_selector_in_one_peer_is_an_and():
    both = policy({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}, "podSelector": {"matchLabels": {"app": "web"}}}]}]})
    assert allowed([both], OTHER_WEB, DB, 5432)
    assert not allowed([both], WEB, DB, 5432)  # right labels, wrong namespace
    stranger = Pod("x", "other", {"app": "x"}, "10.0.1.2", namespace_labels=OTHER_WEB.namespace_labels)
    assert not allowed([both], stranger, DB, 5432)  # right namespace, wrong labels


def test_namespace_and_pod_selector_in_two_peers_is_an_or():
    either = policy({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}}, {"podSelector": {"matchLabels": {"app": "web"}}}]}]})
    assert allowed([either], WEB, DB, 5432)  # same namespace, by pod labels
    stranger = Pod("x", "other", {"app": "x"}, "10.0.1.2", namespace_labels=OTHER_WEB.namespace_labels)
    assert allowed([either], stranger, DB, 5432)  # any pod of a blue namespace
    assert not allowed([either], PLAIN, DB, 5432)


def test_a_pod_selector_alone_means_the_policys_own_namespace():
    same_ns = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})
    assert allowed([same_ns], WEB, DB, 5432)
    assert not allowed([same_ns], OTHER_WEB, DB, 5432)  # a look-alike elsewhere
    anywhere = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {}}]}]})
    assert allowed([anywhere], OTHER_WEB, DB, 5432)  # namespaceSelector {}: every namespace


def test_a_rule_without_from_or_ports_matches_everything_and_an_empty_rule_list_nothing():
    open_rule = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]})
    assert allowed([open_rule], INTERNET, DB, 1) and allowed([open_rule], OTHER_WEB, DB, 65535, "UDP")
    no_rules = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": []})
    assert not allowed([no_rules], WEB, DB, 5432)


def test_ports_by_number_range_name_and_protocol():
    rule = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [
        {"port": 5432}, {"protocol": "UDP", "port": 7000, "endPort": 7010}, {"port": "metrics"}]}]})
    assert allowed([rule], WEB, DB, 5432)
    assert not allowed([rule], WEB, DB, 5432, "UDP")  # TCP unless said
    assert allowed([rule], WEB, DB, 7005, "UDP") and not allowed([rule], WEB, DB, 7011, "UDP")
    assert not allowed([rule], WEB, DB, 7005, "TCP")
    assert allowed([rule], WEB, DB, 9187)  # the destination's port named "metrics"
    assert not allowed([rule], WEB, DB, 9188)
    # A named port resolves on the destination: web has no "metrics" port.
    web_rule = policy({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "metrics"}]}]})
    assert not allowed([web_rule], DB, WEB, 9187)
    any_port = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"protocol": "TCP"}]}]})
    assert allowed([any_port], WEB, DB, 1234) and not allowed([any_port], WEB, DB, 1234, "UDP")


def test_ip_block_with_except_matches_addresses_pods_included():
    block = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.1/32"]}}]}]})
    assert not allowed([block], WEB, DB, 5432)  # 10.0.0.1 is excepted
    assert allowed([block], PLAIN, DB, 5432)  # a pod address inside the block: assume it may match
    assert not allowed([block], INTERNET, DB, 5432)
    egress = policy({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [
        {"port": 443}]}]})
    assert allowed([egress], WEB, INTERNET, 443) and not allowed([egress], WEB, INTERNET, 80)


def test_both_ends_must_allow_and_policies_add_up():
    web_out = policy({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                      "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}, name="web-out")
    db_closed = policy({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}, name="db-closed")
    assert not allowed([web_out, db_closed], WEB, DB, 5432)  # egress allows, ingress does not
    db_open = policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}]}, name="db-open")
    assert allowed([web_out, db_closed, db_open], WEB, DB, 5432)  # a second policy adds the path
    assert not allowed([web_out, db_closed, db_open], WEB, DB, 5433)


def test_label_selector_expressions():
    labels = {"app": "db", "tier": "data"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["data", "x"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["data"]}]},
                                labels)
    assert selector_matches({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchLabels": {"app": "db"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web"]}]}, labels)
    with pytest.raises(PolicyError, match="Gt"):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, labels)
