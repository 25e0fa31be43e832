"""``python -m vtaplab emulate STACK``: the stack's twin, run locally in network namespaces.

The engine half of the emulator: ``vtaplab.emulator.topology`` turns the stack's resource graph
(the program under Pulumi's mocks, ``graph STACK --json``; or ``--graph FILE``) into data —
nodes, ports, rules, taps, scenarios — and this module builds it (one namespace per node, a
veth per port, ``vtaplab.emulator.nft``'s rulesets for NICs, NSGs and load balancers, the PE's
DNAT and the PLS's SNAT, vTAP as ``tc`` mirred into VXLAN from each tapped NIC's port), runs
what each VM's user data installs (``cloudinit/vtap-proxy.sh``, ``vtap-capture.sh``,
``vtap-decap.sh``, ``vtap-traffic.sh``, nginx's pages from an HTTP/1.1 stand-in), runs each
scenario's traffic with captures at every hop, injects the faults, judges, and tears down.

The verdict comes from ``vtaplab.judge.verdict`` in ONE place (``_judge_scenario``), with the
per-hop figures, the drops by resource and the Azure behaviours and assumptions the run rested
on (``vtaplab.behaviours``) added to it.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.client import HTTPConnection
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from vtaplab import PROJECT_ROOT, behaviours, facts, plan
from vtaplab.cli import EXIT_INTERRUPTED, int_option
from vtaplab.emulator import nft, runs
from vtaplab.emulator.netns import Lab, NetnsError, Runner, list_namespaces, new_prefix, preflight
from vtaplab.emulator.topology import (
    WEB_ROOT,
    Flow,
    Hop,
    LoadBalancer,
    Scenario,
    Topology,
    TopologyError,
    from_graph,
    load_graph_file,
    stack_graph,
)

SCRIPTS = PROJECT_ROOT / "cloudinit"
PROXY_SCRIPT = SCRIPTS / "vtap-proxy.sh"
CAPTURE_SCRIPT = SCRIPTS / "vtap-capture.sh"
HEALTH_SCRIPT = SCRIPTS / "vtap-health.py"
# The failover picture: packets per backend per interval, at most this many intervals.
FAILOVER_BIN_S = 0.1
FAILOVER_MAX_BINS = 60
# A health endpoint outlives no run: it stops by itself after this long (and with the run).
HEALTH_LIFETIME_S = 900
TRAFFIC_SCRIPT = SCRIPTS / "vtap-traffic.sh"
DECAP_SCRIPT = SCRIPTS / "vtap-decap.sh"

# "all" runs every mode: the one the proxies' user data names first (its evidence is the
# stack's), each other mode's in OUT/<mode>/.
PROXY_MODES_ORDER = facts.PROXY_MODES
PROXY_MODES = (*PROXY_MODES_ORDER, "all")
FAULTS: dict[str, str] = {
    "none": "no fault",
    "no-proxy-rule": "the proxy's rewrite is never applied; where an LB is before two or more "
                     "proxies (b3, b4), one proxy's rewrite is removed mid-run instead, and "
                     "the LB's probe must take it out (an HTTP probe of vtap-health.py does; "
                     "a TCP/22 probe doesn't)",
    "loss-2pct": "2% of the packets from the proxy towards the PE are dropped (nftables numgen)",
    "late-capture": "the collector's capture starts only after the traffic",
    "flap-proxy-rule": "the proxy's rewrite is removed for the middle third of the traffic",
    "proxy-down": "a scenario with an LB before its proxies (b3, b4): the last proxy goes down "
                  "(its NIC) mid-run; the LB's probe takes it out, and the loss must stay within "
                  "that failover window",
    "rolling-upgrade": "a scenario with an LB before its proxies (b3, b4): a rolling upgrade, one "
                       "proxy at a time goes down, comes back and installs its rewrite again "
                       "(behaviour vmss-rolling-upgrade), under traffic; the loss must stay "
                       "within each proxy's failover window",
    "shared-vni": "msp: every tenant's proxy stamps tenant 1's VNI, so the collector can't "
                  "tell them apart (the verdict must fail)",
}
# Faults a scenario must still end delivered under (a run ending otherwise exits 1), and
# those it must survive only where an LB is before two or more proxies (one proxy at fault).
FAULTS_STILL_DELIVERED = ("none", "proxy-down", "rolling-upgrade")
FAULTS_ONE_PROXY = ("proxy-down", "rolling-upgrade", "no-proxy-rule")
FAULTS_NEED_LB = ("proxy-down", "rolling-upgrade")
DEFAULT_REQUESTS = 10
HTTP_PORT = 80
# Health probes: the declared interval scaled (behaviours assumption probe-interval-scale).
PROBE_SCALE = 0.04
PROBE_TIMEOUT_S = 0.5
CLONE_NEWNET = 0x40000000     # setns(2)
PROBER_MAX_S = 600.0
# How long the twin waits for the LB's probe to take a backend out (or put it back): this many
# probe rounds (interval x threshold), at least FAILOVER_WAIT_MIN_S.
FAILOVER_WAIT_ROUNDS = 15
FAILOVER_WAIT_MIN_S = 3.0
# A rolling upgrade's instance: down this many probe intervals (its reimage), then up; its
# rewrite comes this many after its NIC (assumption upgrade-boot-order); traffic meanwhile in
# rounds of one request per URL, at most UPGRADE_MAX_ROUNDS per instance.
UPGRADE_DOWN_INTERVALS = 3
UPGRADE_BOOT_INTERVALS = 10
UPGRADE_MAX_ROUNDS = 200
PR_SET_CHILD_SUBREAPER = 36   # prctl(2)
CAPTURE_SNAPLEN = 2048        # > 1514 + a VLAN tag; every link here has MTU 1500
# nginx's big file, as src.yaml's runcmd writes it: yes 'TEXT' | head -c N > /var/www/html/F
_YES_HEAD = re.compile(r"^yes '([^']*)' \| head -c (\d+) > " + re.escape(WEB_ROOT) +
                       r"([\w.-]+)$")
MAX_BODY_BYTES = 64 * 1024 * 1024
# A hop's capture stops a few ms after the previous one's: stragglers in between are no loss.
STRAGGLERS = 5
STRAGGLER_SHARE = 0.005


@dataclass
class RunOptions:
    stack: str
    graph: Path | None = None
    proxy_mode: str = "netdev"
    fault: str = "none"
    requests: int = DEFAULT_REQUESTS
    out: Path = field(default_factory=lambda: Path("evidence/emulator/b2"))
    keep: bool = False
    tenants: int | None = None
    verbose: bool = False
    overrides: tuple[str, ...] = ()         # --set KEY=VALUE: the stack's config, changed
class LbProber(threading.Thread):
    """The LB stand-in's health probe, running while the traffic does: every
    its (scaled) probe interval it probes each backend and, when the healthy set changes, reprograms
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
            threshold = max(1, self.lb.probe.threshold if self.lb.probe else 1)
            # probeThreshold: out after that many failed probes in a row, back in after that
            # many answered ones in a row (REST spec ProbePropertiesFormat.probeThreshold).
            streak = {node: 0 for node, _ip in self.lb.backends}   # >0 answered, <0 failed
            health = dict(self.health)
            while not self.halt.is_set() and time.monotonic() < deadline:
                answered = self.emu.probe_backends(self.lb)
                for node, ok in answered.items():
                    run = streak[node]
                    streak[node] = (max(run, 0) + 1) if ok else (min(run, 0) - 1)
                    if abs(streak[node]) >= threshold:
                        health = {**health, node: streak[node] > 0}
                if health != self.health and not self.halt.is_set():
                    self.emu.program_lb(self.lb, health)
                    event = {"at": time.time(), "health": health,
                             "steered": self.emu.lb_steering(self.lb)}
                    with self.changed:
                        self.events.append(event)
                        self.health = health
                        self.changed.notify_all()
                self.halt.wait(_probe_interval(self.lb))
        except (NetnsError, OSError) as exc:   # e.g. torn down under it: recorded, not raised
            self.error = str(exc)

    def wait_for(self, node: str, healthy: bool, timeout: float, after: float = 0.0
                 ) -> dict[str, Any] | None:
        """The first event after ``after`` (a time.time()) that set ``node`` to ``healthy``
        (waiting up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = next((e for e in self.events if e["health"].get(node) is healthy
                              and e["at"] >= after), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0 or not self.is_alive():
                    return found
                self.changed.wait(min(left, 0.5))

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)



def lb_before_proxies(topo: Topology, scenario: Scenario) -> bool:
    """Is an LB before two or more proxies in ``scenario`` (b3, b4): one of them can be at
    fault while the others carry the mirror?"""
    return scenario.lb is not None and len(topo.lb(scenario.lb).backends) > 1


def _probe_interval(lb: LoadBalancer) -> float:
    """The declared probe interval, scaled (behaviours assumption probe-interval-scale)."""
    return round((lb.probe.interval_s if lb.probe else 5) * PROBE_SCALE, 3)


class Emulation:
    """One run: owns the namespaces (via Lab), the processes it starts and their teardown."""

    def __init__(self, topo: Topology, opts: RunOptions, lab: Lab) -> None:
        self.topo = topo
        self.opts = opts
        self.lab = lab
        self.out = opts.out
        self.scenario: Scenario = topo.scenarios[0]
        self.www: Path | None = None
        self.served: dict[str, Any] = {}
        self.servers: list[subprocess.Popen[str]] = []
        self.unready: list[tuple[str, subprocess.Popen[str]]] = []
        self.pidfiles: list[tuple[str, Path]] = []     # (namespace, pidfile) of our captures
        self.timings: dict[str, float] = {}
        self.facts: dict[str, Any] = {}
        self.probers: dict[str, LbProber] = {}
        self.health: dict[str, dict[str, bool]] = {}
        self.windows: list[dict[str, Any]] = []     # proxies at fault (failover windows)
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.drops_seen: dict[str, int] = {}

    # names ------------------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return self.lab.ns(node)

    def ifname(self, node: str, peer: str) -> str:
        return self.lab.ifname(node, peer)

    # build -------------------------------------------------------------------------------------
    def build(self) -> None:
        """Namespaces, ports and links in a few batched commands (``ip -batch``: one process
        per namespace instead of one per address or route), then each element's rules."""
        lab, topo = self.lab, self.topo
        global_batch = []
        for node in topo.nodes:
            global_batch.append(f"netns add {self.ns(node.name)}")
            lab.created.append(self.ns(node.name))
        per_ns: dict[str, list[str]] = {n.name: ["link set lo up"] for n in topo.nodes}
        sysctl: dict[str, dict[str, str]] = {}
        for node in topo.nodes:
            settings = sysctl[node.name] = {
                "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0",
                "net.ipv4.ip_forward": "1" if node.forwarding else "0",
                # No IPv6 chatter (DAD, MLD): every mirrored packet is test traffic.
                "net.ipv6.conf.all.disable_ipv6": "1",
                "net.ipv6.conf.default.disable_ipv6": "1"}
            if node.forwarding:
                # Routers that forward out of the interface a packet came in on (the LB's
                # hairpin) must not tell the sender to go elsewhere.
                settings["net.ipv4.conf.all.send_redirects"] = "0"
                settings["net.ipv4.conf.default.send_redirects"] = "0"
        for port in topo.ports:
            # A port: the node's side holds its address; the fabric's side holds the subnet's
            # gateway (.1) and answers ARP for every other address of the VNet (proxy ARP), so
            # every packet goes through the fabric, as in Azure.
            node_if = self.ifname(port.node, port.fabric)
            fabric_if = self.ifname(port.fabric, port.node)
            global_batch.append(f"link add {node_if} netns {self.ns(port.node)} mtu 1500 type "
                                f"veth peer name {fabric_if} netns {self.ns(port.fabric)} "
                                "mtu 1500")
            per_ns[port.node] += [f"addr add {port.ip}/{port.prefixlen} dev {node_if}",
                                  f"link set {node_if} up",
                                  f"route replace default via {port.gateway} dev {node_if}"]
            per_ns[port.fabric] += [f"addr add {port.gateway}/32 dev {fabric_if}",
                                    f"link set {fabric_if} up",
                                    f"route replace {port.ip}/32 dev {fabric_if}"]
            sysctl[port.fabric][f"net.ipv4.conf.{fabric_if}.proxy_arp"] = "1"
            # Answer at once: Linux delays proxy ARP replies by up to 0.8 s by default.
            sysctl[port.fabric][f"net.ipv4.neigh.{fabric_if}.proxy_delay"] = "0"
        for link in topo.links:
            if_a, if_b = self.ifname(link.a, link.b), self.ifname(link.b, link.a)
            global_batch.append(f"link add {if_a} netns {self.ns(link.a)} mtu 1500 type veth "
                                f"peer name {if_b} netns {self.ns(link.b)} mtu 1500")
            per_ns[link.a] += [f"addr add {link.a_ip} dev {if_a}", f"link set {if_a} up"]
            per_ns[link.b] += [f"addr add {link.b_ip} dev {if_b}", f"link set {if_b} up"]
        for node, destination, via in topo.routes:
            per_ns[node].append(f"route replace {destination} via {via}")
        probe = behaviours.AZURE_LB_PROBE_SOURCE
        for lb in topo.lbs:
            # Probes come from 168.63.129.16 (the AzureLoadBalancer tag) as Azure's do; one LB
            # per VNet answers for it on the fabric (the twin's limit: enough here).
            per_ns[lb.node].append(f"addr add {probe}/32 dev lo")
            gateway = topo.port(lb.node).gateway
            per_ns[lb.node] += [f"route replace {ip}/32 via {gateway} src {probe}"
                                for _node, ip in lb.backends]
            fabric = f"f{lb.node[1]}"
            if not any(line.startswith(f"route replace {probe}/32") for line in per_ns[fabric]):
                per_ns[fabric].append(f"route replace {probe}/32 dev "
                                      f"{self.ifname(fabric, lb.node)}")
        for tap in topo.taps:
            # The outer source is the tapped NIC's address (assumption vtap-outer-source),
            # held by the VTEP namespace: the VXLAN socket lives there.
            line = f"addr add {tap.local_ip}/32 dev lo"
            if tap.on_fastpath and line not in per_ns[tap.vtep]:
                per_ns[tap.vtep].append(line)
        lab.runner.run(["ip", "-batch", "-"], input_text="\n".join(global_batch) + "\n")
        for node in topo.nodes:
            # One process per namespace: its sysctls (through /proc: interface names need no
            # escaping there), then its addresses and routes from stdin.
            lab.runner.run(["sh", "-c", "; ".join(
                [*(f"echo {v} > /proc/sys/{k.replace('.', '/')}"
                   for k, v in sysctl[node.name].items()), "exec ip -batch -"])],
                ns=self.ns(node.name), input_text="\n".join(per_ns[node.name]) + "\n")
        self.launch_servers()
        for fabric in topo.vnets:
            lab.nft(self.ns(fabric), nft.fabric_ruleset(topo, fabric, self.ifname))
        for link in topo.private_links:
            self._build_private_link(link)
        self.await_servers()
        for lb in topo.lbs:
            self._build_lb(lb)
        for tap in topo.taps:
            if tap.on_fastpath:
                self._build_tap(tap)
        for vm in topo.vms:
            if vm.decap_args:
                lab.exec(self.ns(vm.node), [str(DECAP_SCRIPT), "apply", *vm.decap_args])

    def _build_private_link(self, link: Any) -> None:
        """PE -> PLS: the PE hands what is sent to its address to the PLS (DNAT to the PLS's
        target); the PLS source-NATs it to its NAT IP into the provider's VNet."""
        self.lab.iptables(self.ns(link.pe_node), "-t", "nat", "-A", "PREROUTING", "-d",
                          link.pe_ip, "-j", "DNAT", "--to-destination", link.target)
        self.lab.runner.run(
            ["sh", "-c", f"iptables -t nat -C POSTROUTING -o {self.ifname(link.pls_node, 'f0')} "
                         f"-j SNAT --to-source {link.nat_ip} 2>/dev/null || iptables -t nat -A "
                         f"POSTROUTING -o {self.ifname(link.pls_node, 'f0')} -j SNAT "
                         f"--to-source {link.nat_ip}"], ns=self.ns(link.pls_node))

    def _build_lb(self, lb: LoadBalancer) -> None:
        """The LB's rules over the backends its first probe round finds healthy."""
        ns = self.ns(lb.node)
        health = self.probe_backends(lb)
        self.program_lb(lb, health)
        self.lab.nft(ns, nft.lb_stat_ruleset(lb))

    def _build_tap(self, tap: Any) -> None:
        lab = self.lab
        vtep_ns, fabric_ns = self.ns(tap.vtep), self.ns(tap.fabric)
        vx = lab.ifname(tap.vtep, f"x{tap.index}")
        # Created in the VTEP namespace (its UDP socket stays there), then moved next to the
        # tapped port, because mirred can only redirect to a device of its own namespace.
        lab.runner.run(["ip", "-n", vtep_ns, "-batch", "-"], input_text=(
            f"link add {vx} type vxlan id {tap.vni} dstport {tap.port} remote {tap.remote} "
            f"local {tap.local_ip} nolearning\n"
            f"link set {vx} netns {fabric_ns}\n"))
        lab.runner.run(["ip", "-n", fabric_ns, "link", "set", vx, "mtu", "1500", "up"])
        # Valid outer (and inner) checksums in captures: the VTEP's veth computes them.
        lab.ethtool_off(vtep_ns, self.ifname(tap.vtep, tap.fabric), "tx")
        port = self.ifname(tap.fabric, tap.source)
        mirror = (f"protocol all u32 match u32 0 0 action mirred egress mirror dev {vx}")
        lab.runner.run(["tc", "-n", fabric_ns, "-batch", "-"], input_text=(
            f"qdisc add dev {port} clsact\n"
            f"filter replace dev {port} ingress pref 1 {mirror}\n"
            f"filter replace dev {port} egress pref 1 {mirror}\n"))

    # the VMs' scripts ------------------------------------------------------------------------
    def proxy_argv(self, node: str) -> list[str]:
        """``vtap-proxy.sh apply`` with the arguments the proxy's user data passes; the mode
        is --proxy-mode's, the VNI tenant 1's under shared-vni."""
        args = list(self.topo.vm(node).proxy_args)
        if "--mode" in args:
            args[args.index("--mode") + 1] = self.opts.proxy_mode
        if self.opts.fault == "shared-vni" and "--vni" in args:
            args[args.index("--vni") + 1] = str(plan.tenant_vni(1))
        return [str(PROXY_SCRIPT), "apply", *args]

    def apply_proxy(self, proxies: Sequence[str] | None = None) -> None:
        for node in proxies if proxies is not None else self.all_proxies():
            self.lab.exec(self.ns(node), self.proxy_argv(node))

    def remove_proxy(self, proxies: Sequence[str]) -> None:
        for node in proxies:
            self.lab.exec(self.ns(node), [str(PROXY_SCRIPT), "remove"])

    def all_proxies(self) -> list[str]:
        return [vm.node for vm in self.topo.vms if vm.role == "proxy" and vm.proxy_args]

    def inject_loss(self, scenario: Scenario) -> None:
        """loss-2pct: the consumer fabric drops 2% of what each proxy sends towards its PE."""
        for proxy in scenario.proxies:
            fabric = f"f{proxy[1]}"
            pe = next(pl.pe_ip for pl in self.topo.private_links if pl.pe_node[1] == proxy[1])
            self.lab.nft(self.ns(fabric), (
                "table ip vtaplab_fault {\n"
                "  chain forward {\n"
                "    type filter hook forward priority filter - 1; policy accept;\n"
                f'    iifname "{self.ifname(fabric, proxy)}" ip daddr {pe} numgen random mod '
                '100 < 2 counter drop comment "fault:loss-2pct"\n'
                "  }\n"
                "}\n"))

    # load balancers ----------------------------------------------------------------------------
    def probe_backends(self, lb: LoadBalancer) -> dict[str, bool]:
        """One round of the LB's probe, from the LB's namespace and from 168.63.129.16 (the
        AzureLoadBalancer tag): backend -> answered. A TCP probe is a connect, made by a
        thread that enters the LB's namespace (setns applies to that thread only): no process
        per probe, so a probe every fifth of a second costs next to nothing."""
        if lb.probe is None or lb.probe.protocol.lower() not in ("tcp", "http"):
            return {node: True for node, _ip in lb.backends}
        port = lb.probe.port
        http = lb.probe.protocol.lower() == "http"
        health: dict[str, bool] = {}
        failure: list[str] = []

        def probe() -> None:
            try:
                _enter_netns(self.ns(lb.node))
            except OSError as exc:
                failure.append(str(exc))
                return
            for node, ip in lb.backends:
                try:
                    if http:   # healthy on a 200 only (Azure's HTTP probe)
                        conn = HTTPConnection(ip, port, timeout=PROBE_TIMEOUT_S,
                                              source_address=(
                                                  behaviours.AZURE_LB_PROBE_SOURCE, 0))
                        try:
                            conn.request("GET", lb.probe.path or "/")
                            health[node] = conn.getresponse().status == 200
                        finally:
                            conn.close()
                        continue
                    with socket.create_connection(
                            (ip, port), timeout=PROBE_TIMEOUT_S,
                            source_address=(behaviours.AZURE_LB_PROBE_SOURCE, 0)):
                        health[node] = True
                except OSError:
                    health[node] = False

        self.lab.runner._record(self.ns(lb.node), ["probe", lb.probe.protocol.lower(),
                                                  *(f"{ip}:{port}" for
                                                                    _n, ip in lb.backends)])
        worker = threading.Thread(target=probe, name="lb-probe", daemon=True)
        worker.start()
        worker.join(timeout=PROBE_TIMEOUT_S * len(lb.backends) + 5)
        if failure:
            raise NetnsError(f"probe from {self.ns(lb.node)}: {failure[0]}")
        return {node: health.get(node, False) for node, _ip in lb.backends}

    def program_lb(self, lb: LoadBalancer, health: dict[str, bool]) -> None:
        """Hash flows over the healthy backends only; forget the flows of the others (Azure
        keeps no flow state for UDP once a backend fails its probe)."""
        healthy = [(node, ip) for node, ip in lb.backends if health.get(node)]
        self.health[lb.node] = dict(health)
        self.lab.nft(self.ns(lb.node), nft.lb_ruleset(lb, self.ifname(lb.node,
                                                                       f"f{lb.node[1]}"),
                                                      healthy))
        for node, ip in lb.backends:
            if not health.get(node) and any(r.ha_ports for r in lb.rules):
                self.lab.exec(self.ns(lb.node),
                              ["conntrack", "-D", "--orig-dst", lb.frontend,
                               "--reply-src", ip], check=False)

    def lb_steering(self, lb: LoadBalancer) -> dict[str, int]:
        """Packets the LB has forwarded to each backend so far."""
        proc = self.lab.exec(self.ns(lb.node), ["nft", "list", "counters", "table", "ip",
                                                nft.LB_STAT_TABLE], check=False)
        found = dict(re.findall(r"counter to_(\w+) \{\s*packets (\d+)", proc.stdout))
        return {node: int(found.get(node, 0)) for node, _ip in lb.backends}

    def drops(self) -> dict[str, int]:
        """Packets dropped so far, by the rule (and so the resource) that dropped them."""
        found: dict[str, int] = {}
        nodes = [n.name for n in self.topo.nodes if n.kind in ("fabric", "lb")]
        for listing in self.at_once(nodes, ["nft", "list", "ruleset"]).values():
            for key, count in nft.drops(listing).items():
                found[key] = found.get(key, 0) + count
        return found

    def at_once(self, nodes: Sequence[str], argv: Sequence[str]) -> dict[str, str]:
        """Run a read-only command in each node's namespace concurrently: node -> stdout."""
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(nodes)))) as pool:
            outs = pool.map(lambda n: self.lab.exec(self.ns(n), argv, check=False).stdout,
                            nodes)
            return dict(zip(nodes, outs, strict=True))

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
        runs.note_pidfiles(self.lab.record, (pidfile for _ns, pidfile in self.pidfiles))

    def stop_captures(self) -> None:
        """Stop every capture at once; any the script could not stop is ended by its pids."""
        try:
            self.lab.runner.run_parallel(
                [(ns, [str(CAPTURE_SCRIPT), "stop", "--pidfile", str(pidfile)])
                 for ns, pidfile in self.pidfiles], timeout=15)
        except NetnsError:
            pass
        for _ns, pidfile in self.pidfiles:
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

    def launch_servers(self) -> None:
        """Start, all at once, each tapped VM's web server (its web root as its user data
        writes it: write_files under the web root, the big file from its ``yes ... | head -c
        N`` line) and what each probed backend's sshd answers; ``await_servers`` waits."""
        for vm in self.topo.vms:
            if vm.role != "src":
                continue
            www = self._www() / vm.node
            www.mkdir(exist_ok=True)
            for name, content in vm.www:
                (www / name).write_text(content)
            for command in vm.www_commands:
                match = _YES_HEAD.match(command.strip())
                if match is None or int(match.group(2)) > MAX_BODY_BYTES:
                    raise TopologyError(f"VM {vm.resource}: runcmd {command!r} is not one the "
                                        "twin can reproduce; accepted: yes 'TEXT' | head -c N "
                                        f"> {WEB_ROOT}NAME (N <= {MAX_BODY_BYTES})")
                line = (match.group(1) + "\n").encode()
                size = int(match.group(2))
                (www / match.group(3)).write_bytes((line * (size // len(line) + 1))[:size])
            self.served[vm.node] = {
                f"/{p.name}": {"bytes": p.stat().st_size,
                               "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                for p in sorted(www.iterdir())}
            ports = {int(m.group(1)) if (m := re.match(r"https?://[^/:]+:(\d+)", url)) else
                     HTTP_PORT for s in self.topo.scenarios for f in s.flows
                     if f.server == vm.node for url in f.urls}
            for port in sorted(ports):
                self._launch_http(vm.node, vm.ip, port, www)
        for lb in self.topo.lbs:
            if lb.probe is not None and lb.probe.protocol.lower() == "tcp":
                for node, ip in lb.backends:
                    self._launch_http(node, ip, lb.probe.port)   # what sshd answers
            elif lb.probe is not None and lb.probe.protocol.lower() == "http":
                for node, ip in lb.backends:
                    self._launch_health(node, ip)
        self.facts["served"] = self.served

    def _launch_health(self, node: str, ip: str) -> None:
        """The health endpoint a backend's user data runs (``vtap-health.py`` with the same
        arguments), bound to the backend's address; a backend whose user data has none answers
        no HTTP probe (and the LB never sends it anything), as on Azure."""
        args = self.topo.vm(node).health_args
        if not args:
            return
        server = self.lab.popen(
            self.ns(node),
            [sys.executable, str(HEALTH_SCRIPT), *args, "--bind", ip,
             "--proxy-script", str(PROXY_SCRIPT), "--cache-seconds", "0",
             "--lifetime-seconds", str(HEALTH_LIFETIME_S)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(PROJECT_ROOT),
            start_new_session=True)
        self.servers.append(server)
        self.unready.append((node, server))

    def _www(self) -> Path:
        if self.www is None:
            self.www = Path(tempfile.mkdtemp(prefix=f"{self.lab.prefix}-www-"))
        return self.www

    def _launch_http(self, node: str, ip: str, port: int, root: Path | None = None) -> None:
        server = self.lab.popen(
            self.ns(node),
            [sys.executable, "-m", "vtaplab.emulator.httpserver", "--dir",
             str(root or self._www()), "--bind", ip, "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(PROJECT_ROOT),
            start_new_session=True)
        self.servers.append(server)
        self.unready.append((node, server))

    def await_servers(self) -> None:
        for node, server in self.unready:
            assert server.stdout is not None
            line = server.stdout.readline()   # "ready ..." once it listens, "" if it died
            if not line.startswith(("ready", "vtap-health: listening")):
                err = server.stderr.read() if server.stderr else ""
                raise NetnsError(f"the HTTP server in {self.ns(node)} did not start: "
                                 f"{err.strip()}")
        self.unready.clear()

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
        urls = flow.urls
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

    def one_proxy_at_fault(self, scenario: Scenario) -> bool:
        """Does the fault hit one proxy of ``scenario`` (an LB before two or more)?"""
        return self.opts.fault in FAULTS_ONE_PROXY and lb_before_proxies(self.topo, scenario)

    def scenario_lb(self) -> LoadBalancer | None:
        return self.topo.lb(self.scenario.lb) if self.scenario.lb else None

    # the run -----------------------------------------------------------------------------------
    def traffic_phases(self) -> None:
        """The scenario's clients' requests, with the fault (if any) woven in, into one
        traffic.log."""
        from vtaplab.judge.verdict import parse_traffic_log

        fault, n, scenario = self.opts.fault, self.opts.requests, self.scenario
        lb = self.scenario_lb()
        one_proxy = self.one_proxy_at_fault(scenario) and lb is not None
        parts: list[tuple[Flow, Path]] = []
        if fault == "rolling-upgrade" and one_proxy:
            self.rolling_upgrade(parts)
        elif fault == "flap-proxy-rule" or one_proxy:
            # Thirds: rule on, rule removed, rule restored; or every proxy up, one down (or
            # its rewrite gone) until the LB's probe takes it out, after the failover.
            phases = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
            if fault == "flap-proxy-rule":
                names = ["rule on", "rule removed", "rule restored"]
            else:
                names = ["every proxy up", "one proxy down, still in the LB"
                         if fault == "proxy-down" else
                         "one proxy's rewrite gone, still in the LB", "after the failover"]
            self.facts["flap" if fault == "flap-proxy-rule" else "failover_phases"] = {
                "requests_per_phase": phases, "phases": names}
            for i, count in enumerate(phases):
                if i == 1:
                    if fault == "flap-proxy-rule":
                        self.remove_proxy(scenario.proxies)
                    elif lb is not None:
                        self.take_out(lb.backends[-1][0],
                                      "rewrite" if fault == "no-proxy-rule" else "down")
                self.traffic_round(i, count, parts)
                if i == 1:
                    if fault == "flap-proxy-rule":
                        self.apply_proxy(scenario.proxies)
                    else:
                        self.await_out(self.windows[-1])
        else:
            self.traffic_round(0, n, parts)
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
        for flow in scenario.flows:
            part = self.out / f".traffic-{flow.client}.log"
            part.write_text("\n".join(["# vtap-traffic v1", *per_client.get(flow.client, [])])
                            + "\n")
            summaries[flow.client] = {"tenant": flow.tenant, **parse_traffic_log(part)}
            part.unlink()
        self.facts["traffic_per_client"] = summaries

    def traffic_round(self, index: int, count: int, parts: list[tuple[Flow, Path]]) -> None:
        """``count`` requests per URL from every client, logged to parts of index ``index``."""
        if not count:
            return
        for flow in self.scenario.flows:
            part = self.out / f".traffic-{index}-{flow.client}.log"
            self.run_traffic(flow, count, part)
            parts.append((flow, part))

    def rolling_upgrade(self, parts: list[tuple[Flow, Path]]) -> None:
        """rolling-upgrade: batch after batch (the scale set's maxBatchInstancePercent; one
        proxy at a time where the proxies are VMs), each instance goes down, comes back after
        its reimage, installs its rewrite and is probed back into the LB, while the clients
        keep sending one request per URL at a time; the pause between batches as the scale
        set declares it (scaled; none between hand-placed VMs). Traffic before the first batch
        and after the last: --requests each."""
        lb = self.scenario_lb()
        assert lb is not None
        members = [node for node, _ip in lb.backends]
        scale_set = next((ss for ss in self.topo.scale_sets
                          if set(ss.instances) == set(members)), None)
        batches = scale_set.batches() if scale_set else [(node,) for node in members]
        pause = scale_set.pause_s * PROBE_SCALE if scale_set else 0.0
        index = 0
        self.traffic_round(index, self.opts.requests, parts)
        rounds: list[int] = []
        for number, batch in enumerate(batches):
            done = threading.Event()
            errors: list[str] = []

            def upgrade(batch: tuple[str, ...] = batch, done: threading.Event = done,
                        errors: list[str] = errors) -> None:
                try:
                    windows = [self.take_out(node, "upgrade") for node in batch]
                    for window in windows:
                        self.await_out(window)
                    time.sleep(UPGRADE_DOWN_INTERVALS * _probe_interval(lb))
                    for window in windows:
                        self.bring_back(window)
                    for window in windows:
                        self.await_in(window)
                except (NetnsError, OSError) as exc:
                    errors.append(str(exc))
                finally:
                    done.set()

            worker = threading.Thread(target=upgrade, name="rolling-upgrade", daemon=True)
            worker.start()
            count = 0
            while count < UPGRADE_MAX_ROUNDS and (not done.is_set() or count == 0):
                index += 1
                self.traffic_round(index, 1, parts)
                count += 1
            worker.join(timeout=4 * self._wait_bound(lb))
            if errors:
                raise NetnsError(f"rolling upgrade of {', '.join(batch)}: {errors[0]}")
            rounds.append(count)
            if number < len(batches) - 1:
                # Between batches: the declared pause, under traffic too.
                until = time.monotonic() + pause
                while time.monotonic() < until:
                    index += 1
                    self.traffic_round(index, 1, parts)
        index += 1
        self.traffic_round(index, self.opts.requests, parts)
        self.facts["rolling_upgrade"] = {
            "batches": [list(b) for b in batches], "pause_s": round(pause, 3),
            "scale_set": scale_set.name if scale_set else None,
            "rounds_per_batch": rounds, "requests_before_and_after": self.opts.requests}

    def run(self) -> dict[str, dict[str, Any]]:
        """Build once, then every scenario's traffic and captures in turn; verdicts by id."""
        opts, topo = self.opts, self.topo
        t0 = time.monotonic()
        self.build()
        if opts.fault != "no-proxy-rule":
            self.apply_proxy()
        else:   # behind an LB of two or more, the rewrite goes mid-run (FAULTS)
            self.apply_proxy([p for s in topo.scenarios if self.one_proxy_at_fault(s)
                              for p in s.proxies])
        self.reprobe_lbs()
        if opts.fault == "loss-2pct":
            for scenario in topo.scenarios:
                self.inject_loss(scenario)
        self.drops_seen = self.drops()
        self.timings["build_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        base = self.out
        for scenario in topo.scenarios:
            self.scenario = scenario
            self.out = base / scenario.id if len(topo.scenarios) > 1 else base
            _prepare_out(self.out, scenario)
            self.facts = {"served": self.served}
            self.windows = []
            self.run_scenario()
            self.verdicts[scenario.id] = self.judge()
        self.out = base
        self.timings["traffic_s"] = time.monotonic() - t1 - self.timings.get("decode_s", 0.0)
        return self.verdicts

    def reprobe_lbs(self) -> None:
        """Once the proxies' rewrites are installed, what the LBs' probes say of them: an HTTP
        probe of ``vtap-health.py`` answers 200 only from then on. Probed (bounded: at most
        ten probe intervals) until every backend answers, before any traffic."""
        for lb in self.topo.lbs:
            if lb.probe is None or not lb.backends:
                continue
            health = self.probe_backends(lb)
            for _ in range(10):
                if all(health.values()):
                    break
                time.sleep(_probe_interval(lb))
                health = self.probe_backends(lb)
            if health != self.health.get(lb.node):
                self.program_lb(lb, health)

    def run_scenario(self) -> None:
        scenario, opts = self.scenario, self.opts
        drops_before = self.drops_seen
        lb = self.scenario_lb()
        if lb is not None and len(lb.backends) > 1:
            # Probing all along while a failover can happen (two or more backends).
            self.probers[lb.node] = LbProber(self, lb, self.health[lb.node])
            self.probers[lb.node].start()
        late = opts.fault == "late-capture"
        self.start_captures([*scenario.hops, *([] if late else [scenario.collector])])
        self.traffic_phases()
        if late:
            self.settle(self.out / f"{scenario.hops[-1].name}.pcap")
            self.start_captures([scenario.collector])
        self.settle(self.out / "collector.pcap")
        self.stop_captures()
        after = self.drops_seen = self.drops()
        self.facts["drops"] = {k: v - drops_before.get(k, 0) for k, v in after.items()
                               if v - drops_before.get(k, 0) > 0}
        if lb is not None:
            prober = self.probers.get(lb.node)
            if prober is not None:
                prober.stop()
                self.facts["lb_events"] = [
                    {"at": round(e["at"], 6), "health": e["health"], "steered": e["steered"]}
                    for e in prober.events]
                if prober.error:
                    self.facts["lb_prober_error"] = prober.error
            self.facts["lb_backends"] = dict(self.health.get(lb.node, {}))
            self.facts["lb_steered"] = self.lb_steering(lb)
        if self.windows:
            self.facts["failover"] = self.failover_facts()
        if scenario.decap_vnis:
            status = self.lab.exec(self.ns(scenario.collector.node),
                                   [str(DECAP_SCRIPT), "status"], check=False).stdout
            self.facts["decap"] = {int(vni): [name, int(rx)] for name, vni, rx in
                                   (line.split() for line in status.splitlines())}
        if opts.fault == "loss-2pct":
            self.facts["injected_loss_packets"] = self.facts["drops"].get("fault:loss-2pct", 0)
        self.facts["conntrack_entries"] = {p: self.conntrack_count(p)
                                           for p in scenario.proxies}
        self.facts["proxy_status"] = {
            p: out.splitlines() for p, out in
            self.at_once(scenario.proxies, [str(PROXY_SCRIPT), "status"]).items()}

    def hop_figures(self) -> list[dict[str, Any]]:
        """Per hop, in path order: packets, VXLAN, fragments sent and reassembled, HTTP and
        bodies (whole and incomplete), and the capture's own drops."""
        from vtaplab.judge.decode import CaptureError, decode_capture

        rows: list[dict[str, Any]] = []
        for hop in [*self.scenario.hops, self.scenario.collector]:
            pcap = self.out / f"{hop.name}.pcap"
            row: dict[str, Any] = {"hop": hop.name, "file": pcap.name, "stage": hop.stage,
                                   "at": f"{hop.node}/{hop.peer} {hop.direction}",
                                   "kernel_drops": _tcpdump_drops(pcap)}
            try:
                summary = decode_capture(pcap).to_dict() if pcap.exists() else None
            except CaptureError as exc:
                row["error"] = str(exc)
                summary = None
            if summary is not None:
                http = summary["inner_http"]
                row.update(packets=summary["frames"], vxlan_packets=summary["vxlan_packets"],
                           fragments=summary["fragments"].get("frames", 0),
                           reassembled=summary["fragments"].get("reassembled", 0),
                           outer_sources=summary["outer_sources"],
                           requests=http["request_count"], responses=http["response_count"],
                           bodies=sum(int(b.get("count", 1)) for b in http["bodies"]),
                           incomplete_bodies=http["incomplete_bodies"])
            rows.append(row)
        return rows

    def judge(self) -> dict[str, Any]:
        t2 = time.monotonic()
        hops = self.hop_figures()
        self.facts["hops"] = hops
        emulator_json = self.out / "emulator.json"
        scenario = self.scenario
        self.facts.update(
            stack=self.topo.stack, scenario=scenario.id, prefix=self.lab.prefix,
            proxy_mode=self.opts.proxy_mode, fault=self.opts.fault,
            fault_description=FAULTS[self.opts.fault], requests_per_url=self.opts.requests,
            namespaces=[self.ns(n.name) for n in self.topo.nodes],
            topology=self.topo.summary())
        files = [self.out / "collector.pcap", *(self.out / f"{h.name}.pcap"
                                                for h in scenario.hops),
                 self.out / "traffic.log", emulator_json, self.out / "commands.log"]
        # Everything the judge weighs, at once: the capture, the traffic, the hops, the
        # tenants (msp), the failover (b3 proxy-down) and the twin's account of the path.
        more: dict[str, Any] = {"hops": hops, "failover": self.facts.get("failover")}
        if scenario.decap_vnis or len(scenario.flows) > 1:
            more.update(self.tenant_evidence())
        verdict = _judge_scenario(
            scenario=scenario.id, out=self.out, files=[f for f in files
                                                       if f.exists() or f == emulator_json],
            more=more,
            mirror=mirror_figures(hops, self.facts.get("drops", {}), scenario,
                                  self.rested_on(), sent={
                key: sum(int(c.get(key, 0)) for c in self.facts.get(
                    "traffic_per_client", {}).values()) for key in ("requests", "ok")}))
        from vtaplab.judge.verdict import write_verdict

        write_verdict(self.out, verdict)
        self.timings["decode_s"] = self.timings.get("decode_s", 0.0) + time.monotonic() - t2
        emulator_json.write_text(json.dumps(self.facts, indent=2) + "\n")
        return verdict

    def rested_on(self) -> Topology:
        """The topology, with what this run's fault adds to the behaviours and assumptions it
        rested on (a rolling upgrade's)."""
        if "rolling_upgrade" not in self.facts:
            return self.topo
        extra_b = ["vmss-rolling-upgrade"] if self.facts["rolling_upgrade"]["scale_set"] else []
        extra_a = ["upgrade-no-drain", "upgrade-boot-order",
                   *(["upgrade-pause-scale"] if extra_b else [])]
        return replace(self.topo,
                       behaviours=tuple(dict.fromkeys([*self.topo.behaviours, *extra_b])),
                       assumptions=tuple(dict.fromkeys([*self.topo.assumptions, *extra_a])))

    def tenant_evidence(self) -> dict[str, Any]:
        """msp: per tenant, the VNI its proxy's user data stamps, what its client sent and the
        collector's decap counters (the judge tells the tenants apart from them)."""
        vnis: dict[str, int] = {}
        for flow in self.scenario.flows:
            proxy = next((p for p in self.scenario.proxies if p[1] == flow.client[1]), None)
            # What the user data configures (a fault may make the proxy stamp another).
            argv = list(self.topo.vm(proxy).proxy_args) if proxy else []
            if "--vni" in argv:
                vnis[f"t{flow.tenant}"] = int(argv[argv.index("--vni") + 1])
        per_client = self.facts.get("traffic_per_client", {})
        sent = {f"t{flow.tenant}": int(per_client.get(flow.client, {}).get("requests", 0))
                for flow in self.scenario.flows}
        decap = {vni: (name, rx) for vni, (name, rx) in self.facts.get("decap", {}).items()}
        return {"tenants": vnis, "tenants_sent": sent, "decap": decap if decap else None}
    def _wait_bound(self, lb: LoadBalancer) -> float:
        threshold = max(1, lb.probe.threshold if lb.probe else 1)
        return max(FAILOVER_WAIT_MIN_S, FAILOVER_WAIT_ROUNDS * _probe_interval(lb) * threshold)

    def take_out(self, node: str, cause: str) -> dict[str, Any]:
        """One proxy at fault mid-traffic: its NIC down (``down``: the VM stopped;
        ``upgrade``: its reimage begins) or its rewrite removed (``rewrite``): a window opens,
        recorded with what the LB had sent each backend by then."""
        lb = self.scenario_lb()
        assert lb is not None
        window: dict[str, Any] = {"backend": node, "cause": cause,
                                  "steered_at_down": self.lb_steering(lb),
                                  "down_at": time.time()}
        self.windows.append(window)
        if cause == "rewrite":
            self.remove_proxy([node])
        else:
            self.lab.runner.run(["ip", "link", "set", self.ifname(node, f"f{node[1]}"),
                                 "down"], ns=self.ns(node))
        return window

    def bring_back(self, window: dict[str, Any]) -> None:
        """An upgraded instance boots: its NIC up (and its default route), then, a little
        later, its rewrite installed again by its user data's unit (assumption
        upgrade-boot-order); from then on it can carry the mirror."""
        lb = self.scenario_lb()
        assert lb is not None
        node = window["backend"]
        port = self.topo.port(node)
        ifname = self.ifname(node, f"f{node[1]}")
        self.remove_proxy([node])   # the reimaged OS disk holds no rewrite
        self.lab.runner.run(["ip", "-batch", "-"], ns=self.ns(node), input_text=(
            f"link set {ifname} up\nroute replace default via {port.gateway} dev {ifname}\n"))
        window["up_at"] = time.time()
        time.sleep(UPGRADE_BOOT_INTERVALS * _probe_interval(lb))
        window["steered_before_ready"] = self.lb_steering(lb)
        self.apply_proxy([node])
        window["ready_at"] = time.time()

    def await_out(self, window: dict[str, Any]) -> None:
        """Wait (bounded) until the LB's probe has taken the window's backend out."""
        window["event"] = self._await(window["backend"], False, window["down_at"])

    def await_in(self, window: dict[str, Any]) -> None:
        """Wait (bounded) until the LB's probe has put the window's backend back."""
        window["back_event"] = self._await(window["backend"], True, window["up_at"])

    def _await(self, node: str, healthy: bool, since: float) -> dict[str, Any] | None:
        prober = self.probers.get(self.scenario.lb or "")
        lb = self.scenario_lb()
        if prober is None or lb is None:
            return None
        return prober.wait_for(node, healthy, self._wait_bound(lb), after=since)

    def failover_facts(self) -> dict[str, Any]:
        """What a run with a proxy at fault shows: per window, when the LB took the proxy
        out (and put it back), and where the loss fell. Datagrams the LB sent a proxy that
        was down or without its rewrite are lost; "confined" means every one of them was
        sent inside a failover window (between the fault and the LB taking the proxy out),
        none after it: not while it stayed at fault, not after it was back before its rewrite
        was. One window: its figures at the top level; more (a rolling upgrade): the sums,
        and each under ``windows``."""
        lb = self.scenario_lb()
        assert lb is not None and self.windows
        end = self.lb_steering(lb)
        results = [self._window_facts(lb, w, end) for w in self.windows]
        if len(results) == 1:
            result = results[0]
        else:
            windows = [r["window_s"] for r in results]
            result = {
                "backend": ", ".join(r["backend"] for r in results),
                "cause": results[0]["cause"], "probe_interval_s": _probe_interval(lb),
                "down_at": results[0]["down_at"],
                "removed_at": results[0]["removed_at"],
                "window_s": None if None in windows else max(windows),
                "lost_in_window": sum(r["lost_in_window"] for r in results),
                "lost_after_window": None if any(r["lost_after_window"] is None
                                                 for r in results) else
                sum(r["lost_after_window"] for r in results),
                "confined": all(r["confined"] for r in results),
                "windows": results,
            }
            why = [r["why"] for r in results if r.get("why")]
            if why:
                result["why"] = "; ".join(why)
        result.update(self.failover_intervals(lb, result))
        return result

    def _window_facts(self, lb: LoadBalancer, window: dict[str, Any],
                      end: dict[str, int]) -> dict[str, Any]:
        node, cause = window["backend"], window["cause"]
        at_down = window["steered_at_down"]
        event = window.get("event")
        result: dict[str, Any] = {
            "backend": node, "cause": cause, "probe_interval_s": _probe_interval(lb),
            "down_at": round(window["down_at"], 6), "steered_before_down": at_down,
        }
        what = facts.FAILOVER_CAUSES[cause]
        probe = f"{lb.probe.protocol.upper()}/{lb.probe.port}" if lb.probe else "none"
        if event is None:
            result.update(removed_at=None, window_s=None, confined=False,
                          lost_in_window=end[node] - at_down[node], lost_after_window=None,
                          why=f"the LB never took {node} out after it {what} (its probe "
                              f"{probe} still answered within {self._wait_bound(lb):.1f} s); "
                              f"{end[node] - at_down[node]} datagrams sent to it after that "
                              "were lost")
            return result
        removed = event["steered"]
        result.update(removed_at=round(event["at"], 6),
                      window_s=round(event["at"] - window["down_at"], 3),
                      lost_in_window=removed[node] - at_down[node])
        if cause == "upgrade":
            # Back in the pool before its rewrite was installed: what it got meanwhile is lost.
            before_ready = window.get("steered_before_ready", removed)
            back = window.get("back_event")
            result.update(
                up_at=round(window.get("up_at", 0.0), 6),
                ready_at=round(window.get("ready_at", 0.0), 6),
                back_at=round(back["at"], 6) if back else None,
                out_of_pool_s=round(back["at"] - event["at"], 3) if back else None,
                lost_after_window=before_ready[node] - removed[node])
            if back is None:
                result["why"] = (f"{node} never came back into the LB after its upgrade "
                                 f"within {self._wait_bound(lb):.1f} s")
            elif result["lost_after_window"]:
                result["why"] = (f"the LB put {node} back before its rewrite was installed "
                                 f"(its probe {probe} answered); {result['lost_after_window']} "
                                 "datagrams sent to it meanwhile were lost")
        else:
            result.update(lost_after_window=end[node] - removed[node],
                          to_healthy_after_window={n: end[n] - removed[n] for n in end
                                                   if n != node})
        result["confined"] = result["lost_after_window"] == 0 and "why" not in result
        return result

    def failover_intervals(self, lb: LoadBalancer, result: dict[str, Any]) -> dict[str, Any]:
        """Packets the LB sent each backend per interval (from the captures on the fabric's
        side of each proxy, which stay up when a proxy goes down), seconds from the first one,
        with the fault and the removal on the same clock: the failover as a picture."""
        from vtaplab.judge.capture import CaptureError, ReadState, read_records

        stamps: dict[str, list[float]] = {}
        for node, _ip in lb.backends:
            pcap = self.out / f"{node}-out.pcap"
            try:
                stamps[node] = [ts for ts, _lt, _frame in read_records(pcap, ReadState())]
            except (CaptureError, OSError):
                return {}
        first = min((ts[0] for ts in stamps.values() if ts), default=None)
        last = max((ts[-1] for ts in stamps.values() if ts), default=None)
        if first is None or last is None:
            return {}
        # Through the (last) removal or return and a little after, even when the traffic
        # ended before.
        for window in result.get("windows") or [result]:
            for key in ("removed_at", "back_at"):
                if window.get(key) is not None:
                    last = max(last, window[key] + 2 * FAILOVER_BIN_S)
        width = max(FAILOVER_BIN_S, (last - first) / FAILOVER_MAX_BINS)
        bins = int((last - first) / width) + 1
        counts = {node: [0] * bins for node in stamps}
        for node, times in stamps.items():
            for ts in times:
                counts[node][min(bins - 1, int((ts - first) / width))] += 1
        marks: dict[str, Any] = {f"{key}_s": round(result[key] - first, 3)
                                 for key in ("down_at", "removed_at")
                                 if result.get(key) is not None}
        if result.get("windows"):
            marks["marks"] = [{"backend": w["backend"], **{
                f"{key}_s": round(w[key] - first, 3) for key in ("down_at", "removed_at",
                                                                  "back_at")
                if w.get(key) is not None}} for w in result["windows"]]
        return {"intervals": [{"t": round(i * width, 3),
                               "per_backend": {n: c[i] for n, c in counts.items()}}
                              for i in range(bins)], "interval_s": round(width, 3), **marks}

    def teardown(self) -> list[str]:
        t3 = time.monotonic()
        for prober in self.probers.values():
            prober.stop()
        self.stop_captures()
        self.stop_servers()
        _reap_orphans()
        left = [] if self.opts.keep else self.lab.teardown()
        self.timings["teardown_s"] = time.monotonic() - t3
        return left


# ---------------------------------------------------------------------------------------------
# The verdict: figures per hop, where the mirror lost, and the ONE call to the judge
# ---------------------------------------------------------------------------------------------
def mirror_figures(hops: Sequence[dict[str, Any]], drops: dict[str, int], scenario: Scenario,
                   topo: Topology, sent: dict[str, int] | None = None) -> dict[str, Any]:
    """What the judge needs to tell a complete mirror from a lossy one: the per-hop figures
    (path order, collector last), the packets each resource's rules dropped, where the loss
    happened (resources that dropped; the first hop pair whose packet count falls), whether
    every tapped NIC was on fastpath, and the behaviours/assumptions the twin rested on."""
    # Packets per stage of the path (parallel hops of one stage summed): the first stage
    # that has fewer packets than the one before is where they fell (beyond the few packets a
    # capture stopped a moment earlier than the one before it may miss).
    stages: dict[int, list[dict[str, Any]]] = {}
    for hop in hops:
        stages.setdefault(int(hop.get("stage", 0)), []).append(hop)
    lost_between = None
    previous: tuple[str, int] | None = None
    for _stage, members in sorted(stages.items()):
        if any("packets" not in h for h in members):
            continue
        label = "+".join(h["hop"] for h in members)
        packets = sum(int(h["packets"]) for h in members)
        if previous is not None and previous[1] - packets > max(
                STRAGGLERS, previous[1] * STRAGGLER_SHARE):
            lost_between = [previous[0], label]
            break
        previous = (label, packets)
    # Loss caused by a resource's rule; the injected fault is reported as such.
    at = sorted({key.split(":")[1] for key in drops if not key.startswith("fault:")})
    not_on_fastpath = [t.why_not for t in scenario.taps if not t.on_fastpath]
    collector = hops[-1] if hops else {}
    # What the clients exchanged (their traffic logs) against what the collector decoded.
    sent = dict(sent or {})
    missing = {"requests": max(0, sent.get("requests", 0) - collector.get("requests", 0)),
               "bodies": max(0, sent.get("ok", 0) - collector.get("bodies", 0)),
               "incomplete_bodies": int(collector.get("incomplete_bodies", 0) or 0)}
    complete = (not drops and not not_on_fastpath and collector.get("vxlan_packets", 0) > 0
                and not any(missing.values()))
    return {
        "complete": complete,
        "sent": sent,
        "missing_at_collector": missing,
        "hops": list(hops),
        "drops": dict(sorted(drops.items())),
        "lost_at": at,
        "lost_between": lost_between,
        "not_on_fastpath": not_on_fastpath,
        **behaviours.listing(list(topo.behaviours), list(topo.assumptions)),
    }


def _judge_scenario(*, scenario: str, out: Path, files: Sequence[Path],
                    more: dict[str, Any], mirror: dict[str, Any]) -> dict[str, Any]:
    """The one call to the judge (``vtaplab.judge.outcome`` via ``build_verdict``): the
    collector's capture, the traffic log, ``more`` (hops, tenants, failover) and the twin's
    figures (``mirror``: drops by resource, fastpath); the behaviours and assumptions the run
    rested on are listed at the top level."""
    from vtaplab.judge.outcome import settle
    from vtaplab.judge.verdict import build_verdict

    collector = out / "collector.pcap"
    verdict = build_verdict(scenario=scenario,
                            collector_pcap=collector if collector.exists() else None,
                            files=files, traffic_log=out / "traffic.log", root=Path.cwd(),
                            **more)
    verdict["mirror"] = {k: v for k, v in mirror.items()
                         if k not in ("behaviours", "assumptions")}
    verdict["behaviours"] = mirror["behaviours"]
    verdict["assumptions"] = mirror["assumptions"]
    return settle(verdict)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _enter_netns(ns: str) -> None:
    """Move the calling thread into network namespace ``ns`` (setns(2): this thread only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {ns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


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
        description="Build a stack's twin from its resource graph (the program under Pulumi's "
                    "mocks) and run it locally in network namespaces (needs root).")
    p.add_argument("stack", nargs="?", default=None,
                   help="a stack whose scenarios carry traffic: b2, b3, b4, msp, a, uksouth (any "
                        "Pulumi.STACK.yaml)")
    p.add_argument("--graph", type=Path, default=None,
                   help="emulate this graph JSON file (python -m vtaplab graph STACK --json) "
                        "instead of a stack's")
    p.add_argument("--proxy-mode", default="all",
                   help="netdev | stateless | conntrack | all (default: all, the user data's "
                        "mode first with its evidence in OUT, the others in OUT/<mode>)")
    p.add_argument("--out", type=Path, default=None,
                   help="evidence directory (default evidence/emulator/STACK; a stack with "
                        "several scenarios writes OUT/<scenario>/)")
    p.add_argument("--requests", default=str(DEFAULT_REQUESTS),
                   help="rounds of requests; each fetches every URL of the stack's traffic "
                        f"command once (default {DEFAULT_REQUESTS})")
    # argparse formats help with %: a literal % (as in "2% of the packets") must be %%.
    p.add_argument("--fault", default="none", help="; ".join(
        f"{k}: {v}" for k, v in FAULTS.items()).replace("%", "%%"))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="run the program with this vtaplab config value instead of the stack "
                        "file's (repeatable; as 'graph STACK --set'), e.g. proxyProbe=tcp to "
                        "see what the reference lab's TCP/22 probe misses")
    p.add_argument("--tenants", default=None,
                   help="msp: the tenant count expected (the graph's, from mspTenants; a "
                        "different number is refused)")
    p.add_argument("--keep", action="store_true",
                   help="leave the namespaces for inspection (delete with --teardown PREFIX)")
    p.add_argument("--teardown", metavar="PREFIX", default=None,
                   help="only remove what an earlier run left (--keep, or killed): its "
                        "processes, namespaces, temp dirs; then exit (no STACK)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every command as run")
    return p


def _options(argv: list[str]) -> RunOptions | str:
    args = _parser().parse_args(argv)
    if args.teardown is not None:   # a STACK before it (the old form) changes nothing
        return str(args.teardown)
    if args.stack is None and args.graph is None:
        raise ValueError("required: stack (or --graph FILE)")
    if args.proxy_mode not in PROXY_MODES:
        raise ValueError(f"--proxy-mode {args.proxy_mode!r} is not accepted; accepted: "
                         f"{', '.join(PROXY_MODES)}")
    if args.fault not in FAULTS:
        raise ValueError(f"--fault {args.fault!r} is not accepted; accepted: {', '.join(FAULTS)}")
    requests = int_option("--requests", args.requests, 1, 1000)
    if args.fault == "flap-proxy-rule" and requests < 3:
        raise ValueError(f"--requests {args.requests!r} is not accepted with flap-proxy-rule; "
                         "accepted: 3..1000 (one third per phase)")
    tenants = None if args.tenants is None else int_option(
        "--tenants", args.tenants, *facts.MSP_TENANTS_RANGE)
    if args.overrides and args.graph is not None:
        raise ValueError(f"--set {args.overrides[0].partition('=')[0]}=... is not accepted "
                         "with --graph (a graph file is already built); accepted: STACK "
                         "--set KEY=VALUE")
    name = args.stack or args.graph.stem
    out = args.out if args.out is not None else Path("evidence/emulator") / name
    return RunOptions(stack=name, graph=args.graph, proxy_mode=args.proxy_mode,
                      fault=args.fault, requests=requests, out=out, keep=args.keep,
                      tenants=tenants, verbose=args.verbose,
                      overrides=tuple(args.overrides))


def load_topology(opts: RunOptions) -> tuple[Topology, str]:
    """The twin's topology for ``opts`` (checked against the options), and where its graph
    came from; ValueError with one line when it can't be emulated as asked."""
    from vtaplab.preflight.mocks import GraphError, parse_overrides

    try:
        if opts.graph is not None:
            resources, origin = load_graph_file(opts.graph), f"graph file {opts.graph}"
        else:
            overrides = parse_overrides(opts.overrides)
            resources, cached = stack_graph(opts.stack, overrides=overrides or None)
            origin = f"stack {opts.stack}'s graph" + "".join(
                f" with {pair}" for pair in opts.overrides) + (" (cached)" if cached else "")
        topo = from_graph(resources, opts.stack)
    except GraphError as exc:
        raise ValueError(str(exc)) from None
    except TopologyError as exc:
        raise ValueError(str(exc)) from None
    if opts.fault in FAULTS_NEED_LB and not any(lb_before_proxies(topo, s)
                                                for s in topo.scenarios):
        raise ValueError(f"--fault {opts.fault!r} is not accepted with {opts.stack}; accepted: "
                         "a stack with an LB before two or more proxies (b3, b4, uksouth)")
    tenants = max((len(s.flows) for s in topo.scenarios if s.decap_vnis), default=0)
    if opts.fault == "shared-vni" and not tenants:
        raise ValueError(f"--fault 'shared-vni' is not accepted with {opts.stack}; accepted: "
                         "a stack with tenants (msp)")
    if opts.tenants is not None and opts.tenants != tenants:
        raise ValueError(f"--tenants {str(opts.tenants)!r} is not accepted with {opts.stack}; "
                         f"accepted: {tenants or 'none'} (the graph's tenants: set mspTenants "
                         "in the stack file)")
    return topo, origin


def _prepare_out(out: Path, scenario: Scenario) -> None:
    """Make the evidence directory and drop the files an earlier run of ours left in it."""
    out.mkdir(parents=True, exist_ok=True)
    names = [*(hop.name for hop in scenario.hops), "collector"]
    ours = [f"{n}.pcap" for n in names] + [f"{n}.pcap.log" for n in names]
    ours += [f".{n}.pid" for n in names]
    ours += [f".traffic-{i}-{f.client}.log" for i in range(3) for f in scenario.flows]
    ours += [f".traffic-{f.client}.log" for f in scenario.flows]
    ours += ["traffic.log", "verdict.json", "emulator.json"]
    for name in ours:
        (out / name).unlink(missing_ok=True)


def _tcpdump_drops(pcap: Path) -> int | None:
    """'N packets dropped by kernel' from the capture's log: a hop's count is exact only at 0."""
    try:
        text = Path(f"{pcap}.log").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"(\d+) packets? dropped by kernel", text)
    return int(match.group(1)) if match else None


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
    rows = [("failover", f"{failover['backend']} at fault ({failover.get('cause', 'down')}); "
                         f"probe every {failover['probe_interval_s']} s")]
    for window in failover.get("windows") or [failover]:
        label = f"{window['backend']}: " if failover.get("windows") else ""
        if window.get("removed_at") is None:
            rows.append(("window", label + str(window.get("why"))))
            continue
        rows.append(("window", f"{label}{window['window_s']:.3f} s from the fault to out of "
                               f"the LB; {window['lost_in_window']} datagrams lost in it, "
                               f"{window['lost_after_window']} after"
                     + (f"; back in the LB after {window['out_of_pool_s']} s"
                        if window.get("out_of_pool_s") is not None else "")))
        if window.get("to_healthy_after_window"):
            rows.append(("after the window", label + ", ".join(
                f"{n}: {c} datagrams" for n, c in window["to_healthy_after_window"].items())))
    rows.append(("confined", "yes" if failover["confined"] else "NO"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _print_rested_on(topo: Topology) -> None:
    """The Azure behaviours the twin enforced and the assumptions it relied on."""
    print("behaviours in force (Azure docs):")
    for key in topo.behaviours:
        entry = behaviours.BEHAVIOURS[key]
        print(f"  {key}: {entry.source}")
    print("assumptions relied on (not documented by Azure):")
    for key in topo.assumptions:
        entry = behaviours.ASSUMPTIONS[key]
        print(f"  {key}: {entry.value}")


def _print_mirror(mirror: dict[str, Any]) -> None:
    lost = ", ".join(f"{k}: {v}" for k, v in mirror["drops"].items()) or "nothing dropped"
    missing = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in
                        mirror["missing_at_collector"].items() if v)
    if missing:
        lost += f"; missing at the collector: {missing}"
    print(f"mirror {'complete' if mirror['complete'] else 'LOSSY'}: {lost}"
          + (f"; packets fall between {mirror['lost_between'][0]} and "
             f"{mirror['lost_between'][1]}" if mirror["lost_between"] else ""))
    for why in mirror["not_on_fastpath"]:
        print(why)


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
    started = time.monotonic()
    try:
        topo, origin = load_topology(opts)
    except ValueError as exc:
        print(f"emulate: {exc}", file=sys.stderr)
        return 2
    graph_s = time.monotonic() - started
    print(f"emulate {opts.stack}: twin of {origin}: {len(topo.nodes)} nodes, scenarios "
          f"{', '.join(s.id for s in topo.scenarios)} (graph {graph_s:.2f}s)", flush=True)
    for note in topo.notes:
        print(f"  {note}")
    if opts.proxy_mode != "all":
        return _run_one(opts, topo)[0]
    # Every mode, one after the other: the user data's mode first, its evidence where the
    # stack's evidence goes, each other mode's in a subdirectory named after it.
    stated = [vm.proxy_args[vm.proxy_args.index("--mode") + 1] for vm in topo.vms
              if "--mode" in vm.proxy_args]
    order = sorted(PROXY_MODES_ORDER, key=lambda m: (m not in stated[:1],
                                                     PROXY_MODES_ORDER.index(m)))
    results: list[tuple[str, int, str]] = []
    for i, mode in enumerate(order):
        out = opts.out if i == 0 else opts.out / mode
        rc, outcome = _run_one(replace(opts, proxy_mode=mode, out=out), topo)
        results.append((mode, rc, outcome))
        if outcome == "interrupted":
            break
        print()
    summary = ", ".join(f"{mode} {outcome}" for mode, _rc, outcome in results)
    print(f"emulate {opts.stack}, every proxy mode: {summary} "
          f"(took {time.monotonic() - started:.2f}s in all)")
    return max(rc for _mode, rc, _outcome in results)


def _run_one(opts: RunOptions, topo: Topology) -> tuple[int, str]:
    """One emulation in one proxy mode: (exit status, outcomes or what went wrong)."""
    from vtaplab.judge.verdict import format_table

    started = time.monotonic()
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "commands.log").unlink(missing_ok=True)
    except OSError as exc:
        print(f"emulate: --out {str(opts.out)!r} is not usable: {exc.strerror}", file=sys.stderr)
        return 2, "error"
    _become_subreaper()
    runs.clean_dead_runs(print)   # what runs killed with SIGKILL left, said and removed
    prefix = new_prefix(list_namespaces())
    runner = Runner(log_path=opts.out / "commands.log", echo=opts.verbose)
    try:
        lab = Lab(prefix, runner, record=runs.begin(prefix))
    except OSError as exc:
        print(f"emulate: {runs.state_dir()}: {exc.strerror}; accepted: a writable directory "
              f"for run records (${runs.STATE_DIR_ENV})", file=sys.stderr)
        return 2, "error"
    emu = Emulation(topo, opts, lab)
    rounds = ", ".join(f"{s.id}: {opts.requests} rounds x {len(s.flows[0].urls)} URLs x "
                       f"{len(s.flows)} client(s)" for s in topo.scenarios)
    print(f"emulate {opts.stack}: run {prefix}, proxy mode {opts.proxy_mode}, "
          f"fault {opts.fault}, {rounds}, evidence in {opts.out}", flush=True)
    _print_rested_on(topo)
    verdicts: dict[str, dict[str, Any]] = {}
    error: str | None = None
    interrupted = False
    left: list[str] = []
    with _signals_raise():
        try:
            verdicts = emu.run()
        except _Interrupted as exc:
            error = f"interrupted by {exc}; torn down"
            interrupted = True
        except TopologyError as exc:
            error = str(exc)
        except (NetnsError, OSError) as exc:
            error = str(exc)
        finally:
            # A second Ctrl-C (or a SIGTERM) must not skip the teardown.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            left = emu.teardown()
            if not left and lab.record is not None:
                lab.record.finish(kept=opts.keep)
    elapsed = time.monotonic() - started
    for scenario_id, verdict in verdicts.items():
        out = opts.out / scenario_id if len(topo.scenarios) > 1 else opts.out
        print(f"\n== {scenario_id}")
        print(format_table(verdict))
        print()
        if "tenant_table" in verdict:
            from vtaplab.judge.tenants import format_tenant_table

            print(format_tenant_table(verdict["tenant_table"]))
            print()
        if "failover" in verdict:
            _print_failover(verdict["failover"])
            print()
        facts_ = json.loads((out / "emulator.json").read_text())
        _print_hops(facts_)
        _print_mirror(verdict["mirror"])
        timings = {k: round(v, 3) for k, v in {**emu.timings, "total_s": elapsed}.items()}
        facts_["timings"] = timings
        (out / "emulator.json").write_text(json.dumps(facts_, indent=2) + "\n")
    print()
    if opts.keep:
        print(f"kept namespaces {prefix}-*: delete with "
              f"python -m vtaplab emulate --teardown {prefix}")
    elif left:
        print(f"emulate: could not delete namespaces: {', '.join(left)}", file=sys.stderr)
    timings = ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in emu.timings.items())
    print(f"took {elapsed:.2f}s ({timings})", flush=True)
    if error is not None:
        print(f"emulate: {error}", file=sys.stderr)
        if interrupted:
            return EXIT_INTERRUPTED, "interrupted"
        return 3, "error"
    for scenario_id, verdict in verdicts.items():
        out = opts.out / scenario_id if len(topo.scenarios) > 1 else opts.out
        print(f"verdict {scenario_id}: {verdict['outcome']} -> {out / 'verdict.json'}")
    outcome = ", ".join(f"{k} {v['outcome']}" for k, v in verdicts.items()) \
        if len(verdicts) > 1 else next(iter(verdicts.values()))["outcome"]
    if left:
        return 3, outcome
    survives = {s.id for s in topo.scenarios if opts.fault in FAULTS_STILL_DELIVERED or (
        opts.fault in FAULTS_ONE_PROXY and lb_before_proxies(topo, s))}
    if any(v.get("matches_expected") is False for k, v in verdicts.items() if k in survives):
        return 1, outcome
    return 0, outcome


def _teardown_only(prefix: str) -> int:
    code, line = runs.teardown(prefix)
    print(line, file=sys.stderr if code else sys.stdout)
    return code
