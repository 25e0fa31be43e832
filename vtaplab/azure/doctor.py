"""``python -m vtaplab doctor STACK``: is this subscription ready for the stack?

Reads the subscription over ARM REST (GETs only, nothing is changed) and says, per check,
``ok`` / ``missing`` / ``unknown`` with the exact fix. What the stack needs comes from its own
resource graph, the program run under Pulumi's mocks (``vtaplab.preflight.graph``): its VMs'
sizes and regions, its scale sets' size, instance count (``sku.capacity``), zones and upgrade
policy, whether it has auto-shutdown schedules, a Direct Connect PLS, vTAPs.

Checks and the facts they rest on:

- resource provider ``Microsoft.DevTestLab`` registered: the VMs' auto-shutdown schedules
  are ``Microsoft.DevTestLab/schedules``; ARM answers ``MissingSubscriptionRegistration`` for
  an unregistered namespace and azure-native does not register providers (DESIGN.md, "Facts";
  Providers - Get, Microsoft.Resources 2021-04-01 ``registrationState``);
- feature ``Microsoft.Network/AllowPrivateLinkserviceUDR`` registered, for a Direct Connect
  PLS (scenario a; Features - Get, Microsoft.Features 2021-07-01 ``properties.state``); after a
  feature registers, the provider must be registered again for it to take effect;
- regional vCPU quota (usage ``cores``) and each VM family's quota (the SKU's ``family``,
  e.g. ``standardBSFamily``) against the vCPUs the stack's VMs and scale set instances need
  (each instance counts as one VM of the set's ``sku.name``; Usage - List, Microsoft.Compute
  2024-07-01; Resource Skus - List 2021-07-01 ``capabilities.vCPUs``);
- for a Flexible scale set that upgrades in rolling batches (``upgradePolicy.mode`` Rolling, or
  automatic OS image upgrades on): feature ``facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE``
  (documented as required: ``facts.PROXY_TIER_FACTS`` 'flex-rolling-upgrade-preview') and
  ``facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE`` (a named assumption, 'flex-image-upgrade-feature':
  its line says so), read as the Direct Connect feature is;
- a scale set that lists zones in a region with zones (``facts.ZONE_REGIONS``): its size is
  offered in each of them (Resource Skus - List 2021-07-01: ``locationInfo[].zones`` of the
  region, minus the ``restrictionInfo.zones`` of a restriction of type ``Zone``);
- the subscription's existing vTAPs plus the stack's against the preview's ~10 per
  subscription (Virtual Network Taps - List All, Microsoft.Network 2024-05-01).

Named assumption: the regional total's usage is named ``cores`` ("Total Regional vCPUs", as
``az vm list-usage`` shows it; the spec's example uses placeholder names). If ARM answers
without it, that check says ``unknown``, never ``ok``. A check that cannot be read (no
permission, network) is ``unknown`` with the reason, never ``ok``.

Exit status: 0 all ok, 1 something missing, 3 unknown only, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from vtaplab import PROJECT_ROOT, facts
from vtaplab.azure.arm import COMPUTE_API, NETWORK_API, ArmClient, ArmError

RESOURCES_API = "2021-04-01"
FEATURES_API = "2021-07-01"
SKUS_API = "2021-07-01"
DEVTESTLAB = "Microsoft.DevTestLab"
REGIONAL_VCPUS = "cores"  # the usage name of "Total Regional vCPUs"
# Pages followed per list (ARM's nextLink); a bound, not an expectation.
MAX_PAGES = 50

OK, MISSING, UNKNOWN = "ok", "missing", "unknown"

_VM_TYPE = "azure-native:compute:VirtualMachine"
_SCHEDULE_TYPES = ("azure-native:devtestlab:GlobalSchedule", "azure-native:devtestlab:Schedule")
_PLS_TYPE = "azure-native:network:PrivateLinkService"
_VTAP_TYPE = "azure-native:network:VirtualNetworkTap"
_VMSS_TYPE = "azure-native:compute:VirtualMachineScaleSet"

# Features a Flexible scale set that upgrades in rolling batches needs, each with the fact
# (facts.PROXY_TIER_FACTS) that says why: the check's line cites it, and says when it is only
# assumed.
FLEX_UPGRADE_FEATURES: tuple[tuple[str, str], ...] = (
    (facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE, "flex-rolling-upgrade-preview"),
    (facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE, "flex-image-upgrade-feature"),
)
# The config keys a scale set's size and region come from: the lab's only scale set is the
# proxy tier (components/proxy_tier.py).
_SCALE_SET_FIX = "choose another proxyVmSize or region (vtaplab:proxyVmSize, vtaplab:location)"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str          # ok | missing | unknown
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class ScaleSet:
    """A scale set of the stack: what doctor checks beyond its instances' vCPUs."""

    name: str
    region: str
    size: str                     # sku.name
    capacity: int | None          # sku.capacity; None when the graph has no whole number
    zones: tuple[str, ...] = ()
    flexible: bool = False        # orchestrationMode Flexible
    rolling: bool = False         # upgradePolicy.mode Rolling, or automatic OS upgrades on


@dataclass(frozen=True)
class Needs:
    """What the stack asks of the subscription, read from its graph."""

    vm_sizes: Mapping[tuple[str, str], int]   # (region, size) -> VMs + scale set instances
    schedules: int = 0
    direct_connect: bool = False
    vtaps: int = 0
    regions: tuple[str, ...] = field(default_factory=tuple)
    scale_sets: tuple[ScaleSet, ...] = ()


def scale_set_from_inputs(name: str, inputs: Mapping[str, Any]) -> ScaleSet:
    """A ``VirtualMachineScaleSet``'s graph inputs (azure-native wire names) as a ScaleSet."""
    sku = inputs.get("sku") or {}
    capacity = sku.get("capacity")
    policy = inputs.get("upgradePolicy") or {}
    auto_os = (policy.get("automaticOSUpgradePolicy") or {}).get("enableAutomaticOSUpgrade")
    return ScaleSet(
        name=name,
        region=str(inputs.get("location") or "").lower(),
        size=str(sku.get("name") or ""),
        # bool is an int too: a capacity of True is no count.
        capacity=capacity if isinstance(capacity, int) and not isinstance(capacity, bool)
        and capacity >= 0 else None,
        zones=tuple(str(z) for z in inputs.get("zones") or ()),
        flexible=str(inputs.get("orchestrationMode") or "").lower() == "flexible",
        rolling=str(policy.get("mode") or "").lower() == "rolling" or auto_os is True,
    )


def needs_from_graph(graph: Sequence[Mapping[str, Any]]) -> Needs:
    """Count the stack's VMs and scale set instances per region and size, and what else it
    uses."""
    sizes: Counter[tuple[str, str]] = Counter()
    schedules = vtaps = 0
    direct = False
    scale_sets: list[ScaleSet] = []
    for res in graph:
        inputs = res.get("inputs") or {}
        typ = res.get("type")
        if typ == _VM_TYPE:
            size = str((inputs.get("hardwareProfile") or {}).get("vmSize") or "")
            sizes[(str(inputs.get("location") or "").lower(), size)] += 1
        elif typ == _VMSS_TYPE:
            scale_set = scale_set_from_inputs(str(res.get("name") or ""), inputs)
            scale_sets.append(scale_set)
            # Each instance is a VM of the set's size: it counts against the same quotas.
            sizes[(scale_set.region, scale_set.size)] += scale_set.capacity or 0
        elif typ in _SCHEDULE_TYPES:
            schedules += 1
        elif typ == _PLS_TYPE and inputs.get("destinationIPAddress"):
            direct = True
        elif typ == _VTAP_TYPE:
            vtaps += 1
    regions = tuple(sorted({region for region, _ in sizes}))
    return Needs(dict(sizes), schedules, direct, vtaps, regions, tuple(scale_sets))


# --- the checks ---------------------------------------------------------------------------

def check_provider(client: ArmClient, sub: str, namespace: str, why: str) -> Check:
    name = f"provider {namespace}"
    fix = f"az provider register --namespace {namespace}"
    try:
        body = client.get(f"/subscriptions/{sub}/providers/{namespace}",
                          api_version=RESOURCES_API).body or {}
    except ArmError as exc:
        return Check(name, UNKNOWN, _reason(exc), fix)
    state = str(body.get("registrationState") or "")
    if state.lower() == "registered":
        return Check(name, OK, f"Registered ({why})")
    if state.lower() == "registering":
        return Check(name, MISSING, f"Registering, not done yet ({why})",
                     f"wait, then check: az provider show --namespace {namespace} "
                     "--query registrationState")
    return Check(name, MISSING, f"{state or 'no registrationState'} ({why})", fix)


def check_feature(client: ArmClient, sub: str, feature: str, why: str) -> Check:
    namespace, _, short = feature.partition("/")
    name = f"feature {feature}"
    fix = (f"az feature register --namespace {namespace} --name {short} && "
           f"az provider register --namespace {namespace}")
    try:
        body = client.get(f"/subscriptions/{sub}/providers/Microsoft.Features/providers/"
                          f"{namespace}/features/{short}", api_version=FEATURES_API).body or {}
    except ArmError as exc:
        return Check(name, UNKNOWN, _reason(exc), fix)
    state = str((body.get("properties") or {}).get("state") or "")
    if state.lower() == "registered":
        return Check(name, OK, f"Registered ({why})")
    if state.lower() in ("registering", "pending"):
        return Check(name, MISSING, f"{state}: awaiting approval or registration ({why})",
                     f"wait until 'az feature show --namespace {namespace} --name {short}' "
                     f"says Registered, then: az provider register --namespace {namespace}")
    return Check(name, MISSING, f"{state or 'no state'} ({why})", fix)


def check_scale_set_features(client: ArmClient, sub: str, needs: Needs) -> list[Check]:
    """The features a Flexible scale set that upgrades in rolling batches needs, once each."""
    rolling = [s.name for s in needs.scale_sets if s.flexible and s.rolling]
    if not rolling:
        return []
    what = (f"Flexible scale set {', '.join(rolling)} upgrades in rolling batches, by policy "
            "or automatic OS image upgrades")
    return [check_feature(client, sub, feature, f"{what}; {_fact_basis(fact_id)}")
            for feature, fact_id in FLEX_UPGRADE_FEATURES]


def check_quota(client: ArmClient, sub: str, needs: Needs) -> list[Check]:
    """Regional and per-family vCPUs, per region the stack's VMs and scale sets are in; and
    the zones a scale set spreads over offer its size."""
    checks: list[Check] = []
    for region in needs.regions:
        wanted = {size: n for (r, size), n in needs.vm_sizes.items() if r == region}
        try:
            skus = {s.get("name"): s for s in _list(
                client, f"/subscriptions/{sub}/providers/Microsoft.Compute/skus",
                SKUS_API, query="$filter=" + quote(f"location eq '{region}'"))
                if s.get("resourceType") == "virtualMachines"}
            usages = {(u.get("name") or {}).get("value"): u for u in _list(
                client, f"/subscriptions/{sub}/providers/Microsoft.Compute/locations/"
                f"{region}/usages", COMPUTE_API)}
        except ArmError as exc:
            checks.append(Check(f"quota {region}", UNKNOWN, _reason(exc),
                                f"az vm list-usage --location {region} -o table"))
            continue
        total = 0
        per_family: Counter[str] = Counter()
        unknown_sizes = []
        uncounted = [s for s in needs.scale_sets if s.region == region and s.capacity is None]
        for scale_set in uncounted:
            checks.append(Check(f"scale set {scale_set.name} in {region}", UNKNOWN,
                                "no whole-number sku.capacity in the graph: its instances "
                                "are not counted", "set vtaplab:proxyCount"))
        for size, count in sorted(wanted.items()):
            sku = skus.get(size)
            vcpus = _capability(sku, "vCPUs") if sku else None
            if sku is None or vcpus is None:
                unknown_sizes.append(size)
                continue
            restricted = _restriction(sku, region)
            if restricted:
                checks.append(Check(f"size {size} in {region}", MISSING, restricted,
                                    "choose another size (vtaplab:sourceVmSize, proxyVmSize, "
                                    "collectorVmSize) or region"))
            total += vcpus * count
            per_family[str(sku.get("family") or "")] += vcpus * count
        for size in unknown_sizes:
            checks.append(Check(f"size {size} in {region}", UNKNOWN,
                                "not in the region's SKU list (unknown size, or not offered "
                                "here)", f"az vm list-skus --location {region} --size {size}"))
        partial = len(unknown_sizes) > 0 or len(uncounted) > 0
        checks.append(_quota_check(region, REGIONAL_VCPUS, "Total Regional vCPUs", total,
                                   usages, partial))
        for family, need in sorted(per_family.items()):
            checks.append(_quota_check(region, family, family, need, usages, partial))
        checks += _zone_checks(region, skus, needs.scale_sets)
    return checks


def check_vtaps(client: ArmClient, sub: str, needs: Needs) -> Check:
    limit = facts.MAX_VTAPS_PER_SUBSCRIPTION
    name = "vTAPs in the subscription"
    try:
        existing = _list(client, f"/subscriptions/{sub}/providers/Microsoft.Network/"
                         "virtualNetworkTaps", NETWORK_API)
    except ArmError as exc:
        return Check(name, UNKNOWN, _reason(exc), "az network vnet tap list -o table")
    total = len(existing) + needs.vtaps
    detail = (f"{len(existing)} existing + {needs.vtaps} in this stack = {total}; the preview "
              f"allows about {limit} per subscription")
    if total <= limit:
        return Check(name, OK, detail)
    return Check(name, MISSING, detail,
                 "delete vTAPs you no longer need (az network vnet tap list -o table; "
                 "az network vnet tap delete -g RG -n NAME), or run fewer scenarios at once")


def run_checks(client: ArmClient, sub: str, needs: Needs) -> list[Check]:
    checks: list[Check] = []
    if needs.schedules:
        checks.append(check_provider(client, sub, DEVTESTLAB,
                                     f"{needs.schedules} auto-shutdown schedule(s)"))
    if needs.direct_connect:
        checks.append(check_feature(client, sub, facts.PLS_DIRECT_CONNECT_FEATURE,
                                    "Private Link Service Direct Connect"))
    checks += check_scale_set_features(client, sub, needs)
    checks += check_quota(client, sub, needs)
    if needs.vtaps:
        checks.append(check_vtaps(client, sub, needs))
    return checks


def exit_status(checks: Sequence[Check]) -> int:
    statuses = {c.status for c in checks}
    return 1 if MISSING in statuses else 3 if UNKNOWN in statuses else 0


def render(stack: str, sub: str, checks: Sequence[Check]) -> str:
    lines = [f"doctor {stack}" + (f": subscription {sub}" if sub else "")]
    for c in checks:
        lines.append(f"  {c.status:<8} {c.name}: {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"           fix: {c.fix}")
    counts = Counter(c.status for c in checks)
    lines.append(f"  {counts[OK]} ok, {counts[MISSING]} missing, {counts[UNKNOWN]} unknown")
    return "\n".join(lines)


# --- internals ------------------------------------------------------------------------------

def _quota_check(region: str, usage_name: str, label: str, need: int,
                 usages: Mapping[str, Mapping[str, Any]], partial: bool) -> Check:
    usage = usages.get(usage_name)
    name = f"quota {region} {_label(usage or {}, label)}"
    if usage is None:
        return Check(name, UNKNOWN, f"no usage {usage_name!r} in the region's usage list",
                     f"az vm list-usage --location {region} -o table")
    limit, used = int(usage.get("limit") or 0), int(usage.get("currentValue") or 0)
    free = limit - used
    detail = f"need {need} vCPUs, {used} used of {limit} ({free} free)"
    if partial:
        detail += "; sizes not found above are not counted"
    if need <= free:
        return Check(name, UNKNOWN if partial else OK, detail,
                     "" if not partial else f"az vm list-usage --location {region} -o table")
    return Check(name, MISSING, detail,
                 f"request a quota increase for '{_label(usage, usage_name)}' in {region} "
                 f"to at least {used + need} (portal: Quotas), or use smaller "
                 "sizes (vtaplab:sourceVmSize, proxyVmSize, collectorVmSize) or fewer scenarios")


def _zone_checks(region: str, skus: Mapping[str, Mapping[str, Any]],
                 scale_sets: Sequence[ScaleSet]) -> list[Check]:
    """Per scale set in ``region`` that lists zones: is its size offered in each of them?
    Only where the region has zones (elsewhere the set is regional); a size missing from the
    SKU list is already reported by the quota check."""
    checks: list[Check] = []
    if region not in facts.ZONE_REGIONS:
        return checks
    for scale_set in scale_sets:
        sku = skus.get(scale_set.size)
        if scale_set.region != region or not scale_set.zones or sku is None:
            continue
        name = f"size {scale_set.size} in {region} zones {', '.join(scale_set.zones)}"
        lacking = _zones_lacking(sku, region, scale_set.zones)
        spread = f"scale set {scale_set.name} spreads over zones {', '.join(scale_set.zones)}"
        if not lacking:
            checks.append(Check(name, OK, f"offered in each ({spread})"))
            continue
        detail = "; ".join(f"zone {zone}: {why}" for zone, why in lacking.items())
        checks.append(Check(name, MISSING, f"{detail} ({spread})",
                            f"{_SCALE_SET_FIX}; see az vm list-skus --location {region} "
                            f"--size {scale_set.size} --zone"))
    return checks


def _zones_lacking(sku: Mapping[str, Any], region: str,
                   zones: Sequence[str]) -> dict[str, str]:
    """zone -> why the size can't be placed there: not in the region's ``locationInfo[].zones``,
    or named by a restriction of type ``Zone`` (``restrictionInfo.zones``; its
    ``restrictionInfo.locations``, or ``values``, name the region) for this subscription."""
    offered: set[str] = set()
    for info in sku.get("locationInfo") or []:
        if _region_name(info.get("location")) == region:
            offered |= {str(z) for z in info.get("zones") or []}
    restricted: dict[str, str] = {}
    for r in sku.get("restrictions") or []:
        if r.get("type") != "Zone":
            continue
        info = r.get("restrictionInfo") or {}
        where = [_region_name(v) for v in info.get("locations") or r.get("values") or []]
        if where and region not in where:
            continue
        for zone in info.get("zones") or []:
            restricted[str(zone)] = f"restricted: {r.get('reasonCode') or 'not available'}"
    lacking: dict[str, str] = {}
    for zone in zones:
        if zone in restricted:
            lacking[zone] = restricted[zone]
        elif zone not in offered:
            lacking[zone] = "not offered (not in the SKU's locationInfo zones)"
    return lacking


def _region_name(value: Any) -> str:
    """ARM writes a region "uksouth" or "UK South": compare them one way."""
    return str(value or "").replace(" ", "").lower()


def _fact_basis(fact_id: str) -> str:
    """Why a check is asked, from the fact it rests on: documented (its source, up to the
    first parenthesis) or assumed (said so, first)."""
    fact = next(f for f in facts.PROXY_TIER_FACTS if f.id == fact_id)
    source = fact.source.split(" (")[0].removeprefix("assumption: ")
    if fact.assumption:
        return f"ASSUMED, not documented (fact {fact_id}): {source}"
    return f"documented as required (fact {fact_id}): {source}"


def _label(usage: Mapping[str, Any], fallback: str) -> str:
    return str((usage.get("name") or {}).get("localizedValue") or fallback)


def _capability(sku: Mapping[str, Any], name: str) -> int | None:
    for cap in sku.get("capabilities") or []:
        if cap.get("name") == name:
            try:
                return int(float(cap.get("value")))
            except (TypeError, ValueError):
                return None
    return None


def _restriction(sku: Mapping[str, Any], region: str) -> str:
    for r in sku.get("restrictions") or []:
        values = [str(v).lower() for v in r.get("values") or []]
        if r.get("type") == "Location" and (not values or region in values):
            return f"restricted: {r.get('reasonCode') or 'not available'}"
    return ""


def _list(client: ArmClient, path: str, api_version: str, *, query: str = "") -> list[Any]:
    """Every item of an ARM list, following ``nextLink`` (bounded by MAX_PAGES)."""
    items: list[Any] = []
    resp = client.get(f"{path}?{query}" if query else path, api_version=api_version)
    for _ in range(MAX_PAGES):
        body = resp.body if isinstance(resp.body, dict) else {}
        items += body.get("value") or []
        next_link = body.get("nextLink")
        if not next_link:
            return items
        resp = client.get_next(str(next_link))
    raise ArmError("TooManyPages", f"{path}: more than {MAX_PAGES} pages", 0)


def _reason(exc: ArmError) -> str:
    if exc.code == "AuthenticationFailed":
        raise exc  # every other check would fail the same way: one line, from main
    if exc.status:
        return f"could not read: {exc.code} (HTTP {exc.status}): {exc.message[:160]}"
    return f"could not read: {exc.code}: {exc.message[:200]}"


def subscription_id(stack: str, root: Path, given: str | None,
                    environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(subscription id, where it came from): --subscription, $ARM_SUBSCRIPTION_ID, the stack
    file's ``azure-native:subscriptionId``, then the Azure CLI's default subscription; ("", "")
    when none is found."""
    environ = os.environ if environ is None else environ
    if given:
        return given, "--subscription"
    if environ.get("ARM_SUBSCRIPTION_ID"):
        return environ["ARM_SUBSCRIPTION_ID"], "$ARM_SUBSCRIPTION_ID"
    path = root / f"Pulumi.{stack}.yaml"
    if path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        value = (data.get("config") or {}).get("azure-native:subscriptionId")
        if isinstance(value, str) and value:
            return value, f"{path.name} azure-native:subscriptionId"
    # As azure-native does with the Azure CLI credential: the CLI's default subscription.
    az = shutil.which("az")
    if az:
        try:
            done = subprocess.run([az, "account", "show", "--query", "id", "-o", "tsv"],
                                  capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "", ""
        value = done.stdout.strip()
        if done.returncode == 0 and re.fullmatch(r"[0-9a-fA-F-]{36}", value):
            return value, "az account show"
    return "", ""


def diagnose(stack: str, *, client: ArmClient, subscription: str,
             graph: Sequence[Mapping[str, Any]] | None = None,
             root: Path = PROJECT_ROOT) -> list[Check]:
    """The checks for ``stack`` (its graph built under mocks unless given)."""
    if graph is None:
        from vtaplab.preflight.mocks import build_graph

        graph = build_graph(stack, root=root)
    return run_checks(client, subscription, needs_from_graph(graph))


class OneLineParser(argparse.ArgumentParser):
    """A bad argument is one line naming the command (the last word of ``prog``), not
    argparse's usage block: the project's rule for bad input. doctor and matrix share it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog.split()[-1]}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m vtaplab doctor",
                description="Is this Azure subscription ready for STACK? Reads (never "
                            "changes) the subscription over ARM: resource provider "
                            "Microsoft.DevTestLab, feature Microsoft.Network/"
                            "AllowPrivateLinkserviceUDR (Direct Connect), features "
                            f"{facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE} and "
                            f"{facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE} (assumed) for a Flexible "
                            "scale set with rolling upgrades, regional and VM-family vCPU "
                            "quota for the stack's VMs and scale set instances, the scale "
                            "set's size in each of its zones, existing vTAPs against "
                            "the preview's ~10 per subscription. Each check: ok / missing / "
                            "unknown, with the fix. Exit 0 ok, 1 missing, 3 unknown, 2 bad "
                            "input. Credentials as azure-native's (ARM_* variables, az login).")
    p.add_argument("stack", help="a committed stack (Pulumi.<stack>.yaml)")
    p.add_argument("--subscription", default=None,
                   help="subscription id (default: $ARM_SUBSCRIPTION_ID, then the stack "
                        "file's azure-native:subscriptionId)")
    p.add_argument("--graph", type=Path, default=None,
                   help="a graph file from 'vtaplab graph STACK --json' instead of building it")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    return p


def main(argv: list[str], *, client: ArmClient | None = None,
         root: Path = PROJECT_ROOT) -> int:
    args = _parser().parse_args(argv)
    from vtaplab.preflight.mocks import GraphError, stack_names

    if args.graph is None and args.stack not in stack_names(root):
        print(f"doctor: stack {args.stack!r} is not committed; accepted: "
              f"{', '.join(stack_names(root))}", file=sys.stderr)
        return 2
    sub, source = subscription_id(args.stack, root, args.subscription)
    if not sub:
        print("doctor: no subscription id; accepted: --subscription ID, $ARM_SUBSCRIPTION_ID, "
              "azure-native:subscriptionId in the stack file, or 'az login'", file=sys.stderr)
        return 2
    graph = None
    if args.graph is not None:
        try:
            graph = json.loads(args.graph.read_text(encoding="utf-8"))
            if not isinstance(graph, list) or not all(isinstance(r, dict) for r in graph):
                raise ValueError("not a list of resources")
        except (OSError, ValueError) as exc:
            print(f"doctor: --graph {args.graph}: {exc}; accepted: the output of "
                  "'python -m vtaplab graph STACK --json'", file=sys.stderr)
            return 2
    try:
        checks = diagnose(args.stack, client=client or ArmClient(), subscription=sub,
                          graph=graph, root=root)
    except GraphError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 2
    except ArmError as exc:  # authentication: one line naming the credential tried
        print(f"doctor: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(render(args.stack, f"{sub} (from {source})", checks))
    return exit_status(checks)
