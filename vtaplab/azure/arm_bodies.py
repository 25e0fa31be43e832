"""The ARM request bodies the lab is about, built in ONE place from typed parameters.

The rejected attempts PUT these bodies over REST; the Pulumi program's ``VtapAttachment``
builds its ``VirtualNetworkTap`` from the same :class:`VtapParams` via
:func:`vtap_resource_kwargs`, so the attempt r1 makes is exactly the resource b2 makes except
for the destination. The wire names (camelCase) are ARM's; the kwargs (snake_case) are
pulumi-azure-native's, and :func:`vtap_body` is derived from the same fields.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vtaplab.facts import VXLAN_PORT


@dataclass(frozen=True)
class VtapParams:
    """A Virtual Network TAP. Exactly one destination: a NIC ip-configuration or an ILB
    frontend ip-configuration. Ids may be ``pulumi.Output[str]`` in
    :func:`vtap_resource_kwargs`; :func:`vtap_body` needs plain strings."""

    location: str
    destination_nic_ip_configuration_id: Any = None
    destination_lb_frontend_ip_configuration_id: Any = None
    port: int = VXLAN_PORT
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        has_nic = self.destination_nic_ip_configuration_id is not None
        has_lb = self.destination_lb_frontend_ip_configuration_id is not None
        if has_nic == has_lb:
            raise ValueError("VtapParams: give exactly one destination: "
                             "destination_nic_ip_configuration_id or "
                             "destination_lb_frontend_ip_configuration_id")
        if not 1 <= int(self.port) <= 65535:
            raise ValueError(f"VtapParams.port: {self.port!r} is not a UDP port (1-65535)")
        if not str(self.location).strip():
            raise ValueError("VtapParams.location: empty; give an Azure region, e.g. uksouth")


def vtap_resource_kwargs(p: VtapParams) -> dict[str, Any]:
    """Keyword arguments for ``pulumi_azure_native.network.VirtualNetworkTap`` (add the
    resource group and name)."""
    kwargs: dict[str, Any] = {"location": p.location, "destination_port": int(p.port),
                              "tags": dict(p.tags)}
    if p.destination_nic_ip_configuration_id is not None:
        kwargs["destination_network_interface_ip_configuration"] = {
            "id": p.destination_nic_ip_configuration_id}
    else:
        kwargs["destination_load_balancer_front_end_ip_configuration"] = {
            "id": p.destination_lb_frontend_ip_configuration_id}
    return kwargs


# pulumi-azure-native's snake_case names -> ARM's wire names, for the fields above.
_WIRE_NAMES = {
    "destination_port": "destinationPort",
    "destination_network_interface_ip_configuration": "destinationNetworkInterfaceIPConfiguration",
    "destination_load_balancer_front_end_ip_configuration":
        "destinationLoadBalancerFrontEndIPConfiguration",
}


def vtap_body(p: VtapParams) -> dict[str, Any]:
    """The ARM PUT body of ``Microsoft.Network/virtualNetworkTaps``."""
    kwargs = vtap_resource_kwargs(p)
    for key in ("destination_network_interface_ip_configuration",
                "destination_load_balancer_front_end_ip_configuration"):
        value = kwargs.get(key)
        if value is not None and not isinstance(value["id"], str):
            raise TypeError(f"vtap_body: {key}.id must be a resolved string, "
                            f"got {type(value['id']).__name__}")
    props = {_WIRE_NAMES[k]: v for k, v in kwargs.items() if k in _WIRE_NAMES}
    body: dict[str, Any] = {"location": kwargs["location"], "properties": props}
    if kwargs["tags"]:
        body["tags"] = kwargs["tags"]
    return body


def nic_with_backend_pool(nic: Mapping[str, Any], pool_id: str,
                          ip_configuration: str | None = None) -> dict[str, Any]:
    """A NIC's GET body with ``pool_id`` added to one ip-configuration's
    ``loadBalancerBackendAddressPools`` — the body of b1's NIC edit (what ``az network nic
    ip-config address-pool add`` PUTs). ``ip_configuration`` names it; default: the first.
    The input is not modified."""
    body = copy.deepcopy(dict(nic))
    # Read-only at the top level: ARM ignores them, but an etag would turn the PUT into a
    # conditional one, and the evidence should show the edit, not the noise.
    for key in ("etag", "type"):
        body.pop(key, None)
    configs = body.get("properties", {}).get("ipConfigurations") or []
    if not configs:
        raise ValueError(f"NIC {nic.get('id', '?')} has no ipConfigurations")
    chosen = next((c for c in configs if c.get("name") == ip_configuration), None) \
        if ip_configuration else configs[0]
    if chosen is None:
        names = ", ".join(str(c.get("name")) for c in configs)
        raise ValueError(f"NIC {nic.get('id', '?')}: no ip-configuration {ip_configuration!r}; "
                         f"it has: {names}")
    props = chosen.setdefault("properties", {})
    pools = props.setdefault("loadBalancerBackendAddressPools", [])
    if not any(str(pool.get("id", "")).lower() == pool_id.lower() for pool in pools):
        pools.append({"id": pool_id})
    return body


def ip_backend_pool_body(*, ip_address: str, virtual_network_id: str,
                         address_name: str = "private-endpoint") -> dict[str, Any]:
    """The PUT body of an IP-based ``loadBalancers/backendAddressPools`` holding one address
    (b1's second attempt: the PE's IP in the source-side ILB's pool)."""
    return {"properties": {"loadBalancerBackendAddresses": [
        {"name": address_name,
         "properties": {"ipAddress": ip_address,
                        "virtualNetwork": {"id": virtual_network_id}}}]}}
