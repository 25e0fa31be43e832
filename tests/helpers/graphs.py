"""Hand-built resource graphs in the shape ``python -m vtaplab graph STACK --json`` prints.

Azure-native wire names, ARM ids as the mocks make them. ``b2_graph()`` is a compliant b2
stack; tests break one thing in it. ``_mutations`` breaks a program-built b2 graph.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from vtaplab import PROJECT_ROOT
from vtaplab.preflight import mocks, rules

SUB = f"/subscriptions/{mocks.SUBSCRIPTION_ID}"


RG = "rg-vtaplab-b2"


UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's unknown-string sentinel


OPERATOR = "203.0.113.7/32"


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere in a resource's inputs (dicts and lists walked): where ARM ids and
    references hide, whatever property holds them."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def arm_id(collection: str, name: str, *children: str, provider: str = "Microsoft.Network") -> str:
    return "/".join([f"{SUB}/resourceGroups/{RG}/providers/{provider}/{collection}/{name}",
                     *children]).rstrip("/")


def urn(typ: str, name: str, parents: tuple[str, ...] = ()) -> str:
    chain = "$".join((*parents, typ))
    return f"urn:pulumi:b2::vtaplab::{chain}::{name}"


class G:
    """A graph under construction: components and resources with urn/parent wired."""

    def __init__(self, entries: list[dict[str, Any]] | None = None) -> None:
        self.entries: list[dict[str, Any]] = entries if entries is not None else []

    def add(self, typ: str, name: str, inputs: dict[str, Any],
            parent: dict[str, Any] | None = None) -> dict[str, Any]:
        parents: tuple[str, ...] = ()
        if parent is not None:
            parents = tuple(parent["urn"].split("::")[2].split("$"))
        entry = {"urn": urn(typ, name, parents), "type": typ, "name": name,
                 "parent": parent["urn"] if parent else None, "inputs": inputs}
        self.entries.append(entry)
        return entry


def _nsg_rule(name: str, priority: int, protocol: str, port: str, source: str,
              access: str = "Allow") -> dict[str, Any]:
    return {"name": name, "priority": priority, "protocol": protocol, "access": access,
            "direction": "Inbound", "sourceAddressPrefix": source, "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": port}


def _vm(g: G, name: str, vnet: str, subnet: str, ip: str, parent: dict[str, Any], *,
        forwarding: bool = False, rules_: tuple[dict[str, Any], ...] = (),
        pools: tuple[str, ...] = (), size: str = "Standard_B2s") -> None:
    comp = g.add("vtaplab:index:LinuxVm", name, {}, parent)
    g.add(rules.T_NSG, f"{name}-nsg", {
        "networkSecurityGroupName": f"{name}-nsg", "resourceGroupName": RG,
        "securityRules": [_nsg_rule("ssh-operator", 100, "Tcp", "22", OPERATOR),
                          *copy.deepcopy(list(rules_))]}, comp)
    cfg: dict[str, Any] = {
        "name": "ipconfig1", "primary": True, "privateIPAllocationMethod": "Static",
        "privateIPAddress": ip,
        "subnet": {"id": arm_id("virtualNetworks", vnet, "subnets", subnet)}}
    if pools:
        cfg["loadBalancerBackendAddressPools"] = [{"id": p} for p in pools]
    g.add(rules.T_NIC, f"{name}-nic", {
        "networkInterfaceName": f"{name}-nic", "resourceGroupName": RG, "location": "uksouth",
        "enableIPForwarding": forwarding, "ipConfigurations": [cfg],
        "networkSecurityGroup": {"id": arm_id("networkSecurityGroups", f"{name}-nsg")}}, comp)
    g.add(rules.T_VM, f"{name}-vm", {
        "vmName": f"{name}-vm", "resourceGroupName": RG, "location": "uksouth",
        "hardwareProfile": {"vmSize": size},
        "networkProfile": {"networkInterfaces": [
            {"id": arm_id("networkInterfaces", f"{name}-nic"), "primary": True}]},
        "osProfile": {"adminUsername": "azureuser", "computerName": name,
                      "linuxConfiguration": {"disablePasswordAuthentication": True,
                                             "ssh": {"publicKeys": [{"keyData": "ssh-ed25519 A",
                                                                     "path": "/home/x"}]}}}},
        comp)


def _vnet(g: G, name: str, space: str, subnets: dict[str, str], parent: dict[str, Any]) -> None:
    g.add(rules.T_VNET, name, {"virtualNetworkName": name, "resourceGroupName": RG,
                               "location": "uksouth",
                               "addressSpace": {"addressPrefixes": [space]}}, parent)
    for sname, prefix in subnets.items():
        g.add(rules.T_SUBNET, f"{name}-{sname}", {
            "subnetName": sname, "virtualNetworkName": name, "resourceGroupName": RG,
            "addressPrefix": prefix}, parent)


VXLAN_FROM_VNET = _nsg_rule("vxlan-vnet", 110, "Udp", "4789", "VirtualNetwork")


PE_ID = arm_id("privateEndpoints", "b2-pe")


POOL_ID = arm_id("loadBalancers", "col-ilb", "backendAddressPools", "be")


FE_ID = arm_id("loadBalancers", "col-ilb", "frontendIPConfigurations", "fe")


PROXY_IPCFG = arm_id("networkInterfaces", "proxy-nic", "ipConfigurations", "ipconfig1")


PE_NIC_IPCFG = arm_id("networkInterfaces", "b2-pe-nic", "ipConfigurations", "pe-ip")


def provider_side(g: G) -> None:
    col = g.add("vtaplab:index:CollectorService", "col", {})
    _vnet(g, "col-vnet", "10.40.0.0/16", {"snet-pls": "10.40.2.0/24",
                                           "snet-col": "10.40.3.0/24"}, col)
    pls_subnet = {"id": arm_id("virtualNetworks", "col-vnet", "subnets", "snet-pls")}
    g.add(rules.T_LB, "col-ilb", {
        "loadBalancerName": "col-ilb", "resourceGroupName": RG, "location": "uksouth",
        "sku": {"name": "Standard"},
        "frontendIPConfigurations": [{"name": "fe", "privateIPAddress": "10.40.2.4",
                                      "privateIPAllocationMethod": "Static",
                                      "subnet": pls_subnet}],
        "backendAddressPools": [{"name": "be"}],
        "probes": [{"name": "ssh", "protocol": "Tcp", "port": 22}],
        "loadBalancingRules": [{"name": "vxlan", "protocol": "Udp", "frontendPort": 4789,
                                "backendPort": 4789, "frontendIPConfiguration": {"id": FE_ID},
                                "backendAddressPool": {"id": POOL_ID},
                                "probe": {"id": arm_id("loadBalancers", "col-ilb", "probes",
                                                       "ssh")}}]}, col)
    g.add(rules.T_PLS, "col-pls", {
        "serviceName": "col-pls", "resourceGroupName": RG, "location": "uksouth",
        "loadBalancerFrontendIpConfigurations": [{"id": FE_ID}],
        "ipConfigurations": [{"name": f"nat{i}", "privateIPAddress": ip,
                              "privateIPAllocationMethod": "Static", "subnet": pls_subnet}
                             for i, ip in enumerate(("10.40.2.5", "10.40.2.6"))]}, col)
    _vm(g, "col", "col-vnet", "snet-col", "10.40.3.4", col, rules_=(VXLAN_FROM_VNET,),
        pools=(POOL_ID,))


def consumer_side(g: G, *, proxy: bool = True) -> dict[str, Any]:
    src = g.add("vtaplab:index:SourceVnet", "b2", {})
    _vnet(g, "b2-vnet", "10.30.0.0/16", {"snet-src": "10.30.1.0/24", "snet-pe": "10.30.3.0/24",
                                         "snet-proxy": "10.30.4.0/24"}, src)
    _vm(g, "src", "b2-vnet", "snet-src", "10.30.1.4", src,
        rules_=(_nsg_rule("http-vnet", 200, "Tcp", "80", "VirtualNetwork"),))
    g.add(rules.T_PE, "b2-pe", {
        "privateEndpointName": "b2-pe", "resourceGroupName": RG, "location": "uksouth",
        "customNetworkInterfaceName": "b2-pe-nic",
        "subnet": {"id": arm_id("virtualNetworks", "b2-vnet", "subnets", "snet-pe")},
        "ipConfigurations": [{"name": "pe-ip", "privateIPAddress": "10.30.3.4"}],
        "privateLinkServiceConnections": [{"name": "to-pls",
                                           "privateLinkServiceId": arm_id("privateLinkServices",
                                                                          "col-pls")}]}, src)
    if proxy:
        px = g.add("vtaplab:index:ProxyNat", "b2-proxy", {})
        _vm(g, "proxy", "b2-vnet", "snet-proxy", "10.30.4.4", px, forwarding=True,
            rules_=(VXLAN_FROM_VNET,))
    return src


def add_vtap(g: G | list[dict[str, Any]], destination: dict[str, Any], *, name: str = "b2",
             location: str = "uksouth", sources: tuple[str, ...] = ("src-nic",)) -> None:
    g = g if isinstance(g, G) else G(g)
    att = g.add("vtaplab:index:VtapAttachment", name, {})
    g.add(rules.T_TAP, f"{name}-vtap", {"tapName": f"{name}-vtap", "resourceGroupName": RG,
                                        "location": location, "destinationPort": 4789,
                                        **destination}, att)
    for i, nic in enumerate(sources):
        g.add(rules.T_TAP_CONFIG, f"{name}-src{i}", {
            "tapConfigurationName": f"{name}-cfg", "networkInterfaceName": nic,
            "resourceGroupName": RG,
            "virtualNetworkTap": {"id": arm_id("virtualNetworkTaps", f"{name}-vtap")}}, att)


def b2_graph() -> list[dict[str, Any]]:
    g = G()
    g.add(rules.T_RG, "rg", {"resourceGroupName": RG, "location": "uksouth"})
    provider_side(g)
    consumer_side(g)
    add_vtap(g, {"destinationNetworkInterfaceIPConfiguration": {"id": PROXY_IPCFG}})
    return copy.deepcopy(g.entries)  # no dict shared between graphs or entries


def attempt_entry(attempt: str, scenario: str, **ids: str) -> dict[str, Any]:
    """A ``components.rejected_attempt.RejectedAttempt`` as the graph records it."""
    typ = "pulumi-python:dynamic/vtaplab:RejectedAttempt"
    return {"urn": urn(typ, f"{scenario}-{attempt}"), "type": typ,
            "name": f"{scenario}-{attempt}", "parent": None,
            "inputs": {"__provider": {"4dabf18193072939515e22adb298388d":
                                      "1b47061264138c4ac30d75fd1eb44270", "value": "gASV"},
                       "scenario": scenario, "attempt": attempt, "stack": scenario,
                       "location": "uksouth", "port": 4789, "tags": {},
                       "evidence_root": "evidence", **ids}}


def r1_graph() -> list[dict[str, Any]]:
    g = G()
    g.add(rules.T_RG, "rg", {"resourceGroupName": RG, "location": "uksouth"})
    provider_side(g)
    consumer_side(g, proxy=False)
    g.entries.append(attempt_entry("vtap-pe-destination", "r1", private_endpoint_id=PE_ID,
                                   target_id=arm_id("virtualNetworkTaps", "r1-vtap")))
    return copy.deepcopy(g.entries)


def b1_graph() -> list[dict[str, Any]]:
    g = G()
    g.add(rules.T_RG, "rg", {"resourceGroupName": RG, "location": "uksouth"})
    provider_side(g)
    consumer_side(g, proxy=False)
    g.entries.append(attempt_entry(
        "nic-pool", "b1", private_endpoint_id=PE_ID,
        target_id=arm_id("loadBalancers", "b1-ilb", "backendAddressPools", "be")))
    g.entries.append(attempt_entry(
        "ip-pool", "b1", private_endpoint_id=PE_ID,
        target_id=arm_id("loadBalancers", "b1-ilb", "backendAddressPools", "pe-ip")))
    return copy.deepcopy(g.entries)


def node(graph: list[dict[str, Any]], name: str) -> dict[str, Any]:
    hits = [e for e in graph if e["name"] == name]
    assert len(hits) == 1, name
    return hits[0]


def direct_connect_graph(location: str = "centralus") -> list[dict[str, Any]]:
    g = b2_graph()
    for e in g:
        if "location" in e["inputs"]:
            e["inputs"]["location"] = location
    pls = node(g, "col-pls")["inputs"]
    pls.pop("loadBalancerFrontendIpConfigurations")
    pls["destinationIPAddress"] = "10.40.3.4"
    return g




STACKS = mocks.stack_names(PROJECT_ROOT)


def _mutations(graph: list[dict[str, Any]]) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """(expected rule, mutated graph) for each mutation the issue names, on any b2 graph."""
    out: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    proxies = [e for e in graph if e["type"] == rules.T_NIC
               and e["inputs"].get("enableIPForwarding") is True]
    assert proxies, "the b2 graph has no NIC with IP forwarding: no proxy to break"
    g = copy.deepcopy(graph)
    next(e for e in g if e["urn"] == proxies[0]["urn"])["inputs"]["enableIPForwarding"] = False
    out["proxy NIC without forwarding"] = ("VTAP020", g)

    g = copy.deepcopy(graph)
    nsg = next(e for e in g if e["type"] == rules.T_NSG and e["inputs"].get("securityRules"))
    nsg["inputs"]["securityRules"].append({
        "name": "ssh-anywhere", "priority": 150, "protocol": "Tcp", "access": "Allow",
        "direction": "Inbound", "sourceAddressPrefix": "*", "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": "22"})
    out["open SSH rule"] = ("VTAP040", g)

    g = copy.deepcopy(graph)
    vnets = [e for e in g if e["type"] == rules.T_VNET]
    g.append({"urn": urn(rules.T_PEERING, "consumer-to-provider"), "type": rules.T_PEERING,
              "name": "consumer-to-provider", "parent": None,
              "inputs": {"virtualNetworkName": vnets[0]["inputs"].get("virtualNetworkName"),
                         "remoteVirtualNetwork": {"id": arm_id("virtualNetworks", "other")}}})
    out["a peering"] = ("VTAP030", g)

    g = copy.deepcopy(graph)
    tapped = {e["inputs"].get("networkInterfaceName") for e in g if e["type"] == rules.T_TAP_CONFIG}
    vm = next(e for e in g if e["type"] == rules.T_VM and any(
        str(n.get("id", "")).rsplit("/", 1)[-1] in tapped
        for n in e["inputs"]["networkProfile"]["networkInterfaces"]))
    vm["inputs"]["hardwareProfile"]["vmSize"] = "Standard_D2s_v6"
    out["a v6 size on the tapped VM"] = ("VTAP008", g)
    return out


def _attempts(graph: list[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
    return [e for e in graph if "dynamic" in e["type"]
            and e["inputs"].get("scenario") == scenario]
