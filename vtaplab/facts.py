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
