"""Mermaid diagrams of a resource graph: VNets as subgraphs, Private Link, vTAP and proxy edges."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vtaplab import facts
from vtaplab.arm_ids import segment


def _node(kind: str, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{kind}_{name}")


def to_mermaid(graph: Sequence[Mapping[str, Any]]) -> str:
    """A flowchart: VNets as subgraphs holding VMs, PEs, LBs and PLSs; PE -> PLS -> ILB ->
    collector; the vTAP edge from each tapped VM to its destination; the proxy's rewrite."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for resource in graph:
        by_type.setdefault(str(resource["type"]).rsplit(":", 1)[-1], []).append(resource)

    def inputs(resource: Mapping[str, Any]) -> Mapping[str, Any]:
        return resource.get("inputs") or {}

    nics = {inputs(n).get("networkInterfaceName"): inputs(n)
            for n in by_type.get("NetworkInterface", [])}
    members: dict[str, list[str]] = {}  # vnet name -> node lines
    edges: list[str] = []
    vm_by_nic: dict[str, str] = {}
    vm_user_data: dict[str, str] = {}
    vnet_of: dict[str, str | None] = {}  # node -> its VNet's name (a rewrite stays in its VNet)

    def place(subnet_id: object, line: str) -> None:
        members.setdefault(segment(subnet_id, "virtualNetworks") or "?", []).append(line)

    for vm in by_type.get("VirtualMachine", []):
        name = str(inputs(vm).get("vmName") or vm["name"])
        nic_name = segment(
            ((inputs(vm).get("networkProfile") or {}).get("networkInterfaces") or [{}])[0]
            .get("id"), "networkInterfaces")
        nic = nics.get(nic_name) or {}
        config = (nic.get("ipConfigurations") or [{}])[0]
        size = (inputs(vm).get("hardwareProfile") or {}).get("vmSize", "")
        forwarding = ", IP forwarding" if nic.get("enableIPForwarding") else ""
        place((config.get("subnet") or {}).get("id"),
              f'{_node("vm", name)}["VM {name}<br/>{config.get("privateIPAddress", "")}'
              f' {size}{forwarding}"]')
        vm_by_nic[str(nic_name)] = _node("vm", name)
        vnet_of[_node("vm", name)] = segment((config.get("subnet") or {}).get("id"),
                                              "virtualNetworks")
        custom = (inputs(vm).get("osProfile") or {}).get("customData") or ""
        try:
            vm_user_data[_node("vm", name)] = base64.b64decode(custom).decode(errors="replace")
        except ValueError:
            vm_user_data[_node("vm", name)] = ""
    for scale_set in by_type.get("VirtualMachineScaleSet", []):
        node, subnet, lines, user_data = _scale_set_node(inputs(scale_set), scale_set["name"])
        place(subnet, lines[0])
        edges.extend(lines[1:])
        vm_user_data[node] = user_data
        vnet_of[node] = segment(subnet, "virtualNetworks")
    for lb in by_type.get("LoadBalancer", []):
        name = str(inputs(lb).get("loadBalancerName") or lb["name"])
        frontend = (inputs(lb).get("frontendIPConfigurations") or [{}])[0]
        rules = ", ".join(f'{r.get("protocol")}/{r.get("frontendPort")}'
                          for r in inputs(lb).get("loadBalancingRules") or []) or "no rules"
        place((frontend.get("subnet") or {}).get("id"),
              f'{_node("lb", name)}[/"ILB {name}<br/>{frontend.get("privateIPAddress", "")}'
              f' {rules}"/]')
    for nic_name, nic in nics.items():
        for config in nic.get("ipConfigurations") or []:
            for pool in config.get("loadBalancerBackendAddressPools") or []:
                lb_name = segment(pool.get("id"), "loadBalancers")
                if lb_name and nic_name in vm_by_nic:
                    edges.append(f'{_node("lb", lb_name)} -->|backend pool| '
                                 f'{vm_by_nic[str(nic_name)]}')
    pe_ips: dict[str, str] = {}
    for pe in by_type.get("PrivateEndpoint", []):
        name = str(inputs(pe).get("privateEndpointName") or pe["name"])
        ip = ((inputs(pe).get("ipConfigurations") or [{}])[0]).get("privateIPAddress", "")
        pe_ips[_node("pe", name)] = str(ip)
        vnet_of[_node("pe", name)] = segment((inputs(pe).get("subnet") or {}).get("id"),
                                              "virtualNetworks")
        place((inputs(pe).get("subnet") or {}).get("id"),
              f'{_node("pe", name)}(["PE {name}<br/>{ip or "dynamic"}"])')
        for connection in inputs(pe).get("privateLinkServiceConnections") or []:
            pls = segment(connection.get("privateLinkServiceId"), "privateLinkServices")
            if pls:
                edges.append(f'{_node("pe", name)} -->|Private Link| {_node("pls", pls)}')
    for pls in by_type.get("PrivateLinkService", []):
        name = str(inputs(pls).get("serviceName") or pls["name"])
        configs = inputs(pls).get("ipConfigurations") or [{}]
        nat = " ".join(str(c.get("privateIPAddress", "")) for c in configs)
        place((configs[0].get("subnet") or {}).get("id"),
              f'{_node("pls", name)}{{{{"PLS {name}<br/>NAT {nat}"}}}}')
        for frontend in inputs(pls).get("loadBalancerFrontendIpConfigurations") or []:
            lb_name = segment(frontend.get("id"), "loadBalancers")
            if lb_name:
                edges.append(f'{_node("pls", name)} --> {_node("lb", lb_name)}')
        destination = inputs(pls).get("destinationIPAddress")
        if destination:
            for nic_name, nic in nics.items():
                addresses = {c.get("privateIPAddress") for c in nic.get("ipConfigurations") or []}
                if destination in addresses and nic_name in vm_by_nic:
                    edges.append(f'{_node("pls", name)} -->|Direct Connect {destination}| '
                                 f'{vm_by_nic[str(nic_name)]}')
    taps: dict[str, str] = {}
    for tap in by_type.get("VirtualNetworkTap", []):
        tap_inputs = inputs(tap)
        name = str(tap_inputs.get("tapName") or tap["name"])
        port = tap_inputs.get("destinationPort", "")
        nic_config = (tap_inputs.get("destinationNetworkInterfaceIPConfiguration") or {}).get("id")
        lb_frontend = (tap_inputs.get("destinationLoadBalancerFrontEndIPConfiguration")
                       or {}).get("id")
        if nic_config:
            target = vm_by_nic.get(str(segment(nic_config, "networkInterfaces")), "unknown")
        else:
            target = _node("lb", str(segment(lb_frontend, "loadBalancers")))
        taps[name] = f"-. vTAP {name} UDP/{port} .-> {target}"
    for config in by_type.get("NetworkInterfaceTapConfiguration", []):
        config_inputs = inputs(config)
        source = vm_by_nic.get(str(config_inputs.get("networkInterfaceName")))
        tap_name = segment((config_inputs.get("virtualNetworkTap") or {}).get("id"),
                            "virtualNetworkTaps")
        if source and tap_name in taps:
            edges.append(f"{source} {taps[tap_name]}")
    # The proxy's rewrite lives in its cloud-init: draw it only where the user data names a PE
    # of the proxy's own VNet (msp tenants share addresses: every tenant's PE has the same IP).
    for vm_node, user_data in vm_user_data.items():
        rewrite = re.search(r"--target (\S+)", user_data)
        for pe_node, ip in pe_ips.items():
            # A dynamic PE: the proxy's target is the address read back from ARM.
            if (rewrite and (not ip or rewrite.group(1) == ip)
                    and vnet_of.get(vm_node) == vnet_of[pe_node]):
                edges.append(f"{vm_node} -->|UDP/{facts.VXLAN_PORT} rewritten to the PE| "
                             f"{pe_node}")

    lines = ["flowchart LR"]
    for vnet in by_type.get("VirtualNetwork", []):
        name = str(inputs(vnet).get("virtualNetworkName") or vnet["name"])
        space = " ".join((inputs(vnet).get("addressSpace") or {}).get("addressPrefixes") or [])
        lines.append(f'  subgraph {_node("vnet", name)}["VNet {name} {space}"]')
        lines += [f"    {line}" for line in members.pop(name, [])]
        lines.append("  end")
    for leftover in members.values():
        lines += [f"  {line}" for line in leftover]
    lines += [f"  {edge}" for edge in edges]
    return "\n".join(lines) + "\n"


def _scale_set_node(scale_set: Mapping[str, Any], fallback: str
                    ) -> tuple[str, object, list[str], str]:
    """A scale set's node (name, size x capacity, zones, IP forwarding), the subnet it sits
    in, its node line followed by its backend-pool edges, and its user data (the rewrite)."""
    name = str(scale_set.get("vmScaleSetName") or fallback)
    node = _node("vmss", name)
    sku = scale_set.get("sku") or {}
    profile = scale_set.get("virtualMachineProfile") or {}
    configs = (profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or [{}]
    ip_config = (configs[0].get("ipConfigurations") or [{}])[0]
    subnet = (ip_config.get("subnet") or {}).get("id")
    zones = ",".join(scale_set.get("zones") or []) or "regional"
    forwarding = ", IP forwarding" if configs[0].get("enableIPForwarding") else ""
    lines = [f'{node}[["VM scale set {name}<br/>{sku.get("capacity", "?")} x '
             f'{sku.get("name", "")}, zones {zones}{forwarding}"]]']
    for pool in ip_config.get("loadBalancerBackendAddressPools") or []:
        lb_name = segment(pool.get("id"), "loadBalancers")
        if lb_name:
            lines.append(f'{_node("lb", lb_name)} -->|backend pool| {node}')
    custom = (profile.get("osProfile") or {}).get("customData") or ""
    try:
        user_data = base64.b64decode(custom).decode(errors="replace")
    except ValueError:
        user_data = ""
    return node, subnet, lines, user_data
