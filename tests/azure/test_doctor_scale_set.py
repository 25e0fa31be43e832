"""``vtaplab doctor`` on b4's proxy tier, a Flexible scale set: its instances in the vCPU quota,
the rolling-upgrade features (one documented, one assumed) and its size in each of its zones,
against recorded ARM answers of the spec's shapes (tests/fixtures/arm/doctor) served by the
loopback fake ARM, for b4's real graph under mocks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.fake_arm import FakeArm, fixture, running

from vtaplab import facts
from vtaplab.azure import doctor

SUB = "00000000-0000-0000-0000-000000000000"
PROVIDER = f"/subscriptions/{SUB}/providers/Microsoft.DevTestLab"
SKUS = f"/subscriptions/{SUB}/providers/Microsoft.Compute/skus"
VTAPS = f"/subscriptions/{SUB}/providers/Microsoft.Network/virtualNetworkTaps"
VMSS = "azure-native:compute:VirtualMachineScaleSet"
# The recorded subscription's regional and BS-family limit (usages-uksouth.json).
LIMIT = 10
B2S_VCPUS = 2  # skus-uksouth.json's capabilities.vCPUs of Standard_B2s


def feature_path(feature: str) -> str:
    namespace, _, short = feature.partition("/")
    return (f"/subscriptions/{SUB}/providers/Microsoft.Features/providers/{namespace}/"
            f"features/{short}")


ROLLING = feature_path(facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE)
IMAGE = feature_path(facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE)
FEATURE_FIXTURES = {
    facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE: "feature-vmss-flex-rolling-upgrade.json",
    facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE: "feature-image-reference-upgrade.json"}


def usages(region: str) -> str:
    return f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/{region}/usages"


def load(name: str) -> Any:
    return fixture(f"doctor/{name}")


@pytest.fixture(scope="module")
def b4_graph() -> list[dict[str, Any]]:
    from vtaplab.preflight.mocks import build_graph

    return build_graph("b4")


@pytest.fixture
def graph(b4_graph) -> list[dict[str, Any]]:
    """A copy each test may change."""
    return copy.deepcopy(b4_graph)


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    yield from running()


def scale_set(graph: list[dict[str, Any]]) -> dict[str, Any]:
    (res,) = [r for r in graph if r["type"] == VMSS]
    return res["inputs"]


def serve(arm: FakeArm, *, rolling: str = "NotRegistered", image: str = "NotRegistered",
          cores_used: int = 0, skus: Any = None) -> None:
    arm.add("GET", PROVIDER, 200, load("provider-devtestlab.json"))
    for feature, state in ((facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE, rolling),
                           (facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE, image)):
        body = load(FEATURE_FIXTURES[feature])
        body["properties"]["state"] = state
        arm.add("GET", feature_path(feature), 200, body)
    arm.add("GET", SKUS, 200, skus if skus is not None else load("skus-uksouth.json"))
    use = load("usages-uksouth.json")
    for u in use["value"]:
        u["currentValue"] = cores_used if u["name"]["value"] in ("cores",
                                                                 "standardBSFamily") else 0
    arm.add("GET", usages("uksouth"), 200, use)
    arm.add("GET", VTAPS, 200, load("vtaps-page1.json"))
    arm.add("GET", VTAPS, 200, load("vtaps-page2.json"))


def run(arm: FakeArm, graph: list[dict[str, Any]]) -> dict[str, doctor.Check]:
    checks = doctor.run_checks(arm.client(), SUB, doctor.needs_from_graph(graph))
    return {c.name: c for c in checks}


# --- what b4 needs ---------------------------------------------------------------------------

def test_b4s_needs_count_the_scale_sets_instances_as_vms(graph):
    needs = doctor.needs_from_graph(graph)
    vms = sum(1 for r in graph if r["type"] == "azure-native:compute:VirtualMachine")
    capacity = scale_set(graph)["sku"]["capacity"]
    assert (vms, capacity) == (3, 2)  # source, client, collector; proxyCount's default
    assert needs.vm_sizes == {("uksouth", "Standard_B2s"): vms + capacity}
    (tier,) = needs.scale_sets
    assert (tier.region, tier.size, tier.capacity, tier.zones, tier.flexible, tier.rolling) == (
        "uksouth", "Standard_B2s", 2, ("1", "2", "3"), True, True)


@pytest.mark.parametrize("capacity, cores_used, status", [
    (2, 0, doctor.OK),        # 5 x 2 = 10 of 10 free
    (3, 0, doctor.MISSING),   # 6 x 2 = 12 > 10: the third instance tips it
    (2, 1, doctor.MISSING),   # 10 > 9 free
])
def test_quota_counts_the_instances(arm, graph, capacity, cores_used, status):
    scale_set(graph)["sku"]["capacity"] = capacity
    serve(arm, cores_used=cores_used)
    checks = run(arm, graph)
    need = (3 + capacity) * B2S_VCPUS
    for name in ("quota uksouth Total Regional vCPUs", "quota uksouth Standard BS Family vCPUs"):
        assert checks[name].detail.startswith(f"need {need} vCPUs, {cores_used} used of {LIMIT}")
        assert checks[name].status == status
    if status == doctor.MISSING:
        assert f"to at least {cores_used + need}" in checks[
            "quota uksouth Total Regional vCPUs"].fix


def test_a_scale_set_without_a_count_is_unknown_never_ok(arm, graph):
    del scale_set(graph)["sku"]["capacity"]
    serve(arm)
    checks = run(arm, graph)
    assert checks["scale set b4-tier-vmss in uksouth"].status == doctor.UNKNOWN
    regional = checks["quota uksouth Total Regional vCPUs"]
    assert regional.status == doctor.UNKNOWN and regional.detail.startswith("need 6 vCPUs")


# --- the rolling-upgrade features -------------------------------------------------------------

def test_unregistered_features_are_missing_with_the_register_commands(arm, graph):
    serve(arm)
    checks = run(arm, graph)
    rolling = checks[f"feature {facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE}"]
    image = checks[f"feature {facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE}"]
    assert rolling.status == image.status == doctor.MISSING
    assert rolling.fix == ("az feature register --namespace Microsoft.Compute --name "
                           "VMSSFlexRollingUpgrade && az provider register --namespace "
                           "Microsoft.Compute")
    assert image.fix == ("az feature register --namespace Microsoft.Compute --name "
                         "ImageReferenceUpgradeForVmoVMs && az provider register --namespace "
                         "Microsoft.Compute")
    # The documented one says so; the assumed one says it is assumed, and neither lies.
    assert "documented as required (fact flex-rolling-upgrade-preview)" in rolling.detail
    assert "ASSUMED" not in rolling.detail
    assert "ASSUMED, not documented (fact flex-image-upgrade-feature)" in image.detail
    assert "b4-tier-vmss" in rolling.detail and "b4-tier-vmss" in image.detail
    for path in (ROLLING, IMAGE):
        assert [r["query"] for r in arm.requests if r["path"] == path] == [
            "api-version=2021-07-01"]


def test_registered_features_are_ok_and_pending_waits(arm, graph):
    serve(arm, rolling="Registered", image="Pending")
    checks = run(arm, graph)
    assert checks[f"feature {facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE}"].status == doctor.OK
    pending = checks[f"feature {facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE}"]
    assert pending.status == doctor.MISSING and pending.fix.startswith("wait until")


def test_the_spec_examples_lower_case_state_counts_as_registered(arm, graph):
    # getFeature.json (Microsoft.Features) writes "registered": the check compares one way.
    serve(arm, rolling="registered", image="registered")
    checks = run(arm, graph)
    assert {checks[f"feature {f}"].status for f in FEATURE_FIXTURES} == {doctor.OK}


def _manual_uniform(inputs: dict[str, Any]) -> None:
    inputs["orchestrationMode"] = "Uniform"


def _manual_flexible(inputs: dict[str, Any]) -> None:
    inputs["upgradePolicy"] = {"mode": "Manual"}


def _auto_os_only(inputs: dict[str, Any]) -> None:
    inputs["upgradePolicy"]["mode"] = "Manual"  # automatic OS upgrades stay on


@pytest.mark.parametrize("change, asked", [
    (_manual_uniform, False),   # rolling upgrades on Uniform orchestration need no feature
    (_manual_flexible, False),  # nothing rolls
    (_auto_os_only, True),      # automatic OS image upgrades roll by themselves
])
def test_the_features_are_asked_only_for_a_rolling_flexible_set(arm, graph, change, asked):
    change(scale_set(graph))
    serve(arm)
    checks = run(arm, graph)
    for feature in FEATURE_FIXTURES:
        assert (f"feature {feature}" in checks) is asked
    assert (("GET", ROLLING) in arm.calls()) is asked


# --- the size in each zone -------------------------------------------------------------------

ZONES = "size Standard_B2s in uksouth zones 1, 2, 3"


def test_a_size_offered_in_every_zone_is_ok(arm, graph):
    serve(arm)
    check = run(arm, graph)[ZONES]
    assert check.status == doctor.OK and "b4-tier-vmss spreads over zones 1, 2, 3" in check.detail


def test_a_zone_restriction_is_missing_with_the_fix(arm, graph):
    serve(arm, skus=load("skus-uksouth-zone-restricted.json"))
    checks = run(arm, graph)
    check = checks[ZONES]
    assert check.status == doctor.MISSING
    assert check.detail.startswith("zone 3: restricted: NotAvailableForSubscription")
    assert "zone 1" not in check.detail and "zone 2" not in check.detail
    assert check.fix.startswith("choose another proxyVmSize or region")
    # A Zone restriction is not a Location one: the size is still usable in the region.
    assert "size Standard_B2s in uksouth" not in checks


def test_a_zone_missing_from_location_info_is_missing(arm, graph):
    skus = load("skus-uksouth.json")
    b2s = next(s for s in skus["value"] if s["name"] == "Standard_B2s")
    b2s["locationInfo"][0]["zones"] = ["1", "3"]
    serve(arm, skus=skus)
    check = run(arm, graph)[ZONES]
    assert check.status == doctor.MISSING
    assert check.detail.startswith("zone 2: not offered")


def test_a_zone_restriction_of_another_region_does_not_count(arm, graph):
    skus = load("skus-uksouth-zone-restricted.json")
    info = skus["value"][0]["restrictions"][0]["restrictionInfo"]
    info["locations"] = ["ukwest"]
    serve(arm, skus=skus)
    assert run(arm, graph)[ZONES].status == doctor.OK


def test_a_region_without_zones_has_no_zone_check(arm, graph):
    region = "westcentralus"
    assert region in facts.VTAP_REGIONS and region not in facts.ZONE_REGIONS
    inputs = scale_set(graph)
    inputs["location"] = region
    serve(arm)
    skus = load("skus-uksouth.json")
    for sku in skus["value"]:
        sku["locations"] = [region]
        for info in sku.get("locationInfo") or []:
            info["location"] = region
    arm.routes[("GET", SKUS)] = [(200, skus, {})]
    arm.add("GET", usages(region), 200, load("usages-uksouth.json"))
    checks = run(arm, [r for r in graph if r["type"] == VMSS])
    assert f"quota {region} Total Regional vCPUs" in checks
    assert not [name for name in checks if " zones " in name]


# --- the command, and the recorded shapes ------------------------------------------------------

def test_doctor_b4_names_every_new_check_and_exits_1(arm, capsys):
    serve(arm)
    assert doctor.main(["b4", "--subscription", SUB], client=arm.client()) == 1
    out = capsys.readouterr().out
    assert f"missing  feature {facts.VMSS_FLEX_ROLLING_UPGRADE_FEATURE}" in out
    assert (f"missing  feature {facts.VMSS_FLEX_IMAGE_UPGRADE_FEATURE}: NotRegistered "
            "(Flexible scale set b4-tier-vmss") in out
    assert "ASSUMED, not documented" in out
    assert "ok       quota uksouth Total Regional vCPUs: need 10 vCPUs, 0 used of 10" in out
    assert f"ok       {ZONES}" in out


def test_the_recorded_answers_keep_the_spec_shapes():
    # FeatureResult (Microsoft.Features 2021-07-01 features.json): name, properties.state, id,
    # type; ResourceSkuRestrictions / ResourceSkuRestrictionInfo / ResourceSkuLocationInfo
    # (Compute skus.json 2021-07-01).
    for feature, name in FEATURE_FIXTURES.items():
        body = load(name)
        assert set(body) == {"name", "properties", "id", "type"}
        assert set(body["properties"]) == {"state"} and body["name"] == feature
        assert body["id"].endswith(feature_path(feature).split(SUB)[1])
    sku = load("skus-uksouth-zone-restricted.json")["value"][0]
    (restriction,) = sku["restrictions"]
    assert set(restriction) <= {"type", "values", "restrictionInfo", "reasonCode"}
    assert restriction["type"] in ("Location", "Zone")
    assert restriction["reasonCode"] in ("QuotaId", "NotAvailableForSubscription")
    assert set(restriction["restrictionInfo"]) <= {"locations", "zones"}
    for info in sku["locationInfo"]:
        assert set(info) <= {"location", "zones", "zoneDetails", "extendedLocations", "type"}


def test_the_features_rest_on_the_tier_facts():
    by_id = {f.id: f for f in facts.PROXY_TIER_FACTS}
    assert [feature for feature, _ in doctor.FLEX_UPGRADE_FEATURES] == list(FEATURE_FIXTURES)
    assert [by_id[fact].assumption for _, fact in doctor.FLEX_UPGRADE_FEATURES] == [False, True]
