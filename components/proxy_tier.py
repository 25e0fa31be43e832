"""``ProxyTier``: the consumer's proxies as a Virtual Machine Scale Set (b4).

b3 answers the reference lab's "single point of failure" with two hand-placed proxy VMs
behind the consumer LB the vTAP points at. This is the shape a managed-security provider can
run: a scale set in Flexible orchestration of ``instance_count`` identical proxies (the same
cloud-init as ``ProxyNat``'s, plus the health endpoint ``vtap-health.py``), spread across the
region's availability zones, in the LB's backend pool, taken out of it by an HTTP probe that
sees the rewrite (not TCP/22, which stays open when the rewrite is gone), and kept patched by
automatic OS image upgrades that roll one batch at a time, gated by the same health signal
(the Application Health extension asks the same endpoint the LB asks).

Azure behaviours it relies on are ``vtaplab.facts.PROXY_TIER_FACTS`` (each with its source):
Flexible orchestration names ``networkApiVersion`` for the NICs of its profile; a zonal
Flexible set takes one platform fault domain; rolling upgrades on Flexible orchestration are a
preview behind the feature ``Microsoft.Compute/VMSSFlexRollingUpgrade`` (for ``doctor`` to check)
and accept only the Application Health extension as their health signal (LB probes are a
Uniform-only signal); automatic OS image upgrades need an image on Azure's supported list with
version ``latest`` (Ubuntu 22.04 LTS Gen2: 24.04's x64 SKU is not on it). Auto-shutdown
schedules apply to single VMs, not to scale set instances: the tier's cost is bounded by
``pulumi destroy`` and the expires-on tag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_tls as tls
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import compute, network

from components.linux_vm import OS_DISK_GB, SSH_PRIORITY
from components.proxy_nat import HEALTH_ALLOW_PRIORITY, HEALTH_DENY_PRIORITY, ProxyHostArgs
from components.shutdown import EXPIRES_TAG
from components.tags import component_tags
from vtaplab import facts

# NSG priorities as ProxyNat's (SSH_PRIORITY first, the health rules after; Azure's last).
VXLAN_PRIORITY = 200
# One instance of two at a time: the other keeps mirroring while a batch is upgraded.
BATCH_PERCENT = 50
PAUSE_BETWEEN_BATCHES = "PT1M"


@dataclass
class ProxyTierArgs(ProxyHostArgs):
    """A proxy host's inputs (``cloud_init`` also serves the health endpoint) plus the tier's."""
    backend_pool_ids: Sequence[Input[str]]
    """The consumer LB's pool(s): the vTAP's frontend spreads the mirror over the instances."""
    instance_count: int = 2
    zones: Sequence[str] = field(default_factory=list)
    """Availability zones to spread over; empty where the region has none."""
    probe_source: str = facts.HEALTH_PROBE_SOURCE
    """Who may reach the health port: the LB's probes come from this service tag only."""


class ProxyTier(pulumi.ComponentResource):
    """A Flexible-orchestration scale set of proxies behind the consumer LB."""

    scale_set_id: Output[str]
    scale_set_name: Output[str]
    host_key: Output[str]
    target_ip: Output[str]

    def __init__(self, name: str, args: ProxyTierArgs,
                 opts: ResourceOptions | None = None) -> None:
        super().__init__("vtaplab:index:ProxyTier", name, None, opts)
        low, high = facts.PROXY_COUNT_RANGE
        if not low <= args.instance_count <= high:
            raise ValueError(f"{name}: instance_count {args.instance_count} is not accepted; "
                             f"accepted: {low}..{high}")
        child = ResourceOptions(parent=self)
        # No auto-shutdown for scale set instances (facts: no-auto-shutdown-for-scale-sets),
        # but the expires-on tag marks everything of the tier as LinuxVm does.
        tags = component_tags(args.tags, "proxy-tier")
        if EXPIRES_TAG not in tags:  # the stack's tags carry it, as every LinuxVm's
            raise ValueError(f"{name}: tags without {EXPIRES_TAG!r}; accepted: the stack's tags")
        nsg = self._nsg(name, args, tags, child)
        # One host key for the tier: every instance boots from the same user data, so the
        # lab's SSH steps pin this one key for any instance they reach.
        key = tls.PrivateKey(f"{name}-hostkey", algorithm="ED25519", opts=child)
        self.host_key = key.public_key_openssh.apply(lambda text: text.strip())
        self.target_ip = Output.from_input(args.pe_ip)
        custom_data = Output.secret(Output.all(
            self.target_ip, key.private_key_openssh, key.public_key_openssh).apply(
            lambda v: _custom_data(args.cloud_init(str(v[0])), str(v[1]), str(v[2]))))
        scale_set = compute.VirtualMachineScaleSet(
            f"{name}-vmss",
            vm_scale_set_name=f"{name}-vmss",
            resource_group_name=args.resource_group_name,
            location=args.location,
            orchestration_mode=compute.OrchestrationMode.FLEXIBLE,
            # A zonal Flexible set takes one fault domain (max spreading inside each zone);
            # a regional one accepts it too (facts: flex-zonal-fault-domains).
            platform_fault_domain_count=facts.VMSS_FLEX_ZONAL_FAULT_DOMAINS,
            zones=list(args.zones) or None,
            single_placement_group=False,
            sku={"name": args.vm_size, "tier": "Standard", "capacity": args.instance_count},
            upgrade_policy={
                "mode": compute.UpgradeMode.ROLLING,
                "rolling_upgrade_policy": {
                    # Preview on Flexible orchestration (feature VMSSFlexRollingUpgrade);
                    # gated by the Application Health extension below.
                    "max_batch_instance_percent": BATCH_PERCENT,
                    "max_unhealthy_instance_percent": BATCH_PERCENT,
                    "max_unhealthy_upgraded_instance_percent": BATCH_PERCENT,
                    "pause_time_between_batches": PAUSE_BETWEEN_BATCHES,
                    "enable_cross_zone_upgrade": True,
                    "prioritize_unhealthy_instances": True,
                },
                "automatic_os_upgrade_policy": {
                    "enable_automatic_os_upgrade": True,
                    "use_rolling_upgrade_policy": True,
                    "disable_automatic_rollback": False,
                },
            },
            virtual_machine_profile={
                "os_profile": {
                    "computer_name_prefix": name[:9],
                    "admin_username": args.admin_username,
                    "custom_data": custom_data,
                    "linux_configuration": {
                        "disable_password_authentication": True,
                        "ssh": {"public_keys": [{
                            "path": f"/home/{args.admin_username}/.ssh/authorized_keys",
                            "key_data": args.ssh_public_key}]},
                    },
                },
                "storage_profile": {
                    # On the automatic-OS-upgrade list, version latest (facts:
                    # auto-os-upgrade-images); the proxy scripts need nothing newer.
                    "image_reference": facts.AUTO_OS_UPGRADE_IMAGE,
                    "os_disk": {"create_option": "FromImage", "caching": "ReadWrite",
                                "disk_size_gb": OS_DISK_GB, "delete_option": "Delete",
                                "managed_disk": {"storage_account_type": "Standard_LRS"}},
                },
                "network_profile": {
                    "network_api_version": facts.VMSS_FLEX_NETWORK_API_VERSION,
                    "network_interface_configurations": [{
                        "name": f"{name}-nic",
                        "primary": True,
                        # Without it Azure drops what a proxy sends on with a source not its own.
                        "enable_ip_forwarding": True,
                        "delete_option": "Delete",
                        "network_security_group": {"id": nsg.id},
                        "ip_configurations": [{
                            "name": "ipconfig1",
                            "primary": True,
                            "subnet": {"id": args.subnet_id},
                            "load_balancer_backend_address_pools": [
                                {"id": pool} for pool in args.backend_pool_ids],
                            # Outbound for apt and the lab's SSH (new VNets have no default
                            # outbound access); inbound only as the NSG allows.
                            "public_ip_address_configuration": {
                                "name": f"{name}-pip",
                                "sku": {"name": "Standard", "tier": "Regional"},
                                "delete_option": "Delete",
                            },
                        }],
                    }],
                },
                # The rolling and OS upgrades' health signal: on Flexible orchestration the
                # extension, not the LB probe (facts: flex-health-signal-is-the-extension);
                # it asks the endpoint the LB's HTTP probe asks.
                "extension_profile": {"extensions": [{
                    "name": "health",
                    "publisher": facts.APP_HEALTH_EXTENSION[0],
                    "type": facts.APP_HEALTH_EXTENSION[1],
                    "type_handler_version": facts.APP_HEALTH_EXTENSION[2],
                    "auto_upgrade_minor_version": True,
                    "settings": {"protocol": "http", "port": facts.HEALTH_PORT,
                                 "requestPath": facts.HEALTH_PATH},
                }]},
            },
            tags=tags,
            opts=ResourceOptions.merge(child, ResourceOptions(delete_before_replace=True)),
        )
        self.scale_set_id = scale_set.id
        self.scale_set_name = scale_set.name
        self.register_outputs({"scale_set_id": self.scale_set_id,
                               "scale_set_name": self.scale_set_name,
                               "host_key": self.host_key, "target_ip": self.target_ip})

    @staticmethod
    def _nsg(name: str, args: ProxyTierArgs, tags: Mapping[str, str],
             opts: ResourceOptions) -> network.NetworkSecurityGroup:
        health = str(facts.HEALTH_PORT)
        rules = [
            ("allow-ssh-operator", SSH_PRIORITY, "Allow", "Tcp", "22", args.operator_cidr),
            ("allow-vxlan-vnet", VXLAN_PRIORITY, "Allow", "Udp", str(facts.VXLAN_PORT),
             "VirtualNetwork"),
            ("allow-health-probe", HEALTH_ALLOW_PRIORITY, "Allow", "Tcp", health,
             args.probe_source),
            # AllowVnetInBound (65000) would admit the whole VNet to the health port: only the
            # probe source may reach it (facts: nsg-default-allows-vnet).
            ("deny-health-vnet", HEALTH_DENY_PRIORITY, "Deny", "Tcp", health, "VirtualNetwork"),
        ]
        for rule_name, _, access, _, _, source in rules:
            if access == "Deny":
                continue
            if source.strip().lower() in facts.OPEN_SOURCES:
                raise ValueError(f"{name}: NSG rule {rule_name!r} would admit {source!r}; "
                                 "accepted: a private CIDR or a service tag")
        return network.NetworkSecurityGroup(
            f"{name}-nsg",
            network_security_group_name=f"{name}-nsg",
            resource_group_name=args.resource_group_name,
            location=args.location,
            security_rules=[{
                "name": rule_name, "priority": priority, "direction": "Inbound",
                "access": access, "protocol": protocol, "source_address_prefix": source,
                "source_port_range": "*", "destination_address_prefix": "*",
                "destination_port_range": port}
                for rule_name, priority, access, protocol, port, source in rules],
            tags=dict(tags),
            opts=opts,
        )


def _custom_data(cloud_init: str, private_pem: str, public_line: str) -> str:
    """The instances' customData: user data plus the tier's host key, base64, within Azure's
    limit (``userdata.custom_data`` refuses more)."""
    from vtaplab.program.userdata import custom_data, with_host_key

    return custom_data(with_host_key(cloud_init, private_pem=private_pem,
                                     public_line=public_line))
