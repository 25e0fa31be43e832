"""The twin's topology is derived from the graph alone (no root, no namespaces).

Checked on the committed stacks' graphs (``graph STACK --json``, cached) and on edits of them:
what each resource becomes, the naming scheme, the user data's script arguments, the fastpath
ordering, and the nftables text the NSG/NIC/LB behaviours render to.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from vtaplab import behaviours, facts
from vtaplab.emulator import nft
from vtaplab.emulator.topology import (
    TopologyError,
    from_graph,
    load_graph_file,
    stack_graph,
)


def graph(stack: str) -> list[dict]:
    return copy.deepcopy(stack_graph(stack)[0])


def ifname(node: str, peer: str) -> str:
    return f"vl0000-{node}-{peer}"


@pytest.fixture(scope="module")
def b2():
    return from_graph(graph("b2"), "b2")


def test_b2_nodes_follow_the_naming_scheme(b2):
    kinds = {n.name: n.kind for n in b2.nodes}
    assert kinds == {"f0": "fabric", "f1": "fabric", "c1": "vm", "p1": "vm", "s1": "vm",
                     "o0": "vm", "b0": "lb", "n0": "pls", "e1": "pe", "v1": "vtep"}
    # Every interface name fits IFNAMSIZ with a 6-character run prefix.
    for port in b2.ports:
        assert len(ifname(port.node, port.fabric)) <= 15


def test_b2_nics_carry_their_address_forwarding_flag_and_nsg(b2):
    proxy = b2.port("p1")
    assert (proxy.ip, proxy.prefixlen, proxy.forwarding) == ("10.30.4.4", 24, True)
    assert proxy.nsg is not None and proxy.nsg.name == "b2-proxy-nsg"
    names = [r.name for r in proxy.nsg.rules if r.direction == "Inbound"]
    # Declared rules first (by priority), Azure's defaults last.
    assert names[-3:] == ["AllowVnetInBound", "AllowAzureLoadBalancerInBound", "DenyAllInBound"]
    assert b2.port("s1").forwarding is False


def test_vm_scripts_and_arguments_come_from_the_user_data(b2):
    assert b2.vm("p1").proxy_args == ("--mode", "netdev", "--target", "10.30.3.4")
    src = b2.vm("s1")
    assert [name for name, _ in src.www] == ["index.html"]
    assert any("big.bin" in c for c in src.www_commands)
    [scenario] = b2.scenarios
    [flow] = scenario.flows
    assert flow.urls == ("http://10.30.1.4/", "http://10.30.1.4/big.bin")


def test_msp_collector_decaps_the_tenants_vnis_from_its_user_data():
    topo = from_graph(graph("msp"), "msp")
    [scenario] = topo.scenarios
    assert scenario.decap_vnis == (1001, 1002, 1003)
    assert [topo.vm(p).proxy_args[-1] for p in scenario.proxies] == ["1001", "1002", "1003"]


def test_private_link_targets_the_lb_frontend_or_direct_connect():
    [b2_link] = from_graph(graph("b2"), "b2").private_links
    assert (b2_link.target, b2_link.direct_connect, b2_link.nat_ip) == (
        "10.40.2.4", False, "10.40.2.5")
    [a_link] = from_graph(graph("a"), "a").private_links
    assert (a_link.target, a_link.direct_connect) == ("10.40.3.4", True)


def test_uksouth_emulates_its_traffic_scenarios_against_one_collector():
    topo = from_graph(graph("uksouth"), "uksouth")
    assert [s.id for s in topo.scenarios] == ["b2", "b3"]
    assert {s.collector.node for s in topo.scenarios} == {"o0"}
    assert [n for n in topo.notes if "carries no traffic" in n] == [
        "VNet b1-vnet (b1) carries no traffic: predicted by the rules, not emulated",
        "VNet r1-vnet (r1) carries no traffic: predicted by the rules, not emulated"]


def test_the_tap_is_on_fastpath_only_when_a_start_of_the_vm_follows_the_vtap(b2):
    # The program's default order: vTAP, tap configuration, then the VM (its first boot).
    [tap] = b2.taps
    assert tap.on_fastpath and tap.remote == "10.30.4.4" and tap.local_ip == "10.30.1.4"
    assert not [r for r in graph("b2") if " fastpath " in str(r["inputs"].get("create"))]
    # A VM that started before its vTAP and was never restarted: not on fastpath.
    g = graph("b2")
    taps = {r["urn"] for r in g if r["type"].endswith(
        (":VirtualNetworkTap", ":NetworkInterfaceTapConfiguration"))}
    vm = next(r for r in g if r["name"] == "b2-src-vm")
    vm["dependencies"] = [d for d in vm["dependencies"] if d not in taps]
    [tap] = from_graph(g, "b2").taps
    assert not tap.on_fastpath
    assert tap.why_not.startswith("NIC is not on fastpath: b2-src-nic")
    # The documented cure for such a VM: a deallocate+start that follows the vTAP.
    vtap = next(r for r in g if r["type"].endswith(":VirtualNetworkTap"))
    g.append({"urn": "urn:pulumi:b2::vtaplab::command:local:Command::b2-run-fastpath-b2-src",
              "type": "command:local:Command", "name": "b2-run-fastpath-b2-src", "parent": None,
              "dependencies": [vtap["urn"]],
              "inputs": {"create": "python -m vtaplab fastpath /subscriptions/x/resourceGroups/"
                                   "rg/providers/Microsoft.Compute/virtualMachines/b2-src "}})
    [tap] = from_graph(g, "b2").taps
    assert tap.on_fastpath


def test_b3_vtap_goes_to_the_lb_frontend_with_ha_ports():
    topo = from_graph(graph("b3"), "b3")
    [tap] = topo.taps
    lb = topo.lb("b1")
    assert tap.remote == lb.frontend == "10.30.2.4"
    assert [r.ha_ports for r in lb.rules] == [True]
    assert lb.backends == (("p1", "10.30.4.4"), ("p12", "10.30.4.5"))
    assert "lb-frontend-vxlan" in topo.assumptions


def _b4_with(count: int, **changes: object) -> list[dict]:
    g = graph("b4")
    vmss = next(r for r in g if r["type"].endswith(":VirtualMachineScaleSet"))
    vmss["inputs"]["sku"]["capacity"] = count
    vmss["inputs"].update(changes)
    return g


def test_b4_scale_set_becomes_proxy_count_instances_in_the_lb_pool():
    topo = from_graph(graph("b4"), "b4")
    proxies = [v for v in topo.vms if v.role == "proxy"]
    # proxyCount's default: two instances, each with the tier's user data and its own NIC.
    assert [(v.node, v.resource, v.ip, v.zone) for v in proxies] == [
        ("p1", "b4-tier-vmss_0", "10.30.4.4", "1"), ("p12", "b4-tier-vmss_1", "10.30.4.5", "2")]
    for vm in proxies:
        assert vm.scale_set == "b4-tier-vmss"
        assert "--mode" in vm.proxy_args and vm.health_args
        port = topo.port(vm.node)
        assert port.nic and port.forwarding and port.nsg and port.nsg.name == "b4-tier-nsg"
    lb = topo.lb("b1")
    assert lb.backends == (("p1", "10.30.4.4"), ("p12", "10.30.4.5"))
    assert lb.probe is not None and lb.probe.protocol.lower() == "http"
    [scenario] = topo.scenarios
    assert scenario.proxies == ("p1", "p12") and scenario.lb == "b1"
    assert {"vmss-flex-instances"} <= set(topo.behaviours)
    assert "vmss-instance-addresses" in topo.assumptions


def test_b4_instances_follow_capacity_zones_and_skip_static_addresses():
    topo = from_graph(_b4_with(4, zones=["1", "2"]), "b4")
    proxies = [v for v in topo.vms if v.scale_set]
    assert [v.zone for v in proxies] == ["1", "2", "1", "2"]
    assert len({v.node for v in proxies}) == 4 and len(topo.lb("b1").backends) == 4
    regional = from_graph(_b4_with(1, zones=None), "b4")
    assert [v.zone for v in regional.vms if v.scale_set] == [""]
    # A static NIC address in the subnet is never handed to an instance.
    g = _b4_with(2)
    nic = next(r for r in g if r["name"] == "b4-client-nic")
    nic["inputs"]["ipConfigurations"][0]["privateIPAddress"] = "10.30.4.4"
    assert [v.ip for v in from_graph(g, "b4").vms if v.scale_set] == ["10.30.4.5", "10.30.4.6"]


def test_a_uniform_scale_set_is_one_clear_line():
    with pytest.raises(TopologyError, match="orchestrationMode 'Uniform' is not emulated"):
        from_graph(_b4_with(2, orchestrationMode="Uniform"), "b4")


def test_every_behaviour_and_assumption_used_is_an_entry_with_its_source():
    for stack in ("b2", "b3", "b4", "msp", "a", "uksouth"):
        topo = from_graph(graph(stack), stack)
        for key in topo.behaviours:
            entry = behaviours.BEHAVIOURS[key]
            assert entry.source and entry.text
        for key in topo.assumptions:
            assert behaviours.ASSUMPTIONS[key].value
    listing = behaviours.listing(["lb-ha-ports"], ["vtap-vni"])
    assert json.loads(json.dumps(listing))["assumptions"][0]["value"] == "1"


def test_nsg_rules_render_in_priority_order_with_service_tags(b2):
    text = nft.fabric_ruleset(b2, "f0", ifname)
    chain = text.split("chain inbound_o0 {\n")[1].split("\n  }\n")[0]
    lines = [line.strip() for line in chain.strip().splitlines()]
    assert [re.search(r'comment "(.*)"', line).group(1) for line in lines] == [
        "nsg:provider-col-nsg:allow-ssh-operator", "nsg:provider-col-nsg:allow-vxlan-vnet",
        "nsg:provider-col-nsg:AllowVnetInBound",
        "nsg:provider-col-nsg:AllowAzureLoadBalancerInBound",
        "nsg:provider-col-nsg:DenyAllInBound"]
    assert f"ip saddr {{ 10.40.0.0/16, {behaviours.AZURE_LB_PROBE_SOURCE} }}" in lines[1]
    assert f"th dport {{ {facts.VXLAN_PORT} }}" in lines[1]
    assert lines[-1].endswith('drop comment "nsg:provider-col-nsg:DenyAllInBound"')
    # The collector's NIC has no IP forwarding: it neither sends nor receives for others.
    assert 'oifname "vl0000-f0-o0" ip daddr != 10.40.3.4 counter drop' in text
    assert 'iifname "vl0000-f0-o0" ip saddr != 10.40.3.4 counter drop' in text


def test_lb_port_rule_drops_non_first_fragments_and_ha_ports_takes_everything():
    g = graph("b2")
    for r in g:   # the provider ILB with a UDP/4789 port rule (the program before the fix)
        if r["type"].endswith(":LoadBalancer") and r["name"] == "provider-ilb":
            for rule in r["inputs"]["loadBalancingRules"]:
                rule.update(protocol="Udp", frontendPort=4789, backendPort=4789)
    lb = from_graph(g, "b2").lb("b0")
    port_rule = nft.lb_ruleset(lb, "dev0", lb.backends)
    assert "udp dport 4789 ip daddr set jhash ip saddr . udp sport mod 1" in port_rule
    assert "ip frag-off & 0x1fff != 0 counter drop" in port_rule
    ha = from_graph(graph("b3"), "b3").lb("b1")
    text = nft.lb_ruleset(ha, "dev0", ha.backends)
    assert "frag-off" not in text and "dnat to jhash" in text
    assert "mod 2 map { 0 : 10.30.4.4, 1 : 10.30.4.5 }" in text
    # No healthy backend: the frontend drops.
    assert 'drop comment "lb:b3-ilb:no healthy backend"' in nft.lb_ruleset(ha, "dev0", [])


def test_drops_are_read_back_by_resource():
    listing = ('  iifname "x" ip saddr != 10.30.4.4 counter packets 7 bytes 700 drop comment '
               '"nic:b2-proxy-nic:source not its own (IP forwarding off)"\n'
               '  ip daddr 1.2.3.4 counter packets 0 bytes 0 drop comment "lb:l:r"\n'
               '  ip saddr 1.2.3.4 counter packets 9 bytes 9 return comment "nsg:n:allow"\n')
    assert nft.drops(listing) == {"nic:b2-proxy-nic:source not its own (IP forwarding off)": 7}


def test_bad_graphs_are_one_clear_line(tmp_path):
    with pytest.raises(TopologyError, match="no Private Link Service"):
        from_graph([r for r in graph("b2") if "PrivateLinkService" not in r["type"]], "x")
    bad = tmp_path / "g.json"
    bad.write_text("{not json")
    with pytest.raises(TopologyError, match="is not JSON"):
        load_graph_file(bad)
    bad.write_text('{"a": 1}')
    with pytest.raises(TopologyError, match="is not a resource list"):
        load_graph_file(bad)
    g = graph("b2")
    nsg = next(r for r in g if r["name"] == "provider-col-nsg")
    nsg["inputs"]["securityRules"][0]["sourceAddressPrefix"] = "Storage"
    with pytest.raises(TopologyError, match="'Storage' is not modelled"):
        nft.fabric_ruleset(from_graph(g, "b2"), "f0", ifname)
