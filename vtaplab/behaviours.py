"""Azure's behaviours the local twin enforces, as data: one entry each, with its source.

A ``Behaviour`` is documented by Azure (the document and its section are named, so a reader
can check it and a change in the docs has one place to land). An ``Assumption`` is something
the twin has to decide that Azure does not document; it carries the value the twin uses, so an
emulated verdict says exactly what it rests on. ``vtaplab.emulator.topology`` reads these
entries (by id) when it turns a resource graph into namespaces; every run prints the ones in
force and ``verdict.json`` lists them. Vocabulary only: this module imports nothing of the lab.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# ---------------------------------------------------------------------------------------------
# Documented behaviours
# ---------------------------------------------------------------------------------------------
AZURE_LB_PROBE_SOURCE = "168.63.129.16"   # the AzureLoadBalancer service tag's address
AZURE_NSG_PRIORITY_DEFAULTS = 65000       # default rules: 65000, 65001, 65500


@dataclass(frozen=True)
class Behaviour:
    id: str
    text: str
    source: str       # document (learn.microsoft.com path) and section


@dataclass(frozen=True)
class Assumption:
    id: str
    text: str
    value: str        # what the twin uses
    why: str          # why this value (and how a run on Azure would tell)


BEHAVIOURS: dict[str, Behaviour] = {b.id: b for b in (
    Behaviour(
        "vnet-routing",
        "Subnets of one VNet route to each other (system routes); unpeered VNets have no path "
        "between them, even with the same address space.",
        "virtual-network/virtual-networks-udr-overview.md, 'System routes' / 'Default'"),
    Behaviour(
        "nic-ip-forwarding",
        "A NIC without IP forwarding drops packets not addressed to one of its IPs and packets "
        "it sends with a source that is not its own.",
        "virtual-network/virtual-network-network-interface.md, 'Enable or disable IP "
        "forwarding'"),
    Behaviour(
        "nsg-rules",
        "An NSG evaluates its rules in priority order (lowest number first); the first match "
        "allows or denies; rules match protocol, source/destination prefix and port range.",
        "virtual-network/network-security-groups-overview.md, 'Security rules'"),
    Behaviour(
        "nsg-defaults",
        "Every NSG ends with AllowVnetInBound (65000), AllowAzureLoadBalancerInBound (65001), "
        "DenyAllInBound (65500) and AllowVnetOutBound, AllowInternetOutBound, "
        "DenyAllOutBound.",
        "virtual-network/network-security-groups-overview.md, 'Default security rules'"),
    Behaviour(
        "service-tags",
        "Service tag VirtualNetwork is the VNet's address space (plus peered VNets and "
        "168.63.129.16); AzureLoadBalancer is the health probe source 168.63.129.16.",
        "virtual-network/service-tags-overview.md, 'Available service tags'; "
        "virtual-network/what-is-ip-address-168-63-129-16.md"),
    Behaviour(
        "lb-port-rule",
        "A load-balancing rule matches its protocol and frontend port, hashes each flow "
        "(5-tuple) to a healthy backend, rewrites the destination and keeps the source "
        "(floating IP off).",
        "load-balancer/distribution-mode-concepts.md, 'Hash-based distribution'; "
        "load-balancer/components.md, 'Load-balancing rules'"),
    Behaviour(
        "lb-port-rule-fragments",
        "Load-balancing rules other than HA ports do not forward IP fragments.",
        "load-balancer/load-balancer-ha-ports-overview.md, 'Limitations' (current text: only "
        "HA-ports rules forward fragments; the stored 2017 copy of the page predates that "
        "line, re-check it); ../shared/DESIGN.md 'Facts'"),
    Behaviour(
        "lb-ha-ports",
        "An HA-ports rule (protocol All, ports 0) on an internal Standard LB forwards every "
        "protocol and port, IP fragments included.",
        "load-balancer/load-balancer-ha-ports-overview.md, 'Supported configurations'"),
    Behaviour(
        "lb-probes",
        "A backend takes flows only while its health probe succeeds (probe protocol, port, "
        "interval; probeThreshold consecutive failures take it out, as many consecutive "
        "successes put it back).",
        "load-balancer/load-balancer-custom-probe-overview.md, 'Probe configuration'; REST "
        "spec Microsoft.Network loadBalancer.json, ProbePropertiesFormat.probeThreshold"),
    Behaviour(
        "pls-nat",
        "A Private Link Service source-NATs consumer traffic to its NAT IP configurations and "
        "sends it to its load balancer frontend (Direct Connect: to destinationIPAddress); the "
        "provider sees the NAT IP as source.",
        "private-link/private-link-service-overview.md, 'NAT (Network Address Translation) IP "
        "configuration'; private-link/configure-private-link-service-direct-connect.md"),
    Behaviour(
        "pe-address",
        "A Private Endpoint is an address in the consumer's subnet; traffic to it reaches the "
        "connected Private Link Service.",
        "private-link/private-endpoint-overview.md, 'Private endpoint properties'"),
    Behaviour(
        "vtap-mirror",
        "vTAP mirrors a tapped NIC's traffic, both directions, encapsulated in VXLAN to the "
        "destination port of its destination (a NIC ip-configuration or an internal LB "
        "frontend).",
        "virtual-network/virtual-network-tap-overview.md, 'Virtual network TAP' / "
        "'Prerequisites'"),
    Behaviour(
        "vtap-fastpath",
        "Mirroring starts only when the source VM is (first or re-)started after the vTAP "
        "exists; otherwise ARM reports the NIC 'is not on fastpath' and nothing is mirrored.",
        "virtual-network/virtual-network-tap-overview.md, 'Adding a source' "
        "(../shared/DESIGN.md 'Facts')"),
    Behaviour(
        "vmss-flex-instances",
        "A scale set in Flexible orchestration creates sku.capacity VMs from its profile, each "
        "with its own NIC from the profile's network interface configuration (its subnet, NSG, "
        "IP forwarding and load balancer backend pools), spread over the scale set's zones.",
        "virtual-machine-scale-sets/virtual-machine-scale-sets-orchestration-modes.md, "
        "'Scale sets with Flexible orchestration'; REST spec Microsoft.Compute "
        "virtualMachineScaleSet.json, VirtualMachineScaleSetNetworkConfiguration"),
    Behaviour(
        "vmss-rolling-upgrade",
        "A rolling upgrade brings the instances down in batches (at most "
        "maxBatchInstancePercent at once); once a batch is upgraded and healthy it takes "
        "traffic again, and after pauseTimeBetweenBatches the next batch begins.",
        "virtual-machine-scale-sets/virtual-machine-scale-sets-configure-rolling-upgrades.md, "
        "'Concepts'; .NET API UpgradeMode.Rolling ('The existing instances in a scale set are "
        "brought down in batches to be upgraded. Once the upgraded batch is complete, the "
        "instances will begin taking traffic again and the next batch will begin.')"),
)}


ASSUMPTIONS: dict[str, Assumption] = {a.id: a for a in (
    Assumption(
        "vtap-vni", "The VNI vTAP puts on mirrored frames.", "1",
        "not documented; an Azure capture (evidence/<stack>/<scenario>/proxy.pcap) shows it"),
    Assumption(
        "vtap-outer-source", "The outer source address of vTAP's VXLAN.",
        "the tapped NIC's own IP",
        "not documented; inside the VNet, so the NSG rules for VirtualNetwork admit it"),
    Assumption(
        "vtap-outer-port", "The outer UDP source port of vTAP's VXLAN.",
        "the Linux VXLAN default: a hash of the inner flow (one port per inner flow)",
        "not documented; outer_udp_source_ports in an Azure verdict shows it"),
    Assumption(
        "pls-fragments", "Whether a Private Link Service forwards non-first IP fragments.",
        "yes (the PLS path reassembles and forwards them)",
        "not documented (DESIGN: 'measure it'); a b2 run on Azure with HA ports tells"),
    Assumption(
        "lb-frontend-vxlan", "Whether an internal LB frontend accepts VXLAN from a vTAP.",
        "yes (b3's vTAP destination is an LB frontend)",
        "documented as a destination type, not whether its rules see the VXLAN as any flow"),
    Assumption(
        "ha-ports-hash", "How an HA-ports rule hashes IP fragments (no ports in them).",
        "on source and destination address, so all fragments of a datagram go together",
        "not documented"),
    Assumption(
        "pls-nat-ip", "Which NAT IP a PLS uses for a consumer's flows.",
        "its primary ipConfiguration",
        "not documented; outer_sources in an Azure verdict shows it"),
    Assumption(
        "nsg-stateless", "NSG flow state.",
        "rules are evaluated per packet; every flow the lab makes is allowed both ways by the "
        "VirtualNetwork rules, so flow state makes no difference here",
        "NSGs are stateful; the twin doesn't need state for the lab's flows"),
    Assumption(
        "nsg-fragments", "How an NSG port rule treats a non-first fragment (no ports).",
        "a rule with a port range does not match it; address/protocol rules do",
        "not documented"),
    Assumption(
        "probe-interval-scale", "Health probe timing in the twin.",
        "interval scaled from the declared seconds by 0.04 (5 s -> 0.2 s), declared "
        "threshold kept (that many probes in a row take a backend out or put it back); each "
        "probe waits at most 0.5 s for its answer (a backend that went down costs that)",
        "keeps a failover window short enough for a test; the logic is the declared one"),
    Assumption(
        "vmss-instance-addresses", "Which addresses a Flexible scale set's instances get.",
        "the subnet's next free dynamic ones from x.x.x.4, in instance order",
        "dynamic allocation takes 'the next available unassigned or unreserved IP address' "
        "(documented) but which instance gets which is not; the twin's verdicts don't depend "
        "on it"),
    Assumption(
        "upgrade-no-drain", "Whether a rolling upgrade takes an instance out of the load "
        "balancer before bringing it down.",
        "no: the instance stops, and the LB's probe takes it out as for a VM that went down; "
        "the upgraded instance takes traffic again once its probe answers 200",
        "not documented for Flexible orchestration (no LB-probe signal there); a real b4 "
        "rolling upgrade during a capture tells"),
    Assumption(
        "upgrade-boot-order", "When an upgraded instance's rewrite is back, against its NIC "
        "and sshd.",
        "later: cloud-init's final stage (its runcmd enables vtap-proxy.service) runs after "
        "the network and sshd are up; the twin installs the rewrite ten probe intervals (50 s "
        "on Azure's clock, scaled) after the NIC is up",
        "not documented; it is why a TCP/22 probe puts an upgraded proxy back too early and "
        "an HTTP probe of vtap-health.py doesn't. A real b4 upgrade under capture tells"),
    Assumption(
        "upgrade-pause-scale", "The pause between rolling-upgrade batches in the twin.",
        "pauseTimeBetweenBatches scaled as the probe interval",
        "keeps a rolling upgrade within a test's time; the order of events is the declared one"),
)}


def listing(behaviour_ids: list[str], assumption_ids: list[str]) -> dict[str, list[dict]]:
    """The entries a run relied on, as verdict.json lists them."""
    return {"behaviours": [asdict(BEHAVIOURS[i]) for i in behaviour_ids],
            "assumptions": [asdict(ASSUMPTIONS[i]) for i in assumption_ids]}
