"""A VNet and its subnets, declared as separate ``Subnet`` resources (never inline).

The subnet ids it hands out resolve only once the VNet's LAST subnet is written: NRP
serialises a VNet's writes, and a NIC, LB, PE or PLS that joins one subnet while a sibling is
still being written gets ``AnotherOperationInProgress`` (``facts.SUBNET_WRITES_ASSUMPTION``).
Carrying the wait in the id itself means no caller can forget it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import network


@dataclass(frozen=True)
class SubnetSpec:
    prefix: str
    # Private Link Service NAT ip-configurations need the subnet's PLS network policies off.
    private_link_service_policies_disabled: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)


def vnet_with_subnets(
    name: str,
    *,
    resource_group_name: Input[str],
    location: str,
    address_space: str,
    subnets: Mapping[str, SubnetSpec],
    tags: Mapping[str, str],
    opts: ResourceOptions,
) -> tuple[network.VirtualNetwork, dict[str, Output[str]]]:
    """Declare VNet ``{name}-vnet`` and one ``{name}-{subnet}`` per entry of ``subnets``;
    return the VNet and each subnet's id, which depends on the last subnet as well."""
    vnet = network.VirtualNetwork(
        f"{name}-vnet",
        virtual_network_name=f"{name}-vnet",
        resource_group_name=resource_group_name,
        location=location,
        address_space={"address_prefixes": [address_space]},
        tags=dict(tags),
        # Subnets are separate resources; the VNet must not own (and on update drop) them.
        opts=ResourceOptions.merge(opts, ResourceOptions(ignore_changes=["subnets"])),
    )
    declared: dict[str, network.Subnet] = {}
    previous: network.Subnet | None = None
    for subnet_name, spec in subnets.items():
        kwargs: dict[str, object] = dict(spec.extra)
        if spec.private_link_service_policies_disabled:
            kwargs["private_link_service_network_policies"] = "Disabled"
        # ARM serialises subnet writes per VNet and answers concurrent ones with
        # AnotherOperationInProgress: chaining them keeps `pulumi up` free of retries.
        subnet = network.Subnet(
            f"{name}-{subnet_name}",
            subnet_name=subnet_name,
            virtual_network_name=vnet.name,
            resource_group_name=resource_group_name,
            address_prefix=spec.prefix,
            opts=ResourceOptions.merge(
                opts, ResourceOptions(depends_on=[previous] if previous is not None else [])
            ),
            **kwargs,  # type: ignore[arg-type]
        )
        declared[subnet_name] = subnet
        previous = subnet
    if previous is None:
        raise ValueError(f"{name}: a VNet needs at least one subnet")
    last = previous
    # Output.all carries both resources as dependencies of whatever consumes the id.
    return vnet, {key: Output.all(subnet.id, last.id).apply(lambda ids: str(ids[0]))
                  for key, subnet in declared.items()}
