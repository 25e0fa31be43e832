"""Preflight rules: what Azure will refuse (or silently break) in a stack, before any cloud call.

Every rule is a pure function over the registered resource graph — the list that
``python -m vtaplab graph STACK --json`` prints: ``[{"urn", "type", "name", "parent",
"inputs"}]`` with azure-native's wire names (``destinationNetworkInterfaceIPConfiguration``,
``enableIPForwarding``, ...). The same functions run in ``python -m vtaplab check`` and in the
pulumi-policy pack (``policy/``), so the two can never disagree.

The two callers see different shapes of the same resources, and every rule reads both:

- ``check`` sees *inputs* (the program under mocks): path parameters such as
  ``networkInterfaceName``, ``virtualNetworkName``, ``vmName`` name the resource and its parent.
- The policy pack sees what the engine sends a stack policy: each resource's *outputs*
  (pulumi/pulumi ``pkg/resource/deploy/step_generator.go``, ``AnalyzeResources``) — entries
  with ``"outputs"`` instead of ``"inputs"``. azure-native outputs follow the ARM response
  schema: no path parameters, but ``id``, ``name`` and ``type``, and references as ids
  (recorded state of a real deployment: pulumi/pulumi-azure-native
  ``provider/pkg/provider/testdata/recorded/TestProviderUpgrade/upgrade-networked-vm/2.76.0/
  stack.json``). In a preview, a resource still to be created has outputs computed from its
  inputs with every response-only value unknown (azure-native ``Create`` with
  ``preview``: ``PreviewOutputs``), so its ``id`` and every id taken from another new
  resource are unknown; the engine then still sends ``propertyDependencies`` (input property
  -> URNs it came from), which the entry carries as ``"propertyDependencies"``.

So a reference is resolved, in order, from an input name, from an ARM id (a resource's own
``id`` names its parent too), and from the property's dependencies.

Two habits keep the rules honest:

- References between resources are ARM ids, which may be unknown (preview) or mock ids. They
  are resolved by type and name where possible; anything unresolvable is *unknown*, and an
  unknown never produces a finding. A rule reports only what it can show.
- The rejected experiments (r1, b1) are not azure-native resources but a dynamic provider that
  makes one ARM request. Its request (an ARM path and body) is read back into the resource the
  request would create or change, so the rules see it like any other resource.

Every fact (regions, limits, error codes) comes from ``vtaplab.facts``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vtaplab import arm_ids, facts

MANDATORY = "mandatory"
ADVISORY = "advisory"
SEVERITIES: tuple[str, ...] = (MANDATORY, ADVISORY)

# azure-native type tokens the rules read.
NET = "azure-native:network:"
T_NIC = NET + "NetworkInterface"
T_TAP = NET + "VirtualNetworkTap"
T_TAP_CONFIG = NET + "NetworkInterfaceTapConfiguration"
T_PE = NET + "PrivateEndpoint"
T_PLS = NET + "PrivateLinkService"
T_LB = NET + "LoadBalancer"
T_LB_POOL = NET + "LoadBalancerBackendAddressPool"
T_NSG = NET + "NetworkSecurityGroup"
T_RULE = NET + "SecurityRule"
T_VNET = NET + "VirtualNetwork"
T_SUBNET = NET + "Subnet"
T_PEERING = NET + "VirtualNetworkPeering"
T_VM = "azure-native:compute:VirtualMachine"
T_VMSS = "azure-native:compute:VirtualMachineScaleSet"
T_RG = "azure-native:resources:ResourceGroup"
# Anything that would join the consumer and the provider networks, which the lab rules out.
BRIDGE_TYPES: frozenset[str] = frozenset(
    NET + t
    for t in (
        "VirtualNetworkPeering",
        "VirtualNetworkGateway",
        "VirtualNetworkGatewayConnection",
        "VpnGateway",
        "VpnConnection",
        "VpnSite",
        "LocalNetworkGateway",
        "ExpressRouteCircuit",
        "ExpressRouteGateway",
        "VirtualHub",
        "VirtualHubVnetConnection",
        "HubVirtualNetworkConnection",
        "VirtualWan",
    )
)

# How Pulumi (and pulumi-policy) mark a value that is not known during preview.
_UNKNOWN_SENTINELS: frozenset[str] = frozenset(
    {
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",  # string (also pulumi.runtime's UNKNOWN)
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",  # boolean
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",  # number
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",  # array
        "030794c1-ac77-496b-92df-f27374a8bd58",  # asset
        "e48ece36-62e2-4504-bad9-02848725956a",  # archive
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",  # object
    }
)
_VNET_SOURCE = frozenset({"*", "virtualnetwork", "0.0.0.0/0", "any"})


# ---------------------------------------------------------------------------------------------
# Values that may be unknown


def is_unknown(value: Any) -> bool:
    """True for a value nobody knows yet: missing, a Pulumi unknown sentinel, or a marker."""
    if value is None:
        return True
    if isinstance(value, str):
        v = value.strip()
        return v in _UNKNOWN_SENTINELS or v.lower().startswith(("<unknown", "[unknown", "unknown:"))
    return type(value).__name__ == "Unknown"


_MISSING = object()


def _step(cur: Any, step: str | int) -> Any:
    """One step along a path through dicts and lists: the item there, or ``_MISSING``."""
    if isinstance(step, int):
        if not isinstance(cur, Sequence) or isinstance(cur, str) or step >= len(cur):
            return _MISSING
        return cur[step]
    if isinstance(cur, Mapping) and step in cur:
        return cur[step]
    return _MISSING


def get(obj: Any, *path: str | int) -> Any:
    """Walk ``path`` through dicts and lists; None (unknown) wherever a step is missing."""
    cur = obj
    for step in path:
        cur = _step(cur, step)
        if cur is _MISSING or is_unknown(cur):
            return None
    return cur


def unknown_at(obj: Any, *path: str | int) -> bool:
    """True when walking ``path`` meets a value that is there but not known.

    Rules that judge an *absence* (no forwarding flag, no UDP rule) must not judge this.
    """
    cur = obj
    for step in path:
        if is_unknown(cur) and cur is not None:
            return True
        cur = _step(cur, step)
        if cur is _MISSING:
            return False
    return cur is not None and is_unknown(cur)


def text(obj: Any, *path: str | int) -> str | None:
    v = get(obj, *path)
    return v.strip() if isinstance(v, str) and v.strip() else None


def items(obj: Any, *path: str | int) -> list[Any]:
    """The list at ``path`` (known elements only); [] when missing or unknown."""
    v = get(obj, *path)
    if not isinstance(v, Sequence) or isinstance(v, str):
        return []
    return [e for e in v if not is_unknown(e)]


def flag(obj: Any, *path: str | int) -> bool | None:
    v = get(obj, *path)
    return v if isinstance(v, bool) else None


def number(obj: Any, *path: str | int) -> float | None:
    v = get(obj, *path)
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------------------------------------
# ARM ids


ArmRef = arm_ids.ArmRef


def parse_arm_id(value: Any) -> ArmRef | None:
    """Parse an ARM id (``vtaplab.arm_ids.parse``); None for anything that is not a concrete
    ARM id (unknown during preview, empty, free text)."""
    if not isinstance(value, str) or is_unknown(value):
        return None
    arm = arm_ids.parse(value)
    if arm is None or any(is_unknown(n) or not n for n in arm.names):
        return None
    return arm


def ref_id(obj: Any) -> str | None:
    """The id inside a sub-resource reference (``{"id": ...}``) or a bare id string."""
    if isinstance(obj, str):
        return None if is_unknown(obj) else obj
    return text(obj, "id")


# ---------------------------------------------------------------------------------------------
# The graph, indexed


@dataclass
class Node:
    """One resource: its graph entry, or one synthesised from an attempt's ARM request."""

    urn: str
    type: str
    name: str
    parent: str | None
    inputs: Mapping[str, Any]  # the properties the rules read: inputs, or the engine's outputs
    attempt_scenario: str | None = None  # set when this is what an attempt will request
    # Input property -> URNs its value came from (the engine's propertyDependencies).
    deps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def arm_ref(self) -> ArmRef | None:
        """The resource's own ARM id (outputs carry ``id``), if known and of its own type."""
        arm = parse_arm_id(text(self.inputs, "id"))
        known = arm_ids.type_of(arm) if arm else None
        return arm if known is not None and known.token == self.type else None

    @property
    def azure_name(self) -> str | None:
        """The Azure name: the program's input (``networkInterfaceName`` ...), else the
        output ``id``'s last name, else the output ``name``."""
        kind = arm_ids.BY_TOKEN.get(self.type)
        if kind is None:
            return None
        arm = self.arm_ref
        return text(self.inputs, kind.name_input) or (arm.names[-1] if arm else None) or \
            text(self.inputs, "name")

    def parent_name(self) -> str | None:
        """A child resource's parent's Azure name (a tap configuration's NIC, a subnet's VNet):
        the path-parameter input, else the second-last name of its own ``id``."""
        kind = arm_ids.BY_TOKEN.get(self.type)
        parent_key = kind.parent_input if kind else None
        if parent_key is None:
            return None
        arm = self.arm_ref
        return text(self.inputs, parent_key) or (
            arm.names[-2] if arm and len(arm.names) > 1 else None)

    def names(self) -> set[str]:
        out = {self.name}
        if self.azure_name:
            out.add(self.azure_name)
        return out


# The attempts vtaplab.azure.attempts makes (its ATTEMPTS keys): each reads the PE at run time and
# then writes one resource, so its inputs hold ids and names, not the final ARM body.
_ATTEMPT_VTAP_PE = "vtap-pe-destination"
_ATTEMPT_NIC_POOL = "nic-pool"
_ATTEMPT_IP_POOL = "ip-pool"
_ATTEMPT_NAMES = (_ATTEMPT_VTAP_PE, _ATTEMPT_NIC_POOL, _ATTEMPT_IP_POOL)
# The name an attempt's synthetic PE NIC gets: "<pe>.nic.<suffix>", as Azure names PE NICs.
_ATTEMPT_NIC_SUFFIX = ".nic.attempt"


def _walk_strings(value: Any, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(key, string) pairs anywhere in ``value``, bounded in depth."""
    if depth > 6:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, str):
                yield str(k), v
            else:
                yield from _walk_strings(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, str):
                yield "", v
            else:
                yield from _walk_strings(v, depth + 1)


def _attempt_name(inputs: Mapping[str, Any]) -> str | None:
    for key in ("attempt", "attempt_name", "attemptName", "name", "kind"):
        if text(inputs, key) in _ATTEMPT_NAMES:
            return text(inputs, key)
    names = {v for _k, v in _walk_strings(inputs) if v in _ATTEMPT_NAMES}
    return names.pop() if len(names) == 1 else None


def _attempt_scenario(inputs: Mapping[str, Any], attempt: str | None) -> str | None:
    scenario = text(inputs, "scenario")
    if scenario in facts.SCENARIOS:
        return scenario
    return {_ATTEMPT_VTAP_PE: "r1", _ATTEMPT_NIC_POOL: "b1", _ATTEMPT_IP_POOL: "b1"}.get(
        attempt or "")


def _ids_in(inputs: Mapping[str, Any], collections: tuple[str, ...]) -> list[ArmRef]:
    out: list[ArmRef] = []
    for _key, value in _walk_strings(inputs):
        arm = parse_arm_id(value)
        if arm and arm.collections == collections and arm not in out:
            out.append(arm)
    return out


def attempt_nodes(entry: Mapping[str, Any]) -> list[Node]:
    """The resources an attempt (a dynamic resource making one ARM write) would write.

    The attempts are the lab's named ones (``vtaplab.azure.attempts``: r1's vTAP at the PE's NIC,
    b1's NIC edit and IP-based pool), whose PE NIC is known only at run time and so is named
    here the way Azure names it.
    """
    inputs = {k: v for k, v in props_of(entry).items() if k != "__provider"}
    attempt = _attempt_name(inputs)
    scenario = _attempt_scenario(inputs, attempt)
    urn, parent = str(entry.get("urn", "")), entry.get("parent")

    def node(typ: str, azure_name: str, node_inputs: dict[str, Any]) -> Node:
        # Named like the attempt resource (that is what a reader finds in the stack); the
        # Azure name it writes is in the inputs, where look-ups read it.
        kind = arm_ids.BY_TOKEN.get(typ)
        if kind:
            node_inputs.setdefault(kind.name_input, azure_name)
        return Node(urn=urn, type=typ, name=str(entry.get("name") or azure_name), parent=parent,
                    inputs=node_inputs, attempt_scenario=scenario or "?")

    if attempt is not None:
        pes = _ids_in(inputs, ("privateEndpoints",))
        pe_name = pes[0].top_name if len(pes) == 1 else _UNRESOLVED_PE
        pe_nic = f"{pe_name}{_ATTEMPT_NIC_SUFFIX}"
        if attempt == _ATTEMPT_VTAP_PE:
            taps = _ids_in(inputs, ("virtualNetworkTaps",))
            ipcfg = f"/providers/Microsoft.Network/networkInterfaces/{pe_nic}/ipConfigurations/pe"
            tap_inputs: dict[str, Any] = {
                "destinationNetworkInterfaceIPConfiguration": {"id": ipcfg},
                "destinationPort": facts.VXLAN_PORT}
            loc = text(inputs, "location")
            if loc:
                tap_inputs["location"] = loc
            return [node(T_TAP, taps[0].top_name if taps else "vtap", tap_inputs)]
        pools = _ids_in(inputs, ("loadBalancers", "backendAddressPools"))
        if attempt == _ATTEMPT_NIC_POOL:
            cfg: dict[str, Any] = {"name": "pe"}
            if pools:
                cfg["loadBalancerBackendAddressPools"] = [
                    {"id": "/providers/Microsoft.Network/loadBalancers/"
                           f"{pools[0].names[0]}/backendAddressPools/{pools[0].names[1]}"}]
            return [node(T_NIC, pe_nic, {"networkInterfaceName": pe_nic,
                                         "ipConfigurations": [cfg]})]
        pool_inputs: dict[str, Any] = {
            "loadBalancerBackendAddresses": [{"name": "private-endpoint",
                                              _PE_MARKER: pe_name}]}
        if pools:
            pool_inputs["loadBalancerName"] = pools[0].names[0]
            pool_inputs["backendAddressPoolName"] = pools[0].names[1]
        return [node(T_LB_POOL, pools[0].names[1] if pools else "pool", pool_inputs)]

    return []


# Stand-in name of a PE an attempt reads but whose id isn't known (yet).
_UNRESOLVED_PE = "private-endpoint"
# Marks a backend address an attempt fills with a PE's IP at run time.
_PE_MARKER = "vtaplabPrivateEndpoint"


class Graph:
    """The resource graph with the look-ups the rules share."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self.entries: list[Mapping[str, Any]] = [e for e in entries if isinstance(e, Mapping)]
        self.nodes: list[Node] = []
        self.by_urn: dict[str, Node] = {}
        for e in self.entries:
            node = Node(urn=str(e.get("urn", "")), type=str(e.get("type", "")),
                        name=str(e.get("name", "")), parent=e.get("parent") or None,
                        inputs=props_of(e), deps=_deps_of(e))
            self.nodes.append(node)
            self.by_urn.setdefault(node.urn, node)
            if "dynamic" in node.type:
                self.nodes.extend(attempt_nodes(e))
            if node.type == T_VMSS:
                self.nodes.extend(scale_set_nodes(node))

    def of_type(self, *types: str) -> list[Node]:
        return [n for n in self.nodes if n.type in types]

    def depended(self, node: Node, prop: str, typ: str) -> list[Node]:
        """The resources of ``typ`` that ``node``'s input ``prop`` came from (the engine's
        propertyDependencies): how references are known while their ids are not."""
        out = [self.by_urn[u] for u in node.deps.get(prop, ()) if u in self.by_urn]
        return [n for n in out if n.type == typ]

    def linked(self, node: Node, prop: str, typ: str) -> Node | None:
        """The one ``typ`` resource ``node``'s ``prop`` refers to: by ARM id (``{"id"}`` or a
        bare id, also a sub-resource's such as an ip-configuration's), else by dependency."""
        arm = parse_arm_id(ref_id(get(node.inputs, prop)))
        known = arm_ids.type_of(arm, depth=1) if arm else None
        if arm is not None and known is not None and known.token == typ:
            return self.find(typ, arm.top_name)
        hits = self.depended(node, prop, typ)
        return hits[0] if len(hits) == 1 else None

    def parent_of(self, child: Node, typ: str, parent_input: str) -> Node | None:
        """A child resource's parent (tap configuration -> NIC, subnet -> VNet): by name from
        the input or its own id, else by the dependency of the path-parameter input."""
        name = child.parent_name()
        if name is not None:
            return self.find(typ, name)
        hits = self.depended(child, parent_input, typ)
        return hits[0] if len(hits) == 1 else None

    def find(self, typ: str, name: str | None) -> Node | None:
        """The one resource of ``typ`` called ``name`` (logical or Azure name); None if 0 or 2+.

        Attempt nodes are not targets of references: they are what the program *tries*.
        """
        if not name:
            return None
        hits = [n for n in self.nodes
                if n.type == typ and n.attempt_scenario is None and name in n.names()]
        return hits[0] if len(hits) == 1 else None

    def resolve(self, ref: Any, typ: str) -> Node | None:
        """The resource an ARM id (or ``{"id": ...}``) names, if it is ``typ`` and in the graph."""
        arm = parse_arm_id(ref_id(ref))
        if arm is None:
            return None
        known = arm_ids.type_of(arm, depth=1)
        if known is None or known.token != typ:
            return None
        return self.find(typ, arm.top_name)

    def ancestors(self, node: Node) -> Iterator[Node]:
        seen: set[str] = set()
        cur = self.by_urn.get(node.parent or "")
        while cur is not None and cur.urn not in seen:
            seen.add(cur.urn)
            yield cur
            cur = self.by_urn.get(cur.parent or "")

    def location(self, node: Node) -> str | None:
        """The region of a resource: its own ``location``, else its resource group's."""
        loc = text(node.inputs, "location")
        if loc:
            return _norm_region(loc)
        rg_name = text(node.inputs, "resourceGroupName")
        rg = self.find(T_RG, rg_name) if rg_name else None
        if rg is None:
            rgs = [n for n in self.of_type(T_RG) if text(n.inputs, "location")]
            # One resource group in the stack: everything lives in it.
            rg = rgs[0] if len(rgs) == 1 and rg_name is None else rg
        loc = text(rg.inputs, "location") if rg else None
        return _norm_region(loc) if loc else None

    # -- the lab's network, resolved ------------------------------------------------------------

    def private_endpoint_nic_owner(self, nic_name: str | None) -> Node | None:
        """The PE or PLS whose Azure-managed NIC is called ``nic_name``, if one is.

        Azure names such a NIC ``<pe-or-pls-name>.nic.<guid>``, or ``customNetworkInterfaceName``.
        """
        if not nic_name:
            return None
        if nic_name.endswith(_ATTEMPT_NIC_SUFFIX):
            # An attempt's stand-in for the NIC of the PE it reads at run time.
            pe_name = nic_name[: -len(_ATTEMPT_NIC_SUFFIX)]
            return self.find(T_PE, pe_name) or Node("", T_PE, pe_name, None, {})
        for n in self.of_type(T_PE, T_PLS):
            if n.attempt_scenario is not None:
                continue
            if text(n.inputs, "customNetworkInterfaceName") == nic_name:
                return n
            if any(nic_name.startswith(f"{name}.nic.") for name in n.names()):
                return n
        return None

    def vnet_of_subnet_ref(self, subnet: Any) -> str | None:
        """The VNet name a subnet reference (id or inline ``{"id"}``) belongs to."""
        arm = parse_arm_id(ref_id(subnet))
        if arm and arm.collections[:2] == ("virtualNetworks", "subnets"):
            vnet = self.find(T_VNET, arm.names[0])
            return _vnet_key(vnet) if vnet else arm.names[0]
        return None

    def vnet_of_subnet(self, subnet: Node) -> str | None:
        """The VNet a Subnet resource belongs to (name from input or id, else dependency)."""
        vnet = self.parent_of(subnet, T_VNET, "virtualNetworkName")
        if vnet is not None:
            return _vnet_key(vnet)
        return subnet.parent_name()

    def vnet_of_nic(self, nic: Node) -> str | None:
        vnets = {self.vnet_of_subnet_ref(get(c, "subnet")) for c in items(nic.inputs,
                                                                           "ipConfigurations")}
        vnets.discard(None)
        if not vnets:  # subnet ids unknown (preview): the subnets the ip-configurations used
            vnets = {self.vnet_of_subnet(s)
                     for s in self.depended(nic, "ipConfigurations", T_SUBNET)}
            vnets.discard(None)
        return vnets.pop() if len(vnets) == 1 else None

    def peered(self, a: str, b: str) -> bool | None:
        """True when a peering joins VNets ``a`` and ``b``; None when a peering is unreadable."""
        unknown = False
        for p in self.of_type(T_PEERING):
            local = text(p.inputs, "virtualNetworkName")
            remote = parse_arm_id(ref_id(get(p.inputs, "remoteVirtualNetwork")))
            if local is None or remote is None:
                unknown = True
                continue
            pair = {self._vnet_name(local), self._vnet_name(remote.top_name)}
            if pair == {a, b}:
                return True
        return None if unknown else False

    def _vnet_name(self, name: str) -> str:
        vnet = self.find(T_VNET, name)
        return _vnet_key(vnet) if vnet else name

    def nic_ip_addresses(self, nic: Node) -> list[str]:
        return [ip for c in items(nic.inputs, "ipConfigurations")
                if (ip := text(c, "privateIPAddress"))]

    def pe_ips(self) -> dict[str, Node]:
        out: dict[str, Node] = {}
        for pe in self.of_type(T_PE):
            for c in items(pe.inputs, "ipConfigurations"):
                ip = text(c, "privateIPAddress")
                if ip:
                    out[ip] = pe
        return out

    def pool_member_nics(self, lb: Node) -> list[Node]:
        """NICs in a load balancer's backend pools (NIC-based membership), as far as known."""
        nics: dict[str, Node] = {}
        for nic in self.of_type(T_NIC):
            for cfg in items(nic.inputs, "ipConfigurations"):
                for ref in items(cfg, "loadBalancerBackendAddressPools"):
                    arm = parse_arm_id(ref_id(ref))
                    if (arm and arm.collections[:2] == ("loadBalancers", "backendAddressPools")
                            and arm.names[0] in lb.names()):
                        nics[nic.urn] = nic
        pools = [p.inputs for p in self.of_type(T_LB_POOL)
                 if text(p.inputs, "loadBalancerName") in lb.names()]
        pools += items(lb.inputs, "backendAddressPools")
        for pool in pools:
            for addr in items(pool, "loadBalancerBackendAddresses"):
                arm = parse_arm_id(ref_id(get(addr, "networkInterfaceIPConfiguration")))
                nic = self.find(T_NIC, arm.top_name) if arm and arm.top == "networkInterfaces" \
                    else None
                if nic is not None:
                    nics[nic.urn] = nic
        return list(nics.values())


def scale_set_nodes(scale_set: Node) -> list[Node]:
    """What a scale set creates for each instance, as the rules read it: one NIC per network
    interface configuration of its profile (``<set>-<config>``) and one VM (its osProfile and
    size). They carry the scale set's URN and parent, so a finding names the scale set and
    ``ancestors`` finds its component (b4's ProxyTier)."""
    set_name = text(scale_set.inputs, "vmScaleSetName") or text(scale_set.inputs, "name") \
        or scale_set.name
    profile = get(scale_set.inputs, "virtualMachineProfile")
    common = {k: v for k in ("location", "resourceGroupName")
              if (v := get(scale_set.inputs, k)) is not None}
    out: list[Node] = []
    for cfg in items(profile, "networkProfile", "networkInterfaceConfigurations"):
        nic_name = f"{set_name}-{text(cfg, 'name') or 'nic'}"
        nic_inputs: dict[str, Any] = {**common, "networkInterfaceName": nic_name,
                                      "ipConfigurations": items(cfg, "ipConfigurations")}
        for key in ("enableIPForwarding", "networkSecurityGroup"):
            if get(cfg, key) is not None:
                nic_inputs[key] = get(cfg, key)
        out.append(Node(urn=scale_set.urn, type=T_NIC, name=nic_name, parent=scale_set.parent,
                        inputs=nic_inputs))
    vm_inputs: dict[str, Any] = {**common, "vmName": set_name}
    if get(profile, "osProfile") is not None:
        vm_inputs["osProfile"] = get(profile, "osProfile")
    if text(scale_set.inputs, "sku", "name"):
        vm_inputs["hardwareProfile"] = {"vmSize": text(scale_set.inputs, "sku", "name")}
    out.append(Node(urn=scale_set.urn, type=T_VM, name=set_name, parent=scale_set.parent,
                    inputs=vm_inputs))
    return out


def props_of(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """The properties of a graph entry the rules read: ``inputs`` (``check``), else
    ``outputs`` (the policy pack: what the engine sends)."""
    for key in ("inputs", "outputs"):
        value = entry.get(key)
        if isinstance(value, Mapping):
            return value
    return {}


def _deps_of(entry: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    raw = entry.get("propertyDependencies")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): tuple(str(u) for u in v) for k, v in raw.items()
            if isinstance(v, Sequence) and not isinstance(v, str)}


def _vnet_key(vnet: Node) -> str:
    return vnet.azure_name or vnet.name


def _norm_region(loc: str) -> str:
    return loc.replace(" ", "").lower()


# ---------------------------------------------------------------------------------------------
# Rules and findings


@dataclass(frozen=True)
class Finding:
    rule: str  # "VTAP001"
    severity: str
    arm_code: str | None
    urn: str
    resource: str  # the resource's logical name
    message: str
    scenario: str | None = None  # the attempt's scenario when the finding is on an attempt

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "arm_code": self.arm_code,
                "urn": self.urn, "resource": self.resource, "message": self.message,
                "scenario": self.scenario}


Hit = tuple[Node, str]
Check = Callable[[Graph], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str  # kebab-case, also the policy name
    severity: str
    arm_code: str | None
    description: str
    check: Check = field(repr=False)

    def run(self, graph: Graph) -> list[Finding]:
        out: list[Finding] = []
        for node, message in self.check(graph):
            f = Finding(self.id, self.severity, self.arm_code, node.urn, node.name, message,
                        node.attempt_scenario)
            if f not in out:
                out.append(f)
        return out


RULES: list[Rule] = []


def rule(id: str, name: str, severity: str, arm_code: str | None,
         description: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        RULES.append(Rule(id, name, severity, arm_code, description, fn))
        return fn
    return register


# -- vTAP destination ---------------------------------------------------------------------------


def _taps(g: Graph) -> list[Node]:
    return g.of_type(T_TAP)


def _dest_nic_ref(tap: Node) -> ArmRef | None:
    arm = parse_arm_id(ref_id(get(tap.inputs, "destinationNetworkInterfaceIPConfiguration")))
    return arm if arm and arm.top == "networkInterfaces" else None


def _dest_nic(g: Graph, tap: Node) -> Node | None:
    arm = _dest_nic_ref(tap)
    if arm is not None:
        return g.find(T_NIC, arm.top_name)
    return g.linked(tap, "destinationNetworkInterfaceIPConfiguration", T_NIC)


def _dest_lb(g: Graph, tap: Node) -> tuple[Node, str] | None:
    arm = parse_arm_id(ref_id(get(tap.inputs, "destinationLoadBalancerFrontEndIPConfiguration")))
    if arm is None or arm.top != "loadBalancers" or len(arm.names) < 2:
        return None
    lb = g.find(T_LB, arm.top_name)
    return (lb, arm.names[1]) if lb else None


@rule("VTAP001", "vtap-destination-not-private-link-nic", MANDATORY,
      facts.ARM_PE_AS_VTAP_DESTINATION,
      "A vTAP destination can't be a Private Endpoint's or Private Link Service's NIC.")
def _vtap_dest_private_link(g: Graph) -> Iterator[Hit]:
    for tap in _taps(g):
        arm = _dest_nic_ref(tap)
        owner = g.private_endpoint_nic_owner(arm.top_name) if arm else None
        if owner is None:
            continue
        kind = "Private Endpoint" if owner.type == T_PE else "Private Link Service"
        yield tap, (f"vTAP destination is the NIC of {kind} {owner.name!r}; ARM rejects it. "
                    "Point the vTAP at a VM NIC that forwards UDP/4789 to the PE "
                    "(a proxy, scenario b2) or at an internal LB frontend in front of proxies "
                    "(b3).")


@rule("VTAP002", "vtap-destination-kind", MANDATORY, None,
      "A vTAP destination is a NIC ip-configuration or an internal LB frontend, nothing else.")
def _vtap_dest_kind(g: Graph) -> Iterator[Hit]:
    for tap in _taps(g):
        nic_ref = get(tap.inputs, "destinationNetworkInterfaceIPConfiguration")
        lb_ref = get(tap.inputs, "destinationLoadBalancerFrontEndIPConfiguration")
        refs = [(k, parse_arm_id(ref_id(r))) for k, r in (("nic", nic_ref), ("lb", lb_ref))
                if r is not None]
        known = [(k, a) for k, a in refs if a is not None]
        if nic_ref is not None and lb_ref is not None and len(known) == 2:
            yield tap, ("vTAP has both a NIC and a load-balancer destination; set exactly one.")
            continue
        for kind, arm in known:
            want = (("networkInterfaces", "ipConfigurations") if kind == "nic"
                    else ("loadBalancers", "frontendIPConfigurations"))
            if arm.collections[:2] != want:
                what = arm.top
                yield tap, (f"vTAP destination is a {what} ({'/'.join(arm.names)}), which a "
                            "vTAP can't express: its destination is only a NIC ip-configuration "
                            "or an internal LB frontend. Send to a VM NIC (a proxy or the "
                            "collector itself) instead.")
        lb = _dest_lb(g, tap)
        if lb:
            node, fe_name = lb
            fe = next((f for f in items(node.inputs, "frontendIPConfigurations")
                       if text(f, "name") == fe_name), None)
            if fe is not None and get(fe, "publicIPAddress") is not None:
                yield tap, (f"vTAP destination is the public frontend {fe_name!r} of "
                            f"{node.name!r}; only an internal LB frontend can be a destination. "
                            "Use a frontend with a private IP in a subnet.")


# -- Private Endpoint NIC and IP-based pools ----------------------------------------------------


@rule("VTAP003", "private-endpoint-nic-read-only", MANDATORY, facts.ARM_MODIFY_PE_NIC,
      "A Private Endpoint's NIC is read-only, backend-pool membership included.")
def _pe_nic_modified(g: Graph) -> Iterator[Hit]:
    for nic in g.of_type(T_NIC):
        owner = next((o for o in (g.private_endpoint_nic_owner(n) for n in nic.names())
                      if o is not None and o.type == T_PE), None)
        if owner is not None:
            yield nic, (f"this changes the NIC of Private Endpoint {owner.name!r} (a PE's NIC is "
                        "read-only, backend-pool membership included); ARM rejects it. Put "
                        "proxy VMs in the pool and let them forward to the PE's IP (b3).")
    for pool in g.of_type(T_LB_POOL):
        for addr in items(pool.inputs, "loadBalancerBackendAddresses"):
            arm = parse_arm_id(ref_id(get(addr, "networkInterfaceIPConfiguration")))
            owner = (g.private_endpoint_nic_owner(arm.top_name)
                     if arm and arm.top == "networkInterfaces" else None)
            if owner is not None and owner.type == T_PE:
                yield pool, (f"backend pool adds the NIC of Private Endpoint {owner.name!r}; a "
                             "PE's NIC is read-only and ARM rejects the edit. Put proxy VMs in "
                             "the pool instead (b3).")


def _ip_based_pools(g: Graph, lb: Node) -> list[str]:
    """Names of ``lb``'s backend pools whose members are given by IP address."""
    out: list[str] = []
    pools = [(text(p, "name"), p) for p in items(lb.inputs, "backendAddressPools")]
    pools += [(p.azure_name or p.name, p.inputs) for p in g.of_type(T_LB_POOL)
              if text(p.inputs, "loadBalancerName") in lb.names()]
    for name, pool in pools:
        if any(text(a, "ipAddress") for a in items(pool, "loadBalancerBackendAddresses")):
            out.append(name or "?")
    return out


@rule("VTAP004", "private-endpoint-not-in-ip-pool", MANDATORY, None,
      "A Private Endpoint's IP can't be a member of an IP-based backend pool.")
def _pe_ip_in_pool(g: Graph) -> Iterator[Hit]:
    pe_ips = g.pe_ips()
    pools = [(p, p.inputs) for p in g.of_type(T_LB_POOL)]
    pools += [(lb, p) for lb in g.of_type(T_LB) for p in items(lb.inputs, "backendAddressPools")]
    for node, pool in pools:
        for addr in items(pool, "loadBalancerBackendAddresses"):
            marked = text(addr, _PE_MARKER)
            if marked:
                pe = g.find(T_PE, marked)
                yield node, (f"backend pool gets the IP of Private Endpoint "
                             f"{(pe.name if pe else marked)!r}; Azure does not support a PE in "
                             "an IP-based pool. Put proxy VMs in the pool and let them forward "
                             "to the PE (b3).")
                continue
            ip = text(addr, "ipAddress")
            if ip in pe_ips:
                yield node, (f"backend pool holds {ip}, the IP of Private Endpoint "
                             f"{pe_ips[ip].name!r}; Azure does not support a PE in an IP-based "
                             "pool. Put proxy VMs in the pool and let them forward to the PE "
                             "(b3).")


@rule("VTAP005", "private-link-service-on-nic-based-lb", MANDATORY, facts.ARM_PLS_ON_IP_BASED_LB,
      "A Private Link Service can't front a load balancer with IP-based backend pools.")
def _pls_on_ip_lb(g: Graph) -> Iterator[Hit]:
    for pls in g.of_type(T_PLS):
        lbs: list[Node] = []
        for fe in items(pls.inputs, "loadBalancerFrontendIpConfigurations"):
            lb = g.resolve(fe, T_LB)
            if lb is not None and lb not in lbs:
                lbs.append(lb)
        for lb in lbs:
            pools = _ip_based_pools(g, lb)
            if pools:
                yield pls, (f"Private Link Service fronts {lb.name!r}, whose backend pool(s) "
                            f"{', '.join(pools)} are IP-based; ARM rejects it. Make the pools "
                            "NIC-based (add the NICs' ip-configurations to the pool).")


# -- vTAP scope: network, region, sizes, count --------------------------------------------------


def _tapped_nics(g: Graph, tap: Node | None = None) -> list[tuple[Node, Node | None]]:
    """(tap configuration, source NIC or None) pairs, optionally for one vTAP.

    The NIC is a path parameter: ``networkInterfaceName`` in inputs, the configuration's own
    ``id`` in outputs, the dependency of ``networkInterfaceName`` in a preview."""
    out: list[tuple[Node, Node | None]] = []
    for cfg in g.of_type(T_TAP_CONFIG):
        if tap is not None and g.linked(cfg, "virtualNetworkTap", T_TAP) is not tap:
            continue
        out.append((cfg, g.parent_of(cfg, T_NIC, "networkInterfaceName")))
    return out


def _dest_vnet_and_node(g: Graph, tap: Node) -> tuple[str | None, Node | None]:
    nic = _dest_nic(g, tap)
    if nic is not None:
        return g.vnet_of_nic(nic), nic
    # Outputs embed the destination ip-configuration, subnet included (response schema).
    vnet = g.vnet_of_subnet_ref(get(tap.inputs, "destinationNetworkInterfaceIPConfiguration",
                                    "subnet"))
    if vnet is not None:
        return vnet, None
    lb = _dest_lb(g, tap)
    if lb is not None:
        node, fe_name = lb
        fe = next((f for f in items(node.inputs, "frontendIPConfigurations")
                   if text(f, "name") == fe_name), None)
        return (g.vnet_of_subnet_ref(get(fe, "subnet")) if fe else None), node
    return None, None


@rule("VTAP006", "vtap-same-network-and-region", MANDATORY, None,
      "vTAP source and destination must be in the same or a peered VNet, in one region.")
def _vtap_scope(g: Graph) -> Iterator[Hit]:
    for tap in _taps(g):
        dest_vnet, dest = _dest_vnet_and_node(g, tap)
        for cfg, nic in _tapped_nics(g, tap):
            if nic is None:
                continue
            src_vnet = g.vnet_of_nic(nic)
            if dest_vnet and src_vnet and dest_vnet != src_vnet and \
                    g.peered(src_vnet, dest_vnet) is False:
                yield cfg, (f"tapped NIC {nic.name!r} is in VNet {src_vnet!r} but the vTAP "
                            f"destination is in {dest_vnet!r}, and no peering joins them. "
                            "Put the destination (a proxy) in the source's VNet and cross to "
                            "the provider over Private Link.")
            regions = {r for r in (g.location(nic), g.location(tap),
                                   g.location(dest) if dest else None) if r}
            if len(regions) > 1:
                yield cfg, (f"vTAP source {nic.name!r}, the vTAP and its destination span "
                            f"regions {sorted(regions)}; they must be in one region.")


@rule("VTAP007", "vtap-preview-region", MANDATORY, None,
      "vTAP is in preview only in some regions.")
def _vtap_region(g: Graph) -> Iterator[Hit]:
    for tap in _taps(g):
        loc = g.location(tap)
        if loc and loc not in facts.VTAP_REGIONS:
            yield tap, (f"vTAP in region {loc!r}, where vTAP is not in preview; use one of "
                        f"{', '.join(sorted(facts.VTAP_REGIONS))}.")


@rule("VTAP008", "vtap-source-not-v6", MANDATORY, None,
      "v6 VM sizes are not supported as vTAP sources.")
def _tapped_v6(g: Graph) -> Iterator[Hit]:
    tapped = {nic.urn for _cfg, nic in _tapped_nics(g) if nic is not None}
    for vm in g.of_type(T_VM):
        size = text(vm.inputs, "hardwareProfile", "vmSize")
        if not size or not facts.is_v6_size(size):
            continue
        nic_refs = items(vm.inputs, "networkProfile", "networkInterfaces")
        nics = [g.resolve(r, T_NIC) for r in nic_refs]
        if not any(nics):  # ids unknown (preview): the NICs networkProfile came from
            nics = list(g.depended(vm, "networkProfile", T_NIC))
        if any(n is not None and n.urn in tapped for n in nics):
            yield vm, (f"tapped VM has size {size}; vTAP does not support v6 sizes as sources. "
                       "Use a v5 or older size (e.g. Standard_D2s_v5, Standard_B2s).")


@rule("VTAP009", "vtap-count", MANDATORY, None,
      "About 10 vTAPs per subscription while vTAP is in preview.")
def _vtap_count(g: Graph) -> Iterator[Hit]:
    taps = _taps(g)
    if len(taps) > facts.MAX_VTAPS_PER_SUBSCRIPTION:
        yield taps[facts.MAX_VTAPS_PER_SUBSCRIPTION], (
            f"{len(taps)} vTAPs in this stack; the preview allows about "
            f"{facts.MAX_VTAPS_PER_SUBSCRIPTION} per subscription. Share one vTAP between "
            "sources (one tap configuration per NIC) or split the stacks across subscriptions.")


# -- Private Link Service Direct Connect --------------------------------------------------------


def _direct_connect(g: Graph) -> list[Node]:
    return [p for p in g.of_type(T_PLS) if get(p.inputs, "destinationIPAddress") is not None]


_FEATURE_HINT = (f"register the feature {facts.PLS_DIRECT_CONNECT_FEATURE} "
                 "(az feature register --namespace Microsoft.Network "
                 "--name AllowPrivateLinkserviceUDR)")


@rule("VTAP010", "direct-connect-region", MANDATORY, None,
      "Private Link Service Direct Connect is in preview only in some regions.")
def _dc_region(g: Graph) -> Iterator[Hit]:
    for pls in _direct_connect(g):
        loc = g.location(pls)
        if loc and loc not in facts.PLS_DIRECT_CONNECT_REGIONS:
            both = sorted(facts.PLS_DIRECT_CONNECT_REGIONS & facts.VTAP_REGIONS)
            yield pls, (f"Direct Connect PLS in {loc!r}, outside its preview regions "
                        f"({', '.join(sorted(facts.PLS_DIRECT_CONNECT_REGIONS))}); with vTAP "
                        f"too that leaves {', '.join(both)}. Also {_FEATURE_HINT}.")


@rule("VTAP011", "direct-connect-nat-ip-count", MANDATORY, None,
      "A Direct Connect PLS needs 2, 4, 6 or 8 NAT ip-configurations.")
def _dc_nat_count(g: Graph) -> Iterator[Hit]:
    allowed = sorted(facts.PLS_DIRECT_CONNECT_NAT_IP_COUNTS)
    for pls in _direct_connect(g):
        cfgs = get(pls.inputs, "ipConfigurations")
        if not isinstance(cfgs, list) or any(is_unknown(c) for c in cfgs):
            continue
        if len(cfgs) not in facts.PLS_DIRECT_CONNECT_NAT_IP_COUNTS:
            yield pls, (f"Direct Connect PLS has {len(cfgs)} NAT ip-configuration(s); it needs "
                        f"{'/'.join(map(str, allowed))}. Add or remove ip-configurations "
                        f"(and {_FEATURE_HINT}).")


@rule("VTAP012", "direct-connect-destination", MANDATORY, None,
      "A Direct Connect destination is a static IP that does not belong to a Private Endpoint.")
def _dc_destination(g: Graph) -> Iterator[Hit]:
    pe_ips = g.pe_ips()
    for pls in _direct_connect(g):
        dest = text(pls.inputs, "destinationIPAddress")
        if dest is None:
            continue
        try:
            ipaddress.ip_address(dest)
        except ValueError:
            yield pls, (f"Direct Connect destinationIPAddress {dest!r} is not an IP address; "
                        "give the collector's static private IP.")
            continue
        if dest in pe_ips:
            yield pls, (f"Direct Connect destination {dest} is Private Endpoint "
                        f"{pe_ips[dest].name!r}'s IP, which Direct Connect can't target. Point "
                        "it at the collector VM's static IP.")
        for nic in g.of_type(T_NIC):
            for cfg in items(nic.inputs, "ipConfigurations"):
                if text(cfg, "privateIPAddress") != dest:
                    continue
                method = text(cfg, "privateIPAllocationMethod")
                if method and method.lower() != "static":
                    yield pls, (f"Direct Connect destination {dest} is NIC {nic.name!r}'s "
                                f"{method} IP; it must be static "
                                "(privateIPAllocationMethod: Static).")


# -- delivery path ------------------------------------------------------------------------------


def _vtap_delivery_nics(g: Graph) -> list[Node]:
    """NICs that vTAP traffic is delivered to: direct destinations and LB pool members."""
    out: list[Node] = []
    for tap in _taps(g):
        nic = _dest_nic(g, tap)
        if nic is not None:
            out.append(nic)
        lb = _dest_lb(g, tap)
        if lb is not None:
            out.extend(g.pool_member_nics(lb[0]))
    return list({n.urn: n for n in out}.values())


def _proxy_nics(g: Graph) -> list[Node]:
    """NICs that must rewrite and forward VXLAN: the ProxyNat component's, and any vTAP
    delivery NIC that shares its VNet with a Private Endpoint (it can only be there to
    forward to it)."""
    out = {f"{n.urn}|{n.name}": n for n in g.of_type(T_NIC)
           if any(a.type.endswith((":ProxyNat", ":ProxyTier")) for a in g.ancestors(n))}
    pe_vnets = {g.vnet_of_subnet_ref(get(pe.inputs, "subnet")) for pe in g.of_type(T_PE)}
    pe_vnets.discard(None)
    for nic in _vtap_delivery_nics(g):
        if g.private_endpoint_nic_owner(nic.azure_name or nic.name) is None and \
                g.vnet_of_nic(nic) in pe_vnets:
            out[f"{nic.urn}|{nic.name}"] = nic
    return list(out.values())


@rule("VTAP020", "proxy-nic-ip-forwarding", MANDATORY, None,
      "A proxy that rewrites VXLAN toward the PE needs IP forwarding on its NIC.")
def _proxy_forwarding(g: Graph) -> Iterator[Hit]:
    for nic in _proxy_nics(g):
        if flag(nic.inputs, "enableIPForwarding") is not True and \
                not unknown_at(nic.inputs, "enableIPForwarding"):
            yield nic, ("proxy NIC has IP forwarding off: Azure drops the packets it rewrites "
                        "toward the PE. Set enableIPForwarding: true.")


def _security_rules(g: Graph, nsg: Node) -> list[Mapping[str, Any]]:
    rules = [r for r in items(nsg.inputs, "securityRules") if isinstance(r, Mapping)]
    for r in g.of_type(T_RULE):
        if text(r.inputs, "networkSecurityGroupName") in nsg.names():
            rules.append(r.inputs)
    return rules


def _nsgs_of_nic(g: Graph, nic: Node) -> list[Node] | None:
    """The NSGs on a NIC and its subnets; None when one of them can't be resolved."""
    out: list[Node] = []
    refs = [get(nic.inputs, "networkSecurityGroup")]
    for cfg in items(nic.inputs, "ipConfigurations"):
        subnet_ref = get(cfg, "subnet")
        if subnet_ref is None:
            continue
        refs.append(get(subnet_ref, "networkSecurityGroup"))
        arm = parse_arm_id(ref_id(subnet_ref))
        if arm and arm.collections[:2] == ("virtualNetworks", "subnets"):
            for s in g.of_type(T_SUBNET):
                if s.attempt_scenario is None and arm.names[1] in s.names() and \
                        text(s.inputs, "virtualNetworkName") in (arm.names[0], None):
                    refs.append(get(s.inputs, "networkSecurityGroup"))
    for ref in refs:
        if ref is None:
            continue
        nsg = g.resolve(ref, T_NSG)
        if nsg is None:
            return None
        out.append(nsg)
    return out


def _ports(rule_: Mapping[str, Any]) -> list[str] | None:
    ports = items(rule_, "destinationPortRanges") or (
        [p] if (p := text(rule_, "destinationPortRange")) else [])
    return [str(p).strip() for p in ports] or None


def _port_matches(ports: list[str], port: int) -> bool:
    for p in ports:
        if p == "*":
            return True
        lo, _, hi = p.partition("-")
        try:
            if int(lo) <= port <= int(hi or lo):
                return True
        except ValueError:
            continue
    return False


def _sources(rule_: Mapping[str, Any]) -> list[str]:
    srcs = items(rule_, "sourceAddressPrefixes") or (
        [s] if (s := text(rule_, "sourceAddressPrefix")) else [])
    return [str(s).strip().lower() for s in srcs]


def _destinations(rule_: Mapping[str, Any]) -> list[str]:
    dests = items(rule_, "destinationAddressPrefixes") or (
        [d] if (d := text(rule_, "destinationAddressPrefix")) else [])
    return [str(d).strip().lower() for d in dests]


def _covers(prefix: str, addresses: Sequence[str]) -> bool | None:
    """Does an NSG address prefix surely cover one of ``addresses``? None: can't tell."""
    if prefix in _VNET_SOURCE:
        return True
    try:
        net = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return None  # another service tag, an application security group...
    known = [a for a in addresses if a]
    if not known:
        return None
    try:
        return any(ipaddress.ip_address(a) in net for a in known)
    except ValueError:
        return None


def _blocks_udp(rule_: Mapping[str, Any], port: int, addresses: Sequence[str]) -> bool | None:
    """Inbound verdict of one rule for UDP/``port`` from inside the VNet address space to
    ``addresses``: True (denies), False (allows), None (does not apply, or can't tell)."""
    if (text(rule_, "direction") or "").lower() != "inbound":
        return None
    proto = (text(rule_, "protocol") or "").lower()
    ports = _ports(rule_)
    srcs = _sources(rule_)
    dests = _destinations(rule_)
    access = (text(rule_, "access") or "").lower()
    if proto not in {"udp", "*"} or ports is None or not srcs or access not in {"allow", "deny"}:
        return None
    if not _port_matches(ports, port):
        return None
    covers = [_covers(d, addresses) for d in dests] or [True]  # no destination given: any
    if access == "deny":
        # Only a deny that surely covers sender and receiver counts: never a false finding.
        surely = any(s in _VNET_SOURCE for s in srcs) and any(c is True for c in covers)
        return True if surely else None
    # An allow counts unless it surely misses the receiver.
    return None if all(c is False for c in covers) else False


def _udp_blocked(g: Graph, nic: Node, port: int) -> Node | None:
    """The NSG that surely drops inbound UDP/``port`` to ``nic``, if one does."""
    nsgs = _nsgs_of_nic(g, nic)
    addresses = g.nic_ip_addresses(nic)
    for nsg in nsgs or []:
        decided = [(number(r, "priority"), _blocks_udp(r, port, addresses))
                   for r in _security_rules(g, nsg)]
        decided = [(p, b) for p, b in decided if b is not None]
        if any(p is None for p, _ in decided):
            continue  # an unknown priority: the order can't be told
        decided.sort(key=lambda pb: pb[0] or 0)
        if decided and decided[0][1] is True:
            return nsg
    return None


def _collector_nics(g: Graph) -> list[Node]:
    """NICs of the provider side's collector: pool members of an LB behind a PLS, Direct
    Connect destinations, and NICs of a component named like a collector."""
    out: dict[str, Node] = {}
    for pls in g.of_type(T_PLS):
        for fe in items(pls.inputs, "loadBalancerFrontendIpConfigurations"):
            lb = g.resolve(fe, T_LB)
            if lb is not None:
                out.update({n.urn: n for n in g.pool_member_nics(lb)})
        dest = text(pls.inputs, "destinationIPAddress")
        if dest:
            out.update({n.urn: n for n in g.of_type(T_NIC) if dest in g.nic_ip_addresses(n)})
    return list(out.values())


@rule("VTAP021", "nsg-path-udp-4789", MANDATORY, None,
      "NSGs must let UDP/4789 reach the vTAP destination and the collector.")
def _nsg_path(g: Graph) -> Iterator[Hit]:
    port = facts.VXLAN_PORT
    for role, nics in (("vTAP destination", _vtap_delivery_nics(g)),
                       ("collector", _collector_nics(g))):
        for nic in nics:
            nsg = _udp_blocked(g, nic, port)
            if nsg is not None:
                yield nsg, (f"NSG {nsg.name!r} drops inbound UDP/{port} to the {role} "
                            f"{nic.name!r} before any allow; add an Allow rule for UDP/{port} "
                            "from VirtualNetwork at a lower priority number.")


def _lbs_behind_pls(g: Graph) -> list[Node]:
    out: dict[str, Node] = {}
    for pls in g.of_type(T_PLS):
        for fe in items(pls.inputs, "loadBalancerFrontendIpConfigurations"):
            lb = g.resolve(fe, T_LB)
            if lb is not None:
                out[lb.urn] = lb
    return list(out.values())


@rule("VTAP022", "pls-lb-udp-4789-rule", MANDATORY, None,
      "The ILB behind the Private Link Service needs a UDP/4789 or an all-ports rule.")
def _pls_lb_rule(g: Graph) -> Iterator[Hit]:
    port = facts.VXLAN_PORT
    for lb in _lbs_behind_pls(g):
        rules = get(lb.inputs, "loadBalancingRules")
        if unknown_at(lb.inputs, "loadBalancingRules") or (
                rules is not None and not isinstance(rules, list)):
            continue
        rules = rules or []
        if any(is_unknown(r) for r in rules):
            continue
        ok = False
        for r in rules:
            proto = (text(r, "protocol") or "").lower()
            fport = number(r, "frontendPort")
            if proto == "all" and fport == 0:
                ok = True
            elif proto in {"udp", "all"} and fport == port:
                ok = True
            elif not proto or fport is None:
                ok = True  # unknown: don't judge
        if not ok:
            yield lb, (f"load balancer {lb.name!r} fronts the Private Link Service but has no "
                       f"rule for UDP/{port}; add a Udp rule on {port} (or an HA-ports rule: "
                       "protocol All, ports 0).")


@rule("VTAP023", "lb-health-probe", ADVISORY, None,
      "A load-balancing rule on the VXLAN path should have a health probe.")
def _lb_probe(g: Graph) -> Iterator[Hit]:
    lbs = {lb.urn: lb for lb in _lbs_behind_pls(g)}
    for tap in _taps(g):
        lb = _dest_lb(g, tap)
        if lb is not None:
            lbs[lb[0].urn] = lb[0]
    for lb in lbs.values():
        rules = [r for r in items(lb.inputs, "loadBalancingRules") if isinstance(r, Mapping)]
        if not rules:
            continue
        no_probe = [text(r, "name") or "?" for r in rules
                    if get(r, "probe") is None and not unknown_at(r, "probe")]
        if no_probe:
            yield lb, (f"load balancer {lb.name!r} rule(s) {', '.join(no_probe)} have no health "
                       "probe; add one (e.g. TCP/22 on the backends) so a dead backend is taken "
                       "out of rotation.")


@rule("VTAP024", "proxy-pool-probe-sees-the-rewrite", ADVISORY, None,
      "The LB a vTAP points at should probe its proxies over HTTP (vtap-health.py), not TCP.")
def _proxy_probe_protocol(g: Graph) -> Iterator[Hit]:
    for tap in _taps(g):
        lb = _dest_lb(g, tap)
        if lb is None:
            continue
        tcp = [text(p, "name") or "?" for p in items(lb[0].inputs, "probes")
               if (text(p, "protocol") or "").lower() == "tcp"]
        if tcp:
            yield lb[0], (f"load balancer {lb[0].name!r} (a vTAP destination) probes its "
                          f"proxies over TCP ({', '.join(tcp)}): a proxy whose rewrite failed "
                          "still answers and keeps its share of the mirror. Probe HTTP "
                          f"{facts.HEALTH_PORT}{facts.HEALTH_PATH} (vtap-health.py), which "
                          "answers 200 only while the rewrite and the route to the PE exist.")


_HEALTH_EXTENSION_TYPES = frozenset({"applicationhealthlinux", "applicationhealthwindows"})


@rule("VTAP025", "scale-set-upgrade-health-signal", MANDATORY, None,
      "A Flexible scale set with rolling or automatic OS upgrades needs the Application Health "
      "extension; automatic OS upgrades need image version latest.")
def _scale_set_upgrades(g: Graph) -> Iterator[Hit]:
    for vmss in g.of_type(T_VMSS):
        policy = get(vmss.inputs, "upgradePolicy")
        rolling = (text(policy, "mode") or "").lower() == "rolling"
        auto_os = flag(policy, "automaticOSUpgradePolicy", "enableAutomaticOSUpgrade") is True
        if not (rolling or auto_os):
            continue
        profile = get(vmss.inputs, "virtualMachineProfile")
        extensions = items(profile, "extensionProfile", "extensions")
        flexible = (text(vmss.inputs, "orchestrationMode") or "").lower() == "flexible"
        has_extension = any((text(x, "type") or "").lower() in _HEALTH_EXTENSION_TYPES
                            for x in extensions)
        has_probe = get(profile, "networkProfile", "healthProbe") is not None
        if not unknown_at(profile, "extensionProfile") and not has_extension and (
                flexible or not has_probe):
            yield vmss, ("scale set has a rolling/automatic OS upgrade policy but no "
                         "Application Health extension" + (
                             " (on Flexible orchestration LB probes are no health signal)"
                             if flexible else " or health probe") +
                         "; ARM refuses it ('a health probe or health extension was not "
                         "provided'). Add the ApplicationHealthLinux extension.")
        version = text(profile, "storageProfile", "imageReference", "version")
        if auto_os and version is not None and version.lower() != "latest":
            yield vmss, (f"automatic OS image upgrades need imageReference.version 'latest', "
                         f"not {version!r}.")


# -- the lab's premise and security -------------------------------------------------------------


@rule("VTAP030", "no-network-bridge", MANDATORY, None,
      "No peering, VPN or gateway: consumer and provider are joined only by Private Link.")
def _no_bridge(g: Graph) -> Iterator[Hit]:
    for n in g.nodes:
        if n.type in BRIDGE_TYPES:
            kind = n.type.rsplit(":", 1)[-1]
            yield n, (f"{kind} {n.name!r} joins networks; the lab's premise is that consumer "
                      "and provider meet only over Private Link. Remove it.")
        elif n.type == T_VNET and items(n.inputs, "virtualNetworkPeerings"):
            yield n, (f"VNet {n.name!r} declares peerings; the lab's premise is that consumer "
                      "and provider meet only over Private Link. Remove them.")


def _open_inbound(rule_: Mapping[str, Any]) -> bool:
    if (text(rule_, "direction") or "").lower() != "inbound":
        return False
    if (text(rule_, "access") or "").lower() != "allow":
        return False
    return any(s in facts.OPEN_SOURCES for s in _sources(rule_))


@rule("VTAP040", "no-open-inbound", MANDATORY, None,
      "No port (SSH least of all) open to * / Internet / 0.0.0.0/0.")
def _open_ports(g: Graph) -> Iterator[Hit]:
    for nsg in g.of_type(T_NSG):
        for r in items(nsg.inputs, "securityRules"):
            if isinstance(r, Mapping) and _open_inbound(r):
                yield nsg, _open_message(r)
    for r in g.of_type(T_RULE):
        if _open_inbound(r.inputs):
            yield r, _open_message(r.inputs)


def _open_message(rule_: Mapping[str, Any]) -> str:
    ports = ",".join(_ports(rule_) or ["?"])
    name = text(rule_, "name") or text(rule_, "securityRuleName") or "?"
    ssh = " (SSH)" if _port_matches(_ports(rule_) or [], 22) else ""
    return (f"rule {name!r} allows inbound port(s) {ports}{ssh} from anywhere; allow only the "
            "operator's CIDR (vtaplab:operatorCidr) for SSH and VirtualNetwork for UDP/4789.")


@rule("VTAP041", "no-password-auth", MANDATORY, None,
      "VMs log in with SSH keys only.")
def _password_auth(g: Graph) -> Iterator[Hit]:
    for vm in g.of_type(T_VM):
        os_profile = get(vm.inputs, "osProfile")
        if not isinstance(os_profile, Mapping):
            continue
        disabled = flag(os_profile, "linuxConfiguration", "disablePasswordAuthentication")
        if disabled is False or get(os_profile, "adminPassword") is not None:
            yield vm, ("VM allows password authentication; set linuxConfiguration."
                       "disablePasswordAuthentication: true and log in with an SSH key.")


# ---------------------------------------------------------------------------------------------


RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def run_rules(entries: Iterable[Mapping[str, Any]] | Graph,
              rules: Sequence[Rule] | None = None) -> list[Finding]:
    """All findings of ``rules`` (default: every rule) on a graph, in rule order."""
    g = entries if isinstance(entries, Graph) else Graph(entries)
    out: list[Finding] = []
    for r in rules if rules is not None else RULES:
        out.extend(r.run(g))
    return out
