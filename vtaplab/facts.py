"""Azure facts, the scenario catalogue and the lab's shared vocabulary: each written once.

Azure's facts cite the documentation they come from. When Azure changes, change it here and
nowhere else: the config loader, the preflight rules, the verdicts, the emulator and the results
table all read this module. It imports nothing of the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Regions where Virtual Network TAP is in preview.
VTAP_REGIONS: frozenset[str] = frozenset(
    {
        "eastasia",
        "westcentralus",
        "uksouth",
        "eastus",
        "centralindia",
        "germanywestcentral",
        "centralus",
    }
)

# Regions where Private Link Service Direct Connect (destinationIPAddress) is in preview.
PLS_DIRECT_CONNECT_REGIONS: frozenset[str] = frozenset(
    {
        "northcentralus",
        "eastus2",
        "centralus",
        "southcentralus",
        "westus",
        "westus2",
        "westus3",
        "southeastasia",
        "australiaeast",
        "spaincentral",
    }
)
PLS_DIRECT_CONNECT_FEATURE = "Microsoft.Network/AllowPrivateLinkserviceUDR"
PLS_DIRECT_CONNECT_NAT_IP_COUNTS: frozenset[int] = frozenset({2, 4, 6, 8})
PLS_DIRECT_CONNECT_MAX_PER_REGION = 10

VXLAN_PORT = 4789
MAX_VTAPS_PER_SUBSCRIPTION = 10

# A v6 size ("Standard_D2s_v6", "Standard_E4as_v6", ...) can't be a vTAP source.
_V6_SIZE = re.compile(r"_v6$", re.IGNORECASE)


def is_v6_size(vm_size: str) -> bool:
    """True when ``vm_size`` is a v6 VM size, which vTAP does not support as a source."""
    return bool(_V6_SIZE.search(vm_size.strip()))


# ARM error codes the lab is about.
ARM_PE_AS_VTAP_DESTINATION = (
    "CannotSetPrivateLinkServiceOrPrivateEndpointNetworkInterfaceAsDestinationOfVirtualNetworkTap"
)
ARM_MODIFY_PE_NIC = "CannotModifyNicAttachedToPrivateEndpoint"
ARM_PLS_ON_IP_BASED_LB = "PrivateLinkServiceIsNotSupportedForIPBasedLoadBalancer"

# Every outcome a verdict can have (vtaplab.judge.outcome.judge returns no other): delivered
# (the mirror was complete), degraded (VXLAN and HTTP arrived, something the clients exchanged
# did not), not-delivered, the ARM answers, error (nothing could be looked at) and unknown (a
# prediction that only Azure can settle).
OUTCOMES: tuple[str, ...] = (
    "delivered",
    "degraded",
    "not-delivered",
    "rejected",
    "accepted",
    "not-applicable",
    "error",
    "unknown",
)


@dataclass(frozen=True)
class Scenario:
    """One way of trying to get mirrored traffic to the provider's collector."""

    id: str
    title: str
    # None where nobody knows yet: the run records what happens and nothing can "match".
    expected_outcome: str | None
    expected: str
    # Where it can run at all: vTAP preview, and for Direct Connect its own preview list.
    regions: frozenset[str]
    carries_traffic: bool
    expected_arm_codes: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {
    s.id: s
    for s in (
        Scenario(
            id="r1",
            title="vTAP destination = the Private Endpoint's NIC ip-configuration",
            expected_outcome="rejected",
            expected=f"ARM rejects the vTAP with {ARM_PE_AS_VTAP_DESTINATION}",
            regions=VTAP_REGIONS,
            carries_traffic=False,
            expected_arm_codes=(ARM_PE_AS_VTAP_DESTINATION,),
        ),
        Scenario(
            id="b1",
            title="vTAP -> source-side internal LB whose backend pool holds the PE NIC",
            expected_outcome="rejected",
            expected=f"ARM rejects the NIC edit with {ARM_MODIFY_PE_NIC}",
            regions=VTAP_REGIONS,
            carries_traffic=False,
            # Per attempt: ATTEMPT_EXPECTED_ARM_CODES (the IP-based attempt's is unknown:
            # b1-ilb fronts no PLS, so ARM_PLS_ON_IP_BASED_LB can never be its answer).
            expected_arm_codes=(ARM_MODIFY_PE_NIC, ARM_PLS_ON_IP_BASED_LB),
        ),
        Scenario(
            id="b2",
            title="vTAP -> proxy VM NIC that DNATs UDP/4789 to the PE -> PLS -> ILB -> collector",
            expected_outcome="delivered",
            expected="VXLAN arrives at the collector from a PLS NAT IP; inner GET / and 200 OK",
            regions=VTAP_REGIONS,
            carries_traffic=True,
        ),
        Scenario(
            id="a",
            title="b2's consumer side against a Direct Connect PLS (no provider ILB)",
            expected_outcome=None,
            expected="unknown: recorded; delivered would mean Direct Connect carries vTAP VXLAN",
            regions=VTAP_REGIONS & PLS_DIRECT_CONNECT_REGIONS,
            carries_traffic=True,
        ),
        Scenario(
            id="c1",
            title="Azure Firewall as vTAP destination",
            expected_outcome="not-applicable",
            expected="not expressible: a vTAP destination is a NIC ip-config or an ILB frontend",
            regions=VTAP_REGIONS,
            carries_traffic=False,
        ),
        Scenario(
            id="b3",
            title="HA: vTAP -> source-side ILB frontend -> 2 proxies -> PE",
            expected_outcome="delivered",
            expected="delivered, and still delivered with one proxy down",
            regions=VTAP_REGIONS,
            carries_traffic=True,
        ),
        Scenario(
            id="msp",
            title="N tenants with the same address space -> N PEs -> one PLS -> one collector",
            expected_outcome="delivered",
            expected="delivered per tenant, told apart by VXLAN VNI",
            regions=VTAP_REGIONS,
            carries_traffic=True,
        ),
        Scenario(
            id="b4",
            title="HA tier: vTAP -> source-side ILB frontend (HTTP probe) -> proxy scale set "
                  "(Flexible, zones, rolling OS upgrades) -> PE",
            expected_outcome="delivered",
            expected="delivered, and still delivered with one instance's rewrite gone",
            regions=VTAP_REGIONS,
            carries_traffic=True,
        ),
    )
}

# Scenarios whose run sends traffic through the data path (a capture, a client, a verdict on
# what arrived); the others are ARM answers (r1, b1) or not expressible (c1).
TRAFFIC_SCENARIOS: tuple[str, ...] = tuple(s for s, v in SCENARIOS.items() if v.carries_traffic)

# How the proxy VM forwards the vTAP's VXLAN to the Private Endpoint (cloudinit/vtap-proxy.sh
# --mode): an nftables netdev hook, stateless NAT, or conntrack DNAT. The first is the default.
PROXY_MODES: tuple[str, ...] = ("netdev", "stateless", "conntrack")

# A VXLAN Network Identifier is 24 bits (RFC 7348, section 5 "VXLAN Frame Format").
VNI_MAX = 2**24 - 1

# msp: tenants (consumer VNets) a stack or the emulator may have. One vTAP per tenant, so at
# most the per-subscription vTAP limit; three unless the stack says otherwise.
MSP_TENANTS_RANGE: tuple[int, int] = (1, MAX_VTAPS_PER_SUBSCRIPTION)
MSP_TENANTS_DEFAULT = 3

# NSG rule sources that admit the whole internet, compared lower-case: "*" (portal "Any"), the
# "Internet" service tag, and the all-addresses prefix of either family (Azure docs "Network
# security groups", section "Security rules": source "Any, ... CIDR block, service tag").
OPEN_SOURCES: frozenset[str] = frozenset({"*", "any", "internet", "0.0.0.0/0", "::/0"})

# ---------------------------------------------------------------------------------------------
# Azure's behaviours the local twin enforces (one entry each, with doc + section) and what
# Azure does not document (named assumptions with the value the twin uses): they live in
# vtaplab/behaviours.py, vocabulary like this module, and are re-exported here.
# ---------------------------------------------------------------------------------------------
from vtaplab.behaviours import ASSUMPTIONS, BEHAVIOURS  # noqa: E402,F401

# --- Documented Azure behaviour the Pulumi program relies on (the `program` block) ----------
# Each entry: what Azure does, and where it says so. The program's shape follows from them;
# tests/program/ checks the program against each.

# vTAP overview (articles/virtual-network/virtual-network-tap-overview.md), "Public preview
# limitations -> Adding a source": "Before adding a VM as a source, you must first deploy a
# virtual network TAP resource and then STOP (deallocate) and START the source VM ... If not
# done, you will get an error stating the NIC is not on fastpath." A VM whose first boot
# comes after the vTAP and its tap configuration needs no restart (Microsoft's demo lab
# creates vTAP -> NIC with tap configuration -> VM); a VM that already ran needs one.
VTAP_SOURCE_ORDER_SOURCE = ("vTAP overview, Public preview limitations, Adding a source "
                            "(MicrosoftDocs/azure-docs virtual-network-tap-overview.md)")
# Same section: "When a VM is added or removed as a source, the VM might experience network
# downtime (up to 60 seconds)." The run waits this long after the last source joined.
VTAP_SOURCE_BLIP_SECONDS = 60

# Load Balancer components (articles/load-balancer/components.md), "Limitations": "forwarding
# IP fragments isn't supported on load-balancing rules ... High availability ports
# load-balancing rules can be used to forward existing IP fragments." Full-size mirrored
# frames make fragmented VXLAN datagrams: every LB on the mirror path has an HA-ports rule
# (protocol All, frontend and backend port 0).
LB_FRAGMENTS_SOURCE = "Load Balancer components, Limitations (IP fragments; HA ports)"
LB_HA_PORTS_PROTOCOL = "All"
LB_HA_PORTS_PORT = 0

# Compute REST spec (Microsoft.Compute virtualMachine.json, OSProfile): customData "cannot
# be updated after the VM is created" (ARM: PropertyChangeNotAllowed), at most 65535 bytes
# once decoded, "Do not pass any secrets or passwords in customData"; adminUsername and
# computerName cannot be updated after creation either. Named assumption (not in the spec's
# text): the admin SSH keys of osProfile.linuxConfiguration are create-only too (ARM answers
# PropertyChangeNotAllowed; a key is changed with the VMAccess extension instead).
# azure-native has no replace rule for any of them (pulumi-azure-native issue 577): the
# program asks for replacement itself.
VM_CREATE_ONLY_SOURCE = "Compute REST spec, OSProfile (customData, adminUsername, computerName)"
ARM_PROPERTY_CHANGE_NOT_ALLOWED = "PropertyChangeNotAllowed"
# The VM input paths (azure-native wire names) ARM refuses to change in place.
VM_CREATE_ONLY_INPUTS: tuple[str, ...] = (
    "osProfile.customData",
    "osProfile.adminUsername",
    "osProfile.computerName",
    "osProfile.linuxConfiguration.ssh.publicKeys",
)

# Private Endpoint static address: an ip-configuration with privateIPAddress needs the
# remote resource's groupId and memberName (Network REST spec,
# PrivateEndpointIPConfigurationProperties), which a customer Private Link Service does not
# have; Microsoft answered in MicrosoftDocs/azure-docs issue 114103 that static addresses are
# not supported toward a third-party PLS. Default: a dynamic address, read back from ARM.
# A dynamic address is "the next available unassigned or unreserved IP address in the
# subnet's address range" (Azure docs "Private IP addresses", Allocation method); Azure
# reserves the first four addresses of every subnet (network, default gateway, two for DNS:
# VNet FAQ "Are there any restrictions on using IP addresses within these subnets?"). In an
# otherwise empty subnet the first dynamic address is therefore host 4 (x.x.x.4).
DYNAMIC_FIRST_HOST = 4
PE_STATIC_IP_SOURCE = ("Network REST spec PrivateEndpointIPConfigurationProperties "
                       "(groupId, memberName); azure-docs issue 114103")

# Load Balancer backend pool management (articles/load-balancer/backend-pool-management.md),
# "Limitations": "Private endpoint resources can't be placed in an IP based backend pool" —
# with no documented error code, so b1's IP-based attempt expects nothing in particular.
LB_IP_POOL_PE_SOURCE = "Load Balancer backend pool management, Limitations"

# NRP serialises writes within a VNet: a NIC, LB, PE or PLS joining a subnet while a sibling
# subnet is still being written gets AnotherOperationInProgress (reported across ARM
# templates, Bicep and Terraform, e.g. Azure/bicep issue 5132,
# Azure/bicep-registry-modules issue 1831). Named assumption: waiting for the VNet's last
# subnet write avoids it; Azure documents no ordering rule.
ARM_ANOTHER_OPERATION_IN_PROGRESS = "AnotherOperationInProgress"
SUBNET_WRITES_ASSUMPTION = ("NRP serialises a VNet's writes: join a VNet only after its last "
                            "subnet write (AnotherOperationInProgress otherwise)")

# What ARM is expected to answer per rejected attempt (vtaplab.azure.attempts names them).
# None: unknown, as scenario a's outcome: the documented limitation (LB_IP_POOL_PE_SOURCE)
# has no documented code, so the run records ARM's answer and nothing can "match".
ATTEMPT_EXPECTED_ARM_CODES: dict[str, tuple[str, ...] | None] = {
    "vtap-pe-destination": (ARM_PE_AS_VTAP_DESTINATION,),
    "nic-pool": (ARM_MODIFY_PE_NIC,),
    "ip-pool": None,
}

# ============================================================================================
# b4: the proxy tier as a Flexible-orchestration scale set (issue 15). Every Azure behaviour
# components/proxy_tier.py relies on, each with its source; what the sources leave open is a
# named assumption. `doctor` reads the features to check from here.
# ============================================================================================


@dataclass(frozen=True)
class TierFact:
    """One Azure behaviour the scale-set proxy tier relies on, and where Azure says so."""

    id: str
    statement: str
    source: str
    assumption: bool = False
    """True where Azure does not document it: the lab assumes it until a real run shows."""


# The health endpoint every proxy behind a load balancer runs (cloudinit/vtap-health.py): the
# consumer LB's HTTP probe and the scale set's Application Health extension both ask it.
HEALTH_PORT = 8080
HEALTH_PATH = "/health"
# The LB's probes (and the Application Health extension's, from inside the VM) come from the
# platform's address, which this service tag names; no other source may reach the port.
HEALTH_PROBE_SOURCE = "AzureLoadBalancer"
# Probe cadence of the consumer LB in front of the proxies (b3, b4): a proxy is out after
# PROBE_INTERVAL_S * PROBE_THRESHOLD seconds of failed probes at most.
PROBE_INTERVAL_S = 5
PROBE_THRESHOLD = 1

# Scale sets in Flexible orchestration that create NICs from the profile must name the
# Microsoft.Network API version they are created with.
VMSS_FLEX_NETWORK_API_VERSION = "2020-11-01"
# A zonal or zone-spanning Flexible scale set takes platformFaultDomainCount 1 only (max
# spreading across fault domains inside each zone).
VMSS_FLEX_ZONAL_FAULT_DOMAINS = 1
# Rolling upgrade policy on Flexible orchestration is a preview behind this feature.
VMSS_FLEX_ROLLING_UPGRADE_FEATURE = "Microsoft.Compute/VMSSFlexRollingUpgrade"
# Listed beside it in the newest prerequisites (image-reference upgrades of Flexible-set VMs);
# whether automatic OS image upgrades need it is not said: doctor should check both.
VMSS_FLEX_IMAGE_UPGRADE_FEATURE = "Microsoft.Compute/ImageReferenceUpgradeForVmoVMs"
# Application Health extension for Linux: publisher, type, handler version (1.0: binary
# healthy/unhealthy from an HTTP 200).
APP_HEALTH_EXTENSION = ("Microsoft.ManagedServices", "ApplicationHealthLinux", "1.0")
# A platform image automatic OS image upgrades support: Ubuntu 22.04 LTS Gen2 x64 is on the
# list, Ubuntu 24.04 LTS x64 ("ubuntu-24_04-lts"/"server") is not (only its arm64 SKU is).
AUTO_OS_UPGRADE_IMAGE: dict[str, str] = {
    "publisher": "Canonical",
    "offer": "0001-com-ubuntu-server-jammy",
    "sku": "22_04-lts-gen2",
    "version": "latest",
}
# Regions of VTAP_REGIONS that have availability zones (the tier spreads over 1, 2, 3 there;
# elsewhere it is regional).
ZONE_REGIONS: frozenset[str] = frozenset(
    {"eastasia", "uksouth", "eastus", "centralindia", "germanywestcentral", "centralus"})
AVAILABILITY_ZONES: tuple[str, ...] = ("1", "2", "3")
# vtaplab:proxyCount bounds (instances of the b4 scale set): at least one proxy; at most ten,
# a lab's cost bound (each instance bills like one proxy VM), not an Azure limit.
PROXY_COUNT_RANGE = (1, 10)
# Why a proxy behind the LB was at fault in a twin run (a failover window's cause), as a
# verdict's reason and the report's captions say it.
FAILOVER_CAUSES: dict[str, str] = {"down": "went down", "upgrade": "went down for its upgrade",
                                   "rewrite": "lost its rewrite"}

PROXY_TIER_FACTS: tuple[TierFact, ...] = (
    TierFact("flex-network-api-version",
             "A Flexible scale set that defines NICs in its profile must set "
             "networkProfile.networkApiVersion (first supported: "
             f"{VMSS_FLEX_NETWORK_API_VERSION}).",
             "Azure REST spec Microsoft.Compute ComputeRP/virtualMachineScaleSet.json, "
             "VirtualMachineScaleSetNetworkProfile.networkApiVersion ('specifies the "
             "Microsoft.Network API version used when creating networking resources in the "
             "Network Interface Configurations for Virtual Machine Scale Set with orchestration "
             "mode Flexible'); learn.microsoft.com NetworkApiVersion: '2020-11-01: initial "
             "version supported'"),
    TierFact("flex-zonal-fault-domains",
             "A zonal or zone-spanning Flexible scale set supports platformFaultDomainCount 1 "
             "only (max spreading).",
             "docs: virtual-machine-scale-sets-manage-fault-domains, 'Supported fault domain "
             "configurations' table (Flexible, zonal or zone-spanning: 1)"),
    TierFact("flex-rolling-upgrade-preview",
             "Rolling upgrade policy on Flexible orchestration is in preview; the subscription "
             f"must register the feature {VMSS_FLEX_ROLLING_UPGRADE_FEATURE} first.",
             "docs: virtual-machine-scale-sets-configure-rolling-upgrades, note and "
             "'Prerequisites / Feature Registration' (Register-AzProviderFeature -FeatureName "
             "VMSSFlexRollingUpgrade -ProviderNamespace Microsoft.Compute)"),
    TierFact("flex-image-upgrade-feature",
             f"The newest prerequisites also register {VMSS_FLEX_IMAGE_UPGRADE_FEATURE}; "
             "the lab assumes automatic OS image upgrades of Flexible-set VMs need it too.",
             "assumption: learn.microsoft.com virtual-machine-scale-sets-configure-rolling-"
             "upgrades, 'Feature Registration' lists it without saying what needs it",
             assumption=True),
    TierFact("flex-health-signal-is-the-extension",
             "Rolling upgrades need a health signal; on Flexible orchestration it must be the "
             "Application Health extension, because LB health probes aren't supported there "
             "(networkProfile.healthProbe is a Uniform-only signal).",
             "docs: virtual-machine-scale-sets-configure-rolling-upgrades, 'Requirements' "
             "('If using Virtual Machine Scale Sets with Flexible Orchestration Mode, "
             "Application Health Extension is required as Health probes aren't supported')"),
    TierFact("rolling-upgrade-refused-without-health",
             "ARM refuses a rolling or automatic-OS-upgrade scale set with no health probe or "
             "extension: 'Rolling Upgrade mode is not supported for this Virtual Machine Scale "
             "Set because a health probe or health extension was not provided' / 'Automatic OS "
             "Upgrade is not supported ... because a health probe or health extension was not "
             "specified'.",
             "ARM errors quoted in github.com/gbowerman/azure-myriad issue 30 and "
             "Azure-Samples/open-source-labs issue 46; docs: "
             "virtual-machine-scale-sets-automatic-upgrade, 'Requirements'"),
    TierFact("auto-os-upgrade-requirements",
             "Automatic OS image upgrades need image version 'latest', a health probe or the "
             "Application Health extension, Compute API 2018-10-01 or later, and a patch mode "
             "other than AutomaticByPlatform; batches are at most 20% of the set (minimum one "
             "VM), each waits up to 5 minutes for the instance to become healthy, and an "
             "instance that doesn't is rolled back to its previous OS disk.",
             "docs (MicrosoftDocs/azure-compute-docs): virtual-machine-scale-sets-automatic-"
             "upgrade, 'Requirements for configuring automatic OS image upgrade' and "
             "'Upgrading virtual machines in a scale set'"),
    TierFact("auto-os-upgrade-images",
             "Only listed platform images get automatic OS upgrades: Canonical "
             "0001-com-ubuntu-server-jammy 22_04-LTS-Gen2 is listed, ubuntu-24_04-lts only as "
             "server-arm64; so the tier runs Ubuntu 22.04 LTS Gen2.",
             "docs (MicrosoftDocs/azure-compute-docs): virtual-machine-scale-sets-automatic-"
             "upgrade, 'Supported OS images'"),
    TierFact("auto-os-upgrade-reruns-custom-data",
             "An OS image upgrade replaces the OS disk and runs the configured extensions and "
             "custom data scripts again: the rewrite and the health endpoint come back from "
             "the same user data.",
             "docs: virtual-machine-scale-sets-automatic-upgrade, characteristics ('Configured "
             "extensions and custom data scripts are run')"),
    TierFact("app-health-extension-http",
             "The Application Health extension (Microsoft.ManagedServices/ApplicationHealthLinux) "
             "probes an HTTP endpoint on the instance itself (settings protocol, port, "
             "requestPath); a 200 is healthy.",
             "docs: virtual-machine-scale-sets-health-extension, 'Extension schema for "
             "Application Health Extensions'"),
    TierFact("lb-http-probe",
             "A Standard LB HTTP probe counts a backend healthy on HTTP 200 only; any other "
             "status, a timeout or a refused connection marks it down after the probe "
             "threshold; probes come from 168.63.129.16, the AzureLoadBalancer service tag, "
             "which the NSG default rule AllowAzureLoadBalancerInBound admits.",
             "docs: load-balancer-custom-probe-overview, 'Probe protocol' (HTTP: 'Only a "
             "status code of 200 is considered healthy') and 'Probe source IP address'"),
    TierFact("lb-tcp-probe",
             "A TCP probe counts a backend healthy when its port completes the handshake: it "
             "sees the VM and its sshd, never whether the proxy's rewrite is installed (what "
             "vtaplab:proxyProbe tcp exists to show).",
             "Azure REST spec Microsoft.Network stable/2024-05-01/loadBalancer.json, "
             "ProbePropertiesFormat.protocol ('If 'Tcp' is specified, a received ACK is "
             "required for the probe to be successful')"),
    TierFact("nsg-default-allows-vnet",
             "Every NSG ends in AllowVnetInBound (65000): without a deny rule, anything in the "
             "VNet reaches the health port, so the tier denies VirtualNetwork on it after "
             "admitting AzureLoadBalancer.",
             "docs: network-security-groups-overview, 'Default security rules'"),
    TierFact("flex-no-default-outbound",
             "A Flexible scale set's instances get no default outbound access: each instance "
             "needs explicit outbound (here a Standard public IP per instance, inbound closed "
             "by the NSG) for apt and the lab's SSH.",
             "docs: virtual-machine-scale-sets-networking, 'Explicit network outbound "
             "connectivity for Flexible scale sets'"),
    TierFact("no-auto-shutdown-for-scale-sets",
             "DevTest Labs auto-shutdown schedules (shutdown-computevm-*) target single VMs; "
             "the tier's instances bill until pulumi destroy (the expires-on tag marks them).",
             "assumption: the schedule's targetResourceId names a virtualMachines id; no "
             "documented scale-set form", assumption=True),
    TierFact("vtap-lb-frontend-flex-pool",
             "A vTAP whose destination is an internal LB frontend mirrors to the members of its "
             "backend pool whatever created their NICs (here the scale set's).",
             "assumption: the vTAP docs name an 'internal load balancer frontend IP "
             "configuration' as destination and say nothing of scale sets", assumption=True),
)
