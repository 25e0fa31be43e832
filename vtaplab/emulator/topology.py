"""A stack's resource graph as the twin's topology: typed nodes, ports, rules — data only.

``from_graph(resources)`` reads the list ``python -m vtaplab graph STACK --json`` prints (the
program run under Pulumi's mocks) and derives, from each resource's inputs alone, what the
engine builds in network namespaces (``vtaplab.emulator.engine``): the VNets' fabrics, NICs
with their addresses, IP-forwarding flag and NSG (declared rules + Azure's defaults), VMs with
the scripts and arguments their rendered user data installs (a Flexible scale set's
instances too, one VM each), internal load balancers with
their rules and probes, the PLS's NAT, the PE, and each vTAP with its tap configurations and
whether the graph puts the source VM's (re)start after the vTAP ("fastpath"). Which Azure
behaviour each element follows is named from ``vtaplab.behaviours``.

Naming scheme (short: interface names are ``<run prefix>-<node>-<peer>``, at most 15
characters). VNet ``k`` (1..9, then a..z: base 36, in graph order; the provider's VNet is 0)
gives its nodes a letter for what they are plus ``k``: ``f`` the VNet's fabric (its router),
``v`` the vTAP's host side (the VTEP), ``e`` a Private Endpoint, ``n`` a Private Link Service
(its NAT), ``b`` an internal load balancer, and VMs by role: ``s`` the tapped source, ``c`` the
client, ``p`` a proxy, ``o`` the collector, ``x`` any other. A second node of the same letter
in the same VNet gets its ordinal after ``k`` (``p1`` and ``p12``). A VXLAN device is
``<prefix>-<vtep>-x<j>``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from vtaplab import PROJECT_ROOT, facts

# The VNet fabric's address in a subnet: the first usable one (.1), as Azure's gateway.
GATEWAY_HOST = 1
# Emulator-only links (no plan describes them): VTEP <-> fabric, PE <-> PLS (Private Link).
VTEP_LINK_NET = "100.64.{k}.0/30"
PRIVATE_LINK_NET = "100.65.{k}.{n}/30"
VTAP_VNI = 1   # behaviours.ASSUMPTIONS["vtap-vni"]
# One character in node names: VNet k is written in base 36 (1..9, then a..z), so node names
# stay three characters and interface names within 15 (msp goes up to 10 tenants).
VNET_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_VNETS = len(VNET_DIGITS) - 1


def vnet_digit(index: int) -> str:
    """VNet ``index``'s character in node names (base 36)."""
    return VNET_DIGITS[index]
ROLE_LETTERS = {"src": "s", "client": "c", "proxy": "p", "collector": "o"}
# Where the graph cache lives and what it depends on: any change there rebuilds the graph.
CACHE_DIR = Path.home() / ".cache" / "vtaplab" / "graphs"
GRAPH_INPUTS = ("__main__.py", "Pulumi.yaml", "requirements.txt", "components", "cloudinit",
                "vtaplab")
# ...except what only reads the graph (editing the twin must not rebuild it).
GRAPH_INPUTS_NOT = ("vtaplab/emulator", "vtaplab/bench")


class TopologyError(ValueError):
    """The graph can't be emulated: one line naming the resource and what is missing."""


# ---------------------------------------------------------------------------------------------
# The topology
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NsgRule:
    name: str
    priority: int
    direction: str                  # Inbound | Outbound
    access: str                     # Allow | Deny
    protocol: str                   # Tcp | Udp | Icmp | *
    sources: tuple[str, ...]        # prefixes or service tags
    destinations: tuple[str, ...]
    ports: tuple[str, ...]          # destination port ranges ("*", "22", "80-90")


@dataclass(frozen=True)
class Nsg:
    name: str
    rules: tuple[NsgRule, ...]      # declared and Azure's defaults, in priority order


@dataclass(frozen=True)
class Port:
    """A node's interface on its VNet's fabric: a NIC, or a PE/PLS/LB address."""

    node: str
    fabric: str
    ip: str
    prefixlen: int
    resource: str                   # the NIC / PE / PLS / LB resource name
    nic: bool = False               # a VM's NIC: IP-forwarding flag and NSG apply
    forwarding: bool = True
    nsg: Nsg | None = None

    @property
    def gateway(self) -> str:
        net = ipaddress.ip_interface(f"{self.ip}/{self.prefixlen}").network
        return str(net[GATEWAY_HOST])


@dataclass(frozen=True)
class Link:
    """A point-to-point link outside any VNet (VTEP, Private Link): addresses /30."""

    a: str
    a_ip: str
    b: str
    b_ip: str


@dataclass(frozen=True)
class Vm:
    node: str
    resource: str
    role: str
    scenario: str
    vnet: str
    ip: str
    proxy_args: tuple[str, ...] = ()       # vtap-proxy.sh apply ... (from the user data)
    health_args: tuple[str, ...] = ()      # vtap-health.py ... (the LB's HTTP probe answers)
    decap_args: tuple[str, ...] = ()       # vtap-decap.sh apply ...
    www: tuple[tuple[str, str], ...] = ()  # (file name, content) nginx serves
    www_commands: tuple[str, ...] = ()     # runcmd lines that write into the web root
    scale_set: str = ""                    # a scale set's instance: the scale set's name
    zone: str = ""                         # its availability zone ("" regional)


@dataclass(frozen=True)
class ScaleSet:
    """A Flexible scale set's rolling upgrade, as its upgradePolicy declares it."""

    name: str
    instances: tuple[str, ...]      # its VMs' nodes, in instance order
    batch_percent: int = 20         # maxBatchInstancePercent (Azure's default 20)
    pause_s: float = 0.0            # pauseTimeBetweenBatches

    def batches(self) -> list[tuple[str, ...]]:
        """The instances in upgrade batches: at most batch_percent of them at once, >= 1."""
        size = max(1, len(self.instances) * self.batch_percent // 100)
        return [self.instances[i:i + size] for i in range(0, len(self.instances), size)]


@dataclass(frozen=True)
class LbRule:
    name: str
    protocol: str                   # Udp | Tcp | All
    port: int                       # 0 with All: HA ports

    @property
    def ha_ports(self) -> bool:
        return self.protocol == "All" and self.port == 0


@dataclass(frozen=True)
class Probe:
    protocol: str
    port: int
    interval_s: int
    threshold: int
    path: str = ""                          # an HTTP probe's request path


@dataclass(frozen=True)
class LoadBalancer:
    node: str
    resource: str
    frontend: str
    rules: tuple[LbRule, ...]
    backends: tuple[tuple[str, str], ...]   # (node, ip)
    probe: Probe | None


@dataclass(frozen=True)
class PrivateLink:
    """A PE and the PLS it connects to: DNAT to the PLS's target, SNAT to its NAT IP."""

    pe_node: str
    pe_resource: str
    pe_ip: str
    pls_node: str
    pls_resource: str
    nat_ip: str
    target: str                     # the LB frontend, or destinationIPAddress
    direct_connect: bool


@dataclass(frozen=True)
class Tap:
    """One tap configuration: mirror ``source``'s port on ``fabric`` as VXLAN to ``remote``."""

    source: str
    nic: str
    vm: str
    vtap: str
    fabric: str
    vtep: str
    index: int                      # which VXLAN device of the VTEP
    local_ip: str                   # outer source (assumption vtap-outer-source)
    remote: str
    port: int
    vni: int
    on_fastpath: bool
    why_not: str = ""


@dataclass(frozen=True)
class Flow:
    client: str
    server: str
    server_ip: str
    urls: tuple[str, ...]
    tenant: str = ""


@dataclass(frozen=True)
class Hop:
    """A capture point: ``node``'s interface to ``peer``, in ``direction``."""

    name: str
    node: str
    peer: str
    direction: str = "inout"
    stage: int = 0                  # position on the path; hops of one stage are parallel


@dataclass(frozen=True)
class Scenario:
    id: str
    flows: tuple[Flow, ...]
    hops: tuple[Hop, ...]
    collector: Hop
    taps: tuple[Tap, ...]
    proxies: tuple[str, ...]
    lb: str | None = None           # a load balancer in front of the proxies (b3)
    decap_vnis: tuple[int, ...] = ()


@dataclass(frozen=True)
class Node:
    name: str
    kind: str                       # fabric | vm | vtep | pe | pls | lb
    resource: str
    forwarding: bool = False


@dataclass(frozen=True)
class Topology:
    stack: str
    nodes: tuple[Node, ...]
    ports: tuple[Port, ...]
    links: tuple[Link, ...]
    vnets: dict[str, tuple[str, tuple[str, ...]]]   # fabric node -> (VNet name, prefixes)
    vms: tuple[Vm, ...]
    lbs: tuple[LoadBalancer, ...]
    private_links: tuple[PrivateLink, ...]
    taps: tuple[Tap, ...]
    scenarios: tuple[Scenario, ...]
    routes: tuple[tuple[str, str, str], ...]        # (node, destination, via)
    behaviours: tuple[str, ...]
    assumptions: tuple[str, ...]
    notes: tuple[str, ...] = ()
    scale_sets: tuple[ScaleSet, ...] = ()

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def vm(self, node: str) -> Vm:
        return next(v for v in self.vms if v.node == node)

    def port(self, node: str) -> Port:
        return next(p for p in self.ports if p.node == node)

    def lb(self, node: str) -> LoadBalancer:
        return next(lb for lb in self.lbs if lb.node == node)

    def summary(self) -> dict[str, Any]:
        """What emulator.json records about the topology (names and addresses)."""
        return {
            "nodes": {n.name: f"{n.kind} {n.resource}" for n in self.nodes},
            "ports": {p.node: f"{p.ip}/{p.prefixlen} on {p.fabric}"
                      + (f", NIC {p.resource}, forwarding {'on' if p.forwarding else 'off'}"
                         + (f", NSG {p.nsg.name}" if p.nsg else "") if p.nic else "")
                      for p in self.ports},
            "load_balancers": {lb.resource: {"node": lb.node, "frontend": lb.frontend,
                                             "rules": [f"{r.name} {r.protocol}/{r.port}"
                                                       for r in lb.rules],
                                             "backends": dict(lb.backends)}
                               for lb in self.lbs},
            "scale_sets": {vm.scale_set: [f"{v.node} {v.resource} {v.ip}"
                                          + (f" zone {v.zone}" if v.zone else "")
                                          for v in self.vms if v.scale_set == vm.scale_set]
                           for vm in self.vms if vm.scale_set},
            "taps": [{"nic": t.nic, "vtap": t.vtap, "remote": t.remote,
                      "on_fastpath": t.on_fastpath, "why_not": t.why_not} for t in self.taps],
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------
def _graph_digest(stack: str, root: Path, overrides: Mapping[str, str] | None = None) -> str:
    digest = hashlib.sha256(stack.encode())
    if overrides:
        # Another config is another graph; none leaves the default's digest as it was.
        digest.update(b"\0overrides\0" + json.dumps(sorted(overrides.items())).encode())
    paths: list[Path] = [root / f"Pulumi.{stack}.yaml"]
    for name in GRAPH_INPUTS:
        path = root / name
        paths += sorted(p for p in path.rglob("*") if p.is_file()
                        and "__pycache__" not in p.parts
                        and not str(p.relative_to(root)).startswith(GRAPH_INPUTS_NOT)
                        ) if path.is_dir() else [path]
    for path in paths:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


def _cache_stem(stack: str, overrides: Mapping[str, str]) -> str:
    """The cache files' name before the digest: the stack, plus a short digest of its
    overrides, so a variant's graph (``--set proxyProbe=tcp``) never evicts the default's."""
    if not overrides:
        return stack
    tag = hashlib.sha256(json.dumps(sorted(overrides.items())).encode()).hexdigest()[:8]
    return f"{stack}@{tag}"


def stack_graph(stack: str, root: Path | None = None,
                overrides: Mapping[str, str] | None = None
                ) -> tuple[list[dict[str, Any]], bool]:
    """The stack's resource graph (``graph STACK --json``, with ``overrides`` as ``graph
    --set KEY=VALUE``: config key, with or without ``vtaplab:``, -> value) and whether it came
    from the cache. A bad override raises ``GraphError`` (one line) before any cache is read.

    Building it runs the program under mocks in a fresh interpreter (seconds); the result is
    kept under ~/.cache/vtaplab/graphs keyed by a digest of every file it depends on and of the
    overrides.
    """
    from vtaplab.preflight.mocks import GraphError, build_graph, mock_config, normalise_overrides

    root = (root or PROJECT_ROOT).resolve()
    if not (root / f"Pulumi.{stack}.yaml").is_file():
        raise GraphError(f"stack {stack!r}: no Pulumi.{stack}.yaml in {root}")
    extra = normalise_overrides(overrides)
    if extra:
        mock_config(stack, root, extra)   # refuses a bad value in one line
    stem = _cache_stem(stack, extra)
    cache = CACHE_DIR / f"{stem}-{_graph_digest(stack, root, extra)}.json"
    try:
        return json.loads(cache.read_text()), True
    except (OSError, ValueError):
        pass
    resources = build_graph(stack, root=root, overrides=extra)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        for old in cache.parent.glob(f"{stem}-*.json"):
            old.unlink(missing_ok=True)
        # Written aside and renamed: a reader never sees half a file.
        partial = cache.with_name(f".{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps(resources))
        os.replace(partial, cache)
    except OSError:
        pass   # no cache: slower next time, same result
    return resources, False


def load_graph_file(path: Path) -> list[dict[str, Any]]:
    """A graph JSON file as ``graph STACK --json`` writes it (a list of resources)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise TopologyError(f"--graph {str(path)!r} is not readable: {exc.strerror}") from None
    except ValueError as exc:
        raise TopologyError(f"--graph {str(path)!r} is not JSON: {exc}; accepted: the output "
                            "of 'python -m vtaplab graph STACK --json'") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) and "type" in r
                                             for r in data):
        raise TopologyError(f"--graph {str(path)!r} is not a resource list; accepted: the "
                            "output of 'python -m vtaplab graph STACK --json'")
    return data


def _kind(resource: Mapping[str, Any]) -> str:
    return str(resource.get("type", "")).rsplit(":", 1)[-1]


def _seg(resource_id: object, collection: str) -> str | None:
    match = re.search(rf"/{collection}/([^/]+)", str(resource_id or ""), re.IGNORECASE)
    return match.group(1) if match else None


def _inputs(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    return resource.get("inputs") or {}


def _azure_name(resource: Mapping[str, Any], key: str) -> str:
    return str(_inputs(resource).get(key) or resource.get("name"))


def _user_data(vm: Mapping[str, Any]) -> dict[str, Any]:
    custom = (_inputs(vm).get("osProfile") or {}).get("customData") or ""
    try:
        text = base64.b64decode(custom).decode()
        data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TopologyError(f"VM {vm.get('name')!r}: customData is not cloud-config: "
                            f"{exc}") from None
    return data if isinstance(data, dict) else {}


def _script_args(user_data: Mapping[str, Any], script: str, action: str = "apply"
                 ) -> tuple[str, ...]:
    """The arguments after ``<script> <action>`` (``apply``; "" for none) in the user data: a
    systemd unit's ExecStart (written by write_files) or a runcmd entry."""
    texts = [str(f.get("content", "")) for f in user_data.get("write_files") or []
             if f.get("encoding") not in ("b64", "base64")]
    texts += [shlex.join(map(str, c)) if isinstance(c, list) else str(c)
              for c in user_data.get("runcmd") or []]
    for text in texts:
        for line in text.splitlines():
            verb = rf"\s+{re.escape(action)}" if action else ""
            match = re.search(rf"{re.escape(script)}{verb}\s+(.*)$", line)
            if match:
                return tuple(shlex.split(match.group(1)))
    return ()


def _role(user_data: Mapping[str, Any]) -> str:
    for item in user_data.get("write_files") or []:
        if item.get("path") == "/etc/vtaplab/role":
            return str(item.get("content", "")).strip()
    return "other"


WEB_ROOT = "/var/www/html/"


def _www(user_data: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    files = tuple((str(f["path"])[len(WEB_ROOT):], str(f.get("content", "")))
                  for f in user_data.get("write_files") or []
                  if str(f.get("path", "")).startswith(WEB_ROOT))
    commands = []
    for command in user_data.get("runcmd") or []:
        if isinstance(command, list) and command[:2] == ["sh", "-c"] and WEB_ROOT in command[2]:
            commands.append(str(command[2]))
    return files, tuple(commands)


def _closure(resources: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """urn -> every urn it (transitively) waits for."""
    direct = {str(r["urn"]): set(r.get("dependencies") or []) for r in resources if "urn" in r}
    done: dict[str, set[str]] = {}

    def walk(urn: str, stack: tuple[str, ...] = ()) -> set[str]:
        if urn in done:
            return done[urn]
        found: set[str] = set()
        for dep in direct.get(urn, ()):
            if dep not in stack:
                found |= {dep, *walk(dep, (*stack, urn))}
        done[urn] = found
        return found

    for urn in direct:
        walk(urn)
    return done


def _nsg(resource: Mapping[str, Any]) -> Nsg:
    rules = []
    def many(rule: Mapping[str, Any], single: str, plural: str) -> tuple[str, ...]:
        values = [rule.get(single)] if rule.get(single) else []
        return tuple(str(v) for v in [*values, *(rule.get(plural) or [])]) or ("*",)

    for rule in _inputs(resource).get("securityRules") or []:
        rules.append(NsgRule(
            name=str(rule.get("name")), priority=int(rule.get("priority", 4096)),
            direction=str(rule.get("direction", "Inbound")),
            access=str(rule.get("access", "Allow")), protocol=str(rule.get("protocol", "*")),
            sources=many(rule, "sourceAddressPrefix", "sourceAddressPrefixes"),
            destinations=many(rule, "destinationAddressPrefix", "destinationAddressPrefixes"),
            ports=many(rule, "destinationPortRange", "destinationPortRanges")))
    defaults = (
        NsgRule("AllowVnetInBound", 65000, "Inbound", "Allow", "*", ("VirtualNetwork",),
                ("VirtualNetwork",), ("*",)),
        NsgRule("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow", "*",
                ("AzureLoadBalancer",), ("*",), ("*",)),
        NsgRule("DenyAllInBound", 65500, "Inbound", "Deny", "*", ("*",), ("*",), ("*",)),
        NsgRule("AllowVnetOutBound", 65000, "Outbound", "Allow", "*", ("VirtualNetwork",),
                ("VirtualNetwork",), ("*",)),
        NsgRule("AllowInternetOutBound", 65001, "Outbound", "Allow", "*", ("*",),
                ("Internet",), ("*",)),
        NsgRule("DenyAllOutBound", 65500, "Outbound", "Deny", "*", ("*",), ("*",), ("*",)),
    )
    ordered = sorted([*rules, *defaults], key=lambda r: (r.direction, r.priority))
    return Nsg(_azure_name(resource, "networkSecurityGroupName"), tuple(ordered))


@dataclass
class _Names:
    """Hands out node names by the documented scheme."""

    used: dict[str, int] = field(default_factory=dict)

    def take(self, letter: str, vnet: int) -> str:
        key = f"{letter}{vnet_digit(vnet)}"
        count = self.used.get(key, 0) + 1
        self.used[key] = count
        return key if count == 1 else f"{key}{count}"


def from_graph(resources: Sequence[Mapping[str, Any]], stack: str = "") -> Topology:
    """The twin of ``resources`` (see the module docstring)."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for resource in resources:
        by_kind.setdefault(_kind(resource), []).append(resource)
    closure = _closure(resources)
    urn_of = {str(r.get("name")): str(r.get("urn")) for r in resources}
    names = _Names()
    behaviours: list[str] = ["vnet-routing", "nic-ip-forwarding", "nsg-rules", "nsg-defaults",
                             "service-tags"]
    assumptions: list[str] = ["nsg-stateless", "nsg-fragments"]
    notes: list[str] = []

    # VNets: the provider's is the one a PLS's NAT configurations sit in.
    pls_vnets = {_seg(((_inputs(p).get("ipConfigurations") or [{}])[0].get("subnet") or {})
                      .get("id"), "virtualNetworks") for p in by_kind.get("PrivateLinkService", [])}
    vnet_index: dict[str, int] = {}
    vnet_info: dict[str, tuple[str, tuple[str, ...]]] = {}
    consumer = 0
    for vnet in by_kind.get("VirtualNetwork", []):
        name = _azure_name(vnet, "virtualNetworkName")
        scenario = str((_inputs(vnet).get("tags") or {}).get("scenario", ""))
        prefixes = tuple((_inputs(vnet).get("addressSpace") or {}).get("addressPrefixes") or [])
        if name in pls_vnets:
            index = 0
        else:
            known = facts.SCENARIOS.get(scenario)
            if known is not None and not known.carries_traffic:
                notes.append(f"VNet {name} ({scenario}) carries no traffic: predicted by the "
                             "rules, not emulated")
                continue
            consumer += 1
            if consumer > MAX_VNETS:
                raise TopologyError(f"VNet {name!r}: more than {MAX_VNETS} consumer VNets; "
                                    f"accepted: up to {MAX_VNETS}")
            index = consumer
        vnet_index[name] = index
        vnet_info[f"f{vnet_digit(index)}"] = (name, prefixes)
    if 0 not in vnet_index.values():
        raise TopologyError("the graph has no Private Link Service (no provider VNet); "
                            "accepted: a stack whose scenarios carry traffic (b2, b3, b4, msp, a, "
                            "uksouth)")
    vnet_scenario = {str(_inputs(v).get("virtualNetworkName") or v["name"]):
                     str((_inputs(v).get("tags") or {}).get("scenario", ""))
                     for v in by_kind.get("VirtualNetwork", [])}
    nodes: list[Node] = [Node(f"f{i}", "fabric", name, True) for name, i in vnet_index.items()]
    ports: list[Port] = []
    links: list[Link] = []
    routes: list[tuple[str, str, str]] = []

    nsgs = {_azure_name(n, "networkSecurityGroupName"): _nsg(n)
            for n in by_kind.get("NetworkSecurityGroup", [])}
    # NICs -> VMs.
    nic_by_name = {_azure_name(n, "networkInterfaceName"): n
                   for n in by_kind.get("NetworkInterface", [])}
    vms: list[Vm] = []
    vm_node_of_nic: dict[str, str] = {}
    nic_ip: dict[str, str] = {}
    pip_node: dict[str, str] = {}
    backends: dict[str, list[tuple[str, str]]] = {}     # LB name -> (node, ip)
    for vm in sorted(by_kind.get("VirtualMachine", []), key=lambda r: str(r.get("name"))):
        nic_name = _seg(((_inputs(vm).get("networkProfile") or {}).get("networkInterfaces")
                         or [{}])[0].get("id"), "networkInterfaces")
        nic = nic_by_name.get(str(nic_name))
        if nic is None:
            raise TopologyError(f"VM {vm.get('name')!r}: its NIC {nic_name!r} is not in the "
                                "graph")
        config = (_inputs(nic).get("ipConfigurations") or [{}])[0]
        subnet_id = (config.get("subnet") or {}).get("id")
        vnet_name = str(_seg(subnet_id, "virtualNetworks"))
        if vnet_name not in vnet_index:
            continue   # a VNet that isn't emulated
        index = vnet_index[vnet_name]
        user_data = _user_data(vm)
        role = _role(user_data)
        node = names.take(ROLE_LETTERS.get(role, "x"), index)
        ip = config.get("privateIPAddress")
        if not ip:
            raise TopologyError(f"NIC {nic_name!r}: no static privateIPAddress; accepted: "
                                "static addresses (the plan's)")
        prefixlen = _subnet_prefixlen(by_kind, vnet_name, str(_seg(subnet_id, "subnets")))
        nsg_name = _seg((_inputs(nic).get("networkSecurityGroup") or {}).get("id"),
                        "networkSecurityGroups")
        ports.append(Port(node, f"f{vnet_digit(index)}", str(ip), prefixlen, str(nic_name),
                          nic=True,
                          forwarding=bool(_inputs(nic).get("enableIPForwarding")),
                          nsg=nsgs.get(str(nsg_name))))
        nodes.append(Node(node, "vm", str(vm.get("name"))))
        www, www_commands = _www(user_data) if role == "src" else ((), ())
        vms.append(Vm(node, str(vm.get("name")), role, vnet_scenario.get(vnet_name, ""),
                      vnet_name, str(ip),
                      proxy_args=_script_args(user_data, "vtap-proxy.sh"),
                      health_args=_script_args(user_data, "vtap-health.py", action=""),
                      decap_args=_script_args(user_data, "vtap-decap.sh"),
                      www=www, www_commands=www_commands))
        vm_node_of_nic[str(nic_name)] = node
        nic_ip[str(nic_name)] = str(ip)
        pip = _seg((config.get("publicIPAddress") or {}).get("id"), "publicIPAddresses")
        if pip:
            pip_node[pip] = node
        for pool in config.get("loadBalancerBackendAddressPools") or []:
            backends.setdefault(str(_seg(pool.get("id"), "loadBalancers")), []).append(
                (node, str(ip)))

    # Flexible scale sets: each instance a VM of its profile (behaviour vmss-flex-instances).
    scale_sets: list[ScaleSet] = []
    for vmss in sorted(by_kind.get("VirtualMachineScaleSet", []),
                       key=lambda r: str(r.get("name"))):
        instances = _scale_set_instances(vmss, by_kind, vnet_index, names, nsgs)
        if instances:
            policy = _inputs(vmss).get("upgradePolicy") or {}
            rolling = policy.get("rollingUpgradePolicy") or {}
            scale_sets.append(ScaleSet(
                _azure_name(vmss, "vmScaleSetName"), tuple(i.vm.node for i in instances),
                int(rolling.get("maxBatchInstancePercent") or 20),
                _iso_seconds(str(rolling.get("pauseTimeBetweenBatches") or "PT0S"))))
        for instance in instances:
            ports.append(instance.port)
            nodes.append(Node(instance.vm.node, "vm", instance.vm.resource))
            vms.append(replace(instance.vm,
                               scenario=vnet_scenario.get(instance.vm.vnet, "")))
            vm_node_of_nic[instance.port.resource] = instance.vm.node
            nic_ip[instance.port.resource] = instance.vm.ip
            for lb_name in instance.pools:
                backends.setdefault(lb_name, []).append((instance.vm.node, instance.vm.ip))
            behaviours.append("vmss-flex-instances")
            assumptions.append("vmss-instance-addresses")

    # Internal load balancers.
    lbs: list[LoadBalancer] = []
    frontend_of: dict[str, str] = {}          # LB name -> frontend IP
    for lb in by_kind.get("LoadBalancer", []):
        name = _azure_name(lb, "loadBalancerName")
        frontend = (_inputs(lb).get("frontendIPConfigurations") or [{}])[0]
        vnet_name = str(_seg((frontend.get("subnet") or {}).get("id"), "virtualNetworks"))
        if vnet_name not in vnet_index:
            continue
        rules = tuple(LbRule(str(r.get("name")), str(r.get("protocol")),
                             int(r.get("frontendPort", 0)))
                      for r in _inputs(lb).get("loadBalancingRules") or [])
        if not rules:
            notes.append(f"load balancer {name} has no rules: it forwards nothing")
        probes = _inputs(lb).get("probes") or []
        probe = Probe(str(probes[0].get("protocol")), int(probes[0].get("port", 0)),
                      int(probes[0].get("intervalInSeconds", 5)),
                      int(probes[0].get("probeThreshold") or probes[0].get("numberOfProbes")
                          or 1), str(probes[0].get("requestPath") or "")) if probes else None
        index = vnet_index[vnet_name]
        node = names.take("b", index)
        ip = str(frontend.get("privateIPAddress"))
        frontend_of[name] = ip
        prefixlen = _subnet_prefixlen(by_kind, vnet_name,
                                      str(_seg((frontend.get("subnet") or {}).get("id"),
                                               "subnets")))
        nodes.append(Node(node, "lb", name, True))
        ports.append(Port(node, f"f{vnet_digit(index)}", ip, prefixlen, name))
        lbs.append(LoadBalancer(node, name, ip, rules, tuple(backends.get(name, [])), probe))
        behaviours += ["lb-port-rule", "lb-probes"]
        if any(r.ha_ports for r in rules):
            behaviours.append("lb-ha-ports")
            assumptions.append("ha-ports-hash")
        if any(not r.ha_ports for r in rules):
            behaviours.append("lb-port-rule-fragments")
        assumptions.append("probe-interval-scale")

    # PLS + PE.
    pls_by_name = {_azure_name(p, "serviceName"): p for p in by_kind.get("PrivateLinkService", [])}
    pls_nodes: dict[str, str] = {}
    private_links: list[PrivateLink] = []
    for pls_name, pls in pls_by_name.items():
        configs = _inputs(pls).get("ipConfigurations") or []
        primary = next((c for c in configs if c.get("primary")), configs[0] if configs else {})
        nat_ip = str(primary.get("privateIPAddress"))
        node = names.take("n", 0)
        pls_nodes[pls_name] = node
        nodes.append(Node(node, "pls", pls_name, True))
        prefixlen = _subnet_prefixlen(by_kind, str(_seg((primary.get("subnet") or {})
                                                        .get("id"), "virtualNetworks")),
                                      str(_seg((primary.get("subnet") or {}).get("id"),
                                               "subnets")))
        ports.append(Port(node, "f0", nat_ip, prefixlen, pls_name))
        behaviours += ["pls-nat", "pe-address"]
        assumptions += ["pls-nat-ip", "pls-fragments"]
    for pe in by_kind.get("PrivateEndpoint", []):
        name = _azure_name(pe, "privateEndpointName")
        vnet_name = str(_seg((_inputs(pe).get("subnet") or {}).get("id"), "virtualNetworks"))
        if vnet_name not in vnet_index:
            continue
        pls_name = str(_seg(((_inputs(pe).get("privateLinkServiceConnections") or [{}])[0])
                            .get("privateLinkServiceId"), "privateLinkServices"))
        pls = pls_by_name.get(pls_name)
        if pls is None:
            raise TopologyError(f"private endpoint {name!r}: its PLS {pls_name!r} is not in "
                                "the graph")
        destination = _inputs(pls).get("destinationIPAddress")
        lb_frontends = _inputs(pls).get("loadBalancerFrontendIpConfigurations") or []
        if destination:
            target, direct = str(destination), True
        elif lb_frontends:
            lb_name = str(_seg(lb_frontends[0].get("id"), "loadBalancers"))
            if lb_name not in frontend_of:
                raise TopologyError(f"PLS {pls_name!r}: its load balancer {lb_name!r} is not "
                                    "in the graph")
            target, direct = frontend_of[lb_name], False
        else:
            raise TopologyError(f"PLS {pls_name!r}: neither a load balancer frontend nor a "
                                "destinationIPAddress")
        index = vnet_index[vnet_name]
        node = names.take("e", index)
        subnet_name = str(_seg((_inputs(pe).get("subnet") or {}).get("id"), "subnets"))
        prefixlen = _subnet_prefixlen(by_kind, vnet_name, subnet_name)
        static = ((_inputs(pe).get("ipConfigurations") or [{}])[0]).get("privateIPAddress")
        # No static address (the program's default): Azure assigns the next free one of the
        # subnet after the ones it reserves (facts.DYNAMIC_FIRST_HOST), as the mocks do.
        ip = str(static) if static else str(
            _subnet_prefix(by_kind, vnet_name, subnet_name)[facts.DYNAMIC_FIRST_HOST])
        nodes.append(Node(node, "pe", name, True))
        ports.append(Port(node, f"f{vnet_digit(index)}", ip, prefixlen, name))
        pls_node = pls_nodes[pls_name]
        net = ipaddress.ip_network(PRIVATE_LINK_NET.format(k=index, n=0))
        pe_side, pls_side = str(net[2]), str(net[1])
        links.append(Link(node, f"{pe_side}/30", pls_node, f"{pls_side}/30"))
        routes.append((node, f"{target}/32", pls_side))
        # Replies towards the consumer (none for VXLAN; kept for completeness) go back
        # through the PE's link, never into the provider's VNet.
        private_links.append(PrivateLink(node, name, ip, pls_node, pls_name,
                                         next(p.ip for p in ports if p.node == pls_node),
                                         target, direct))

    # vTAPs and tap configurations.
    vtap_by_name = {_azure_name(t, "tapName"): t for t in by_kind.get("VirtualNetworkTap", [])}
    fastpath_cmds = [r for r in by_kind.get("Command", [])
                     if " fastpath " in str(_inputs(r).get("create") or "")]
    vm_by_name = {str(v.get("name")): v for v in by_kind.get("VirtualMachine", [])}
    taps: list[Tap] = []
    vtep_of: dict[int, str] = {}
    tap_count: dict[str, int] = {}
    for config in by_kind.get("NetworkInterfaceTapConfiguration", []):
        nic_name = str(_inputs(config).get("networkInterfaceName"))
        if nic_name not in vm_node_of_nic:
            continue
        vtap_name = str(_seg((_inputs(config).get("virtualNetworkTap") or {}).get("id"),
                             "virtualNetworkTaps"))
        vtap = vtap_by_name.get(vtap_name)
        if vtap is None:
            raise TopologyError(f"tap configuration {config.get('name')!r}: its vTAP "
                                f"{vtap_name!r} is not in the graph")
        vi = _inputs(vtap)
        nic_config = (vi.get("destinationNetworkInterfaceIPConfiguration") or {}).get("id")
        lb_frontend = (vi.get("destinationLoadBalancerFrontEndIPConfiguration") or {}).get("id")
        if nic_config:
            remote = nic_ip.get(str(_seg(nic_config, "networkInterfaces")))
        else:
            remote = frontend_of.get(str(_seg(lb_frontend, "loadBalancers")))
            assumptions.append("lb-frontend-vxlan")
        if remote is None:
            raise TopologyError(f"vTAP {vtap_name!r}: its destination is not an emulated NIC "
                                "or LB frontend")
        source = vm_node_of_nic[nic_name]
        index = VNET_DIGITS.index(source[1])
        vtep = vtep_of.get(index)
        if vtep is None:
            vtep = vtep_of[index] = names.take("v", index)
            nodes.append(Node(vtep, "vtep", f"vTAP host side of VNet {index}"))
            net = ipaddress.ip_network(VTEP_LINK_NET.format(k=index))
            links.append(Link(vtep, f"{net[2]}/30", f"f{vnet_digit(index)}", f"{net[1]}/30"))
            routes.append((vtep, "default", str(net[1])))
        vm_resource = next(v.resource for v in vms if v.node == source)
        on_fastpath, why = _fastpath(vm_by_name.get(vm_resource), urn_of.get(vtap_name),
                                     fastpath_cmds, closure, vm_resource, vtap_name, nic_name)
        tap_count[vtep] = tap_count.get(vtep, 0) + 1
        taps.append(Tap(source, nic_name, vm_resource, vtap_name, f"f{vnet_digit(index)}", vtep,
                        tap_count[vtep], nic_ip[nic_name], remote,
                        int(vi.get("destinationPort") or facts.VXLAN_PORT), VTAP_VNI,
                        on_fastpath, why))
        behaviours += ["vtap-mirror", "vtap-fastpath"]
        assumptions += ["vtap-vni", "vtap-outer-source", "vtap-outer-port"]

    scenarios = _scenarios(by_kind, vms, taps, lbs, private_links, pip_node, vnet_index,
                           vnet_scenario)
    if not scenarios:
        raise TopologyError("the graph has no traffic to emulate (no vtap-traffic.sh command "
                            "on a client VM); accepted: b2, b3, b4, msp, a, uksouth")
    return Topology(stack=stack, nodes=tuple(nodes), ports=tuple(ports), links=tuple(links),
                    vnets=vnet_info, vms=tuple(vms), lbs=tuple(lbs),
                    private_links=tuple(private_links), taps=tuple(taps),
                    scenarios=scenarios, routes=tuple(routes),
                    behaviours=tuple(dict.fromkeys(behaviours)),
                    assumptions=tuple(dict.fromkeys(assumptions)), notes=tuple(notes),
                    scale_sets=tuple(scale_sets))


def _iso_seconds(text: str) -> float:
    """An ISO 8601 duration as ARM writes pauseTimeBetweenBatches (PT1M, PT30S, PT1H2M3S)."""
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", text.strip())
    if match is None:
        raise TopologyError(f"pauseTimeBetweenBatches {text!r} is not an ISO 8601 duration; "
                            "accepted: PT[nH][nM][nS], e.g. PT1M")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class _Instance:
    vm: Vm
    port: Port
    pools: tuple[str, ...]          # the LBs whose backend pools the instance's NIC joins


def _static_addresses(by_kind: Mapping[str, list[Mapping[str, Any]]]) -> set[str]:
    """Every address the graph sets statically (NICs, LB frontends, PEs): a dynamic one is
    never one of them."""
    found: set[str] = set()
    for kind, key in (("NetworkInterface", "ipConfigurations"),
                      ("LoadBalancer", "frontendIPConfigurations"),
                      ("PrivateEndpoint", "ipConfigurations")):
        for resource in by_kind.get(kind, []):
            for config in _inputs(resource).get(key) or []:
                if config.get("privateIPAddress"):
                    found.add(str(config["privateIPAddress"]))
    return found


def _scale_set_instances(vmss: Mapping[str, Any],
                         by_kind: Mapping[str, list[Mapping[str, Any]]],
                         vnet_index: Mapping[str, int], names: _Names,
                         nsgs: Mapping[str, Nsg]) -> list[_Instance]:
    """A Flexible scale set's ``sku.capacity`` instances, each a VM of its profile: the
    profile's user data, one NIC from its (primary) network interface configuration in that
    subnet and backend pools, IP forwarding and NSG as configured, spread over its zones in
    turn. Addresses are dynamic: the subnet's next free ones from host
    ``facts.DYNAMIC_FIRST_HOST`` on, skipping every static address (assumption
    vmss-instance-addresses)."""
    inputs = _inputs(vmss)
    name = _azure_name(vmss, "vmScaleSetName")
    if str(inputs.get("orchestrationMode", "")).lower() != "flexible":
        raise TopologyError(f"scale set {name!r}: orchestrationMode "
                            f"{inputs.get('orchestrationMode')!r} is not emulated; accepted: "
                            "Flexible")
    capacity = int((inputs.get("sku") or {}).get("capacity") or 0)
    profile = inputs.get("virtualMachineProfile") or {}
    configs = (profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []
    nic = next((c for c in configs if c.get("primary")), configs[0] if configs else None)
    if nic is None:
        raise TopologyError(f"scale set {name!r}: no network interface configuration in its "
                            "profile")
    ipconfigs = nic.get("ipConfigurations") or []
    ipconfig = next((c for c in ipconfigs if c.get("primary")),
                    ipconfigs[0] if ipconfigs else {})
    subnet_id = (ipconfig.get("subnet") or {}).get("id")
    vnet_name = str(_seg(subnet_id, "virtualNetworks"))
    if vnet_name not in vnet_index or capacity < 1:
        return []
    subnet = _subnet_prefix(by_kind, vnet_name, str(_seg(subnet_id, "subnets")))
    taken = _static_addresses(by_kind)
    free = (str(host) for i, host in enumerate(subnet.hosts(), start=1)
            if i >= facts.DYNAMIC_FIRST_HOST and str(host) not in taken)
    user_data = _user_data({"name": name, "inputs": profile})
    role = _role(user_data)
    index = vnet_index[vnet_name]
    zones = [str(z) for z in inputs.get("zones") or []]
    nsg = nsgs.get(str(_seg((nic.get("networkSecurityGroup") or {}).get("id"),
                            "networkSecurityGroups")))
    pools = tuple(str(_seg(p.get("id"), "loadBalancers"))
                  for p in ipconfig.get("loadBalancerBackendAddressPools") or [])
    instances = []
    for ordinal in range(capacity):
        ip = next(free, None)
        if ip is None:
            raise TopologyError(f"scale set {name!r}: subnet {subnet} has no address left for "
                                f"instance {ordinal + 1} of {capacity}")
        node = names.take(ROLE_LETTERS.get(role, "x"), index)
        # Azure names Flexible instances <scale set>_<8 characters>; the twin numbers them.
        resource = f"{name}_{ordinal}"
        zone = zones[ordinal % len(zones)] if zones else ""
        vm = Vm(node, resource, role, "", vnet_name, ip,
                proxy_args=_script_args(user_data, "vtap-proxy.sh"),
                health_args=_script_args(user_data, "vtap-health.py", action=""),
                decap_args=_script_args(user_data, "vtap-decap.sh"),
                scale_set=name, zone=zone)
        port = Port(node, f"f{vnet_digit(index)}", ip, subnet.prefixlen,
                    f"{nic.get('name')}-{ordinal}", nic=True,
                    forwarding=bool(nic.get("enableIPForwarding")), nsg=nsg)
        instances.append(_Instance(vm, port, pools))
    return instances


def _subnet_prefix(by_kind: Mapping[str, list[Mapping[str, Any]]], vnet: str,
                   subnet: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    for resource in by_kind.get("Subnet", []):
        inputs = _inputs(resource)
        if inputs.get("virtualNetworkName") == vnet and inputs.get("subnetName") == subnet:
            return ipaddress.ip_network(str(inputs.get("addressPrefix")))
    raise TopologyError(f"subnet {subnet!r} of VNet {vnet!r} is not in the graph")


def _subnet_prefixlen(by_kind: Mapping[str, list[Mapping[str, Any]]], vnet: str,
                      subnet: str) -> int:
    return _subnet_prefix(by_kind, vnet, subnet).prefixlen


def _fastpath(vm: Mapping[str, Any] | None, vtap_urn: str | None,
              commands: Sequence[Mapping[str, Any]], closure: Mapping[str, set[str]],
              vm_name: str, vtap_name: str, nic_name: str) -> tuple[bool, str]:
    """Is the source VM (first or re-)started after the vTAP exists, as the graph orders it?

    First start: the VM resource waits for the vTAP. Restart: a ``fastpath`` command (the
    program's deallocate + start) for this VM that waits for the vTAP.
    """
    if vm is None or vtap_urn is None:
        return False, f"NIC is not on fastpath: {nic_name} (VM or vTAP missing from the graph)"
    if vtap_urn in closure.get(str(vm.get("urn")), set()):
        return True, ""
    vm_id_name = str((_inputs(vm).get("vmName")) or vm_name)
    for command in commands:
        create = str(_inputs(command).get("create") or "")
        if re.search(rf"/virtualMachines/{re.escape(vm_id_name)}(\s|$)", create) and \
                vtap_urn in closure.get(str(command.get("urn")), set()):
            return True, ""
    return False, (f"NIC is not on fastpath: {nic_name} (VM {vm_name} is not started after "
                   f"vTAP {vtap_name}: no start of the VM depends on the vTAP)")


def _scenarios(by_kind: Mapping[str, list[Mapping[str, Any]]], vms: Sequence[Vm],
               taps: Sequence[Tap], lbs: Sequence[LoadBalancer],
               private_links: Sequence[PrivateLink], pip_node: Mapping[str, str],
               vnet_index: Mapping[str, int], vnet_scenario: Mapping[str, str]
               ) -> tuple[Scenario, ...]:
    """The traffic each scenario makes (its vtap-traffic.sh commands) and its capture points."""
    flows: dict[str, list[Flow]] = {}
    for command in by_kind.get("Command", []):
        create = str(_inputs(command).get("create") or "")
        if "vtap-traffic.sh" not in create:
            continue
        pip = next((str(d).rsplit("::", 1)[-1] for d in command.get("dependencies") or []
                    if "PublicIPAddress" in str(d)), None)
        client = pip_node.get(str(pip))
        if client is None:
            continue
        words = shlex.split(create.split("vtap-traffic.sh", 1)[1].split("||")[0])
        urls = tuple(words[i + 1] for i, w in enumerate(words[:-1]) if w == "--url")
        host = re.match(r"https?://([^/:]+)", urls[0]) if urls else None
        client_vm = next(v for v in vms if v.node == client)
        server = next((v for v in vms if v.vnet == client_vm.vnet and host and
                       v.ip == host.group(1)), None)
        if server is None:
            continue
        tenant = str(vnet_index[client_vm.vnet])
        flows.setdefault(client_vm.scenario, []).append(
            Flow(client, server.node, server.ip, urls, tenant))
    collector = next((v for v in vms if v.role == "collector"), None)
    if collector is None:
        return ()
    result = []
    for scenario, scenario_flows in flows.items():
        vnets = {f.client[1] for f in scenario_flows}
        scenario_taps = tuple(t for t in taps if t.fabric[1:] in vnets)
        proxies = tuple(v.node for v in vms if v.role == "proxy" and v.node[1] in vnets)
        hops = [Hop(f"vtap{t.fabric[1:]}" if len(vnets) > 1 else "vtap", t.vtep, t.fabric,
                    "out", 0) for t in scenario_taps]
        lb_front = next((lb for lb in lbs if lb.node[1] in vnets), None)
        if lb_front is not None:
            hops.append(Hop(f"{lb_front.resource}-out", lb_front.node, f"f{lb_front.node[1]}",
                            "out", 1))
        for proxy in proxies:
            label = proxy if len(proxies) > 1 else "proxy"
            # On the fabric's side: it stays up when a proxy is down.
            hops.append(Hop(f"{label}-out", f"f{proxy[1]}", proxy, "in", 2))
        links = [pl for pl in private_links if pl.pe_node[1] in vnets]
        if links:
            hops.append(Hop("pls-out", links[0].pls_node, "f0", "out", 3))
        for lb in lbs:
            if lb.node[1] == "0" and links and links[0].target == lb.frontend:
                hops.append(Hop(f"{lb.resource}-out", lb.node, "f0", "out", 5))
        decap = next((v.decap_args for v in vms if v.role == "collector" and v.decap_args), ())
        vnis = tuple(int(x) for x in decap[decap.index("--vni") + 1].split(",")) \
            if "--vni" in decap else ()
        result.append(Scenario(
            id=scenario, flows=tuple(sorted(scenario_flows, key=lambda f: f.client)),
            hops=tuple(hops), collector=Hop("collector", collector.node, "f0", "inout", 6),
            taps=scenario_taps, proxies=proxies,
            lb=lb_front.node if lb_front is not None else None, decap_vnis=vnis))
    order = list(facts.SCENARIOS)
    return tuple(sorted(result, key=lambda s: order.index(s.id) if s.id in order else 99))


def main(argv: list[str]) -> int:
    """``python -m vtaplab.emulator.topology STACK``: print the twin's topology (no root)."""
    from vtaplab.preflight.mocks import GraphError

    try:
        resources, _cached = stack_graph(argv[0]) if argv else ([], False)
        topo = from_graph(resources, argv[0] if argv else "")
    except (GraphError, TopologyError) as exc:
        print(f"topology: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(topo.summary(), indent=2))
    return 0


if __name__ == "__main__":   # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))


__all__ = ["ScaleSet", "Topology", "TopologyError", "from_graph", "load_graph_file", "stack_graph"]
