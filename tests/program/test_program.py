"""The Pulumi program under mocks, for every committed stack file: what it would ask ARM for.

Every assertion reads the inputs the program registered (azure-native wire names), never a
copy of what the program meant to do.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import ipaddress
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import pytest
from helpers.program import NETWORK, NIC, TAP, TAP_CONFIG, VM, arm_id, nic_with_ip, of_type, one

from vtaplab import arm_ids, facts
from vtaplab.preflight import mocks

# Anything that would join the consumer and provider networks other than Private Link.
FORBIDDEN_TYPE_WORDS = ("Peering", "VpnGateway", "VirtualNetworkGateway", "LocalNetworkGateway",
                        "VpnSite", "VpnConnection", "ExpressRoute", "VirtualHub", "VirtualWan")
TAG_KEYS = ("project", "stack", "scenario", "component")


# ----------------------------------------------------------------------------- helpers










def consumer_names(scenarios: Iterable[str], msp_tenants: int) -> list[str]:
    """The SourceVnets a stack has: one per scenario, msp one per tenant (msp-t1, ...)."""
    return [name for s in scenarios
            for name in ([f"msp-t{i}" for i in range(1, msp_tenants + 1)] if s == "msp"
                         else [s])]


def in_scenario(resources: list[Mapping[str, Any]], scenario: str) -> list[Mapping[str, Any]]:
    return [r for r in resources if (r["inputs"].get("tags") or {}).get("scenario") == scenario
            or r["name"].startswith(f"{scenario}-")]


@cache
def taggable(type_: str) -> bool:
    """Whether the azure-native resource class for ``type_`` takes ``tags`` (from the SDK)."""
    _, module, name = type_.split(":")
    package = importlib.import_module(f"pulumi_azure_native.{module}")
    return "tags" in inspect.signature(getattr(package, name)._internal_init).parameters


# ----------------------------------------------------------------------------- structure


def test_every_scenario_gets_its_own_consumer_against_one_provider(
        committed_stack, graph_of, lab_config_of):
    resources = graph_of(committed_stack)
    cfg = lab_config_of(committed_stack)
    one(of_type(resources, "azure-native:resources:ResourceGroup"), "resource group")
    one(of_type(resources, "vtaplab:index:CollectorService"), "CollectorService")
    consumers = of_type(resources, "vtaplab:index:SourceVnet")
    expected = consumer_names(cfg.scenarios, cfg.msp_tenants)
    assert sorted(c["name"] for c in consumers) == sorted(expected)
    vnets = of_type(resources, NETWORK + "VirtualNetwork")
    assert len(vnets) == len(expected) + 1
    for vnet in vnets:
        # Separate Subnet resources only: an inline list would fight them on every update.
        assert "subnets" not in vnet["inputs"]
        assert "virtualNetworkPeerings" not in vnet["inputs"]


def test_no_peering_vpn_or_gateway_anywhere(committed_stack, graph_of):
    types = {r["type"] for r in graph_of(committed_stack)}
    joined = sorted(t for t in types if any(word in t for word in FORBIDDEN_TYPE_WORDS))
    assert joined == []
    # Every Azure type is one the mocks know, so a renamed type can't slip past the list above.
    assert {t for t in types if t.startswith("azure-native:")} <= set(arm_ids.BY_TOKEN)


def test_no_two_resources_share_a_urn_or_an_azure_id(committed_stack, graph_of):
    resources = graph_of(committed_stack)
    urns = [r["urn"] for r in resources]
    assert len(urns) == len(set(urns))
    ids = [arm_id(r) for r in resources if r["type"] in arm_ids.BY_TOKEN]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert duplicates == []


def test_every_child_is_parented_and_named_after_its_component(committed_stack, graph_of):
    resources = graph_of(committed_stack)
    names = {r["urn"]: r["name"] for r in resources}
    for resource in resources:
        parent = resource["parent"]
        assert parent, resource["urn"]
        if parent in names:  # not the stack itself
            assert resource["name"].startswith(names[parent]), resource["urn"]


def test_running_the_program_twice_gives_identical_inputs(committed_stack):
    # Two fresh runs side by side (not against the session's cached one, so the comparison
    # is about the program, not about files edited in between).
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda stack: mocks.build_graph(stack, cached=False),
                                 [committed_stack] * 2)
    differing = [a["urn"] for a, b in zip(first, second, strict=True) if a != b]
    assert differing == []
    assert len(first) == len(second) > 0


# ----------------------------------------------------------------------------- the data path


def test_b2_and_a_tap_the_source_nic_into_the_proxy_nic_on_4789(
        committed_stack, graph_of, lab_config_of):
    resources = graph_of(committed_stack)
    cfg = lab_config_of(committed_stack)
    proxied = [s for s in cfg.scenarios if s in {"b2", "a"}]
    taps = of_type(resources, TAP)
    # r1/b1 attempts come later, through ARM; b3 and b4 have one tap, msp one per tenant.
    assert len(taps) == len(proxied) + ("b3" in cfg.scenarios) + ("b4" in cfg.scenarios) + (
        cfg.msp_tenants if "msp" in cfg.scenarios else 0)
    for scenario in proxied:
        mine = in_scenario(resources, scenario)
        proxy_nic = nic_with_ip([n for n in mine if n["name"].startswith(f"{scenario}-proxy")],
                                cfg.consumer.proxy_ip)
        src_nic = nic_with_ip([n for n in mine if n["name"].startswith(f"{scenario}-src")],
                              cfg.consumer.vm_src_ip)
        proxy_config = proxy_nic["inputs"]["ipConfigurations"][0]["name"]
        tap = one(of_type(mine, TAP), f"{scenario} vTAP")["inputs"]
        assert tap["destinationNetworkInterfaceIPConfiguration"]["id"] == (
            f"{arm_id(proxy_nic)}/ipConfigurations/{proxy_config}")
        assert "destinationLoadBalancerFrontEndIPConfiguration" not in tap
        assert tap["destinationPort"] == facts.VXLAN_PORT == 4789
        tap_config = one(of_type(mine, TAP_CONFIG), f"{scenario} tap configuration")["inputs"]
        assert tap_config["networkInterfaceName"] == src_nic["inputs"]["networkInterfaceName"]
        assert tap_config["virtualNetworkTap"]["id"] == arm_id(one(of_type(mine, TAP), "vTAP"))
        assert proxy_nic["inputs"]["enableIPForwarding"] is True
        assert not src_nic["inputs"].get("enableIPForwarding")


def test_the_pe_ip_reaches_the_proxy_cloud_init(committed_stack, run_of, lab_config_of):
    run = run_of(committed_stack)
    resources = run.resources
    cfg = lab_config_of(committed_stack)
    for scenario in [s for s in cfg.scenarios if s in {"b2", "a"}]:
        mine = in_scenario(resources, scenario)
        # The address ARM allocated, read back (dynamic by default): never a guess.
        pe_ip = run.outputs["scenarios"][scenario]["pe_ip"]
        assert ipaddress.IPv4Address(pe_ip) in cfg.consumer.snet_pe
        proxy_vm = one([v for v in of_type(mine, VM) if v["name"].startswith(f"{scenario}-proxy")],
                       f"{scenario} proxy VM")
        user_data = base64.b64decode(proxy_vm["inputs"]["osProfile"]["customData"]).decode()
        assert user_data.startswith("#cloud-config")
        assert f"--target {pe_ip}" in user_data
        assert f"--mode {cfg.proxy_mode}" in user_data


def test_every_pe_connects_to_the_stacks_pls(committed_stack, graph_of, lab_config_of):
    resources = graph_of(committed_stack)
    pls = one(of_type(resources, NETWORK + "PrivateLinkService"), "PLS")
    endpoints = of_type(resources, NETWORK + "PrivateEndpoint")
    cfg = lab_config_of(committed_stack)
    assert len(endpoints) == len(consumer_names(cfg.scenarios, cfg.msp_tenants))
    for pe in endpoints:
        connections = pe["inputs"]["privateLinkServiceConnections"]
        assert [c["privateLinkServiceId"] for c in connections] == [arm_id(pls)]
        assert "snet-pe" in pe["inputs"]["subnet"]["id"]


def test_the_pls_fronts_an_ilb_with_an_ha_ports_rule_to_the_collector(
        committed_stack, graph_of, lab_config_of):
    resources = graph_of(committed_stack)
    cfg = lab_config_of(committed_stack)
    pls = one(of_type(resources, NETWORK + "PrivateLinkService"), "PLS")["inputs"]
    collector_nic = nic_with_ip(resources, cfg.provider.col_ip)
    nat_ips = [c["privateIPAddress"] for c in pls["ipConfigurations"]]
    assert nat_ips == [str(ip) for ip in cfg.provider.nat_ips]
    if "a" in cfg.scenarios:
        # Direct Connect: straight to the collector, no provider LB, 2/4/6/8 NAT ip-configs.
        assert pls["destinationIPAddress"] == str(cfg.provider.col_ip)
        assert not pls.get("loadBalancerFrontendIpConfigurations")
        assert len(nat_ips) in facts.PLS_DIRECT_CONNECT_NAT_IP_COUNTS
        assert not [lb for lb in of_type(resources, NETWORK + "LoadBalancer")
                    if lb["name"].startswith("provider")]
        return
    assert "destinationIPAddress" not in pls
    [frontend_ref] = pls["loadBalancerFrontendIpConfigurations"]
    lbs = {arm_id(lb): lb for lb in of_type(resources, NETWORK + "LoadBalancer")}
    lb_id, _, frontend_name = frontend_ref["id"].rpartition("/frontendIPConfigurations/")
    lb = lbs[lb_id]["inputs"]
    frontend = one([f for f in lb["frontendIPConfigurations"] if f["name"] == frontend_name],
                   "frontend")
    assert frontend["privateIPAddress"] == str(cfg.provider.ilb_ip)
    assert lb["sku"]["name"] == "Standard"
    pools = {f"{lb_id}/backendAddressPools/{p['name']}" for p in lb["backendAddressPools"]}
    probes = {f"{lb_id}/probes/{p['name']}" for p in lb["probes"]}
    collector_pools = {p["id"] for p in
                       collector_nic["inputs"]["ipConfigurations"][0]
                       ["loadBalancerBackendAddressPools"]}
    carrying = [
        rule for rule in lb["loadBalancingRules"]
        if rule["frontendIPConfiguration"]["id"] == frontend_ref["id"]
        and rule["backendAddressPool"]["id"] in pools & collector_pools
        and rule["probe"]["id"] in probes
    ]
    assert carrying, lb["loadBalancingRules"]


def test_every_load_balancing_rule_is_an_ha_ports_rule(committed_stack, graph_of):
    # Port rules don't forward IP fragments (facts.LB_FRAGMENTS_SOURCE); the mirrored
    # full-size frames make fragmented VXLAN, so every LB on the mirror path has HA ports.
    rules = [(lb["name"], rule) for lb in of_type(graph_of(committed_stack),
                                                  NETWORK + "LoadBalancer")
             for rule in lb["inputs"].get("loadBalancingRules") or []]
    for name, rule in rules:
        assert (rule["protocol"], rule["frontendPort"], rule["backendPort"]) == (
            facts.LB_HA_PORTS_PROTOCOL, facts.LB_HA_PORTS_PORT, facts.LB_HA_PORTS_PORT), name


def test_pls_subnet_has_private_link_service_policies_off(committed_stack, graph_of):
    subnets = of_type(graph_of(committed_stack), NETWORK + "Subnet")
    pls_subnets = [s for s in subnets if s["inputs"]["subnetName"] == "snet-pls"]
    assert len(pls_subnets) == 1
    assert pls_subnets[0]["inputs"]["privateLinkServiceNetworkPolicies"] == "Disabled"


def test_hosts_get_the_static_addresses_of_the_plan(committed_stack, graph_of, lab_config_of):
    resources = graph_of(committed_stack)
    cfg = lab_config_of(committed_stack)
    for config in (c for n in of_type(resources, NIC) for c in n["inputs"]["ipConfigurations"]):
        assert config["privateIPAllocationMethod"] == "Static"
    for consumer in consumer_names(cfg.scenarios, cfg.msp_tenants):
        mine = [r for r in resources if r["name"].startswith(f"{consumer}-")]
        nic_with_ip([n for n in mine if n["type"] == NIC], cfg.consumer.vm_src_ip)
        pe = one(of_type(mine, NETWORK + "PrivateEndpoint"), "PE")
        if cfg.consumer.pe_ip is None:
            # Dynamic: a static PE address toward a customer PLS is unsupported
            # (facts.PE_STATIC_IP_SOURCE); vtaplab:peIp opts in.
            assert not pe["inputs"].get("ipConfigurations"), pe["name"]
        else:
            assert pe["inputs"]["ipConfigurations"][0]["privateIPAddress"] == str(
                cfg.consumer.pe_ip)
    nic_with_ip(resources, cfg.provider.col_ip)


# ----------------------------------------------------------------------------- hygiene


def test_no_nsg_rule_admits_the_internet(committed_stack, graph_of, lab_config_of):
    resources = graph_of(committed_stack)
    cfg = lab_config_of(committed_stack)
    rules = [rule for nsg in of_type(resources, NETWORK + "NetworkSecurityGroup")
             for rule in nsg["inputs"].get("securityRules") or []]
    rules += [r["inputs"] for r in of_type(resources, NETWORK + "SecurityRule")]
    assert rules
    for rule in rules:
        sources = [rule.get("sourceAddressPrefix"), *(rule.get("sourceAddressPrefixes") or [])]
        sources = [s for s in sources if s is not None]
        assert sources, rule
        for source in sources:
            assert source.strip().lower() not in facts.OPEN_SOURCES, rule
            if "/" in source:
                assert ipaddress.ip_network(source).prefixlen > 0, rule
        if rule.get("destinationPortRange") == "22":
            assert sources == [cfg.operator_cidr], rule
        if rule.get("protocol") == "Udp":
            assert sources == ["VirtualNetwork"], rule
    # every NIC carries an NSG (Standard public IPs are closed without one, and must be)
    for nic in of_type(resources, NIC):
        assert nic["inputs"]["networkSecurityGroup"]["id"]


def test_every_vm_is_key_only_ubuntu_2404_and_not_v6(committed_stack, graph_of, lab_config_of):
    vms = of_type(graph_of(committed_stack), VM)
    cfg = lab_config_of(committed_stack)
    assert vms
    for vm in vms:
        inputs = vm["inputs"]
        linux = inputs["osProfile"]["linuxConfiguration"]
        assert linux["disablePasswordAuthentication"] is True
        assert "adminPassword" not in inputs["osProfile"]
        [key] = linux["ssh"]["publicKeys"]
        assert key["keyData"] == cfg.ssh_public_key
        assert key["path"] == f"/home/{cfg.admin_username}/.ssh/authorized_keys"
        assert not facts.is_v6_size(inputs["hardwareProfile"]["vmSize"])
        image = inputs["storageProfile"]["imageReference"]
        assert (image["publisher"], image["offer"], image["sku"]) == (
            "Canonical", "ubuntu-24_04-lts", "server")
        disk = inputs["storageProfile"]["osDisk"]
        assert disk["managedDisk"]["storageAccountType"] == "Standard_LRS"
        assert base64.b64decode(inputs["osProfile"]["customData"]).startswith(b"#cloud-config")


def test_every_taggable_resource_has_the_four_tags(committed_stack, graph_of, lab_config_of):
    resources = [r for r in graph_of(committed_stack) if r["type"].startswith("azure-native:")]
    cfg = lab_config_of(committed_stack)
    checked = 0
    for resource in resources:
        if not taggable(resource["type"]):
            continue
        tags = resource["inputs"].get("tags") or {}
        assert set(TAG_KEYS) <= set(tags), (resource["urn"], tags)
        assert all(tags[key] for key in TAG_KEYS), (resource["urn"], tags)
        assert tags["project"] == cfg.project
        assert tags["stack"] == committed_stack
        # The cost guardrail: everything says when it may be deleted ("unset" outside matrix).
        assert tags["expires-on"] == (cfg.expires_on or "unset"), resource["urn"]
        assert set(tags["scenario"].split("+")) <= set(cfg.scenarios), resource["urn"]
        checked += 1
    assert checked > len(resources) // 2  # the SDK check found the taggable ones


def test_taggable_is_read_from_the_sdk():
    assert taggable(NETWORK + "VirtualNetwork")
    assert not taggable(NETWORK + "Subnet")
    assert not taggable(TAP_CONFIG)


# ----------------------------------------------------------------------------- outputs


def test_stack_outputs_are_the_resources_own_values(committed_stack, run_of, lab_config_of):
    run = run_of(committed_stack)
    cfg = lab_config_of(committed_stack)
    outputs = run.outputs
    group = one(of_type(run.resources, "azure-native:resources:ResourceGroup"), "RG")
    assert outputs["resource_group"] == group["inputs"]["resourceGroupName"]
    assert sorted(outputs["scenarios"]) == sorted(cfg.scenarios)
    pls_alias = outputs["collector"]["pls_alias"]
    assert pls_alias.startswith("provider-pls.") and pls_alias.endswith(".azure.privatelinkservice")
    assert outputs["collector"]["ip"] == str(cfg.provider.col_ip)
    per_consumer = [(s, v) for s, values in outputs["scenarios"].items()
                    for v in (values["tenants"] if s == "msp" else [values])]
    assert len(per_consumer) == len(consumer_names(cfg.scenarios, cfg.msp_tenants))
    for scenario, values in per_consumer:
        assert values["vm_src"]["ip"] == str(cfg.consumer.vm_src_ip)
        # What ARM allocated (the mocks: the first free address of snet-pe), read back.
        assert values["pe_ip"] == str(cfg.consumer.pe_ip or cfg.consumer.snet_pe[4])
        assert values["pls_alias"] == pls_alias
        hosts = [values["vm_src"]["ssh"], values["collector"]["ssh"]]
        if scenario in {"b2", "a", "msp"}:
            assert values["proxy"]["ip"] == str(cfg.consumer.proxy_ip)
            hosts += [values["proxy"]["ssh"], values["vm_client"]["ssh"]]
        if scenario == "b3":
            assert [p["ip"] for p in values["proxies"]] == [
                str(cfg.consumer.proxy_ip), str(cfg.consumer.proxy2_ip)]
            hosts += [p["ssh"] for p in values["proxies"]] + [values["vm_client"]["ssh"]]
        for host in hosts:
            user, _, address = host.partition("@")
            assert user == cfg.admin_username
            # the mocks' public IPs come from TEST-NET-2: an output can't be an invented one
            assert ipaddress.ip_address(address) in mocks.MOCK_PUBLIC_RANGE
        if scenario == "r1":
            assert values["pe_nic_ip_configuration_id"].startswith(
                values["pe_nic_id"] + "/ipConfigurations/")


@pytest.mark.parametrize("scenario", ["c1"])
def test_scenarios_not_built_yet_fail_with_one_line(scenario):
    from vtaplab.program import config, stack

    cfg = config.from_values(
        {"vtaplab:scenarios": [scenario], "vtaplab:sshPublicKey": mocks.TEST_SSH_PUBLIC_KEY,
         "vtaplab:operatorCidr": mocks.TEST_OPERATOR_CIDR}, stack="t")
    with pytest.raises(stack.StackError,
                       match=r"vtaplab:scenarios.*accepted: r1, b1, b2, a, b3, msp"):
        stack.check_composable(cfg)
