"""The twin's Azure behaviours as nftables rulesets: pure text from the topology, no root.

``fabric_ruleset`` is a VNet's fabric: each NIC's IP-forwarding flag and NSG (declared rules
and Azure's defaults, in priority order). ``lb_ruleset`` is an internal load balancer's rules
over its healthy backends. Every rule that drops carries a comment naming the resource and
why (``nsg:<nsg>:<rule>``, ``nic:<nic>:...``, ``lb:<lb>:<rule>:...``) and a counter, so
``drops`` can say after a run exactly where packets were lost, by resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from vtaplab.behaviours import AZURE_LB_PROBE_SOURCE
from vtaplab.emulator.topology import LoadBalancer, NsgRule, Port, Topology, TopologyError

FABRIC_TABLE = "twin_fabric"
LB_TABLE = "twin_lb"
LB_STAT_TABLE = "twin_lbstat"
_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "*": None, "any": None}
_DROP_COUNTER = re.compile(r"counter packets (\d+) bytes \d+ .*?comment \"([^\"]+)\"")


def _addresses(values: Sequence[str], vnet: Sequence[str], what: str) -> str | None:
    """An nft match for NSG prefixes/service tags, or None for "any"."""
    items: list[str] = []
    for value in values:
        tag = value.strip()
        if tag in ("*", "Any", "any", "0.0.0.0/0"):
            return None
        if tag == "VirtualNetwork":
            items += [*vnet, AZURE_LB_PROBE_SOURCE]
        elif tag == "AzureLoadBalancer":
            items.append(AZURE_LB_PROBE_SOURCE)
        elif tag == "Internet":
            if len(values) > 1:
                raise TopologyError(f"NSG prefix list {list(values)!r} mixes Internet with "
                                    "others; accepted: Internet alone")
            return f"ip {what} != {{ {', '.join([*vnet, AZURE_LB_PROBE_SOURCE])} }}"
        elif re.fullmatch(r"[0-9./]+", tag):
            items.append(tag)
        else:
            raise TopologyError(f"NSG prefix {tag!r} is not modelled by the twin; accepted: "
                                "CIDRs, *, VirtualNetwork, AzureLoadBalancer, Internet")
    return f"ip {what} {{ {', '.join(dict.fromkeys(items))} }}"


def nsg_match(rule: NsgRule, vnet: Sequence[str]) -> str:
    """The nft expression matching ``rule`` (a port rule never matches a non-first fragment:
    it has no transport header; behaviours assumption nsg-fragments)."""
    protocol = _PROTOCOLS.get(rule.protocol.lower())
    if rule.protocol.lower() not in _PROTOCOLS:
        raise TopologyError(f"NSG rule {rule.name!r}: protocol {rule.protocol!r} is not "
                            "modelled; accepted: Tcp, Udp, Icmp, *")
    parts = [f"meta l4proto {protocol}"] if protocol else []
    for values, what in ((rule.sources, "saddr"), (rule.destinations, "daddr")):
        match = _addresses(values, vnet, what)
        if match:
            parts.append(match)
    if "*" not in rule.ports:
        if protocol is None:
            parts.append("meta l4proto { tcp, udp }")
        parts.append(f"th dport {{ {', '.join(rule.ports)} }}")
    return " ".join(parts)


def fabric_ruleset(topo: Topology, fabric: str, ifname: Callable[[str, str], str]) -> str:
    """The NIC and NSG rules of every VM NIC on ``fabric`` (a VNet's router namespace).

    Inbound is what the fabric sends out of the NIC's port, outbound what comes in from it;
    an NSG's Allow returns (so the other NIC's NSG is still evaluated), its Deny drops.
    """
    vnet = topo.vnets[fabric][1]
    pre, fwd, chains = [], [], []
    nics = [p for p in topo.ports if p.fabric == fabric and p.nic]
    for port in nics:
        dev = ifname(fabric, port.node)
        if not port.forwarding:
            pre.append(f'iifname "{dev}" ip saddr != {port.ip} counter drop comment '
                       f'"nic:{port.resource}:source not its own (IP forwarding off)"')
            fwd.append(f'oifname "{dev}" ip daddr != {port.ip} counter drop comment '
                       f'"nic:{port.resource}:not addressed to it (IP forwarding off)"')
    for port in nics:
        if port.nsg is None:
            continue
        dev = ifname(fabric, port.node)
        for direction, key in (("Outbound", "iifname"), ("Inbound", "oifname")):
            chain = f"{direction.lower()}_{port.node}"
            fwd.append(f'{key} "{dev}" jump {chain}')
            body = [_nsg_line(rule, vnet, port) for rule in port.nsg.rules
                    if rule.direction == direction]
            chains.append(f"  chain {chain} {{\n" + "".join(f"    {b}\n" for b in body)
                          + "  }\n")
    return (f"table ip {FABRIC_TABLE}\nflush table ip {FABRIC_TABLE}\n"
            f"table ip {FABRIC_TABLE} {{\n"
            "  chain prerouting {\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            + "".join(f"    {line}\n" for line in pre) + "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            + "".join(f"    {line}\n" for line in fwd) + "  }\n"
            + "".join(chains) + "}\n")


def _nsg_line(rule: NsgRule, vnet: Sequence[str], port: Port) -> str:
    assert port.nsg is not None
    verdict = "return" if rule.access == "Allow" else "drop"
    return (f"{nsg_match(rule, vnet)} counter {verdict} "
            f'comment "nsg:{port.nsg.name}:{rule.name}"').strip()


def lb_ruleset(lb: LoadBalancer, dev: str, healthy: Sequence[tuple[str, str]]) -> str:
    """An internal LB over ``healthy`` backends (node, ip), as Azure documents its rules.

    Port rules are stateless, at the LB's ingress (before any reassembly): protocol and port
    match, the flow's 5-tuple hashes to a backend, the destination is rewritten and the source
    kept; a non-first fragment (no port to match) is dropped. HA-ports rules take everything
    else to the frontend, fragments included: connection tracking reassembles a datagram and
    re-fragments it towards one backend, hashed on its 5-tuple.
    """
    mapping = "{ " + ", ".join(f"{i} : {ip}" for i, (_n, ip) in enumerate(healthy)) + " }"
    count = len(healthy)
    ingress: list[str] = []
    nat: list[str] = []
    for rule in lb.rules:
        label = f"lb:{lb.resource}:{rule.name}"
        if rule.ha_ports:
            if healthy:
                nat.append(f"ip daddr {lb.frontend} meta l4proto {{ tcp, udp }} dnat to jhash "
                           f"ip saddr . th sport . th dport mod {count} map {mapping} "
                           f'comment "{label}"')
                nat.append(f"ip daddr {lb.frontend} dnat to jhash ip saddr mod {count} map "
                           f'{mapping} comment "{label}"')
            continue
        protocol = rule.protocol.lower()
        if protocol not in ("tcp", "udp"):
            raise TopologyError(f"load balancer {lb.resource!r} rule {rule.name!r}: protocol "
                                f"{rule.protocol!r}; accepted: Tcp, Udp, All (HA ports)")
        if healthy:
            ingress.append(f"ip daddr {lb.frontend} {protocol} dport {rule.port} ip daddr set "
                           f"jhash ip saddr . {protocol} sport mod {count} map {mapping} "
                           f'counter accept comment "{label}"')
        else:
            ingress.append(f"ip daddr {lb.frontend} {protocol} dport {rule.port} counter drop "
                           f'comment "{label}:no healthy backend"')
    if any(r.ha_ports for r in lb.rules):
        if not healthy:
            ingress.append(f'ip daddr {lb.frontend} counter drop comment '
                           f'"lb:{lb.resource}:no healthy backend"')
    else:
        ingress.append(f"ip daddr {lb.frontend} ip frag-off & 0x1fff != 0 counter drop "
                       f'comment "lb:{lb.resource}:non-first fragment (port rules only)"')
        ingress.append(f'ip daddr {lb.frontend} counter drop comment '
                       f'"lb:{lb.resource}:no rule matches"')
    script = (f"table netdev {LB_TABLE}\nflush table netdev {LB_TABLE}\n"
              f"table netdev {LB_TABLE} {{\n"
              "  chain ingress {\n"
              f'    type filter hook ingress device "{dev}" priority filter; policy accept;\n'
              + "".join(f"    {line}\n" for line in ingress) + "  }\n}\n")
    script += (f"table ip {LB_TABLE}\nflush table ip {LB_TABLE}\n"
               f"table ip {LB_TABLE} {{\n"
               "  chain prerouting {\n"
               "    type nat hook prerouting priority dstnat; policy accept;\n"
               + "".join(f"    {line}\n" for line in nat) + "  }\n}\n")
    return script


def lb_stat_ruleset(lb: LoadBalancer) -> str:
    """Named counters of what the LB forwards to each backend (a table reprogramming the LB
    never touches; the forward hook sees forwarded packets only, not the LB's own probes)."""
    counters = "".join(f"  counter to_{node} {{}}\n" for node, _ip in lb.backends)
    rules = "".join(f'    ip daddr {ip} counter name "to_{node}"\n' for node, ip in lb.backends)
    return (f"table ip {LB_STAT_TABLE} {{\n{counters}"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            f"{rules}  }}\n}}\n")


def drops(listing: str) -> dict[str, int]:
    """``nft list ruleset`` text -> packets per drop rule comment (only rules that dropped)."""
    found: dict[str, int] = {}
    for line in listing.splitlines():
        if " drop " not in f"{line} ":
            continue
        match = _DROP_COUNTER.search(line)
        if match and int(match.group(1)) > 0:
            found[match.group(2)] = found.get(match.group(2), 0) + int(match.group(1))
    return found
