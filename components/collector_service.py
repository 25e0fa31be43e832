"""``CollectorService``: the provider side, one per stack.

Its own VNet (never peered with a consumer), the collector VM capturing UDP/4789, and the
Private Link Service consumers reach it through. Two flavours:

- standard: PLS -> internal Standard LB (frontend at the ILB IP, an HA-ports rule with a probe:
  a port rule would drop the non-first fragments of full-size mirrored frames) -> backend
  pool holding the collector's NIC;
- Direct Connect (scenario ``a``): the PLS forwards straight to ``destinationIPAddress`` = the
  collector's IP, with no provider LB; it needs 2, 4, 6 or 8 NAT ip-configurations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import network

from components.internal_lb import internal_lb
from components.linux_vm import LinuxVm, LinuxVmArgs, NsgRule
from components.shutdown import AutoShutdown
from components.tags import component_tags
from components.vnet import SubnetSpec, vnet_with_subnets
from vtaplab import facts

if TYPE_CHECKING:
    from vtaplab.program.config import ProviderPlan


@dataclass
class CollectorServiceArgs:
    resource_group_name: Input[str]
    location: str
    subscription_id: Input[str]
    """The PLS admits and auto-approves endpoints from this subscription only."""
    plan: ProviderPlan
    direct_connect: bool
    """True: a Direct Connect PLS to the collector IP (scenario ``a``); no provider LB."""
    vm_size: str
    admin_username: str
    ssh_public_key: str
    operator_cidr: str
    cloud_init: Input[str]
    tags: Mapping[str, str]
    auto_shutdown: AutoShutdown


class CollectorService(pulumi.ComponentResource):
    vnet_id: Output[str]
    collector_ip: Output[str]
    collector_ssh_host: Output[str] | None
    collector_host_key: Output[str]
    collector_nic_name: Output[str]
    ilb_frontend_id: Output[str] | None
    pls_id: Output[str]
    pls_alias: Output[str]
    nat_ips: Output[list[str]]

    def __init__(
        self, name: str, args: CollectorServiceArgs, opts: ResourceOptions | None = None
    ) -> None:
        super().__init__("vtaplab:index:CollectorService", name, None, opts)
        child = ResourceOptions(parent=self)
        tags = component_tags(args.tags, "collector-service")
        plan = args.plan
        if args.direct_connect and len(plan.nat_ips) not in facts.PLS_DIRECT_CONNECT_NAT_IP_COUNTS:
            raise ValueError(
                f"{name}: a Direct Connect PLS needs "
                f"{sorted(facts.PLS_DIRECT_CONNECT_NAT_IP_COUNTS)} NAT ip-configurations, "
                f"the plan has {len(plan.nat_ips)}"
            )

        vnet, subnets = vnet_with_subnets(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            address_space=str(plan.address_space),
            subnets={
                "snet-pls": SubnetSpec(
                    str(plan.snet_pls), private_link_service_policies_disabled=True
                ),
                "snet-col": SubnetSpec(str(plan.snet_col)),
            },
            tags=tags,
            opts=child,
        )

        lb = None
        if not args.direct_connect:
            lb = internal_lb(
                f"{name}-ilb",
                resource_group_name=args.resource_group_name,
                location=args.location,
                subscription_id=args.subscription_id,
                subnet_id=subnets["snet-pls"],
                frontend_ip=str(plan.ilb_ip),
                ha_ports=True,
                tags=tags,
                opts=child,
            )

        collector = LinuxVm(
            f"{name}-col",
            LinuxVmArgs(
                resource_group_name=args.resource_group_name,
                location=args.location,
                subnet_id=subnets["snet-col"],
                private_ip=str(plan.col_ip),
                vm_size=args.vm_size,
                admin_username=args.admin_username,
                ssh_public_key=args.ssh_public_key,
                operator_cidr=args.operator_cidr,
                cloud_init=args.cloud_init,
                tags=tags,
                auto_shutdown=args.auto_shutdown,
                # PLS NAT IPs are in this VNet: the mirrored VXLAN arrives from them.
                inbound_rules=[
                    NsgRule("allow-vxlan-vnet", 200, "Udp", facts.VXLAN_PORT, "VirtualNetwork")
                ],
                backend_pool_ids=[lb.backend_pool_id] if lb is not None else [],
            ),
            opts=child,
        )

        pls = self._pls(name, args, subnets["snet-pls"], lb.frontend_id if lb else None, child)

        self.vnet_id = vnet.id
        self.collector_ip = collector.private_ip
        self.collector_ssh_host = collector.ssh_host
        self.collector_host_key = collector.host_key
        self.collector_nic_name = collector.nic_name
        self.ilb_frontend_id = lb.frontend_id if lb is not None else None
        self.pls_id = pls.id
        self.pls_alias = pls.alias
        self.nat_ips = pls.ip_configurations.apply(
            lambda configs: [str(c.private_ip_address) for c in configs or []]
        )
        self.register_outputs(
            {
                "vnet_id": self.vnet_id,
                "collector_ip": self.collector_ip,
                "collector_ssh_host": self.collector_ssh_host,
                "collector_host_key": self.collector_host_key,
                "ilb_frontend_id": self.ilb_frontend_id,
                "pls_id": self.pls_id,
                "pls_alias": self.pls_alias,
                "nat_ips": self.nat_ips,
            }
        )

    @staticmethod
    def _pls(
        name: str,
        args: CollectorServiceArgs,
        snet_pls_id: Output[str],
        frontend_id: Output[str] | None,
        opts: ResourceOptions,
    ) -> network.PrivateLinkService:
        nat_configs = [
            {
                "name": f"nat-{index}",
                "primary": index == 0,
                "private_ip_address": str(ip),
                "private_ip_allocation_method": "Static",
                "private_ip_address_version": "IPv4",
                "subnet": {"id": snet_pls_id},
            }
            for index, ip in enumerate(args.plan.nat_ips)
        ]
        target: dict[str, object]
        if frontend_id is not None:
            target = {"load_balancer_frontend_ip_configurations": [{"id": frontend_id}]}
        else:
            # Direct Connect: no LB; the destination must be a static IP, never a PE.
            target = {"destination_ip_address": str(args.plan.col_ip)}
        own_subscription = {"subscriptions": [args.subscription_id]}
        return network.PrivateLinkService(
            f"{name}-pls",
            service_name=f"{name}-pls",
            resource_group_name=args.resource_group_name,
            location=args.location,
            ip_configurations=nat_configs,
            # Endpoints in the lab's own subscription connect without a manual approval.
            visibility=own_subscription,
            auto_approval=own_subscription,
            enable_proxy_protocol=False,
            tags=component_tags(args.tags, "collector-service"),
            opts=opts,
            **target,  # type: ignore[arg-type]
        )
