"""``python -m vtaplab emulate SCENARIO``: a scenario's data path, locally, in network namespaces.

b2 on one machine: vm-src (an HTTP/1.1 server) and a client in one "VNet", the VNet's fabric
(a router with a bridge for snet-src), vTAP emulated agentlessly on the fabric side of vm-src's
veth (tc clsact + ``u32 match u32 0 0`` + ``mirred egress mirror`` into a VXLAN device whose
UDP socket lives in its own VTEP namespace), the proxy running ``cloudinit/vtap-proxy.sh``
(the file cloud-init installs on the VM), a PE+PLS stand-in (DNAT to the provider ILB, SNAT to
a PLS NAT IP), the provider fabric with the ILB stand-in (DNAT to the collector, no SNAT) and
the collector running ``cloudinit/vtap-capture.sh``. The verdict comes from
``vtaplab.judge.verdict.build_verdict``, exactly as for a run on Azure.

The topology is data (:class:`Topology`): nodes, links, NAT rules, taps, proxies, flows,
capture points. A scenario is a function returning one: ``b2``; ``b3`` (b2 with the proxy
replaced by an internal-LB stand-in over two health-probed proxies, fault ``proxy-down``);
``msp`` (N tenants with the same addresses, each proxy stamping its VNI, one PLS/collector;
the verdict says per tenant what arrived on its VNI, and fails when tenants can't be told
apart: ``vtaplab.judge.tenants``; the collector runs ``cloudinit/vtap-decap.sh``, one decap
interface per tenant VNI, and the table shows what each received).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from vtaplab import PROJECT_ROOT, facts, plan
from vtaplab.emulator.netns import Lab, NetnsError, Runner, list_namespaces, new_prefix, preflight

SCRIPTS = PROJECT_ROOT / "cloudinit"
PROXY_SCRIPT = SCRIPTS / "vtap-proxy.sh"
CAPTURE_SCRIPT = SCRIPTS / "vtap-capture.sh"
TRAFFIC_SCRIPT = SCRIPTS / "vtap-traffic.sh"
DECAP_SCRIPT = SCRIPTS / "vtap-decap.sh"

# "all" (the default) runs every mode in this order: the lab's default mode first (the
# fastest measured: its evidence is the scenario's), each other mode's in OUT/<mode>/.
PROXY_MODES = (*facts.PROXY_MODES, "all")
FAULTS: dict[str, str] = {
    "none": "no fault",
    "no-proxy-rule": "the proxy's rewrite is never applied",
    "loss-2pct": "2% of the packets from the proxy towards the PE are dropped (nftables numgen)",
    "late-capture": "the collector's capture starts only after the traffic",
    "flap-proxy-rule": "the proxy's rewrite is removed for the middle third of the traffic",
    "proxy-down": "b3: the second proxy goes down (its NIC) mid-run; the LB's probe takes it "
                  "out, and the loss must stay within that failover window",
    "shared-vni": "msp: every tenant's proxy stamps the same VNI, so the collector can't tell "
                  "them apart (the verdict must fail)",
}
# Faults a scenario must still end delivered under (a run ending otherwise exits 1).
FAULTS_STILL_DELIVERED = ("none", "proxy-down")
# Emulator-only addresses: the "Azure host" side of vTAP, which no plan describes. Azure's own
# outer source address is not documented; captures from Azure show what it really is.
VTEP_LINK_FABRIC = "100.64.0.1/30"
VTEP_LINK_VTEP = "100.64.0.2/30"
VXLAN_ID = 1
# What vm-src serves: a small page and a 200 kB file (full-size segments -> fragmented VXLAN).
SMALL_PAGE = "index.html"
LARGE_FILE = "big.bin"
LARGE_FILE_BYTES = 200 * 1024
HTTP_PORT = 80
# msp: tenant i's proxy stamps VNI plan.tenant_vni(i) (the vTAP itself sends VXLAN_ID), the
# numbering the Pulumi program uses too. Default tenants as the program's mspTenants default.
MSP_TENANTS = facts.MSP_TENANTS_RANGE
MSP_DEFAULT_TENANTS = facts.MSP_TENANTS_DEFAULT
# b3's LB stand-in probes like the program's LB (TCP connect to sshd's port, one failure takes
# a backend out: probe_threshold 1), only more often than Azure's 5 s: a shorter failover
# window, the same logic. Bounded: a prober never outlives this.
PROBE_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = "0.5"
PROBER_MAX_S = 600.0
FAILOVER_WAIT_S = 10.0
PR_SET_CHILD_SUBREAPER = 36   # prctl(2)
CAPTURE_SNAPLEN = 2048        # > 1514 + a VLAN tag; every link here has MTU 1500


# ---------------------------------------------------------------------------------------------
# Topology as data
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    name: str                    # short (<= 3 chars): it appears in interface names
    role: str
    forwarding: bool = False
    gateway: str | None = None   # default route
    # Bridges (a subnet's L2): (name, addresses); links attach with End(bridge=name).
    bridges: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class End:
    node: str
    addrs: tuple[str, ...] = ()
    bridge: str | None = None    # enslave this end to that bridge of its node


@dataclass(frozen=True)
class Link:
    a: End
    b: End


@dataclass(frozen=True)
class Tap:
    """vTAP: mirror both directions of ``source``'s link to ``fabric`` into VXLAN."""

    source: str
    fabric: str
    vtep: str
    vtep_ip: str                 # the VTEP's outer source address (no prefix length)
    remote: str                  # the vTAP destination: the proxy's IP
    vni: int = VXLAN_ID
    port: int = facts.VXLAN_PORT


@dataclass(frozen=True)
class Proxy:
    node: str
    target: str                  # the PE IP
    vni: int | None = None       # --vni stamping


@dataclass(frozen=True)
class LoadBalancer:
    """An internal LB stand-in: ``frontend``:port -> one healthy backend per flow (5-tuple hash,
    destination rewritten, source kept: Azure's default, non-floating-IP rule). Health as
    Azure probes it: a TCP connect to ``probe_port`` (sshd on the VMs, a listener here)."""

    node: str
    frontend: str
    backends: tuple[tuple[str, str], ...]           # (node, ip)
    probe_port: int = 22
    port: int = facts.VXLAN_PORT


@dataclass(frozen=True)
class Flow:
    """The traffic a tenant's client sends to its (tapped) server."""

    client: str
    server: str
    server_ip: str
    tenant: str = ""


@dataclass(frozen=True)
class Hop:
    """A capture point: a pcap of ``node``'s link to ``peer`` in ``direction``."""

    name: str                    # file name: <name>.pcap
    node: str
    peer: str
    direction: str = "inout"


@dataclass(frozen=True)
class Topology:
    scenario: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    nat: tuple[tuple[str, tuple[str, ...]], ...]    # (node, iptables argv)
    taps: tuple[Tap, ...]
    proxies: tuple[Proxy, ...]
    flows: tuple[Flow, ...]
    collector: tuple[str, str]                       # (node, peer): capture on that link
    hops: tuple[Hop, ...]
    loss_link: tuple[str, str, str]                  # (router node, from node, to ip)
    lb: LoadBalancer | None = None                   # b3: the vTAP's destination is an ILB
    # msp: the collector's decap interfaces (vtap-decap.sh), one per tenant VNI.
    decap_vnis: tuple[int, ...] = ()

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def gw(subnet: str) -> str:
    """The fabric's address in a subnet: .1, as in Azure."""
    return subnet.rsplit(".", 1)[0] + ".1"


def cidr(ip: str, subnet: str) -> str:
    return f"{ip}/{subnet.split('/')[1]}"


def b2_topology() -> Topology:
    """B2: vTAP -> proxy (DNAT to PE) -> PE+PLS (SNAT to a NAT IP) -> ILB -> collector."""
    src_net = plan.CONSUMER_SUBNETS["snet-src"]
    pe_net = plan.CONSUMER_SUBNETS["snet-pe"]
    proxy_net = plan.CONSUMER_SUBNETS["snet-proxy"]
    pls_net = plan.PROVIDER_SUBNETS["snet-pls"]
    col_net = plan.PROVIDER_SUBNETS["snet-col"]
    nat_ip = plan.PLS_NAT_IPS[0]
    port = str(facts.VXLAN_PORT)
    vtep_ip = VTEP_LINK_VTEP.split("/")[0]
    nodes = (
        Node("src", "vm-src (HTTP/1.1 server, tapped)", gateway=gw(src_net)),
        Node("cli", "client VM", gateway=gw(src_net)),
        Node("fa", "VNet A fabric (router; bridge for snet-src)", forwarding=True,
             bridges=(("br", (cidr(gw(src_net), src_net),)),)),
        Node("vtp", "vTAP VTEP (Azure host side)", gateway=VTEP_LINK_FABRIC.split("/")[0]),
        Node("prx", "vm-proxy (vtap-proxy.sh)", gateway=gw(proxy_net)),
        Node("pe", "Private Endpoint + PLS (DNAT to ILB, SNAT to NAT IP)", forwarding=True,
             gateway=gw(pe_net)),
        Node("fb", "VNet B fabric + ILB (DNAT to collector)", forwarding=True),
        Node("col", "vm-col (vtap-capture.sh)", gateway=gw(col_net)),
    )
    links = (
        Link(End("src", (cidr(plan.VM_SRC_IP, src_net),)), End("fa", bridge="br")),
        Link(End("cli", (cidr(plan.VM_CLIENT_IP, src_net),)), End("fa", bridge="br")),
        Link(End("vtp", (VTEP_LINK_VTEP,)), End("fa", (VTEP_LINK_FABRIC,))),
        Link(End("prx", (cidr(plan.VM_PROXY_IP, proxy_net),)),
             End("fa", (cidr(gw(proxy_net), proxy_net),))),
        Link(End("pe", (cidr(plan.PE_IP, pe_net),)), End("fa", (cidr(gw(pe_net), pe_net),))),
        Link(End("pe", (cidr(nat_ip, pls_net),)),
             End("fb", (cidr(gw(pls_net), pls_net), f"{plan.PROVIDER_ILB_IP}/32"))),
        Link(End("col", (cidr(plan.VM_COL_IP, col_net),)),
             End("fb", (cidr(gw(col_net), col_net),))),
    )
    nat = (
        # PE -> PLS -> ILB frontend, the provider sees the PLS NAT IP as source.
        ("pe", ("-t", "nat", "-A", "PREROUTING", "-d", plan.PE_IP, "-p", "udp", "--dport", port,
                "-j", "DNAT", "--to-destination", plan.PROVIDER_ILB_IP)),
        ("pe", ("-t", "nat", "-A", "POSTROUTING", "-d", plan.PROVIDER_ILB_IP, "-p", "udp",
                "--dport", port, "-j", "SNAT", "--to-source", nat_ip)),
        # ILB: floating-IP-less rule to the backend, source kept.
        ("fb", ("-t", "nat", "-A", "PREROUTING", "-d", plan.PROVIDER_ILB_IP, "-p", "udp",
                "--dport", port, "-j", "DNAT", "--to-destination", plan.VM_COL_IP)),
    )
    return Topology(
        scenario="b2",
        nodes=nodes,
        links=links,
        nat=nat,
        taps=(Tap(source="src", fabric="fa", vtep="vtp", vtep_ip=vtep_ip,
                  remote=plan.VM_PROXY_IP),),
        proxies=(Proxy("prx", plan.PE_IP),),
        flows=(Flow(client="cli", server="src", server_ip=plan.VM_SRC_IP),),
        collector=("col", "fb"),
        hops=(
            Hop("vtep", "vtp", "fa", "out"),
            Hop("proxy-in", "prx", "fa", "in"),
            Hop("proxy-out", "prx", "fa", "out"),
            Hop("pls", "pe", "fb", "out"),
        ),
        loss_link=("fa", "prx", plan.PE_IP),
    )


def msp_topology(tenants: int = MSP_DEFAULT_TENANTS) -> Topology:
    """msp: N tenants, each a copy of b2's consumer side with the *same* addresses (their own
    namespaces, as their own VNets), each proxy stamping its tenant's VNI, each PE towards one
    shared PLS (SNAT to one NAT IP) -> ILB -> one collector, which tells tenants apart by VNI.
    """
    src_net = plan.CONSUMER_SUBNETS["snet-src"]
    pe_net = plan.CONSUMER_SUBNETS["snet-pe"]
    proxy_net = plan.CONSUMER_SUBNETS["snet-proxy"]
    pls_net = plan.PROVIDER_SUBNETS["snet-pls"]
    col_net = plan.PROVIDER_SUBNETS["snet-col"]
    nat_ip = plan.PLS_NAT_IPS[0]
    port = str(facts.VXLAN_PORT)
    vtep_ip = VTEP_LINK_VTEP.split("/")[0]
    nodes: list[Node] = []
    links: list[Link] = []
    nat: list[tuple[str, tuple[str, ...]]] = []
    taps, proxies, flows, hops = [], [], [], []
    for i in range(1, tenants + 1):
        src, cli, fab, vtp, prx, pe = (f"{r}{i}" for r in "scavpe")
        # The PE's private link to the shared PLS: emulator-only addresses.
        pe_pls, pls_pe = f"100.65.{i}.2/30", f"100.65.{i}.1/30"
        nodes += [
            Node(src, f"tenant {i} vm-src (tapped)", gateway=gw(src_net)),
            Node(cli, f"tenant {i} client", gateway=gw(src_net)),
            Node(fab, f"tenant {i} VNet fabric", forwarding=True,
                 bridges=(("br", (cidr(gw(src_net), src_net),)),)),
            Node(vtp, f"tenant {i} vTAP VTEP", gateway=VTEP_LINK_FABRIC.split("/")[0]),
            Node(prx, f"tenant {i} vm-proxy (--vni {plan.tenant_vni(i)})",
                 gateway=gw(proxy_net)),
            Node(pe, f"tenant {i} Private Endpoint (DNAT to ILB)", forwarding=True,
                 gateway=pls_pe.split("/")[0]),
        ]
        links += [
            Link(End(src, (cidr(plan.VM_SRC_IP, src_net),)), End(fab, bridge="br")),
            Link(End(cli, (cidr(plan.VM_CLIENT_IP, src_net),)), End(fab, bridge="br")),
            Link(End(vtp, (VTEP_LINK_VTEP,)), End(fab, (VTEP_LINK_FABRIC,))),
            Link(End(prx, (cidr(plan.VM_PROXY_IP, proxy_net),)),
                 End(fab, (cidr(gw(proxy_net), proxy_net),))),
            Link(End(pe, (cidr(plan.PE_IP, pe_net),)), End(fab, (cidr(gw(pe_net), pe_net),))),
            Link(End(pe, (pe_pls,)), End("pls", (pls_pe,))),
        ]
        nat.append((pe, ("-t", "nat", "-A", "PREROUTING", "-d", plan.PE_IP, "-p", "udp",
                         "--dport", port, "-j", "DNAT", "--to-destination",
                         plan.PROVIDER_ILB_IP)))
        taps.append(Tap(source=src, fabric=fab, vtep=vtp, vtep_ip=vtep_ip,
                        remote=plan.VM_PROXY_IP))
        proxies.append(Proxy(prx, plan.PE_IP, vni=plan.tenant_vni(i)))
        flows.append(Flow(client=cli, server=src, server_ip=plan.VM_SRC_IP, tenant=str(i)))
        hops.append(Hop(f"proxy{i}-out", prx, fab, "out"))
    nodes += [
        Node("pls", "Private Link Service (SNAT to the NAT IP)", forwarding=True),
        Node("fb", "VNet B fabric + ILB (DNAT to collector)", forwarding=True),
        Node("col", "vm-col (vtap-capture.sh)", gateway=gw(col_net)),
    ]
    links += [
        Link(End("pls", (cidr(nat_ip, pls_net),)),
             End("fb", (cidr(gw(pls_net), pls_net), f"{plan.PROVIDER_ILB_IP}/32"))),
        Link(End("col", (cidr(plan.VM_COL_IP, col_net),)),
             End("fb", (cidr(gw(col_net), col_net),))),
    ]
    nat += [
        ("pls", ("-t", "nat", "-A", "POSTROUTING", "-d", plan.PROVIDER_ILB_IP, "-p", "udp",
                 "--dport", port, "-j", "SNAT", "--to-source", nat_ip)),
        ("fb", ("-t", "nat", "-A", "PREROUTING", "-d", plan.PROVIDER_ILB_IP, "-p", "udp",
                "--dport", port, "-j", "DNAT", "--to-destination", plan.VM_COL_IP)),
    ]
    return Topology(
        scenario="msp", nodes=tuple(nodes), links=tuple(links), nat=tuple(nat),
        taps=tuple(taps), proxies=tuple(proxies), flows=tuple(flows), collector=("col", "fb"),
        hops=(*hops, Hop("pls", "pls", "fb", "out")), loss_link=("a1", "p1", plan.PE_IP),
        decap_vnis=tuple(p.vni for p in proxies if p.vni is not None))


def b3_topology() -> Topology:
    """b3: vTAP -> internal LB frontend in the source VNet -> 2 proxies -> PE -> PLS -> ILB ->
    collector. b2 with the single proxy replaced by an LB over two (health-probed) proxies."""
    b2 = b2_topology()
    ilb_net = plan.CONSUMER_SUBNETS["snet-ilb"]
    proxy_net = plan.CONSUMER_SUBNETS["snet-proxy"]
    proxies = (("p1", plan.VM_PROXY_IP), ("p2", plan.VM_PROXY2_IP))
    nodes = [n for n in b2.nodes if n.name not in ("prx", "fa")]
    fabric = next(n for n in b2.nodes if n.name == "fa")
    nodes += [
        # The proxies share snet-proxy: a second bridge on the fabric.
        Node("fa", "VNet A fabric (router; bridges for snet-src and snet-proxy)",
             forwarding=True,
             bridges=(*fabric.bridges, ("bp", (cidr(gw(proxy_net), proxy_net),)))),
        Node("ilb", "source-side internal LB (hash to a healthy proxy)", forwarding=True,
             gateway=gw(ilb_net)),
        *(Node(name, f"vm-proxy{i} (vtap-proxy.sh)", gateway=gw(proxy_net))
          for i, (name, _ip) in enumerate(proxies, 1)),
    ]
    links = [lk for lk in b2.links if "prx" not in (lk.a.node, lk.b.node)]
    links += [
        Link(End("ilb", (cidr(plan.CONSUMER_ILB_IP, ilb_net),)),
             End("fa", (cidr(gw(ilb_net), ilb_net),))),
        *(Link(End(name, (cidr(ip, proxy_net),)), End("fa", bridge="bp"))
          for name, ip in proxies),
    ]
    return replace(
        b2, scenario="b3", nodes=tuple(nodes), links=tuple(links),
        taps=(replace(b2.taps[0], remote=plan.CONSUMER_ILB_IP),),
        proxies=tuple(Proxy(name, plan.PE_IP) for name, _ip in proxies),
        hops=(Hop("vtep", "vtp", "fa", "out"), Hop("ilb-out", "ilb", "fa", "out"),
              # On the fabric's side of each proxy's link: it stays up when a proxy is down.
              *(Hop(f"proxy{i}-out", "fa", name, "in") for i, (name, _) in
                enumerate(proxies, 1)),
              Hop("pls", "pe", "fb", "out")),
        loss_link=("fa", "p1", plan.PE_IP),
        lb=LoadBalancer("ilb", plan.CONSUMER_ILB_IP, proxies))


# Builders take the tenant count (only msp uses it).
TOPOLOGIES: dict[str, Callable[[int], Topology]] = {
    "b2": lambda _tenants: b2_topology(),
    "b3": lambda _tenants: b3_topology(),
    "msp": msp_topology,
}


# ---------------------------------------------------------------------------------------------
# Building and running
# ---------------------------------------------------------------------------------------------
@dataclass
class RunOptions:
    scenario: str
    proxy_mode: str = "netdev"
    fault: str = "none"
    requests: int = 10
    out: Path = field(default_factory=lambda: Path("evidence/emulator/b2"))
    keep: bool = False
    proxy_vni: int | None = None
    tenants: int = MSP_DEFAULT_TENANTS
    verbose: bool = False


class LbProber(threading.Thread):
    """The LB stand-in's health probe, running while the traffic does: every
    ``PROBE_INTERVAL_S`` it probes each backend and, when the healthy set changes, reprograms
    the LB and records when, and how many datagrams it had sent to each backend by then."""

    def __init__(self, emu: Emulation, lb: LoadBalancer, health: dict[str, bool]) -> None:
        super().__init__(name="lb-prober", daemon=True)
        self.emu, self.lb, self.health = emu, lb, dict(health)
        self.events: list[dict[str, Any]] = []
        self.error: str | None = None
        self.halt = threading.Event()
        self.changed = threading.Condition()

    def run(self) -> None:
        deadline = time.monotonic() + PROBER_MAX_S
        try:
            while not self.halt.is_set() and time.monotonic() < deadline:
                health = self.emu.probe_backends(self.lb)
                if health != self.health and not self.halt.is_set():
                    self.emu.program_lb(self.lb, health)
                    event = {"at": time.time(), "health": health,
                             "steered": self.emu.lb_steering(self.lb)}
                    with self.changed:
                        self.events.append(event)
                        self.health = health
                        self.changed.notify_all()
                self.halt.wait(PROBE_INTERVAL_S)
        except (NetnsError, OSError) as exc:   # e.g. torn down under it: recorded, not raised
            self.error = str(exc)

    def wait_for(self, node: str, healthy: bool, timeout: float) -> dict[str, Any] | None:
        """The first event that set ``node`` to ``healthy`` (waiting up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = next((e for e in self.events if e["health"].get(node) is healthy),
                             None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0 or not self.is_alive():
                    return found
                self.changed.wait(min(left, 0.5))

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)


class Emulation:
    """One run: owns the namespaces (via Lab), the processes it starts and their teardown."""

    def __init__(self, topo: Topology, opts: RunOptions, lab: Lab) -> None:
        self.topo = topo
        self.opts = opts
        self.lab = lab
        self.out = opts.out
        self.www: Path | None = None
        self.servers: list[subprocess.Popen[str]] = []
        self.pidfiles: list[tuple[str, Path]] = []     # (namespace, pidfile) of our captures
        self.timings: dict[str, float] = {}
        self.facts: dict[str, Any] = {}
        self.prober: LbProber | None = None
        self.failover: dict[str, Any] = {}

    # names ------------------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return self.lab.ns(node)

    def ifname(self, node: str, peer: str) -> str:
        return self.lab.ifname(node, peer)

    # build -------------------------------------------------------------------------------------
    def build(self) -> None:
        lab = self.lab
        for node in self.topo.nodes:
            ns = lab.add_ns(node.name)
            for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
                lab.sysctl(ns, key, "0")
            lab.sysctl(ns, "net.ipv4.ip_forward", "1" if node.forwarding else "0")
            # No IPv6 chatter (DAD, MLD): every mirrored packet is the test traffic, so the
            # counts of hops whose captures start a few ms apart stay comparable.
            for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                lab.sysctl(ns, key, "1")
            if node.forwarding:
                # Routers that forward out of the interface a packet came in on (the proxy's
                # and the ILB's hairpin) must not tell the sender to go elsewhere.
                for key in ("net.ipv4.conf.all.send_redirects",
                            "net.ipv4.conf.default.send_redirects"):
                    lab.sysctl(ns, key, "0")
            for name, addrs in node.bridges:
                bridge = lab.ifname(node.name, name)
                lab.add_bridge(ns, bridge)
                for addr in addrs:
                    lab.add_addr(ns, bridge, addr)
                lab.up(ns, bridge)
        for link in self.topo.links:
            if_a = self.ifname(link.a.node, link.b.node)
            if_b = self.ifname(link.b.node, link.a.node)
            lab.add_veth(self.ns(link.a.node), if_a, self.ns(link.b.node), if_b)
            for end, dev in ((link.a, if_a), (link.b, if_b)):
                ns = self.ns(end.node)
                if end.bridge is not None:
                    lab.set_master(ns, dev, lab.ifname(end.node, end.bridge))
                for addr in end.addrs:
                    lab.add_addr(ns, dev, addr)
                lab.up(ns, dev)
        for node in self.topo.nodes:
            if node.gateway:
                self.lab.add_route(self.ns(node.name), "default", node.gateway)
        for node_name, argv in self.topo.nat:
            lab.iptables(self.ns(node_name), *argv)
        for tap in self.topo.taps:
            self._build_tap(tap)
        if self.topo.decap_vnis:
            self.lab.exec(self.ns(self.topo.collector[0]),
                          [str(DECAP_SCRIPT), "apply", "--vni",
                           ",".join(str(v) for v in self.topo.decap_vnis)])

    def _build_tap(self, tap: Tap) -> None:
        lab = self.lab
        vtep_ns, fabric_ns = self.ns(tap.vtep), self.ns(tap.fabric)
        vx = lab.ifname(tap.vtep, "vx")
        # Created in the VTEP namespace (its UDP socket stays there), then moved next to the
        # tapped port, because mirred can only redirect to a device of its own namespace.
        lab.runner.run(["ip", "link", "add", vx, "type", "vxlan", "id", str(tap.vni),
                        "dstport", str(tap.port), "remote", tap.remote, "local", tap.vtep_ip,
                        "nolearning"], ns=vtep_ns, tolerate=("File exists",))
        lab.runner.run(["ip", "link", "set", vx, "netns", fabric_ns], ns=vtep_ns,
                       tolerate=("Cannot find device",))
        lab.runner.run(["ip", "link", "set", vx, "mtu", "1500"], ns=fabric_ns)
        lab.up(fabric_ns, vx)
        # Valid outer (and inner) checksums in captures: the VTEP's veth computes them.
        lab.ethtool_off(vtep_ns, self.ifname(tap.vtep, tap.fabric), "tx")
        port = self.ifname(tap.fabric, tap.source)
        lab.tc(fabric_ns, "qdisc", "add", "dev", port, "clsact", tolerate=("File exists",))
        for direction in ("ingress", "egress"):
            lab.tc(fabric_ns, "filter", "replace", "dev", port, direction, "pref", "1",
                   "protocol", "all", "u32", "match", "u32", "0", "0",
                   "action", "mirred", "egress", "mirror", "dev", vx)

    def apply_proxy(self) -> None:
        for proxy in self.topo.proxies:
            argv = [str(PROXY_SCRIPT), "apply", "--mode", self.opts.proxy_mode,
                    "--target", proxy.target]
            vni = self.opts.proxy_vni if self.opts.proxy_vni is not None else proxy.vni
            if self.opts.fault == "shared-vni" and vni is not None:
                vni = plan.tenant_vni(1)   # every tenant's proxy: tenant 1's VNI
            if vni is not None:
                argv += ["--vni", str(vni)]
            self.lab.exec(self.ns(proxy.node), argv)

    def remove_proxy(self) -> None:
        for proxy in self.topo.proxies:
            self.lab.exec(self.ns(proxy.node), [str(PROXY_SCRIPT), "remove"])

    def inject_loss(self) -> None:
        router, from_node, to_ip = self.topo.loss_link
        iif = self.ifname(router, from_node)
        self.lab.nft(self.ns(router), (
            "table ip vtaplab_fault {\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            f'    iifname "{iif}" ip daddr {to_ip} numgen random mod 100 < 2 counter drop\n'
            "  }\n"
            "}\n"))

    def start_probe_listeners(self, lb: LoadBalancer) -> None:
        """What the LB's TCP probe connects to on each backend (sshd on the VMs)."""
        for node, ip in lb.backends:
            self._start_http(node, ip, lb.probe_port)

    def probe_backends(self, lb: LoadBalancer) -> dict[str, bool]:
        """One round of the LB's probe, run from the LB's namespace: backend -> healthy."""
        health = {}
        for node, ip in lb.backends:
            probe = self.lab.exec(
                self.ns(lb.node),
                ["timeout", PROBE_TIMEOUT_S, "bash", "-c",
                 f"exec 3<>/dev/tcp/{ip}/{lb.probe_port}"],
                check=False)
            health[node] = probe.returncode == 0
        return health

    def program_lb(self, lb: LoadBalancer, health: dict[str, bool]) -> None:
        """Hash flows over the healthy backends only; forget the flows of the others.

        Azure keeps no flow state for UDP: once a backend fails its probe, the flows it had
        move to a healthy one. Here the DNAT's connection-tracking entries towards a backend
        taken out are deleted, so its flows are hashed again over the healthy ones.
        """
        healthy = [(node, ip) for node, ip in lb.backends if health.get(node)]
        self.facts["lb_backends"] = dict(health)
        if healthy:
            mapping = ", ".join(f"{i} : {ip}" for i, (_node, ip) in enumerate(healthy))
            rule = (f"ip daddr {lb.frontend} udp dport {lb.port} "
                    f"dnat to jhash ip saddr . udp sport mod {len(healthy)} map {{ {mapping} }}")
        else:   # no healthy backend: Azure's LB drops the flow
            rule = f"ip daddr {lb.frontend} udp dport {lb.port} drop"
        # Declared, flushed and filled in one transaction: never a moment without the rule.
        self.lab.nft(self.ns(lb.node), (
            "table ip vtaplab_ilb\n"
            "flush table ip vtaplab_ilb\n"
            "table ip vtaplab_ilb {\n"
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat; policy accept;\n"
            f"    {rule}\n"
            "  }\n"
            "}\n"))
        for node, ip in lb.backends:
            if not health.get(node):
                self.lab.exec(self.ns(lb.node),
                              ["conntrack", "-D", "-p", "udp", "--orig-dst", lb.frontend,
                               "--reply-src", ip], check=False)

    def count_lb_steering(self, lb: LoadBalancer) -> None:
        """Named counters of the datagrams the LB sends to each backend (after its DNAT, in a
        table of their own that reprogramming the LB never touches)."""
        counters = "".join(f"  counter to_{node} {{}}\n" for node, _ip in lb.backends)
        rules = "".join(f'    ip daddr {ip} udp dport {lb.port} counter name "to_{node}"\n'
                        for node, ip in lb.backends)
        self.lab.nft(self.ns(lb.node), (
            "table ip vtaplab_ilbstat {\n"
            f"{counters}"
            "  chain postrouting {\n"
            "    type filter hook postrouting priority filter; policy accept;\n"
            f"{rules}"
            "  }\n"
            "}\n"))

    def lb_steering(self, lb: LoadBalancer) -> dict[str, int]:
        """Datagrams the LB has sent to each backend so far."""
        proc = self.lab.exec(self.ns(lb.node), ["nft", "list", "counters", "table", "ip",
                                                "vtaplab_ilbstat"], check=False)
        found = dict(re.findall(r"counter to_(\w+) \{\s*packets (\d+)", proc.stdout))
        return {node: int(found.get(node, 0)) for node, _ip in lb.backends}

    def loss_counter(self) -> int | None:
        """Packets the injected loss rule dropped (its nftables counter)."""
        router = self.topo.loss_link[0]
        proc = self.lab.exec(self.ns(router), ["nft", "list", "table", "ip", "vtaplab_fault"],
                             check=False)
        match = re.search(r"counter packets (\d+)", proc.stdout)
        return int(match.group(1)) if match else None

    # processes ---------------------------------------------------------------------------------
    def start_captures(self, hops: Sequence[Hop]) -> None:
        """Start the captures of ``hops`` at once; return when every one listens."""
        jobs: list[tuple[str | None, Sequence[str]]] = []
        for hop in hops:
            ns, pidfile = self.ns(hop.node), self.out / f".{hop.name}.pid"
            jobs.append((ns, [str(CAPTURE_SCRIPT), "start", "--out",
                              str(self.out / f"{hop.name}.pcap"), "--duration", "300",
                              "--iface", self.ifname(hop.node, hop.peer),
                              "--direction", hop.direction, "--pidfile", str(pidfile),
                              # Every link's MTU is 1500: small ring slots, many of them.
                              "--snaplen", str(CAPTURE_SNAPLEN)]))
            self.pidfiles.append((ns, pidfile))
        self.lab.runner.run_parallel(jobs)

    def stop_captures(self) -> None:
        for ns, pidfile in self.pidfiles:
            try:
                self.lab.exec(ns, [str(CAPTURE_SCRIPT), "stop", "--pidfile", str(pidfile)],
                              check=False, timeout=15)
            except NetnsError:
                pass
            self._kill_pidfile(pidfile)
        self.pidfiles.clear()

    def _kill_pidfile(self, pidfile: Path) -> None:
        """If stop failed (e.g. namespace already gone), end our capture and its watchdog by
        the pids the script recorded (line 1: tcpdump, line 2: the duration watchdog)."""
        try:
            pids = [int(word) for word in pidfile.read_text().split()]
        except (OSError, ValueError):
            return
        for pid, name, target in zip(pids, (b"tcpdump", b"sleep"), ("{}", "-{}"), strict=False):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if name in cmdline:   # still ours: the watchdog is a session leader (its group)
                self.lab.runner.run(["kill", "-TERM", "--", target.format(pid)], check=False)
        pidfile.unlink(missing_ok=True)

    def start_servers(self) -> None:
        self.www = self._www()
        (self.www / SMALL_PAGE).write_text(
            "<html><body><h1>vtaplab vm-src</h1><p>mirrored by vTAP</p></body></html>\n")
        body = random.Random(facts.VXLAN_PORT).randbytes(LARGE_FILE_BYTES)
        (self.www / LARGE_FILE).write_bytes(body)
        self.facts["served"] = {
            f"/{name}": {"bytes": (self.www / name).stat().st_size,
                         "sha256": hashlib.sha256((self.www / name).read_bytes()).hexdigest()}
            for name in (SMALL_PAGE, LARGE_FILE)}
        for node, ip in dict.fromkeys((f.server, f.server_ip) for f in self.topo.flows):
            self._start_http(node, ip, HTTP_PORT)

    def _www(self) -> Path:
        if self.www is None:
            self.www = Path(tempfile.mkdtemp(prefix=f"{self.lab.prefix}-www-"))
        return self.www

    def _start_http(self, node: str, ip: str, port: int) -> None:
        server = self.lab.popen(
            self.ns(node),
            [sys.executable, "-m", "vtaplab.emulator.httpserver", "--dir", str(self._www()),
             "--bind", ip, "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(PROJECT_ROOT),
            start_new_session=True)
        self.servers.append(server)
        assert server.stdout is not None
        line = server.stdout.readline()   # "ready ..." once it listens, "" if it died
        if not line.startswith("ready"):
            err = server.stderr.read() if server.stderr else ""
            raise NetnsError(f"the HTTP server in {self.ns(node)} did not start: "
                             f"{err.strip()}")

    def stop_servers(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                self.lab.runner._record(None, ["kill", "-TERM", str(server.pid)])
                server.terminate()
                try:
                    server.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=5)
        self.servers.clear()
        if self.www is not None:
            shutil.rmtree(self.www, ignore_errors=True)
            self.www = None

    def run_traffic(self, flow: Flow, count: int, log: Path) -> None:
        ip = flow.server_ip
        urls = [f"http://{ip}/", f"http://{ip}/{LARGE_FILE}"]
        argv = [str(TRAFFIC_SCRIPT), "--count", str(count), "--log", str(log), "--timeout", "10"]
        for url in urls:
            argv += ["--url", url]
        # Exit 1 means "some request failed": recorded in the log, judged by the verdict.
        self.lab.exec(self.ns(flow.client), argv, check=False,
                      timeout=30 + 20 * count * len(urls))

    def settle(self, pcap: Path) -> None:
        """Wait (bounded: 3 s) until the last mirrored packets reached the capture file."""
        size, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            now = pcap.stat().st_size if pcap.exists() else 0
            if now != size:
                size, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= 0.3:
                return
            time.sleep(0.05)

    def conntrack_count(self, node: str) -> int | None:
        proc = self.lab.exec(self.ns(node), ["conntrack", "-C"], check=False)
        try:
            return int(proc.stdout.strip())
        except ValueError:
            return None

    # the run -----------------------------------------------------------------------------------
    def traffic_phases(self) -> None:
        """Every client's requests, with the fault (if any) woven in, into one traffic.log."""
        from vtaplab.judge.verdict import parse_traffic_log

        fault, n = self.opts.fault, self.opts.requests
        if fault in ("flap-proxy-rule", "proxy-down"):
            # Thirds: rule on, rule removed, rule restored; or both proxies up, one down
            # until the LB's probe takes it out, after the failover.
            phases = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
            names = (["rule on", "rule removed", "rule restored"] if fault == "flap-proxy-rule"
                     else ["both proxies up", "one proxy down, still in the LB",
                           "after the failover"])
            self.facts["flap" if fault == "flap-proxy-rule" else "failover_phases"] = {
                "requests_per_phase": phases, "phases": names}
        else:
            phases = [n]
        parts: list[tuple[Flow, Path]] = []
        for i, count in enumerate(phases):
            if len(phases) == 3 and i == 1:
                if fault == "flap-proxy-rule":
                    self.remove_proxy()
                else:
                    self.stop_backend()
            for flow in self.topo.flows:
                part = self.out / f".traffic-{i}-{flow.client}.log"
                if count:
                    self.run_traffic(flow, count, part)
                    parts.append((flow, part))
            if len(phases) == 3 and i == 1:
                if fault == "flap-proxy-rule":
                    self.apply_proxy()
                else:
                    self.await_failover()
        # One log, renumbered, in the order the requests were made.
        lines = ["# vtap-traffic v1"]
        per_client: dict[str, list[str]] = {}
        for flow, part in parts:
            rows = part.read_text().splitlines()[1:] if part.exists() else []
            per_client.setdefault(flow.client, []).extend(rows)
            for row in rows:
                lines.append("\t".join([str(len(lines)), *row.split("\t")[1:]]))
            part.unlink(missing_ok=True)
        (self.out / "traffic.log").write_text("\n".join(lines) + "\n")
        summaries = {}
        for flow in self.topo.flows:
            part = self.out / f".traffic-{flow.client}.log"
            part.write_text("\n".join(["# vtap-traffic v1", *per_client.get(flow.client, [])])
                            + "\n")
            summaries[flow.client] = {"tenant": flow.tenant, **parse_traffic_log(part)}
            part.unlink()
        self.facts["traffic_per_client"] = summaries

    def stop_backend(self) -> None:
        """proxy-down: the LB's last backend loses its NIC (the VM stopped) mid-traffic."""
        lb = self.topo.lb
        assert lb is not None
        node = lb.backends[-1][0]
        self.failover = {"backend": node, "steered_at_down": self.lb_steering(lb),
                         "down_at": time.time()}
        self.lab.runner.run(["ip", "link", "set", self.ifname(node, "fa"), "down"],
                            ns=self.ns(node))

    def await_failover(self) -> None:
        """Wait (bounded) until the LB's probe has taken the stopped backend out."""
        if self.prober is not None and self.failover:
            self.failover["event"] = self.prober.wait_for(
                self.failover["backend"], False, FAILOVER_WAIT_S)

    def failover_facts(self) -> dict[str, Any]:
        """What the proxy-down run shows: when the LB took the proxy out, and where the loss
        fell. Datagrams the LB sent the stopped proxy are lost; "confined" means every one of
        them was sent inside the failover window (none after the LB took it out)."""
        lb = self.topo.lb
        assert lb is not None and self.failover
        node = self.failover["backend"]
        at_down = self.failover["steered_at_down"]
        event = self.failover.get("event")
        end = self.lb_steering(lb)
        result: dict[str, Any] = {
            "backend": node, "probe_interval_s": PROBE_INTERVAL_S,
            "down_at": round(self.failover["down_at"], 6),
            "steered_before_down": at_down,
        }
        if event is None:
            result.update(removed_at=None, window_s=None, confined=False,
                          lost_in_window=end[node] - at_down[node],
                          lost_after_window=None,
                          why=f"the LB never took {node} out within {FAILOVER_WAIT_S:.0f} s")
            return result
        removed = event["steered"]
        result.update(
            removed_at=round(event["at"], 6),
            window_s=round(event["at"] - self.failover["down_at"], 3),
            lost_in_window=removed[node] - at_down[node],
            lost_after_window=end[node] - removed[node],
            to_healthy_after_window={n: end[n] - removed[n] for n in end if n != node},
        )
        result["confined"] = result["lost_after_window"] == 0
        return result

    def run(self) -> dict[str, Any]:
        opts, topo = self.opts, self.topo
        t0 = time.monotonic()
        self.build()
        if opts.fault != "no-proxy-rule":
            self.apply_proxy()
        if opts.fault == "loss-2pct":
            self.inject_loss()
        if topo.lb is not None:
            self.start_probe_listeners(topo.lb)
            health = self.probe_backends(topo.lb)
            self.program_lb(topo.lb, health)
            self.count_lb_steering(topo.lb)
            self.prober = LbProber(self, topo.lb, health)
            self.prober.start()
        self.timings["build_s"] = time.monotonic() - t0

        t1 = time.monotonic()
        col_node, col_peer = topo.collector
        collector = Hop("collector", col_node, col_peer, "inout")
        collector_pcap = self.out / "collector.pcap"
        late = opts.fault == "late-capture"
        self.start_captures([*topo.hops, *([] if late else [collector])])
        self.start_servers()
        self.traffic_phases()
        if late:
            self.settle(self.out / f"{topo.hops[-1].name}.pcap")
            self.start_captures([collector])
        self.settle(collector_pcap)
        self.stop_captures()
        self.timings["traffic_s"] = time.monotonic() - t1
        if self.prober is not None:
            self.prober.stop()
            self.facts["lb_events"] = [
                {"at": round(e["at"], 6), "health": e["health"], "steered": e["steered"]}
                for e in self.prober.events]
            if self.prober.error:
                self.facts["lb_prober_error"] = self.prober.error
            assert topo.lb is not None
            self.facts["lb_steered"] = self.lb_steering(topo.lb)
        if opts.fault == "proxy-down":
            self.facts["failover"] = self.failover_facts()
        if topo.decap_vnis:
            status = self.lab.exec(self.ns(topo.collector[0]), [str(DECAP_SCRIPT), "status"],
                                   check=False).stdout
            self.facts["decap"] = {int(vni): [name, int(rx)] for name, vni, rx in
                                   (line.split() for line in status.splitlines())}
        if opts.fault == "loss-2pct":
            self.facts["injected_loss_packets"] = self.loss_counter()
        self.facts["conntrack_entries"] = {
            p.node: self.conntrack_count(p.node) for p in topo.proxies}
        self.facts["proxy_status"] = {
            p.node: self.lab.exec(self.ns(p.node), [str(PROXY_SCRIPT), "status"],
                                  check=False).stdout.splitlines()
            for p in topo.proxies}
        return self.judge()

    def judge(self) -> dict[str, Any]:
        from vtaplab.judge.decode import CaptureError, decode_capture
        from vtaplab.judge.verdict import build_verdict, write_verdict

        t2 = time.monotonic()
        root = Path.cwd()
        pcaps = [self.out / f"{hop.name}.pcap" for hop in self.topo.hops]
        collector = self.out / "collector.pcap"
        hops: list[dict[str, Any]] = []
        for pcap in [*pcaps, collector]:
            row: dict[str, Any] = {"hop": pcap.stem, "file": pcap.name,
                                   "kernel_drops": _tcpdump_drops(pcap)}
            try:
                summary = decode_capture(pcap).to_dict() if pcap.exists() else None
            except CaptureError as exc:
                row["error"] = str(exc)
                summary = None
            if summary is not None:
                http = summary["inner_http"]
                row.update(vxlan_packets=summary["vxlan_packets"],
                           fragments=summary["fragments"].get("frames", 0),
                           outer_sources=summary["outer_sources"],
                           requests=http["request_count"], responses=http["response_count"])
            hops.append(row)
        self.facts["hops"] = hops
        emulator_json = self.out / "emulator.json"
        self.facts.update(
            scenario=self.topo.scenario, prefix=self.lab.prefix, proxy_mode=self.opts.proxy_mode,
            fault=self.opts.fault, fault_description=FAULTS[self.opts.fault],
            requests_per_url=self.opts.requests, namespaces=[self.ns(n.name) for n in
                                                             self.topo.nodes],
            topology=asdict(self.topo))
        files = [collector, *pcaps, self.out / "traffic.log", emulator_json,
                 self.out / "commands.log"]
        verdict = build_verdict(scenario=self.topo.scenario,
                                collector_pcap=collector if collector.exists() else None,
                                files=[f for f in files if f.exists() or f == emulator_json],
                                traffic_log=self.out / "traffic.log", root=root)
        if self.topo.scenario == "msp":
            self.judge_tenants(verdict)
        if "failover" in self.facts:
            self.judge_failover(verdict, self.facts["failover"])
        write_verdict(self.out, verdict)
        self.timings["decode_s"] = time.monotonic() - t2
        self.facts["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        emulator_json.write_text(json.dumps(self.facts, indent=2) + "\n")
        return verdict

    def judge_tenants(self, verdict: dict[str, Any]) -> None:
        """msp: per tenant, what arrived on the VNI its proxy is configured to stamp."""
        from vtaplab.judge.tenants import separate_tenants

        vnis = {f"t{flow.tenant}": proxy.vni for flow, proxy in
                zip(self.topo.flows, self.topo.proxies, strict=True) if proxy.vni is not None}
        per_client = self.facts.get("traffic_per_client", {})
        sent = {f"t{flow.tenant}": int(per_client.get(flow.client, {}).get("requests", 0))
                for flow in self.topo.flows}
        decap = {vni: (name, rx) for vni, (name, rx) in self.facts.get("decap", {}).items()}
        separate_tenants(verdict, vnis, sent, decap if decap else None)

    @staticmethod
    def judge_failover(verdict: dict[str, Any], failover: dict[str, Any]) -> None:
        """b3 proxy-down: the failover in the verdict; loss outside its window fails it."""
        verdict["failover"] = failover
        if failover["confined"]:
            note = (f"failover: {failover['backend']} out of the LB {failover['window_s']} s "
                    f"after it went down; {failover['lost_in_window']} datagrams lost in that "
                    "window, none after")
        else:
            note = "failover: " + (failover.get("why") or (
                f"{failover['lost_after_window']} datagrams sent to the stopped "
                f"{failover['backend']} after the LB took it out"))
            if verdict.get("outcome") == "delivered":
                verdict["outcome"] = "not-delivered"
                if verdict.get("matches_expected") is not None:
                    verdict["matches_expected"] = False
        verdict["reason"] = f"{verdict.get('reason') or ''}; {note}".lstrip("; ")

    def teardown(self) -> list[str]:
        t3 = time.monotonic()
        if self.prober is not None:
            self.prober.stop()
        self.stop_captures()
        self.stop_servers()
        _reap_orphans()
        left = [] if self.opts.keep else self.lab.teardown()
        self.timings["teardown_s"] = time.monotonic() - t3
        return left


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _become_subreaper() -> None:
    """Adopt the detached captures the scripts start, so their zombies are ours to reap."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _reap_orphans() -> None:
    """Collect exited descendants (bounded: they are all stopped by now)."""
    for _ in range(1000):
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class _Interrupted(Exception):
    pass


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Ctrl-C and SIGTERM become an exception, so ``finally`` tears the lab down."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: the rest is in --help."""
        self.exit(2, f"emulate: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m vtaplab emulate",
        description="Run a scenario's data path locally in network namespaces (needs root).")
    p.add_argument("scenario", help=f"accepted: {', '.join(TOPOLOGIES)}")
    p.add_argument("--proxy-mode", default="all",
                   help="netdev | stateless | conntrack | all (default: all, netdev first with "
                        "its evidence in OUT, then stateless and conntrack in OUT/<mode>)")
    p.add_argument("--out", type=Path, default=None,
                   help="evidence directory (default evidence/emulator/SCENARIO)")
    p.add_argument("--requests", default="10",
                   help="rounds of requests; each fetches / and the 200 kB file (default 10)")
    p.add_argument("--fault", default="none", help="; ".join(f"{k}: {v}" for k, v in
                                                             FAULTS.items()))
    p.add_argument("--proxy-vni", default=None, help="have the proxy stamp this VXLAN VNI")
    p.add_argument("--tenants", default=None,
                   help=f"msp only: tenants (default {MSP_DEFAULT_TENANTS}; "
                        f"{MSP_TENANTS[0]}..{MSP_TENANTS[1]}); tenant i's proxy stamps VNI "
                        f"{plan.MSP_VNI_BASE}+i")
    p.add_argument("--keep", action="store_true",
                   help="leave the namespaces for inspection (delete with --teardown PREFIX)")
    p.add_argument("--teardown", metavar="PREFIX", default=None,
                   help="only delete the namespaces of an earlier --keep run, then exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print every command as run")
    return p


def _tcpdump_drops(pcap: Path) -> int | None:
    """'N packets dropped by kernel' from the capture's log: a hop's count is exact only at 0."""
    try:
        text = Path(f"{pcap}.log").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"(\d+) packets? dropped by kernel", text)
    return int(match.group(1)) if match else None


def _int_option(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"{name} {text!r} is not accepted; accepted: {low}..{high}")
    return value


def _options(argv: list[str]) -> RunOptions | str:
    args = _parser().parse_args(argv)
    if args.teardown is not None:
        return str(args.teardown)
    if args.scenario not in TOPOLOGIES:
        known = "known but not emulated" if args.scenario in facts.SCENARIOS else "unknown"
        raise ValueError(f"scenario {args.scenario!r} ({known}) is not accepted; accepted: "
                         f"{', '.join(TOPOLOGIES)}")
    if args.proxy_mode not in PROXY_MODES:
        raise ValueError(f"--proxy-mode {args.proxy_mode!r} is not accepted; accepted: "
                         f"{', '.join(PROXY_MODES)}")
    if args.fault not in FAULTS:
        raise ValueError(f"--fault {args.fault!r} is not accepted; accepted: {', '.join(FAULTS)}")
    if args.fault == "shared-vni" and args.scenario != "msp":
        raise ValueError(f"--fault 'shared-vni' is not accepted with {args.scenario}; "
                         "accepted: with msp (the scenario with tenants)")
    if args.fault == "proxy-down" and args.scenario != "b3":
        raise ValueError(f"--fault 'proxy-down' is not accepted with {args.scenario}; "
                         "accepted: with b3 (the scenario with two proxies)")
    requests = _int_option("--requests", args.requests, 1, 1000)
    if args.fault == "flap-proxy-rule" and requests < 3:
        raise ValueError(f"--requests {args.requests!r} is not accepted with flap-proxy-rule; "
                         "accepted: 3..1000 (one third per phase)")
    vni = None if args.proxy_vni is None else _int_option("--proxy-vni", args.proxy_vni, 0,
                                                          facts.VNI_MAX)
    if args.scenario == "msp" and vni is not None:
        raise ValueError(f"--proxy-vni {args.proxy_vni!r} is not accepted with msp; accepted: "
                         "no --proxy-vni (each tenant's proxy stamps its own VNI)")
    if args.tenants is not None and args.scenario != "msp":
        raise ValueError(f"--tenants {args.tenants!r} is not accepted with {args.scenario}; "
                         "accepted: --tenants with msp only")
    tenants = MSP_DEFAULT_TENANTS if args.tenants is None else _int_option(
        "--tenants", args.tenants, *MSP_TENANTS)
    out = args.out if args.out is not None else Path("evidence/emulator") / args.scenario
    return RunOptions(scenario=args.scenario, proxy_mode=args.proxy_mode, fault=args.fault,
                      requests=requests, out=out, keep=args.keep, proxy_vni=vni,
                      tenants=tenants, verbose=args.verbose)


def _prepare_out(out: Path, topo: Topology) -> None:
    """Make the evidence directory and drop the files an earlier run of ours left in it."""
    out.mkdir(parents=True, exist_ok=True)
    names = [*(hop.name for hop in topo.hops), "collector"]
    ours = [f"{n}.pcap" for n in names] + [f"{n}.pcap.log" for n in names]
    ours += [f".{n}.pid" for n in names]
    ours += [f".traffic-{i}-{f.client}.log" for i in range(3) for f in topo.flows]
    ours += [f".traffic-{f.client}.log" for f in topo.flows]
    ours += ["traffic.log", "verdict.json", "emulator.json", "commands.log"]
    for name in ours:
        (out / name).unlink(missing_ok=True)


def _print_hops(facts_: dict[str, Any]) -> None:
    rows = [("hop", "vxlan", "frags", "GET", "resp", "drops", "outer sources")]
    for hop in facts_.get("hops", []):
        if "error" in hop:
            rows.append((hop["hop"], "-", "-", "-", "-", "-", hop["error"][:40]))
        elif "vxlan_packets" not in hop:
            rows.append((hop["hop"], "-", "-", "-", "-", "-", "(no capture)"))
        else:
            rows.append((hop["hop"], str(hop["vxlan_packets"]), str(hop["fragments"]),
                         str(hop["requests"]), str(hop["responses"]),
                         str(hop["kernel_drops"]),
                         ", ".join(hop["outer_sources"]) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_failover(failover: dict[str, Any]) -> None:
    rows = [("failover", f"{failover['backend']} stopped; probe every "
                         f"{failover['probe_interval_s']} s")]
    if failover.get("removed_at") is None:
        rows.append(("window", str(failover.get("why"))))
    else:
        rows.append(("window", f"{failover['window_s']:.3f} s from down to out of the LB"))
        rows.append(("lost in window", f"{failover['lost_in_window']} datagrams sent to "
                                       f"{failover['backend']}"))
        rows.append(("lost after window", str(failover["lost_after_window"])))
        rows.append(("after the window", ", ".join(
            f"{n}: {c} datagrams" for n, c in failover["to_healthy_after_window"].items())))
    rows.append(("confined", "yes" if failover["confined"] else "NO"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: list[str]) -> int:
    try:
        parsed = _options(argv)
    except ValueError as exc:
        print(f"emulate: {exc}", file=sys.stderr)
        return 2
    why_not = preflight(["tc", "iptables", "nft", "tcpdump", "ethtool", "curl", "conntrack"])
    if why_not:
        print(f"emulate: {why_not}", file=sys.stderr)
        return 2
    if isinstance(parsed, str):
        return _teardown_only(parsed)
    opts = parsed
    if opts.proxy_mode != "all":
        return _run_one(opts)[0]
    # Every mode, one after the other: the default mode's evidence where the scenario's
    # evidence goes, each other mode's in a subdirectory named after it.
    started = time.monotonic()
    results: list[tuple[str, int, str]] = []
    for i, mode in enumerate(facts.PROXY_MODES):
        out = opts.out if i == 0 else opts.out / mode
        rc, outcome = _run_one(replace(opts, proxy_mode=mode, out=out))
        results.append((mode, rc, outcome))
        if outcome == "interrupted":
            break
        print()
    summary = ", ".join(f"{mode} {outcome}" for mode, _rc, outcome in results)
    print(f"emulate {opts.scenario}, every proxy mode: {summary} "
          f"(took {time.monotonic() - started:.2f}s in all)")
    return max(rc for _mode, rc, _outcome in results)


def _run_one(opts: RunOptions) -> tuple[int, str]:
    """One emulation in one proxy mode: (exit status, outcome or what went wrong)."""
    from vtaplab.judge.verdict import format_table

    started = time.monotonic()
    topo = TOPOLOGIES[opts.scenario](opts.tenants)
    try:
        _prepare_out(opts.out, topo)
    except OSError as exc:
        print(f"emulate: --out {str(opts.out)!r} is not usable: {exc.strerror}", file=sys.stderr)
        return 2, "error"
    _become_subreaper()
    prefix = new_prefix(list_namespaces())
    runner = Runner(log_path=opts.out / "commands.log", echo=opts.verbose)
    lab = Lab(prefix, runner)
    emu = Emulation(topo, opts, lab)
    print(f"emulate {opts.scenario}: run {prefix}, proxy mode {opts.proxy_mode}, "
          f"fault {opts.fault}, {opts.requests} rounds x 2 URLs x {len(topo.flows)} client(s), "
          f"evidence in {opts.out}", flush=True)
    verdict: dict[str, Any] | None = None
    error: str | None = None
    interrupted = False
    left: list[str] = []
    with _signals_raise():
        try:
            verdict = emu.run()
        except _Interrupted as exc:
            error = f"interrupted by {exc}; torn down"
            interrupted = True
        except (NetnsError, OSError) as exc:
            error = str(exc)
        finally:
            # A second Ctrl-C (or a SIGTERM) must not skip the teardown.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            left = emu.teardown()
    elapsed = time.monotonic() - started
    if verdict is not None:
        emu.facts["timings"] = {k: round(v, 3) for k, v in
                                {**emu.timings, "total_s": elapsed}.items()}
        (opts.out / "emulator.json").write_text(json.dumps(emu.facts, indent=2) + "\n")
        print(format_table(verdict))
        print()
        if "tenant_table" in verdict:
            from vtaplab.judge.tenants import format_tenant_table

            print(format_tenant_table(verdict["tenant_table"]))
            print()
        if "failover" in verdict:
            _print_failover(verdict["failover"])
            print()
        _print_hops(emu.facts)
        print()
    if opts.keep:
        print(f"kept namespaces {prefix}-*: delete with "
              f"python -m vtaplab emulate {opts.scenario} --teardown {prefix}")
    elif left:
        print(f"emulate: could not delete namespaces: {', '.join(left)}", file=sys.stderr)
    timings = ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in emu.timings.items())
    print(f"took {elapsed:.2f}s ({timings})", flush=True)
    if error is not None:
        print(f"emulate: {error}", file=sys.stderr)
        return 3, "interrupted" if interrupted else "error"
    assert verdict is not None
    print(f"verdict: {verdict['outcome']} -> {opts.out / 'verdict.json'}")
    if left:
        return 3, verdict["outcome"]
    if opts.fault in FAULTS_STILL_DELIVERED and verdict.get("matches_expected") is False:
        return 1, verdict["outcome"]
    return 0, verdict["outcome"]


def _teardown_only(prefix: str) -> int:
    try:
        lab = Lab(prefix, Runner())
    except ValueError as exc:
        print(f"emulate: --teardown {exc}", file=sys.stderr)
        return 2
    left = lab.teardown()
    if left:
        print(f"emulate: could not delete: {', '.join(left)}", file=sys.stderr)
        return 3
    print(f"emulate: deleted the namespaces of run {prefix}")
    return 0
