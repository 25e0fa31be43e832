"""The preflight rules on small hand-built graphs.

The graphs have the shape ``python -m vtaplab graph STACK --json`` prints (azure-native wire
names, ARM ids as the mocks make them); ``b2_graph()`` is a compliant b2 stack and every test
breaks exactly one thing in it. The builders live in tests/helpers/graphs.py.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.graphs import (
    PE_NIC_IPCFG,
    POOL_ID,
    PROXY_IPCFG,
    UNKNOWN,
    _nsg_rule,
    add_vtap,
    arm_id,
    b1_graph,
    b2_graph,
    direct_connect_graph,
    node,
    r1_graph,
    urn,
)

from vtaplab import facts
from vtaplab.preflight import rules


def ids(findings: list[rules.Finding]) -> list[str]:
    return sorted(f.rule for f in findings)


def codes(findings: list[rules.Finding]) -> set[str | None]:
    return {f.arm_code for f in findings}


# --- compliant graphs ---------------------------------------------------------------------------


def test_compliant_b2_graph_has_no_findings():
    assert rules.run_rules(b2_graph()) == []


def test_rule_ids_are_stable_unique_and_described():
    assert [r.id for r in rules.RULES] == sorted({r.id for r in rules.RULES})
    for r in rules.RULES:
        assert r.severity in rules.SEVERITIES
        assert r.description and r.name
    by_code = {r.arm_code: r.id for r in rules.RULES if r.arm_code}
    assert by_code == {facts.ARM_PE_AS_VTAP_DESTINATION: "VTAP001",
                       facts.ARM_MODIFY_PE_NIC: "VTAP003",
                       facts.ARM_PLS_ON_IP_BASED_LB: "VTAP005"}


# --- one violation each -------------------------------------------------------------------------


def test_vtap_at_private_endpoint_nic_predicts_arm_code():
    g = b2_graph()
    node(g, "b2-vtap")["inputs"]["destinationNetworkInterfaceIPConfiguration"] = {
        "id": PE_NIC_IPCFG}
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP001"]
    assert codes(found) == {facts.ARM_PE_AS_VTAP_DESTINATION}
    assert "b2-pe" in found[0].message and "proxy" in found[0].message


def test_vtap_at_azure_default_named_pe_nic_is_recognised():
    g = b2_graph()
    node(g, "b2-pe")["inputs"].pop("customNetworkInterfaceName")
    node(g, "b2-vtap")["inputs"]["destinationNetworkInterfaceIPConfiguration"] = {
        "id": arm_id("networkInterfaces", "b2-pe.nic.3f1c2a", "ipConfigurations", "x")}
    assert ids(rules.run_rules(g)) == ["VTAP001"]


def test_r1_attempt_predicts_its_rejection():
    found = rules.run_rules(r1_graph())
    assert ids(found) == ["VTAP001"]
    assert found[0].scenario == "r1"
    assert "b2-pe" in found[0].message
    assert found[0].urn == node(r1_graph(), "r1-vtap-pe-destination")["urn"]


def test_r1_attempt_without_a_known_pe_id_still_predicts():
    g = r1_graph()
    node(g, "r1-vtap-pe-destination")["inputs"]["private_endpoint_id"] = UNKNOWN
    assert ids(rules.run_rules(g)) == ["VTAP001"]


def test_vtap_to_a_firewall_is_not_expressible():
    g = b2_graph()
    node(g, "b2-vtap")["inputs"]["destinationNetworkInterfaceIPConfiguration"] = {
        "id": arm_id("azureFirewalls", "fw", "ipConfigurations", "c")}
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP002"]
    assert found[0].arm_code is None and "azureFirewalls" in found[0].message


def test_vtap_to_a_public_lb_frontend_is_not_expressible():
    g = b2_graph()
    lb = node(g, "col-ilb")["inputs"]
    lb["frontendIPConfigurations"].append({"name": "pub", "publicIPAddress": {
        "id": arm_id("publicIPAddresses", "pip")}})
    tap = node(g, "b2-vtap")["inputs"]
    tap.pop("destinationNetworkInterfaceIPConfiguration")
    tap["destinationLoadBalancerFrontEndIPConfiguration"] = {
        "id": arm_id("loadBalancers", "col-ilb", "frontendIPConfigurations", "pub")}
    found = rules.run_rules(g)
    assert "VTAP002" in ids(found)
    assert any("public frontend" in f.message for f in found)


def test_pe_nic_edit_predicts_cannot_modify():
    g = b2_graph()
    g.append({"urn": urn(rules.T_NIC, "b2-pe-nic"), "type": rules.T_NIC, "name": "b2-pe-nic",
              "parent": None, "inputs": {"networkInterfaceName": "b2-pe-nic", "ipConfigurations": [
                  {"name": "pe-ip", "loadBalancerBackendAddressPools": [{"id": POOL_ID}]}]}})
    found = [f for f in rules.run_rules(g) if f.rule == "VTAP003"]
    assert codes(found) == {facts.ARM_MODIFY_PE_NIC}


def test_pool_with_pe_nic_ip_configuration_predicts_cannot_modify():
    g = b2_graph()
    g.append({"urn": urn(rules.T_LB_POOL, "pool"), "type": rules.T_LB_POOL, "name": "pool",
              "parent": None, "inputs": {"loadBalancerName": "col-ilb",
                                         "loadBalancerBackendAddresses": [
                                             {"name": "pe", "networkInterfaceIPConfiguration": {
                                                 "id": PE_NIC_IPCFG}}]}})
    assert codes([f for f in rules.run_rules(g) if f.rule == "VTAP003"]) == {
        facts.ARM_MODIFY_PE_NIC}


def test_b1_attempts_predict_nic_edit_rejection_and_ip_pool_unsupported():
    found = rules.run_rules(b1_graph())
    assert ids(found) == ["VTAP003", "VTAP004"]
    assert {f.scenario for f in found} == {"b1"}
    assert codes(found) == {facts.ARM_MODIFY_PE_NIC, None}


def test_pe_ip_in_ip_based_pool_is_reported():
    g = b2_graph()
    node(g, "col-ilb")["inputs"]["backendAddressPools"].append(
        {"name": "ip", "loadBalancerBackendAddresses": [{"name": "pe", "ipAddress": "10.30.3.4"}]})
    found = rules.run_rules(g)
    assert "VTAP004" in ids(found)


def test_pls_on_ip_based_lb_predicts_arm_code():
    g = b2_graph()
    g.append({"urn": urn(rules.T_LB_POOL, "ip-pool"), "type": rules.T_LB_POOL, "name": "ip-pool",
              "parent": None, "inputs": {"loadBalancerName": "col-ilb",
                                         "backendAddressPoolName": "ip-pool",
                                         "loadBalancerBackendAddresses": [
                                             {"name": "col", "ipAddress": "10.40.3.4"}]}})
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP005"]
    assert codes(found) == {facts.ARM_PLS_ON_IP_BASED_LB}


def test_destination_in_another_unpeered_vnet():
    g = b2_graph()
    node(g, "b2-vtap")["inputs"]["destinationNetworkInterfaceIPConfiguration"] = {
        "id": arm_id("networkInterfaces", "col-nic", "ipConfigurations", "ipconfig1")}
    found = rules.run_rules(g)
    assert "VTAP006" in ids(found)
    assert any("'col-vnet'" in f.message and "'b2-vnet'" in f.message for f in found)


def test_destination_in_a_peered_vnet_is_not_a_scope_finding_but_breaks_the_premise():
    g = b2_graph()
    node(g, "b2-vtap")["inputs"]["destinationNetworkInterfaceIPConfiguration"] = {
        "id": arm_id("networkInterfaces", "col-nic", "ipConfigurations", "ipconfig1")}
    g.append({"urn": urn(rules.T_PEERING, "peer"), "type": rules.T_PEERING, "name": "peer",
              "parent": None, "inputs": {"virtualNetworkName": "b2-vnet",
                                         "remoteVirtualNetwork": {
                                             "id": arm_id("virtualNetworks", "col-vnet")}}})
    found = ids(rules.run_rules(g))
    assert "VTAP006" not in found and "VTAP030" in found


def test_regions_must_match_and_offer_vtap():
    g = b2_graph()
    node(g, "b2-vtap")["inputs"]["location"] = "westeurope"
    found = rules.run_rules(g)
    assert {"VTAP006", "VTAP007"} <= set(ids(found))
    assert any("westeurope" in f.message for f in found if f.rule == "VTAP007")


def test_region_comes_from_the_resource_group_when_unset():
    g = b2_graph()
    for e in g:
        e["inputs"].pop("location", None)
    node(g, "rg")["inputs"]["location"] = "West Europe"
    assert ids(rules.run_rules(g)) == ["VTAP007"]


def test_v6_size_on_tapped_vm():
    g = b2_graph()
    node(g, "src-vm")["inputs"]["hardwareProfile"]["vmSize"] = "Standard_D2s_v6"
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP008"]
    # ... but a v6 proxy or collector is no vTAP source.
    g = b2_graph()
    node(g, "proxy-vm")["inputs"]["hardwareProfile"]["vmSize"] = "Standard_D2s_v6"
    assert rules.run_rules(g) == []


def test_more_than_ten_vtaps():
    g = b2_graph()
    for i in range(facts.MAX_VTAPS_PER_SUBSCRIPTION):
        add_vtap(g, {"destinationNetworkInterfaceIPConfiguration": {"id": PROXY_IPCFG}},
                 name=f"extra{i}")
    assert ids(rules.run_rules(g)) == ["VTAP009"]
    g = b2_graph()
    for i in range(facts.MAX_VTAPS_PER_SUBSCRIPTION - 1):
        add_vtap(g, {"destinationNetworkInterfaceIPConfiguration": {"id": PROXY_IPCFG}},
                 name=f"extra{i}")
    assert rules.run_rules(g) == []




def test_direct_connect_compliant():
    assert rules.run_rules(direct_connect_graph()) == []


def test_direct_connect_region_names_the_feature():
    found = rules.run_rules(direct_connect_graph("uksouth"))
    assert ids(found) == ["VTAP010"]
    assert facts.PLS_DIRECT_CONNECT_FEATURE in found[0].message
    assert "centralus" in found[0].message


def test_direct_connect_nat_ip_count():
    g = direct_connect_graph()
    node(g, "col-pls")["inputs"]["ipConfigurations"].pop()
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP011"]
    assert "2/4/6/8" in found[0].message and facts.PLS_DIRECT_CONNECT_FEATURE in found[0].message


def test_direct_connect_destination_static_and_not_a_pe():
    g = direct_connect_graph()
    node(g, "col-nic")["inputs"]["ipConfigurations"][0]["privateIPAllocationMethod"] = "Dynamic"
    assert ids(rules.run_rules(g)) == ["VTAP012"]
    g = direct_connect_graph()
    node(g, "col-pls")["inputs"]["destinationIPAddress"] = "10.30.3.4"
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP012"] and "b2-pe" in found[0].message


def test_proxy_nic_without_forwarding():
    g = b2_graph()
    node(g, "proxy-nic")["inputs"]["enableIPForwarding"] = False
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP020"]
    assert found[0].resource == "proxy-nic"
    g = b2_graph()
    del node(g, "proxy-nic")["inputs"]["enableIPForwarding"]  # Azure's default: off
    assert ids(rules.run_rules(g)) == ["VTAP020"]


def test_a_vtap_destination_in_the_pe_vnet_is_a_proxy_even_outside_proxynat():
    g = b2_graph()
    proxy_vm = next(e for e in g if e["type"] == "vtaplab:index:LinuxVm" and e["name"] == "proxy")
    proxy_vm["parent"] = None  # no ProxyNat ancestor any more
    node(g, "proxy-nic")["inputs"]["enableIPForwarding"] = False
    assert ids(rules.run_rules(g)) == ["VTAP020"]
    # Without a PE in its VNet it is a plain destination (a collector), no forwarding needed.
    node(g, "b2-pe")["inputs"]["subnet"]["id"] = arm_id("virtualNetworks", "col-vnet",
                                                        "subnets", "snet-pls")
    assert rules.run_rules(g) == []


def b2_with(nsg: str, rule: dict[str, Any]) -> list[dict[str, Any]]:
    """The compliant b2 graph with ``rule`` added to NSG ``nsg``: the one thing a test breaks."""
    g = b2_graph()
    node(g, nsg)["inputs"]["securityRules"].append(rule)
    return g


def deny_all(name: str, priority: int) -> dict[str, Any]:
    """A rule denying every protocol, port and source at ``priority``."""
    return _nsg_rule(name, priority, "*", "*", "*", access="Deny")


def test_nsg_deny_before_allow_blocks_vxlan():
    found = rules.run_rules(b2_with("proxy-nsg", deny_all("deny-all", 105)))
    assert ids(found) == ["VTAP021"]
    assert "proxy-nic" in found[0].message
    # The same deny after the allow is harmless.
    assert rules.run_rules(b2_with("proxy-nsg", deny_all("deny-all", 4000))) == []


def test_nsg_rules_apply_only_to_their_destination():
    g = b2_graph()
    deny = _nsg_rule("deny-other", 105, "Udp", "4789", "VirtualNetwork", access="Deny")
    deny["destinationAddressPrefix"] = "10.30.9.0/24"  # not the proxy's address
    node(g, "proxy-nsg")["inputs"]["securityRules"].append(deny)
    assert rules.run_rules(g) == []
    deny["destinationAddressPrefix"] = "10.30.4.0/24"  # the proxy's subnet
    assert ids(rules.run_rules(g)) == ["VTAP021"]
    # An allow aimed elsewhere does not let VXLAN in: the deny after it decides.
    g = b2_graph()
    rules_ = node(g, "proxy-nsg")["inputs"]["securityRules"]
    rules_[1]["destinationAddressPrefix"] = "10.30.9.9"
    rules_.append(_nsg_rule("deny-all", 300, "*", "*", "*", access="Deny"))
    assert ids(rules.run_rules(g)) == ["VTAP021"]
    rules_[1]["destinationAddressPrefix"] = "10.30.4.4"
    assert rules.run_rules(g) == []


def test_nsg_deny_on_collector_via_separate_rule_resource():
    g = b2_graph()
    g.append({"urn": urn(rules.T_RULE, "deny"), "type": rules.T_RULE, "name": "deny",
              "parent": None, "inputs": {**_nsg_rule("deny-vxlan", 101, "Udp", "4000-5000",
                                                     "VirtualNetwork", access="Deny"),
                                         "networkSecurityGroupName": "col-nsg"}})
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP021"] and "collector" in found[0].message


def test_pls_lb_without_udp_rule():
    g = b2_graph()
    node(g, "col-ilb")["inputs"]["loadBalancingRules"][0]["protocol"] = "Tcp"
    assert ids(rules.run_rules(g)) == ["VTAP022"]
    g = b2_graph()
    lb_rule = node(g, "col-ilb")["inputs"]["loadBalancingRules"][0]
    lb_rule.update(protocol="All", frontendPort=0, backendPort=0)  # HA ports
    assert rules.run_rules(g) == []


def test_lb_rule_without_probe_is_advisory():
    g = b2_graph()
    del node(g, "col-ilb")["inputs"]["loadBalancingRules"][0]["probe"]
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP023"] and found[0].severity == rules.ADVISORY


@pytest.mark.parametrize("typ", sorted(rules.BRIDGE_TYPES))
def test_any_bridge_between_networks_breaks_the_premise(typ):
    g = b2_graph()
    g.append({"urn": urn(typ, "bridge"), "type": typ, "name": "bridge", "parent": None,
              "inputs": {}})
    assert ids(rules.run_rules(g)) == ["VTAP030"]


def test_inline_peering_breaks_the_premise():
    g = b2_graph()
    node(g, "b2-vnet")["inputs"]["virtualNetworkPeerings"] = [{"name": "p"}]
    assert ids(rules.run_rules(g)) == ["VTAP030"]


@pytest.mark.parametrize("source", ["*", "Internet", "0.0.0.0/0", "Any"])
def test_ssh_open_to_the_world(source):
    g = b2_graph()
    node(g, "src-nsg")["inputs"]["securityRules"][0]["sourceAddressPrefix"] = source
    found = rules.run_rules(g)
    assert ids(found) == ["VTAP040"] and "SSH" in found[0].message


def test_any_port_open_via_prefix_list_or_rule_resource():
    g = b2_graph()
    r = node(g, "proxy-nsg")["inputs"]["securityRules"][1]
    r.pop("sourceAddressPrefix")
    r["sourceAddressPrefixes"] = ["10.0.0.0/8", "0.0.0.0/0"]
    assert ids(rules.run_rules(g)) == ["VTAP040"]
    g = b2_graph()
    g.append({"urn": urn(rules.T_RULE, "web"), "type": rules.T_RULE, "name": "web",
              "parent": None, "inputs": {**_nsg_rule("web", 300, "Tcp", "443", "Internet"),
                                         "networkSecurityGroupName": "src-nsg"}})
    assert ids(rules.run_rules(g)) == ["VTAP040"]
    # A deny from anywhere is fine.
    assert rules.run_rules(b2_with("src-nsg", deny_all("deny", 4000))) == []


def test_password_authentication():
    g = b2_graph()
    node(g, "col-vm")["inputs"]["osProfile"]["linuxConfiguration"][
        "disablePasswordAuthentication"] = False
    assert ids(rules.run_rules(g)) == ["VTAP041"]
    g = b2_graph()
    node(g, "col-vm")["inputs"]["osProfile"]["adminPassword"] = "hunter2"
    assert ids(rules.run_rules(g)) == ["VTAP041"]


# --- unknown and missing values never crash and never make a finding ------------------------


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k)
            yield from _leaf_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*path, i)
            yield from _leaf_paths(v, (*path, i))


def _set(graph: list[dict[str, Any]], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    cur: Any = graph
    for step in path[:-1]:
        cur = cur[step]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value


GRAPHS = {"b2": b2_graph, "r1": r1_graph, "b1": b1_graph, "direct-connect": direct_connect_graph}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_unknown_values_never_add_a_finding(name):
    base = GRAPHS[name]()
    before = {(f.rule, f.urn) for f in rules.run_rules(base)}
    paths = [p for p in _leaf_paths(base) if len(p) >= 3 and p[1] == "inputs"]
    assert len(paths) > 100
    for path in paths:
        g = copy.deepcopy(base)
        _set(g, path, UNKNOWN, delete=False)
        after = {(f.rule, f.urn) for f in rules.run_rules(g)}
        assert after <= before, (path, after - before)


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("junk", [None, 7, "x", [], {}, [None], {"id": None}])
def test_missing_or_odd_values_never_crash(name, junk):
    base = GRAPHS[name]()
    for path in (p for p in _leaf_paths(base) if len(p) >= 3 and p[1] == "inputs"):
        for delete in (True, False):
            g = copy.deepcopy(base)
            _set(g, path, junk, delete=delete)
            for f in rules.run_rules(g):
                assert f.severity in rules.SEVERITIES and f.message


def test_empty_and_malformed_graphs():
    assert rules.run_rules([]) == []
    assert rules.run_rules([{}, {"type": rules.T_TAP}, "junk", {"inputs": None}]) == []  # type: ignore[list-item]


def test_graph_round_trips_through_json():
    g = json.loads(json.dumps(b2_graph()))
    assert rules.run_rules(g) == []
