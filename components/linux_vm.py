"""``LinuxVm``: the one building block every VM of the lab goes through.

A NIC with a static private IP (optionally IP forwarding, optionally in LB backend pools), an
NSG on that NIC admitting SSH only from the operator's CIDR plus the caller's rules, a Standard
static public IP (outbound for apt, since new VNets get no default outbound access, and SSH),
and an Ubuntu 24.04 LTS VM that accepts SSH keys only and boots with the caller's cloud-init.

Its SSH host key is a ``tls.PrivateKey`` (Ed25519) of its own, generated once and kept in the
stack state as a secret: cloud-init installs the private half (``ssh_keys``), and
:attr:`LinuxVm.host_key` (the public half) is what the lab's SSH steps pin, so even the first
connection is verified and nobody has to hold a seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pulumi
import pulumi_tls as tls
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import compute, network

from components.shutdown import EXPIRES_TAG, AutoShutdown, daily_shutdown
from vtaplab import facts
from vtaplab.program.userdata import custom_data, with_host_key

# Canonical's Ubuntu 24.04 LTS (Gen2) image.
UBUNTU_2404 = {
    "publisher": "Canonical",
    "offer": "ubuntu-24_04-lts",
    "sku": "server",
    "version": "latest",
}
# The image's own disk size: the smallest an Ubuntu VM can have.
OS_DISK_GB = 30
SSH_PRIORITY = 100


@dataclass(frozen=True)
class NsgRule:
    """One inbound allow rule on the VM's NSG."""

    name: str
    priority: int
    protocol: str  # "Tcp" | "Udp"
    port: int
    source: str  # a CIDR or a service tag such as "VirtualNetwork"
    access: str = "Allow"  # "Deny": keep a port from what Azure's default rules admit


@dataclass
class LinuxVmArgs:
    """What a ``LinuxVm`` needs; the names of its Azure resources derive from its own name."""

    resource_group_name: Input[str]
    location: str
    subnet_id: Input[str]
    private_ip: str
    vm_size: str
    admin_username: str
    ssh_public_key: str
    operator_cidr: str
    """The only source SSH is admitted from."""
    cloud_init: Input[str]
    """cloud-init user data as text; the VM's host key is added to it here
    (``vtaplab.program.userdata.with_host_key``) and the result base64-encoded into ``customData``
    (a secret: it holds the private half)."""
    tags: Mapping[str, str]
    """The stack's tags, ``expires-on`` included."""
    auto_shutdown: AutoShutdown
    """The daily shutdown (the stack's ``autoShutdownTime``)."""
    inbound_rules: Sequence[NsgRule] = ()
    enable_ip_forwarding: bool = False
    public_ip: bool = True
    backend_pool_ids: Sequence[Input[str]] = field(default_factory=list)
    tap_id: Input[str] | None = None
    """A vTAP this VM's NIC is a source of: the tap configuration is declared on the NIC
    after the vTAP and before the VM, so the VM's first boot follows both and needs no
    deallocate/start (``facts.VTAP_SOURCE_ORDER_SOURCE``)."""
    tap_configuration_name: str = "tap"


class LinuxVm(pulumi.ComponentResource):
    """An Ubuntu VM with its NIC, NSG and (optionally) public IP."""

    nic_id: Output[str]
    nic_name: Output[str]
    ip_configuration_id: Output[str]
    private_ip: Output[str]
    public_ip: Output[str] | None
    ssh_host: Output[str] | None
    vm_id: Output[str]
    host_key: Output[str]
    """The VM's public SSH host key, ``ssh-ed25519 AAAA...``: pin it, never trust on first use."""
    tap_configurations: list[pulumi.Resource]
    """The NIC's tap configuration (with ``tap_id``), declared before the VM."""

    def __init__(
        self, name: str, args: LinuxVmArgs, opts: ResourceOptions | None = None
    ) -> None:
        super().__init__("vtaplab:index:LinuxVm", name, None, opts)
        child = ResourceOptions(parent=self)
        # Cost guardrail: everything of the VM carries the stack's expires-on tag (one path:
        # the stack's tags), and the VM stops daily.
        if EXPIRES_TAG not in args.tags:
            raise ValueError(f"{name}: tags without {EXPIRES_TAG!r}; accepted: the stack's "
                             "tags (vtaplab.program.stack), which always carry it")

        nsg = self._nsg(name, args, child)
        pip = None
        if args.public_ip:
            pip = network.PublicIPAddress(
                f"{name}-pip",
                public_ip_address_name=f"{name}-pip",
                resource_group_name=args.resource_group_name,
                location=args.location,
                sku={"name": "Standard", "tier": "Regional"},
                public_ip_allocation_method="Static",
                public_ip_address_version="IPv4",
                tags=dict(args.tags),
                opts=child,
            )
        ip_configuration: dict[str, object] = {
            "name": "ipconfig1",
            "primary": True,
            "private_ip_allocation_method": "Static",
            "private_ip_address": args.private_ip,
            "private_ip_address_version": "IPv4",
            "subnet": {"id": args.subnet_id},
        }
        if pip is not None:
            ip_configuration["public_ip_address"] = {"id": pip.id}
        if args.backend_pool_ids:
            ip_configuration["load_balancer_backend_address_pools"] = [
                {"id": pool_id} for pool_id in args.backend_pool_ids
            ]
        nic = network.NetworkInterface(
            f"{name}-nic",
            network_interface_name=f"{name}-nic",
            resource_group_name=args.resource_group_name,
            location=args.location,
            enable_ip_forwarding=args.enable_ip_forwarding,
            ip_configurations=[ip_configuration],
            network_security_group={"id": nsg.id},
            tags=dict(args.tags),
            opts=child,
        )
        # Generated once (kept in the state, encrypted), stable across every later `up`.
        key = tls.PrivateKey(f"{name}-hostkey", algorithm="ED25519", opts=child)
        self.host_key = key.public_key_openssh.apply(lambda text: text.strip())
        args = replace(args, cloud_init=_with_host_key(args.cloud_init, key))
        first_boot_after: list[pulumi.Resource] = []
        if args.tap_id is not None:
            first_boot_after.append(network.NetworkInterfaceTapConfiguration(
                f"{name}-tapcfg",
                tap_configuration_name=args.tap_configuration_name,
                network_interface_name=nic.name,
                resource_group_name=args.resource_group_name,
                virtual_network_tap={"id": args.tap_id},
                opts=child,
            ))
        vm = self._vm(name, args, nic, ResourceOptions.merge(
            child, ResourceOptions(depends_on=first_boot_after)))
        daily_shutdown(name, vm.id, resource_group_name=args.resource_group_name,
                       location=args.location, tags=args.tags, settings=args.auto_shutdown,
                       opts=child)
        self.tap_configurations = first_boot_after

        self.nic_id = nic.id
        self.nic_name = nic.name
        # What ARM reports, not a string built here: the vTAP destination must be exactly it.
        self.ip_configuration_id = nic.ip_configurations.apply(_first_ip_configuration_id)
        self.private_ip = nic.ip_configurations.apply(_first_private_ip)
        self.public_ip = pip.ip_address.apply(lambda ip: ip or "") if pip is not None else None
        self.ssh_host = (
            Output.concat(args.admin_username, "@", self.public_ip)
            if self.public_ip is not None
            else None
        )
        self.vm_id = vm.id
        self.register_outputs(
            {
                "nic_id": self.nic_id,
                "nic_name": self.nic_name,
                "ip_configuration_id": self.ip_configuration_id,
                "private_ip": self.private_ip,
                "public_ip": self.public_ip,
                "ssh_host": self.ssh_host,
                "vm_id": self.vm_id,
                "host_key": self.host_key,
            }
        )

    @staticmethod
    def _nsg(
        name: str, args: LinuxVmArgs, opts: ResourceOptions
    ) -> network.NetworkSecurityGroup:
        rules = [
            NsgRule("allow-ssh-operator", SSH_PRIORITY, "Tcp", 22, args.operator_cidr),
            *args.inbound_rules,
        ]
        for rule in rules:
            if rule.access == "Allow" and rule.source.strip().lower() in facts.OPEN_SOURCES:
                raise ValueError(
                    f"{name}: NSG rule {rule.name!r} would admit {rule.source!r}; "
                    "accepted: a private CIDR or a service tag such as VirtualNetwork"
                )
        return network.NetworkSecurityGroup(
            f"{name}-nsg",
            network_security_group_name=f"{name}-nsg",
            resource_group_name=args.resource_group_name,
            location=args.location,
            # Inline rules only (no separate SecurityRule resources): one style per NSG.
            security_rules=[
                {
                    "name": rule.name,
                    "priority": rule.priority,
                    "direction": "Inbound",
                    "access": rule.access,
                    "protocol": rule.protocol,
                    "source_address_prefix": rule.source,
                    "source_port_range": "*",
                    "destination_address_prefix": args.private_ip,
                    "destination_port_range": str(rule.port),
                }
                for rule in rules
            ],
            tags=dict(args.tags),
            opts=opts,
        )

    @staticmethod
    def _vm(
        name: str, args: LinuxVmArgs, nic: network.NetworkInterface, opts: ResourceOptions
    ) -> compute.VirtualMachine:
        # Always a secret: the user data carries the VM's private SSH host key. The size check
        # runs on the FINAL user data (host key included), as Azure will see it.
        encoded = Output.secret(Output.from_input(args.cloud_init).apply(custom_data))
        return compute.VirtualMachine(
            f"{name}-vm",
            vm_name=name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            hardware_profile={"vm_size": args.vm_size},
            os_profile={
                "computer_name": name,
                "admin_username": args.admin_username,
                "custom_data": encoded,
                "linux_configuration": {
                    "disable_password_authentication": True,
                    "ssh": {
                        "public_keys": [
                            {
                                "path": f"/home/{args.admin_username}/.ssh/authorized_keys",
                                "key_data": args.ssh_public_key,
                            }
                        ]
                    },
                },
            },
            storage_profile={
                "image_reference": UBUNTU_2404,
                "os_disk": {
                    "name": f"{name}-osdisk",
                    "create_option": "FromImage",
                    "caching": "ReadWrite",
                    "disk_size_gb": OS_DISK_GB,
                    "managed_disk": {"storage_account_type": "Standard_LRS"},
                    # Teardown removes the disk and NIC with the VM, leaving nothing billed.
                    "delete_option": "Delete",
                },
            },
            # The NIC is Pulumi's, so it is not deleted with the VM (delete_option stays Detach).
            network_profile={"network_interfaces": [{"id": nic.id, "primary": True}]},
            tags=dict(args.tags),
            opts=ResourceOptions.merge(opts, ResourceOptions(
                # ARM refuses to change these in place (PropertyChangeNotAllowed;
                # facts.VM_CREATE_ONLY_SOURCE) and azure-native has no replace rule for them.
                replace_on_changes=list(facts.VM_CREATE_ONLY_INPUTS),
                # Fixed Azure names: a replacement deletes the old VM before creating the new.
                delete_before_replace=True)),
        )


def _with_host_key(cloud_init: Input[str], key: tls.PrivateKey) -> Output[str]:
    """``cloud_init`` plus cloud-init's ``ssh_keys`` with ``key`` (a secret: the private half)."""
    return Output.secret(Output.all(cloud_init, key.private_key_openssh,
                                    key.public_key_openssh).apply(
        lambda v: with_host_key(str(v[0]), private_pem=str(v[1]), public_line=str(v[2]))))


def _first_ip_configuration_id(configs: Sequence[object] | None) -> str:
    return str(_attr(configs, "id"))


def _first_private_ip(configs: Sequence[object] | None) -> str:
    return str(_attr(configs, "private_ip_address"))


def _attr(configs: Sequence[object] | None, attribute: str) -> object:
    if not configs:
        raise ValueError("network interface reports no ip configurations")
    value = getattr(configs[0], attribute, None)
    if value is None:
        raise ValueError(f"network interface ip configuration reports no {attribute}")
    return value
