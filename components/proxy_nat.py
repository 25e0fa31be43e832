"""``ProxyNat``: the proxy VM in a consumer VNet that makes b2 work (b3: one of two behind
the consumer LB; msp: one per tenant, stamping the tenant's VNI).

The vTAP mirrors to the proxy NIC (Azure accepts a VM NIC as destination, not the PE's), and
the proxy rewrites UDP/4789 to the Private Endpoint's IP: NIC IP forwarding here, kernel
forwarding / rp_filter / the rewrite itself in ``cloudinit/vtap-proxy.sh`` run by cloud-init.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi import Input, Output, ResourceOptions

from components.linux_vm import LinuxVm, LinuxVmArgs, NsgRule
from components.shutdown import AutoShutdown
from components.tags import component_tags
from vtaplab import facts


@dataclass
class ProxyHostArgs:
    """What every proxy host needs, a lone VM (ProxyNat) or a scale set's instances
    (components.proxy_tier): one definition, so the two kinds of proxy take the same inputs."""
    resource_group_name: Input[str]
    location: str
    subnet_id: Input[str]
    pe_ip: Input[str]
    """The Private Endpoint's IP as ARM reports it: the proxy's rewrite target."""
    cloud_init: Callable[[str], str]
    """Given the PE IP, the proxy's cloud-init user data."""
    vm_size: str
    admin_username: str
    ssh_public_key: str
    operator_cidr: str
    tags: Mapping[str, str]


@dataclass
class ProxyNatArgs(ProxyHostArgs):
    proxy_ip: str
    auto_shutdown: AutoShutdown
    backend_pool_ids: Sequence[Input[str]] = field(default_factory=list)
    """LB backend pools the proxy's NIC joins (b3: the consumer LB the vTAP points at)."""
    health_port: int | None = None
    """Behind an LB: the port its HTTP probe asks (vtap-health.py, from ``cloud_init``); only
    the probe source may reach it."""


# After the VXLAN allow (200); Azure's defaults (AllowVnetInBound 65000) come last.
HEALTH_ALLOW_PRIORITY = 210
HEALTH_DENY_PRIORITY = 220


def health_rules(port: int) -> list[NsgRule]:
    """The health port admitted from the LB's probe source only: AllowVnetInBound would admit
    the whole VNet, so a deny for VirtualNetwork follows the allow (facts:
    nsg-default-allows-vnet)."""
    return [NsgRule("allow-health-probe", HEALTH_ALLOW_PRIORITY, "Tcp", port,
                    facts.HEALTH_PROBE_SOURCE),
            NsgRule("deny-health-vnet", HEALTH_DENY_PRIORITY, "Tcp", port, "VirtualNetwork",
                    access="Deny")]


class ProxyNat(pulumi.ComponentResource):
    nic_name: Output[str]
    ip_configuration_id: Output[str]
    private_ip: Output[str]
    ssh_host: Output[str] | None
    host_key: Output[str]
    target_ip: Output[str]

    def __init__(
        self, name: str, args: ProxyNatArgs, opts: ResourceOptions | None = None
    ) -> None:
        super().__init__("vtaplab:index:ProxyNat", name, None, opts)
        target_ip = Output.from_input(args.pe_ip)
        proxy = LinuxVm(
            name,  # a LinuxVm child may share the name: its URN carries its own type
            LinuxVmArgs(
                resource_group_name=args.resource_group_name,
                location=args.location,
                subnet_id=args.subnet_id,
                private_ip=args.proxy_ip,
                vm_size=args.vm_size,
                admin_username=args.admin_username,
                ssh_public_key=args.ssh_public_key,
                operator_cidr=args.operator_cidr,
                # Rendered once the PE exists: the rewrite target is never a hard-coded IP.
                cloud_init=target_ip.apply(args.cloud_init),
                tags=component_tags(args.tags, "proxy-nat"),
                auto_shutdown=args.auto_shutdown,
                # The mirrored VXLAN arrives from the tapped VMs' VNet.
                inbound_rules=[
                    NsgRule("allow-vxlan-vnet", 200, "Udp", facts.VXLAN_PORT, "VirtualNetwork"),
                    *(health_rules(args.health_port) if args.health_port else []),
                ],
                # Without it Azure drops what the proxy sends on with a source not its own.
                enable_ip_forwarding=True,
                backend_pool_ids=list(args.backend_pool_ids),
            ),
            opts=ResourceOptions(parent=self),
        )
        self.nic_name = proxy.nic_name
        self.ip_configuration_id = proxy.ip_configuration_id
        self.private_ip = proxy.private_ip
        self.ssh_host = proxy.ssh_host
        self.host_key = proxy.host_key
        self.target_ip = target_ip
        self.register_outputs(
            {
                "nic_name": self.nic_name,
                "ip_configuration_id": self.ip_configuration_id,
                "private_ip": self.private_ip,
                "ssh_host": self.ssh_host,
                "host_key": self.host_key,
                "target_ip": self.target_ip,
            }
        )
