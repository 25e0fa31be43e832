"""``vtaplab cost``: every committed stack is priced from its own graph, nothing unpriced."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vtaplab import PROJECT_ROOT
from vtaplab.preflight import cost, mocks

ROOT = PROJECT_ROOT
STACKS = mocks.stack_names(ROOT)


def _count(g: list[dict], typ: str) -> int:
    return sum(1 for e in g if e["type"] == typ)


@pytest.mark.parametrize("stack", STACKS)
def test_every_committed_stack_is_priced(stack, graph_of):
    g = graph_of(stack)
    est = cost.estimate(g, stack=stack)
    assert est.unpriced == [], est.unpriced  # a new type must get a price (or be free)
    vms = [e for e in g if e["type"] == "azure-native:compute:VirtualMachine"]
    want = sum(cost.VM_SIZES[e["inputs"]["hardwareProfile"]["vmSize"]] for e in vms)
    want += len(vms) * cost.PRICES["disk-standard-hdd-32"]
    want += _count(g, "azure-native:network:PrivateEndpoint") * cost.PRICES["private-endpoint"]
    want += _count(g, "azure-native:network:PublicIPAddress") * cost.PRICES["public-ip-standard"]
    want += sum(cost.PRICES["lb-standard"] for e in g
                if e["type"] == "azure-native:network:LoadBalancer"
                and e["inputs"].get("loadBalancingRules"))
    # A scale set's instances (b4) cost like VMs of its size, each with disk and public IP.
    for e in g:
        if e["type"] == "azure-native:compute:VirtualMachineScaleSet":
            sku = e["inputs"]["sku"]
            want += sku["capacity"] * (cost.VM_SIZES[sku["name"]] + cost.PRICES[
                "disk-standard-hdd-32"] + cost.PRICES["public-ip-standard"])
    want += sum(cost.PRICES["pls-direct-connect"] for e in g
                if e["type"] == "azure-native:network:PrivateLinkService"
                and e["inputs"].get("destinationIPAddress"))
    assert est.hourly == pytest.approx(want)
    assert vms and est.hourly > 0
    text = cost.render(est)
    assert f"{cost.PRICE_REGION}, table dated {cost.PRICE_DATE}" in text
    assert "approximate" in text and "not a quote" in text


def test_unknown_types_are_listed_not_counted_free():
    g = [{"type": "azure-native:network:AzureFirewall", "name": "fw", "inputs": {}},
         {"type": "azure-native:compute:VirtualMachine", "name": "vm",
          "inputs": {"hardwareProfile": {"vmSize": "Standard_Z99"}}},
         {"type": "pulumi-python:dynamic/vtaplab:RejectedAttempt", "name": "x", "inputs": {}}]
    est = cost.estimate(g, stack="t")
    assert [u["resource"] for u in est.unpriced] == ["fw", "vm"]
    assert "unpriced (not in the total): fw" in cost.render(est)


def test_a_standard_lb_without_rules_costs_nothing():
    lb = {"type": "azure-native:network:LoadBalancer", "name": "lb",
          "inputs": {"sku": {"name": "Standard"}, "loadBalancingRules": []}}
    assert cost.estimate([lb], stack="t").hourly == 0
    lb["inputs"]["loadBalancingRules"] = [{"name": "r"}]
    assert cost.estimate([lb], stack="t").hourly == cost.PRICES["lb-standard"]


def test_cli_json_and_bad_stack():
    stack = "b2" if "b2" in STACKS else STACKS[0]
    done = subprocess.run([sys.executable, "-m", "vtaplab", "cost", stack, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["prices"]["date"] == cost.PRICE_DATE and data["hourly"] > 0
    assert data["monthly"] == pytest.approx(data["hourly"] * 730, abs=0.01)
    done = subprocess.run([sys.executable, "-m", "vtaplab", "cost", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "accepted:" in done.stderr
    assert mocks.stack_names(ROOT)
