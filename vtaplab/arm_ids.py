"""ARM resource types and ids: one row per azure-native type, and the functions that build and
parse ids from those rows. Imports nothing of the project.

An ARM id is ``/subscriptions/{sub}/resourceGroups/{rg}/providers/{Provider}/{collection}/
{name}[/{child collection}/{child name}...]`` (ARM template reference, "resourceId"); a resource
group's own id stops after ``resourceGroups/{rg}``. Adding a resource type the program registers
is one row in ``TYPES``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESOURCE_GROUP = "azure-native:resources:ResourceGroup"
VTAP = "azure-native:network:VirtualNetworkTap"
VM = "azure-native:compute:VirtualMachine"
LOAD_BALANCER = "azure-native:network:LoadBalancer"
AZURE_FIREWALL = "azure-native:network:AzureFirewall"


@dataclass(frozen=True)
class ArmType:
    """How ARM names and addresses one azure-native resource type."""

    token: str  # the Pulumi type token, "azure-native:network:Subnet"
    provider: str  # "Microsoft.Network" ("" for a resource group: no /providers/ part)
    collections: tuple[str, ...]  # ("virtualNetworks", "subnets"): parent first
    name_inputs: tuple[str, ...]  # the inputs naming each level: ("virtualNetworkName", ...)
    # Sub-resources ARM gives an id inside this resource's id (``{id}/{collection}/{name}``).
    sub_resources: tuple[str, ...] = ()

    @property
    def name_input(self) -> str:
        """The input holding the resource's own Azure name."""
        return self.name_inputs[-1]

    @property
    def parent_input(self) -> str | None:
        """The input naming its parent resource, for a child type (a subnet's VNet)."""
        return self.name_inputs[-2] if len(self.name_inputs) > 1 else None

    @property
    def path(self) -> str:
        """Its collections as a key: ``virtualNetworks/subnets``."""
        return "/".join(self.collections)


_NET = "Microsoft.Network"
TYPES: tuple[ArmType, ...] = (
    ArmType(RESOURCE_GROUP, "", ("resourceGroups",), ("resourceGroupName",)),
    ArmType("azure-native:network:VirtualNetwork", _NET, ("virtualNetworks",),
            ("virtualNetworkName",)),
    ArmType("azure-native:network:Subnet", _NET, ("virtualNetworks", "subnets"),
            ("virtualNetworkName", "subnetName")),
    ArmType("azure-native:network:VirtualNetworkPeering", _NET,
            ("virtualNetworks", "virtualNetworkPeerings"),
            ("virtualNetworkName", "virtualNetworkPeeringName")),
    ArmType("azure-native:network:NetworkSecurityGroup", _NET, ("networkSecurityGroups",),
            ("networkSecurityGroupName",)),
    ArmType("azure-native:network:SecurityRule", _NET,
            ("networkSecurityGroups", "securityRules"),
            ("networkSecurityGroupName", "securityRuleName")),
    ArmType("azure-native:network:PublicIPAddress", _NET, ("publicIPAddresses",),
            ("publicIpAddressName",)),
    ArmType("azure-native:network:NetworkInterface", _NET, ("networkInterfaces",),
            ("networkInterfaceName",), sub_resources=("ipConfigurations",)),
    ArmType("azure-native:network:NetworkInterfaceTapConfiguration", _NET,
            ("networkInterfaces", "tapConfigurations"),
            ("networkInterfaceName", "tapConfigurationName")),
    ArmType(LOAD_BALANCER, _NET, ("loadBalancers",),
            ("loadBalancerName",),
            sub_resources=("frontendIPConfigurations", "backendAddressPools", "probes",
                           "loadBalancingRules")),
    ArmType("azure-native:network:LoadBalancerBackendAddressPool", _NET,
            ("loadBalancers", "backendAddressPools"),
            ("loadBalancerName", "backendAddressPoolName")),
    ArmType("azure-native:network:PrivateLinkService", _NET, ("privateLinkServices",),
            ("serviceName",), sub_resources=("ipConfigurations",)),
    ArmType("azure-native:network:PrivateEndpoint", _NET, ("privateEndpoints",),
            ("privateEndpointName",)),
    ArmType(VTAP, _NET, ("virtualNetworkTaps",),
            ("tapName",)),
    ArmType(AZURE_FIREWALL, _NET, ("azureFirewalls",),
            ("azureFirewallName",)),
    ArmType("azure-native:network:VirtualNetworkGateway", _NET, ("virtualNetworkGateways",),
            ("virtualNetworkGatewayName",)),
    ArmType(VM, "Microsoft.Compute", ("virtualMachines",),
            ("vmName",)),
    # b4's proxy tier (components/proxy_tier.py).
    ArmType("azure-native:compute:VirtualMachineScaleSet", "Microsoft.Compute",
            ("virtualMachineScaleSets",), ("vmScaleSetName",)),
    # A VM's auto-shutdown (components/shutdown.py).
    ArmType("azure-native:devtestlab:GlobalSchedule", "Microsoft.DevTestLab", ("schedules",),
            ("name",)),
)
BY_TOKEN: dict[str, ArmType] = {t.token: t for t in TYPES}
BY_PATH: dict[str, ArmType] = {t.path.lower(): t for t in TYPES}


@dataclass(frozen=True)
class ArmRef:
    """A parsed ARM id: ``.../providers/Microsoft.Network/networkInterfaces/nic/ipConfigurations/c``
    is provider ``Microsoft.Network``, collections ``(networkInterfaces, ipConfigurations)`` and
    names ``(nic, c)``."""

    provider: str  # "Microsoft.Network"
    collections: tuple[str, ...]  # ("networkInterfaces", "ipConfigurations")
    names: tuple[str, ...]  # ("nic-proxy", "ipconfig1")
    resource_group: str | None = None
    subscription: str | None = None

    @property
    def top(self) -> str:
        return self.collections[0]

    @property
    def top_name(self) -> str:
        return self.names[0]

    def name_of(self, collection: str) -> str | None:
        """The name after ``collection`` in this id (case-insensitive), or None."""
        for each, name in zip(self.collections, self.names, strict=True):
            if each.lower() == collection.lower():
                return name
        return None


def build(subscription: str, resource_group: str, token: str, *names: str) -> str:
    """The id of a resource of type ``token`` named ``names`` (parent first)."""
    kind = BY_TOKEN[token]
    if len(names) != len(kind.collections):
        raise ValueError(f"{token}: an id needs {len(kind.collections)} name(s) "
                         f"({', '.join(kind.name_inputs)}); got {names!r}")
    group = f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
    if not kind.provider:
        return group
    path = "/".join(f"{c}/{n}" for c, n in zip(kind.collections, names, strict=True))
    return f"{group}/providers/{kind.provider}/{path}"


def azure_name(token: str, name: str, inputs: Mapping[str, Any]) -> str:
    """The Azure name a resource gets: its name input, or Pulumi's name when it has none."""
    kind = BY_TOKEN.get(token)
    value = inputs.get(kind.name_input) if kind else None
    return str(value) if value else name


def id_from_inputs(subscription: str, token: str, name: str, inputs: Mapping[str, Any]) -> str:
    """The id ARM gives a resource registered as ``token``/``name`` with ``inputs``."""
    kind = BY_TOKEN[token]
    if kind.token == RESOURCE_GROUP:
        own = azure_name(token, name, inputs)
        return build(subscription, own, token, own)
    parents = [str(inputs.get(key)) for key in kind.name_inputs[:-1]]
    return build(subscription, str(inputs.get("resourceGroupName")), token,
                 *parents, azure_name(token, name, inputs))


_PROVIDERS = re.compile(r"/providers/(?P<provider>Microsoft\.[A-Za-z]+)/(?P<rest>[^?#]+)",
                        re.IGNORECASE)
_GROUP = re.compile(r"/resourceGroups/(?P<rg>[^/]+)", re.IGNORECASE)
_SUBSCRIPTION = re.compile(r"/subscriptions/(?P<sub>[^/]+)", re.IGNORECASE)


def parse(value: object) -> ArmRef | None:
    """An ARM id's parts, or None for anything that is not one (empty, free text).

    Tolerates a partial id that starts at ``/providers/`` (what a rule writes for a resource
    whose group it does not know), and reads a resource group's own id.
    """
    if not isinstance(value, str):
        return None
    group = _GROUP.search(value)
    sub = _SUBSCRIPTION.search(value)
    subscription = sub.group("sub") if sub else None
    match = _PROVIDERS.search(value)
    if not match:
        if group and value.rstrip("/").endswith(group.group(0)):
            return ArmRef("Microsoft.Resources", ("resourceGroups",), (group.group("rg"),),
                          group.group("rg"), subscription)
        return None
    parts = [p for p in match.group("rest").split("/") if p]
    if len(parts) < 2:
        return None
    depth = len(parts) // 2
    return ArmRef(match.group("provider"), tuple(parts[0::2])[:depth],
                  tuple(parts[1::2])[:depth], group.group("rg") if group else None, subscription)


def type_of(ref: ArmRef, depth: int | None = None) -> ArmType | None:
    """The row for the resource ``ref`` names (its first ``depth`` levels), if the table has it."""
    return BY_PATH.get("/".join(ref.collections[:depth]).lower())


def segment(resource_id: object, collection: str) -> str | None:
    """The name after ``/<collection>/`` in an ARM id (case-insensitive), or None."""
    ref = parse(resource_id)
    return ref.name_of(collection) if ref else None
