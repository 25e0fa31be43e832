"""``python -m vtaplab cost STACK [--json]``: what a stack costs per hour while it runs.

Counted from the stack's resource graph (``vtaplab.preflight.mocks``, the program under mocks — no
cloud) against :data:`PRICES`: a small, dated table of approximate pay-as-you-go list prices
for one region. They are NOT fetched and NOT a quote: Azure's prices change and differ by
region (typically within about 20 %); check the Azure pricing calculator before relying on
them. Data-processing charges (load balancer, Private Endpoint per GB) depend on traffic and
are left out; the lab's traffic is a few MB per run.

Free here: VNets, subnets, NICs, NSGs, resource groups, auto-shutdown schedules, the Private
Link Service itself (its consumers pay per Private Endpoint), and the vTAP resources (no charge
listed during the preview). An azure-native type the table doesn't know is listed as
"unpriced", never silently counted as free.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtaplab import PROJECT_ROOT
from vtaplab.preflight import mocks

PRICE_REGION = "uksouth"
PRICE_DATE = "2026-11-26"
CURRENCY = "USD"
SOURCE = (f"approximate Azure pay-as-you-go list prices (Linux VMs) for {PRICE_REGION}, table "
          f"dated {PRICE_DATE}; written down by hand, not fetched, not checked against "
          "Azure's current price list, not a quote — check "
          "https://azure.microsoft.com/pricing/calculator/")
HOURS_PER_MONTH = 730

# USD per hour while running (VMs: compute only; their OS disk is priced apart).
VM_SIZES: dict[str, float] = {
    "Standard_B1s": 0.0124,
    "Standard_B1ms": 0.0248,
    "Standard_B2s": 0.0496,
    "Standard_B2ms": 0.0992,
    "Standard_B2als_v2": 0.0432,
    "Standard_B2as_v2": 0.0864,
    "Standard_B2ats_v2": 0.0108,
    "Standard_D2s_v5": 0.111,
    "Standard_D2as_v5": 0.100,
    "Standard_D4s_v5": 0.222,
    "Standard_D2s_v4": 0.111,
    "Standard_F2s_v2": 0.098,
}
PRICES: dict[str, float] = {
    "lb-standard": 0.030,             # Standard LB, first 5 rules (per LB hour; none: free)
    "private-endpoint": 0.010,        # per Private Endpoint hour
    "pls-direct-connect": 0.010,      # preview, "billed hourly": ASSUMED = a PE hour; check
    "public-ip-standard": 0.005,      # Standard static IPv4, per hour
    "public-ip-basic": 0.004,
    "disk-standard-hdd-32": 0.0021,   # Standard HDD S4 (<= 32 GiB), $1.54/month
    "disk-standard-hdd-64": 0.0041,   # S6
    "disk-standard-hdd-128": 0.0080,  # S10
}
FREE_TYPES = frozenset({
    "azure-native:resources:ResourceGroup",
    "azure-native:network:VirtualNetwork",
    "azure-native:network:Subnet",
    "azure-native:network:NetworkInterface",
    "azure-native:network:NetworkSecurityGroup",
    "azure-native:network:SecurityRule",
    "azure-native:network:LoadBalancerBackendAddressPool",
    "azure-native:network:VirtualNetworkTap",
    "azure-native:network:NetworkInterfaceTapConfiguration",
    "azure-native:devtestlab:GlobalSchedule",
})


@dataclass(frozen=True)
class Item:
    resource: str
    type: str
    what: str
    hourly: float

    def to_dict(self) -> dict[str, Any]:
        return {"resource": self.resource, "type": self.type, "what": self.what,
                "hourly": round(self.hourly, 4)}


@dataclass
class Estimate:
    stack: str
    location: str | None
    items: list[Item]
    unpriced: list[dict[str, str]]

    @property
    def hourly(self) -> float:
        return sum(i.hourly for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack, "location": self.location,
            "prices": {"region": PRICE_REGION, "date": PRICE_DATE, "currency": CURRENCY,
                       "source": SOURCE},
            "items": [i.to_dict() for i in self.items], "unpriced": self.unpriced,
            "hourly": round(self.hourly, 4), "daily": round(self.hourly * 24, 2),
            "monthly": round(self.hourly * HOURS_PER_MONTH, 2),
        }


def _disk(name: str, vm_inputs: Mapping[str, Any]) -> tuple[str, float] | None:
    disk = (vm_inputs.get("storageProfile") or {}).get("osDisk") or {}
    kind = ((disk.get("managedDisk") or {}).get("storageAccountType")) or "Standard_LRS"
    size = disk.get("diskSizeGB") or 30
    if kind != "Standard_LRS":
        return None
    for limit in (32, 64, 128):
        if size <= limit:
            return f"OS disk Standard HDD {size} GB (S{ {32: 4, 64: 6, 128: 10}[limit]})", \
                PRICES[f"disk-standard-hdd-{limit}"]
    return None


def _vm(name: str, typ: str, size: str, profile: Mapping[str, Any], items: list[Item],
        unpriced: list[dict[str, str]]) -> None:
    """Price one machine's compute and OS disk into ``items`` (or say why not in
    ``unpriced``): a VM and each scale-set instance are billed alike, so one place prices
    both and they cannot drift apart."""
    if size in VM_SIZES:
        items.append(Item(name, typ, f"VM {size}", VM_SIZES[size]))
    else:
        unpriced.append({"resource": name, "type": typ, "why": f"VM size {size}"})
    disk = _disk(name, profile)
    if disk:
        items.append(Item(name, typ, *disk))
    else:
        unpriced.append({"resource": name, "type": typ, "why": "OS disk type/size"})


def _scale_set(name: str, typ: str, inputs: Mapping[str, Any]
               ) -> tuple[list[Item], list[dict[str, str]]]:
    """A scale set's instances cost like VMs of its size: per instance (``sku.capacity`` of
    them) compute, OS disk and, where the profile gives each one, a public IP."""
    sku = inputs.get("sku") or {}
    size, capacity = str(sku.get("name")), int(sku.get("capacity") or 0)
    profile = inputs.get("virtualMachineProfile") or {}
    nic_configs = (profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []
    public_ips = [ip.get("publicIPAddressConfiguration") for nic in nic_configs
                  for ip in nic.get("ipConfigurations") or []
                  if ip.get("publicIPAddressConfiguration")]
    items: list[Item] = []
    unpriced: list[dict[str, str]] = []
    for index in range(capacity):
        instance = f"{name}[{index}]"
        _vm(instance, typ, size, profile, items, unpriced)
        for config in public_ips:
            ip_sku = str(((config or {}).get("sku") or {}).get("name") or "Basic")
            key = f"public-ip-{ip_sku.lower()}"
            if key in PRICES:
                items.append(Item(instance, typ, f"public IP ({ip_sku})", PRICES[key]))
            else:
                unpriced.append({"resource": instance, "type": typ, "why": f"{ip_sku} public IP"})
    return items, unpriced


def estimate(graph: Sequence[Mapping[str, Any]], *, stack: str) -> Estimate:
    """Price every azure-native resource of ``graph`` (components and non-Azure resources,
    such as the dynamic attempts, cost nothing)."""
    items: list[Item] = []
    unpriced: list[dict[str, str]] = []
    location = None
    for entry in graph:
        typ = str(entry.get("type"))
        name = str(entry.get("name"))
        inputs = entry.get("inputs") or {}
        if not typ.startswith("azure-native:"):
            continue
        location = location or inputs.get("location")
        if typ in FREE_TYPES:
            continue
        if typ == "azure-native:compute:VirtualMachine":
            size = str((inputs.get("hardwareProfile") or {}).get("vmSize"))
            _vm(name, typ, size, inputs, items, unpriced)
        elif typ == "azure-native:compute:VirtualMachineScaleSet":
            found, missing = _scale_set(name, typ, inputs)
            items.extend(found)
            unpriced.extend(missing)
        elif typ == "azure-native:network:LoadBalancer":
            sku = str((inputs.get("sku") or {}).get("name") or "Basic")
            rules = len(inputs.get("loadBalancingRules") or [])
            if sku == "Standard" and rules == 0:
                continue  # Azure bills no hour for a Standard LB without rules (b1's)
            if sku == "Standard" and rules <= 5:
                items.append(Item(name, typ, "Standard LB (<= 5 rules)", PRICES["lb-standard"]))
            else:
                unpriced.append({"resource": name, "type": typ, "why": f"{sku} LB, {rules} rules"})
        elif typ == "azure-native:network:PrivateEndpoint":
            items.append(Item(name, typ, "Private Endpoint", PRICES["private-endpoint"]))
        elif typ == "azure-native:network:PrivateLinkService":
            if inputs.get("destinationIPAddress"):
                items.append(Item(name, typ, "PLS Direct Connect (assumed price)",
                                  PRICES["pls-direct-connect"]))
        elif typ == "azure-native:network:PublicIPAddress":
            sku = str((inputs.get("sku") or {}).get("name") or "Basic")
            key = f"public-ip-{sku.lower()}"
            if key in PRICES:
                items.append(Item(name, typ, f"public IP ({sku})", PRICES[key]))
            else:
                unpriced.append({"resource": name, "type": typ, "why": f"{sku} public IP"})
        else:
            unpriced.append({"resource": name, "type": typ, "why": "type not in the table"})
    return Estimate(stack, location, items, unpriced)


def render(est: Estimate) -> str:
    groups: dict[str, tuple[int, float]] = {}
    for item in est.items:
        count, total = groups.get(item.what, (0, 0.0))
        groups[item.what] = (count + 1, total + item.hourly)
    width = max([len(w) for w in groups] + [10])
    lines = [f"vtaplab cost {est.stack} (location {est.location or '?'}): while running",
             "", f"{'item':<{width}}  count  {CURRENCY}/h each  {CURRENCY}/h"]
    for what, (count, total) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"{what:<{width}}  {count:>5}  {total / count:>11.4f}  {total:>6.4f}")
    lines += ["", f"total: {CURRENCY} {est.hourly:.3f}/hour, {est.hourly * 24:.2f}/day, "
                  f"{est.hourly * HOURS_PER_MONTH:.2f}/month (730 h) if left running"]
    if est.unpriced:
        lines.append("unpriced (not in the total): " + "; ".join(
            f"{u['resource']} ({u['why']})" for u in est.unpriced))
    lines.append(f"prices: {SOURCE}.")
    if est.location and est.location != PRICE_REGION:
        lines.append(f"note: the stack runs in {est.location}; the table is {PRICE_REGION}'s.")
    lines.append("VMs stop billing compute at their daily auto-shutdown; public IPs, the load "
                 "balancer and the Private Endpoint bill until 'pulumi destroy' (matrix "
                 "destroys by default).")
    if any(i.type == "azure-native:compute:VirtualMachineScaleSet" for i in est.items):
        lines.append("Scale set instances have no auto-shutdown: they bill until 'pulumi "
                     "destroy'.")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m vtaplab cost",
                                description="Estimate a stack's hourly cost from its graph.")
    p.add_argument("stack", help="the STACK of a committed Pulumi.STACK.yaml")
    p.add_argument("--json", action="store_true", help="the estimate as JSON")
    p.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    root = (args.root or PROJECT_ROOT).resolve()
    known = mocks.stack_names(root)
    if args.stack not in known:
        print(f"vtaplab cost: stack {args.stack!r} has no Pulumi.{args.stack}.yaml; accepted: "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    try:
        graph = mocks.build_graph(args.stack, root=root)
    except mocks.GraphError as exc:
        print(f"vtaplab cost: {exc}", file=sys.stderr)
        return 2
    est = estimate(graph, stack=args.stack)
    if args.json:
        print(json.dumps(est.to_dict(), indent=2))
    else:
        sys.stdout.write(render(est))
    return 0
