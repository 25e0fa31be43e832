"""b3 (an HA proxy pool behind a consumer LB) and msp (many tenants, one collector) under mocks.

What the issue asks the graph to show: b3's vTAP targets the LB frontend, the LB has a rule
and a probe, both proxies forward and sit in its backend pool; msp has N isolated consumers
with identical address spaces, distinct VNIs in their proxies' cloud-init, one PLS and N PEs
connecting to it, and nothing peered. Every check reads the inputs the program registered.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import COMMITTED_STACKS, ROOT
from helpers.program import NETWORK, NIC, TAP, TAP_CONFIG, VM, arm_id, nic_with_ip, of_type, one

from vtaplab import facts, plan
from vtaplab.preflight import mocks
from vtaplab.program import config, stack

LB = NETWORK + "LoadBalancer"
PE = NETWORK + "PrivateEndpoint"
PLS = NETWORK + "PrivateLinkService"
VNET = NETWORK + "VirtualNetwork"
Resources = list[Mapping[str, Any]]


def named(resources: Resources, prefix: str) -> Resources:
    return [r for r in resources if r["name"].startswith(prefix)]


def pe_address(pe: Mapping[str, Any], cfg: config.LabConfig) -> str:
    """The PE's address: its static one (vtaplab:peIp), else what ARM allocates first in an
    empty snet-pe (the mocks do the same), which the proxy reads back."""
    static = (pe["inputs"].get("ipConfigurations") or [{}])[0].get("privateIPAddress")
    return str(static or cfg.consumer.snet_pe[4])


def stacks_with(scenario: str) -> list[str]:
    return [s for s in COMMITTED_STACKS
            if scenario in config.from_values(mocks.mock_config(s, ROOT), stack=s).scenarios]


def user_data(vm: Mapping[str, Any]) -> str:
    return base64.b64decode(vm["inputs"]["osProfile"]["customData"]).decode()


# ----------------------------------------------------------------------------- b3


@pytest.mark.parametrize("stack_name", stacks_with("b3"))
def test_b3_taps_into_the_consumer_lb_frontend(stack_name, graph_of, lab_config_of):
    resources = graph_of(stack_name)
    cfg = lab_config_of(stack_name)
    mine = named(resources, "b3-")
    lb = one(of_type(mine, LB), "b3 LB")
    tap = one(of_type(mine, TAP), "b3 vTAP")["inputs"]
    [frontend] = lb["inputs"]["frontendIPConfigurations"]
    assert tap["destinationLoadBalancerFrontEndIPConfiguration"]["id"] == (
        f"{arm_id(lb)}/frontendIPConfigurations/{frontend['name']}")
    assert "destinationNetworkInterfaceIPConfiguration" not in tap
    assert tap["destinationPort"] == facts.VXLAN_PORT
    # The frontend is the plan's consumer LB address, in the consumer's snet-ilb.
    assert frontend["privateIPAddress"] == str(cfg.consumer.ilb_ip)
    assert frontend["subnet"]["id"].endswith("/subnets/snet-ilb")
    assert "b3-vnet" in frontend["subnet"]["id"]
    # The source NIC is the one tapped.
    src_nic = nic_with_ip(of_type(mine, NIC), cfg.consumer.vm_src_ip)
    tap_config = one(of_type(mine, TAP_CONFIG), "b3 tap configuration")["inputs"]
    assert tap_config["networkInterfaceName"] == src_nic["inputs"]["networkInterfaceName"]


@pytest.mark.parametrize("stack_name", stacks_with("b3"))
def test_b3_lb_has_a_rule_carrying_vxlan_and_a_probe(stack_name, graph_of):
    lb = one(of_type(named(graph_of(stack_name), "b3-"), LB), "b3 LB")
    inputs = lb["inputs"]
    assert inputs["sku"]["name"] == "Standard"
    lb_id = arm_id(lb)
    [frontend] = inputs["frontendIPConfigurations"]
    [pool] = inputs["backendAddressPools"]
    [probe] = inputs["probes"]
    [rule] = inputs["loadBalancingRules"]
    # HA ports (every protocol and port, so every fragment) or a UDP/4789 rule would do.
    assert (rule["protocol"], rule["frontendPort"], rule["backendPort"]) in {
        ("All", 0, 0), ("Udp", facts.VXLAN_PORT, facts.VXLAN_PORT)}
    assert rule["frontendIPConfiguration"]["id"] == (
        f"{lb_id}/frontendIPConfigurations/{frontend['name']}")
    assert rule["backendAddressPool"]["id"] == f"{lb_id}/backendAddressPools/{pool['name']}"
    assert rule["probe"]["id"] == f"{lb_id}/probes/{probe['name']}"
    assert rule["enableFloatingIP"] is False
    # Azure can't probe UDP: an HTTP probe of each proxy's vtap-health.py, which answers 200
    # only while the rewrite is installed (a TCP/22 probe can't see a failed rewrite).
    assert (probe["protocol"], probe["port"], probe["requestPath"]) == ("Http", 8080, "/health")


@pytest.mark.parametrize("stack_name", stacks_with("b3"))
def test_b3_both_proxies_forward_sit_in_the_pool_and_rewrite_to_the_pe(
        stack_name, graph_of, lab_config_of):
    resources = graph_of(stack_name)
    cfg = lab_config_of(stack_name)
    mine = named(resources, "b3-")
    lb = one(of_type(mine, LB), "b3 LB")
    pool_id = f"{arm_id(lb)}/backendAddressPools/{lb['inputs']['backendAddressPools'][0]['name']}"
    pe_ip = pe_address(one(of_type(mine, PE), "b3 PE"), cfg)
    proxy_ips = (cfg.consumer.proxy_ip, cfg.consumer.proxy2_ip)
    assert proxy_ips[0] != proxy_ips[1]
    nics = [nic_with_ip(of_type(named(mine, "b3-proxy"), NIC), ip) for ip in proxy_ips]
    assert len({n["inputs"]["networkInterfaceName"] for n in nics}) == 2
    for nic in nics:
        assert nic["inputs"]["enableIPForwarding"] is True
        [ip_config] = nic["inputs"]["ipConfigurations"]
        assert [p["id"] for p in ip_config["loadBalancerBackendAddressPools"]] == [pool_id]
        assert ip_config["subnet"]["id"].endswith("/subnets/snet-proxy")
    vms = of_type(named(mine, "b3-proxy"), VM)
    assert len(vms) == 2 and len({v["inputs"]["vmName"] for v in vms}) == 2
    for vm in vms:
        text = user_data(vm)
        assert f"--target {pe_ip}" in text and f"--mode {cfg.proxy_mode}" in text
        assert "--vni" not in text   # b3 keeps the vTAP's VNI
    # Nothing else joins the pool: the tapped VM and the client are not backends.
    others = [n for n in of_type(mine, NIC) if n not in nics]
    assert others and all(
        not c.get("loadBalancerBackendAddressPools")
        for n in others for c in n["inputs"]["ipConfigurations"])


# ----------------------------------------------------------------------------- msp


def msp_tenants(resources: Resources) -> list[str]:
    return sorted(r["name"] for r in of_type(resources, "vtaplab:index:SourceVnet")
                  if r["name"].startswith("msp-t"))


@pytest.mark.parametrize("stack_name", stacks_with("msp"))
def test_msp_has_n_isolated_consumers_with_identical_address_spaces(
        stack_name, graph_of, lab_config_of):
    resources = graph_of(stack_name)
    cfg = lab_config_of(stack_name)
    tenants = msp_tenants(resources)
    assert tenants == sorted(f"msp-t{i}" for i in range(1, cfg.msp_tenants + 1))
    assert cfg.msp_tenants >= 2   # else "identical" and "distinct" prove nothing
    spaces = []
    for tenant in tenants:
        vnet = one(of_type(named(resources, f"{tenant}-"), VNET), f"{tenant} VNet")["inputs"]
        spaces.append(vnet["addressSpace"]["addressPrefixes"])
        assert "virtualNetworkPeerings" not in vnet
        # Every tenant's hosts at the same addresses: only the VNI tells them apart.
        nic_with_ip(of_type(named(resources, f"{tenant}-"), NIC), cfg.consumer.vm_src_ip)
        nic_with_ip(of_type(named(resources, f"{tenant}-"), NIC), cfg.consumer.proxy_ip)
    assert all(space == [str(cfg.consumer.address_space)] for space in spaces)
    vnet_names = [r["inputs"]["virtualNetworkName"] for r in of_type(resources, VNET)]
    assert len(vnet_names) == len(set(vnet_names))
    types = {r["type"] for r in resources}
    assert not [t for t in types if "Peering" in t or "Gateway" in t]


@pytest.mark.parametrize("stack_name", stacks_with("msp"))
def test_msp_proxies_stamp_distinct_vnis(stack_name, graph_of, lab_config_of):
    resources = graph_of(stack_name)
    cfg = lab_config_of(stack_name)
    vnis = {}
    for tenant in msp_tenants(resources):
        vm = one(of_type(named(resources, f"{tenant}-proxy"), VM), f"{tenant} proxy VM")
        text = user_data(vm)
        pe = one(of_type(named(resources, f"{tenant}-"), PE), f"{tenant} PE")
        assert f"--target {pe_address(pe, cfg)}" in text
        found = re.findall(r"--vni (\d+)", text)
        assert len(found) == 1, found
        vnis[tenant] = int(found[0])
    assert len(set(vnis.values())) == len(vnis) == cfg.msp_tenants
    # The emulator numbers tenants the same way (one function for both).
    assert vnis == {f"msp-t{i}": plan.tenant_vni(i) for i in range(1, cfg.msp_tenants + 1)}
    assert 1 not in vnis.values()   # never the VNI the vTAP itself sends


@pytest.mark.parametrize("stack_name", stacks_with("msp"))
def test_msp_has_one_pls_and_every_tenants_pe_connects_to_it(
        stack_name, graph_of, lab_config_of):
    resources = graph_of(stack_name)
    cfg = lab_config_of(stack_name)
    pls = one(of_type(resources, PLS), "PLS")
    one(of_type(resources, "vtaplab:index:CollectorService"), "collector")
    endpoints = of_type(named(resources, "msp-t"), PE)
    assert len(endpoints) == cfg.msp_tenants
    for pe in endpoints:
        assert [c["privateLinkServiceId"]
                for c in pe["inputs"]["privateLinkServiceConnections"]] == [arm_id(pls)]
    # Each tenant taps its own source into its own proxy.
    taps = of_type(named(resources, "msp-t"), TAP)
    assert len(taps) == cfg.msp_tenants
    for tenant in msp_tenants(resources):
        tap = one(of_type(named(resources, f"{tenant}-"), TAP), f"{tenant} vTAP")["inputs"]
        proxy_nic = nic_with_ip(of_type(named(resources, f"{tenant}-proxy"), NIC),
                                cfg.consumer.proxy_ip)
        assert tap["destinationNetworkInterfaceIPConfiguration"]["id"].startswith(
            arm_id(proxy_nic) + "/ipConfigurations/")
        assert proxy_nic["inputs"]["enableIPForwarding"] is True


@pytest.mark.parametrize("tenants", [1, 3, 5])
def test_msp_tenant_count_comes_from_config(tenants: int):
    cfg = config.from_values(
        {"vtaplab:scenarios": ["msp"], "vtaplab:mspTenants": tenants,
         "vtaplab:sshPublicKey": mocks.TEST_SSH_PUBLIC_KEY,
         "vtaplab:operatorCidr": mocks.TEST_OPERATOR_CIDR}, stack="t")
    assert cfg.msp_tenants == tenants
    stack.check_composable(cfg)


def test_msp_default_is_three_tenants():
    cfg = config.from_values(
        {"vtaplab:scenarios": ["msp"], "vtaplab:sshPublicKey": mocks.TEST_SSH_PUBLIC_KEY,
         "vtaplab:operatorCidr": mocks.TEST_OPERATOR_CIDR}, stack="t")
    assert cfg.msp_tenants == 3


def test_msp_with_more_tenants_than_vtaps_is_refused():
    with pytest.raises(config.ConfigError, match="vTAP"):
        config.from_values(
            {"vtaplab:scenarios": ["b2", "msp"],
             "vtaplab:mspTenants": facts.MAX_VTAPS_PER_SUBSCRIPTION,
             "vtaplab:sshPublicKey": mocks.TEST_SSH_PUBLIC_KEY,
             "vtaplab:operatorCidr": mocks.TEST_OPERATOR_CIDR}, stack="t")


def test_tenant_vni_numbering():
    assert [plan.tenant_vni(i) for i in (1, 2, 3)] == [1001, 1002, 1003]
    with pytest.raises(ValueError, match="accepted"):
        plan.tenant_vni(0)


def test_b3_and_msp_have_committed_stacks():
    assert {"b3", "msp"} <= set(COMMITTED_STACKS)
    assert stacks_with("b3") and stacks_with("msp")



# ----------------------------------------------------------------------------- msp collector


def _collector_user_data(resources: Resources) -> str:
    vms = [r for r in resources if r["type"] == VM and r["name"] == "provider-col-vm"]
    assert len(vms) == 1
    return base64.b64decode(vms[0]["inputs"]["osProfile"]["customData"]).decode()


@pytest.mark.parametrize("stack_name", stacks_with("msp"))
def test_msp_collector_decaps_every_tenants_vni(stack_name, graph_of, lab_config_of):
    cfg = lab_config_of(stack_name)
    text = _collector_user_data(graph_of(stack_name))
    vnis = ",".join(str(plan.tenant_vni(i)) for i in range(1, cfg.msp_tenants + 1))
    assert cfg.msp_tenants >= 2
    assert f"ExecStart=/usr/local/sbin/vtap-decap.sh apply --vni {vnis}\n" in text
    assert "[systemctl, enable, --now, vtap-decap.service]" in text


@pytest.mark.parametrize("stack_name", [s for s in ("b2", "b3") if s in COMMITTED_STACKS])
def test_a_collector_without_msp_has_no_decap(stack_name, graph_of):
    text = _collector_user_data(graph_of(stack_name))
    assert "vtap-capture.sh" in text and "vtap-decap" not in text
