"""``SourceVnet``: one consumer (a customer's VNet), one per scenario.

Its own VNet with snet-src / snet-ilb / snet-pe / snet-proxy, the tapped VM (nginx), an
optional traffic client, the Private Endpoint to the provider's PLS and, for b1/b3, an internal
LB in snet-ilb (b3's with an HA-ports rule and a probe: the vTAP's destination, in front of
the proxies that join its pool). Address spaces may repeat between consumers: nothing is
ever peered.

Seams for the scenarios that try something ARM may refuse (r1, b1): the PE's NIC id and its
ip-configuration id (r1's vTAP destination), the consumer LB's frontend and empty backend pool
(b1's vTAP destination and the pool the PE NIC would join).

Two steps, because the tapped VM must first boot after its vTAP (``facts.VTAP_SOURCE_ORDER_
SOURCE``) while the vTAP's destination (a proxy) needs this VNet: the constructor declares the
network, the client, the PE and the LB; :meth:`SourceVnet.add_source` then declares vm-src —
given a vTAP, its NIC's tap configuration comes before the VM, so no restart is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import network

from components.internal_lb import HttpProbe, internal_lb
from components.linux_vm import LinuxVm, LinuxVmArgs, NsgRule
from components.shutdown import AutoShutdown
from components.tags import component_tags
from components.vnet import SubnetSpec, vnet_with_subnets

if TYPE_CHECKING:
    from vtaplab.program.config import ConsumerPlan

HTTP_PORT = 80


@dataclass
class SourceVnetArgs:
    resource_group_name: Input[str]
    location: str
    subscription_id: Input[str]
    plan: ConsumerPlan
    pls_id: Input[str]
    """The provider's Private Link Service the Private Endpoint connects to."""
    vm_size: str
    admin_username: str
    ssh_public_key: str
    operator_cidr: str
    src_cloud_init: Input[str]
    client_cloud_init: Input[str] | None
    """None: no traffic client (scenarios that carry no traffic don't pay for one)."""
    with_ilb: bool
    """True: an internal LB in snet-ilb with an empty backend pool (b1, b3)."""
    tags: Mapping[str, str]
    auto_shutdown: AutoShutdown
    ilb_all_ports: bool = False
    """With ``with_ilb``: give the LB an HA-ports rule and a probe (b3's proxy pool); without,
    the LB has no rule (b1's attempt only needs its frontend and pool)."""
    ilb_http_probe: bool = False
    """With ``ilb_all_ports``: probe the pool over HTTP (the proxies' vtap-health.py, b3/b4)
    instead of TCP/22, which stays open when a proxy's rewrite is gone."""


class SourceVnet(pulumi.ComponentResource):
    vnet_id: Output[str]
    subnet_ids: dict[str, Output[str]]
    src_nic_name: Output[str]
    src_nic_id: Output[str]
    src_ip: Output[str]
    src_ssh_host: Output[str] | None
    client_ip: Output[str] | None
    client_ssh_host: Output[str] | None
    src_host_key: Output[str]
    client_host_key: Output[str] | None
    pe_id: Output[str]
    pe_nic_id: Output[str]
    pe_nic_ip_configuration_id: Output[str]
    pe_ip: Output[str]
    ilb_frontend_id: Output[str] | None
    ilb_backend_pool_id: Output[str] | None
    src_vm: LinuxVm
    """vm-src, once :meth:`add_source` declared it."""

    def __init__(
        self, name: str, args: SourceVnetArgs, opts: ResourceOptions | None = None
    ) -> None:
        super().__init__("vtaplab:index:SourceVnet", name, None, opts)
        child = ResourceOptions(parent=self)
        tags = component_tags(args.tags, "source-vnet")
        plan = args.plan

        vnet, subnets = vnet_with_subnets(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            address_space=str(plan.address_space),
            subnets={
                "snet-src": SubnetSpec(str(plan.snet_src)),
                "snet-ilb": SubnetSpec(str(plan.snet_ilb)),
                "snet-pe": SubnetSpec(str(plan.snet_pe)),
                "snet-proxy": SubnetSpec(str(plan.snet_proxy)),
            },
            tags=tags,
            opts=child,
        )

        self._name, self._args, self._tags, self._subnets = name, args, tags, subnets
        client = (
            self._vm("client", str(plan.vm_client_ip), args.client_cloud_init, [])
            if args.client_cloud_init is not None
            else None
        )

        pe = network.PrivateEndpoint(
            f"{name}-pe",
            private_endpoint_name=f"{name}-pe",
            resource_group_name=args.resource_group_name,
            location=args.location,
            subnet={"id": subnets["snet-pe"]},
            custom_network_interface_name=f"{name}-pe-nic",
            # Dynamic unless vtaplab:peIp opts in: a static address needs groupId/memberName,
            # which a customer PLS lacks (facts.PE_STATIC_IP_SOURCE). The address is read
            # back from ARM below either way.
            ip_configurations=(
                [{"name": "pe-ip", "private_ip_address": str(plan.pe_ip)}]
                if plan.pe_ip is not None else None),
            private_link_service_connections=[
                {"name": f"{name}-to-pls", "private_link_service_id": args.pls_id}
            ],
            tags=tags,
            opts=child,
        )
        # The PE's NIC is created by Azure, not declared here: read it back, so the PE IP the
        # proxy rewrites to (and r1's vTAP destination) are what ARM allocated.
        pe_nic = network.get_network_interface_output(
            resource_group_name=args.resource_group_name,
            network_interface_name=pe.network_interfaces.apply(_first_nic_name),
        )

        ilb = None
        if args.with_ilb:
            ilb = internal_lb(
                f"{name}-ilb",
                resource_group_name=args.resource_group_name,
                location=args.location,
                subscription_id=args.subscription_id,
                subnet_id=subnets["snet-ilb"],
                frontend_ip=str(plan.ilb_ip),
                ha_ports=args.ilb_all_ports,
                http_probe=HttpProbe() if args.ilb_http_probe else None,
                tags=tags,
                opts=child,
            )

        self.vnet_id = vnet.id
        self.subnet_ids = dict(subnets)
        self.client_ip = client.private_ip if client is not None else None
        self.client_ssh_host = client.ssh_host if client is not None else None
        self.client_host_key = client.host_key if client is not None else None
        self.pe_id = pe.id
        self.pe_nic_id = pe_nic.id
        self.pe_nic_ip_configuration_id = pe_nic.ip_configurations.apply(
            lambda configs: _first(configs, "id")
        )
        self.pe_ip = pe_nic.ip_configurations.apply(
            lambda configs: _first(configs, "private_ip_address")
        )
        self.ilb_frontend_id = ilb.frontend_id if ilb is not None else None
        self.ilb_backend_pool_id = ilb.backend_pool_id if ilb is not None else None

    def add_source(self, tap_id: Input[str] | None = None, *,
                   tap_configuration_name: str = "tap") -> LinuxVm:
        """Declare vm-src (once): with ``tap_id``, its NIC's tap configuration into that vTAP
        comes before the VM, so the VM's first boot follows both; without, a plain VM (r1,
        b1, or a source tapped later with ``vtaplab:tapExistingSource``)."""
        if hasattr(self, "src_nic_id"):
            raise ValueError(f"{self._name}: add_source was already called")
        src = self._vm(
            "src",
            str(self._args.plan.vm_src_ip),
            self._args.src_cloud_init,
            [NsgRule("allow-http-vnet", 200, "Tcp", HTTP_PORT, "VirtualNetwork")],
            tap_id=tap_id,
            tap_configuration_name=tap_configuration_name,
        )
        self.src_vm = src
        self.src_nic_name = src.nic_name
        self.src_nic_id = src.nic_id
        self.src_ip = src.private_ip
        self.src_ssh_host = src.ssh_host
        self.src_host_key = src.host_key
        self.register_outputs(
            {
                "vnet_id": self.vnet_id,
                "subnet_ids": self.subnet_ids,
                "src_nic_id": self.src_nic_id,
                "src_ip": self.src_ip,
                "src_ssh_host": self.src_ssh_host,
                "src_host_key": self.src_host_key,
                "client_ip": self.client_ip,
                "client_ssh_host": self.client_ssh_host,
                "client_host_key": self.client_host_key,
                "pe_id": self.pe_id,
                "pe_nic_id": self.pe_nic_id,
                "pe_nic_ip_configuration_id": self.pe_nic_ip_configuration_id,
                "pe_ip": self.pe_ip,
                "ilb_frontend_id": self.ilb_frontend_id,
                "ilb_backend_pool_id": self.ilb_backend_pool_id,
            }
        )
        return src

    def _vm(self, role: str, ip: str, cloud_init: Input[str] | None, rules: list[NsgRule],
            *, tap_id: Input[str] | None = None, tap_configuration_name: str = "tap"
            ) -> LinuxVm:
        args = self._args
        if cloud_init is None:
            raise ValueError(f"{self._name}-{role}: no cloud-init user data")
        return LinuxVm(
            f"{self._name}-{role}",
            LinuxVmArgs(
                resource_group_name=args.resource_group_name,
                location=args.location,
                subnet_id=self._subnets["snet-src"],
                private_ip=ip,
                vm_size=args.vm_size,
                admin_username=args.admin_username,
                ssh_public_key=args.ssh_public_key,
                operator_cidr=args.operator_cidr,
                cloud_init=cloud_init,
                tags=self._tags,
                auto_shutdown=args.auto_shutdown,
                inbound_rules=rules,
                tap_id=tap_id,
                tap_configuration_name=tap_configuration_name,
            ),
            opts=ResourceOptions(parent=self),
        )


def _first_nic_name(nics: list[object] | None) -> str:
    nic_id = getattr(nics[0], "id", None) if nics else None
    if not nic_id:
        raise ValueError("private endpoint reports no network interface")
    return str(nic_id).rsplit("/", 1)[-1]


def _first(configs: list[object] | None, attribute: str) -> str:
    value = getattr(configs[0], attribute, None) if configs else None
    if value is None:
        raise ValueError(f"private endpoint NIC reports no ip configuration {attribute}")
    return str(value)
