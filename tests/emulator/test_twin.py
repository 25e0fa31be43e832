"""The twin follows the program: graphs edited one thing at a time, then emulated.

Each test takes a committed stack's resource graph (``graph STACK --json``, cached), changes
one resource the way a program bug or fix would, writes it to a file and runs ``emulate --graph
FILE``: the verdict (computed from the twin's captures) and the drops by resource must say what
Azure's documented behaviour makes of that change. The hand-built emulator these replaced
ignored the program, so none of these outcomes could follow from an edit there.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vtaplab import PROJECT_ROOT
from vtaplab.emulator.topology import stack_graph

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the emulator needs root (network namespaces, veths)")
Graph = list[dict[str, Any]]


def graph(stack: str) -> Graph:
    return copy.deepcopy(stack_graph(stack)[0])


def one(g: Graph, kind: str, name: str) -> dict[str, Any]:
    [found] = [r for r in g if r["type"].endswith(f":{kind}") and r["name"] == name]
    return found


def ha_ports(g: Graph) -> Graph:
    """The provider ILB as the issue "Azure and Pulumi as they really are" fixes it."""
    for rule in one(g, "LoadBalancer", "provider-ilb")["inputs"]["loadBalancingRules"]:
        rule.update(protocol="All", frontendPort=0, backendPort=0, name="ha-ports")
    return g


def port_rule(g: Graph) -> Graph:
    """The provider ILB with a UDP/4789 load-balancing rule (the program before the fix)."""
    for rule in one(g, "LoadBalancer", "provider-ilb")["inputs"]["loadBalancingRules"]:
        rule.update(protocol="Udp", frontendPort=4789, backendPort=4789, name="vxlan")
    return g


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def emulate(g: Graph, tmp: Path, *args: str, rc: int | None = 0,
            requests: int = 3) -> tuple[dict[str, dict], str]:
    """Run the twin of ``g``; the verdicts by scenario and stdout. No namespace is left."""
    path = tmp / "graph.json"
    path.write_text(json.dumps(g))
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "vtaplab", "emulate", "--graph", str(path), "--out", str(out),
         "--proxy-mode", "netdev", "--requests", str(requests), *args],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, check=False)
    if rc is not None:
        assert proc.returncode == rc, proc.stdout + proc.stderr
    prefix = re.search(r"run (vl[0-9a-f]{4})", proc.stdout)
    assert prefix, proc.stdout + proc.stderr
    assert [n for n in namespaces() if n.startswith(prefix.group(1) + "-")] == []
    verdicts = {p.parent.name if p.parent != out else "": json.loads(p.read_text())
                for p in sorted(out.glob("**/verdict.json")) if "/stateless" not in str(p)}
    return verdicts, proc.stdout


def only(verdicts: dict[str, dict]) -> dict:
    [verdict] = verdicts.values()
    return verdict


# --- a UDP/4789 port rule on the provider ILB (the program before the fix) -------------------
@needs_root
def test_port_rule_on_the_provider_ilb_loses_the_fragments_there(tmp_path):
    # degraded does not match b2's expected outcome: the command exits 1.
    verdict = only(emulate(port_rule(graph("b2")), tmp_path, rc=1)[0])
    assert verdict["outcome"] == "degraded" and "provider-ilb" in verdict["loss_at"]
    mirror = verdict["mirror"]
    assert mirror["complete"] is False
    assert mirror["lost_at"] == ["provider-ilb"]
    [(rule, dropped)] = mirror["drops"].items()
    assert rule.startswith("lb:provider-ilb:") and "fragment" in rule and dropped > 0
    assert mirror["lost_between"] == ["pls-out", "provider-ilb-out"]
    # Small exchanges arrive, the 200 kB bodies don't: the large datagrams lost their tails.
    assert verdict["inner_http"]["request_count"] > 0
    assert verdict["inner_http"]["incomplete_bodies"] > 0
    assert "dropped by lb:provider-ilb" in verdict["reason"]


# --- with HA ports (the fix) every traffic stack is delivered whole ---------------------------
def _complete(verdict: dict) -> None:
    assert verdict["outcome"] == "delivered", verdict["reason"]
    assert verdict["mirror"]["complete"] is True, verdict["mirror"]
    assert verdict["mirror"]["drops"] == {}
    http = verdict["inner_http"]
    assert http["incomplete_bodies"] == 0
    # Every 200 kB body the client fetched arrived whole at the collector.
    big = [b for b in http["bodies"] if b["request"] == "GET /big.bin"]
    assert [b["length"] for b in big] == [204800]
    assert big[0]["count"] == http["request_lines"]["GET /big.bin"] > 0


@needs_root
@pytest.mark.parametrize("stack", ["b2", "b3", "msp", "uksouth"])
def test_with_ha_ports_the_mirror_is_complete(stack, tmp_path):
    verdicts, _out = emulate(ha_ports(graph(stack)), tmp_path)
    assert set(verdicts) == ({"b2", "b3"} if stack == "uksouth" else {""})
    for verdict in verdicts.values():
        _complete(verdict)


@needs_root
def test_with_ha_ports_b3_survives_a_proxy_going_down(tmp_path):
    verdict = only(emulate(ha_ports(graph("b3")), tmp_path, "--fault", "proxy-down",
                           requests=6)[0])
    assert verdict["outcome"] == "delivered", verdict["reason"]
    assert verdict["failover"]["confined"] is True


# --- program bugs the twin must catch ---------------------------------------------------------
@needs_root
def test_proxy_nic_without_ip_forwarding_is_not_delivered_at_the_proxy(tmp_path):
    g = ha_ports(graph("b2"))
    one(g, "NetworkInterface", "b2-proxy-nic")["inputs"]["enableIPForwarding"] = False
    verdict = only(emulate(g, tmp_path, rc=1)[0])
    assert verdict["outcome"] == "not-delivered"
    assert verdict["mirror"]["lost_at"] == ["b2-proxy-nic"]
    assert any(k.startswith("nic:b2-proxy-nic:source not its own") for k in
               verdict["mirror"]["drops"])


def _without_restart(g: Graph) -> Graph:
    """The source VM started before its vTAP and is never started again: its creation waits
    for neither the vTAP nor the tap configuration, and no fastpath step restarts it."""
    taps = {r["urn"] for r in g if r["type"].endswith(
        (":VirtualNetworkTap", ":NetworkInterfaceTapConfiguration"))}
    out = []
    for r in g:
        if r["type"].endswith(":Command") and " fastpath " in str(r["inputs"].get("create")):
            continue
        if r["type"].endswith(":VirtualMachine"):
            r = {**r, "dependencies": [d for d in r.get("dependencies") or [] if d not in taps]}
        out.append(r)
    return out


@needs_root
def test_source_vm_not_restarted_after_the_vtap_is_not_on_fastpath(tmp_path):
    verdict = only(emulate(_without_restart(ha_ports(graph("b2"))), tmp_path, rc=1)[0])
    assert verdict["outcome"] == "not-delivered"
    [why] = verdict["mirror"]["not_on_fastpath"]
    assert why.startswith("NIC is not on fastpath: b2-src-nic")
    assert "b2-src-vm" in why and "b2-tap-vtap" in why
    assert "NIC is not on fastpath" in verdict["reason"]


@needs_root
def test_nsg_denying_vxlan_on_the_collector_is_not_delivered_there(tmp_path):
    g = ha_ports(graph("b2"))
    nsg = one(g, "NetworkSecurityGroup", "provider-col-nsg")["inputs"]
    nsg["securityRules"].append({
        "access": "Deny", "destinationAddressPrefix": "*", "destinationPortRange": "4789",
        "direction": "Inbound", "name": "deny-vxlan", "priority": 150, "protocol": "Udp",
        "sourceAddressPrefix": "*", "sourcePortRange": "*"})
    verdict = only(emulate(g, tmp_path, rc=1)[0])
    assert verdict["outcome"] == "not-delivered"
    assert verdict["mirror"]["lost_at"] == ["provider-col-nsg"]
    assert verdict["mirror"]["drops"].get("nsg:provider-col-nsg:deny-vxlan", 0) > 0


def _stamp_same_vni(g: Graph) -> Graph:
    """Every tenant's proxy user data stamps tenant 1's VNI."""
    for vm in g:
        if not vm["type"].endswith(":VirtualMachine") or "-proxy" not in vm["name"]:
            continue
        profile = vm["inputs"]["osProfile"]
        text = base64.b64decode(profile["customData"]).decode()
        profile["customData"] = base64.b64encode(
            re.sub(r"--vni \d+", "--vni 1001", text).encode()).decode()
    return g


@needs_root
def test_msp_tenants_sharing_a_vni_fail_separation(tmp_path):
    verdict = only(emulate(_stamp_same_vni(ha_ports(graph("msp"))), tmp_path, rc=1)[0])
    assert verdict["outcome"] == "not-delivered"
    assert verdict["tenants_told_apart"] is False


@needs_root
def test_every_verdict_lists_behaviours_and_assumptions(tmp_path):
    verdicts, out = emulate(graph("a"), tmp_path, rc=None)
    verdict = only(verdicts)
    ids = {b["id"] for b in verdict["behaviours"]}
    assert {"vtap-mirror", "vtap-fastpath", "pls-nat", "nsg-defaults"} <= ids
    assert all(b["source"] for b in verdict["behaviours"])
    assumed = {a["id"]: a["value"] for a in verdict["assumptions"]}
    assert {"vtap-vni", "vtap-outer-source", "pls-fragments"} <= set(assumed)
    assert "behaviours in force" in out and "assumptions relied on" in out

