"""``vtaplab doctor`` against recorded ARM answers of the real shapes (tests/fixtures/arm/doctor,
each following the azure-rest-api-specs example of its operation) served by the loopback fake
ARM, and the needs counted from a stack's real graph under mocks."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_arm import FakeArm, running

from vtaplab import facts
from vtaplab.azure import doctor

SUB = "00000000-0000-0000-0000-000000000000"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "arm" / "doctor"
PROVIDER = f"/subscriptions/{SUB}/providers/Microsoft.DevTestLab"
FEATURE = (f"/subscriptions/{SUB}/providers/Microsoft.Features/providers/Microsoft.Network/"
           "features/AllowPrivateLinkserviceUDR")
SKUS = f"/subscriptions/{SUB}/providers/Microsoft.Compute/skus"
VTAPS = f"/subscriptions/{SUB}/providers/Microsoft.Network/virtualNetworkTaps"


def usages(region: str) -> str:
    return f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/{region}/usages"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def vm(name: str, size: str, location: str = "uksouth") -> dict[str, Any]:
    return {"type": "azure-native:compute:VirtualMachine", "name": name,
            "inputs": {"location": location, "hardwareProfile": {"vmSize": size}}}


SCHEDULE = {"type": "azure-native:devtestlab:GlobalSchedule", "name": "s", "inputs": {}}
VTAP = {"type": "azure-native:network:VirtualNetworkTap", "name": "t", "inputs": {}}
DIRECT_PLS = {"type": "azure-native:network:PrivateLinkService", "name": "pls",
              "inputs": {"destinationIPAddress": "10.40.3.4"}}


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    yield from running()


def serve(arm: FakeArm, *, provider_state: str = "NotRegistered",
          feature_state: str = "NotRegistered", cores_used: int = 4) -> None:
    body = load("provider-devtestlab.json")
    body["registrationState"] = provider_state
    arm.add("GET", PROVIDER, 200, body)
    feature = load("feature-direct-connect.json")
    feature["properties"]["state"] = feature_state
    arm.add("GET", FEATURE, 200, feature)
    arm.add("GET", SKUS, 200, load("skus-uksouth.json"))
    use = load("usages-uksouth.json")
    for u in use["value"]:
        if u["name"]["value"] in ("cores", "standardBSFamily"):
            u["currentValue"] = cores_used
    arm.add("GET", usages("uksouth"), 200, use)
    arm.add("GET", VTAPS, 200, load("vtaps-page1.json"))
    arm.add("GET", VTAPS, 200, load("vtaps-page2.json"))


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


# --- what the stack needs, from its graph ------------------------------------------------------

@pytest.mark.parametrize("stack, region, vcpus, direct", [
    ("uksouth", "uksouth", 20, False), ("msp", "uksouth", 20, False),
    ("a", "centralus", 8, True)])
def test_needs_are_counted_from_the_stacks_graph(arm, stack, region, vcpus, direct):
    from vtaplab.preflight.mocks import build_graph

    needs = doctor.needs_from_graph(build_graph(stack))
    assert needs.regions == (region,) and needs.direct_connect is direct
    assert set(needs.vm_sizes) == {(region, "Standard_B2s")}
    assert needs.schedules == sum(needs.vm_sizes.values()) and needs.vtaps >= 1
    serve(arm, cores_used=0, feature_state="Registered")
    if region != "uksouth":
        idle = load("usages-uksouth.json")
        for usage in idle["value"]:
            usage["currentValue"] = 0
        arm.add("GET", usages(region), 200, idle)
    checks = by_name(doctor.run_checks(arm.client(), SUB, needs))
    regional = checks[f"quota {region} Total Regional vCPUs"]
    assert regional.detail.startswith(f"need {vcpus} vCPUs")
    # The recorded subscription has 10 regional vCPUs: 20 don't fit, 8 do.
    assert regional.status == (doctor.MISSING if vcpus > 10 else doctor.OK)
    if vcpus > 10:
        assert "at least 20" in regional.fix
    assert (f"feature {facts.PLS_DIRECT_CONNECT_FEATURE}" in checks) is direct


# --- each check against the recorded answers ----------------------------------------------------

def test_unregistered_devtestlab_is_missing_with_the_register_command(arm):
    serve(arm)
    needs = doctor.needs_from_graph([vm("a", "Standard_B1s"), SCHEDULE])
    check = by_name(doctor.run_checks(arm.client(), SUB, needs))["provider Microsoft.DevTestLab"]
    assert check.status == doctor.MISSING
    assert check.fix == "az provider register --namespace Microsoft.DevTestLab"
    assert ("GET", PROVIDER) in arm.calls()
    assert next(r for r in arm.requests if r["path"] == PROVIDER)["query"] == \
        "api-version=2021-04-01"


def test_registered_devtestlab_is_ok(arm):
    serve(arm, provider_state="Registered")
    needs = doctor.needs_from_graph([vm("a", "Standard_B1s"), SCHEDULE])
    assert by_name(doctor.run_checks(arm.client(), SUB, needs))[
        "provider Microsoft.DevTestLab"].status == doctor.OK


@pytest.mark.parametrize("state, status", [
    ("NotRegistered", doctor.MISSING), ("Pending", doctor.MISSING),
    ("Registered", doctor.OK),
    ("registered", doctor.OK)])  # the spec examples spell it in lower case
def test_direct_connect_feature(arm, state, status):
    serve(arm, feature_state=state)
    needs = doctor.needs_from_graph([vm("a", "Standard_B1s", "centralus"), DIRECT_PLS])
    arm.add("GET", usages("centralus"), 200, load("usages-uksouth.json"))
    check = by_name(doctor.run_checks(arm.client(), SUB, needs))[
        f"feature {facts.PLS_DIRECT_CONNECT_FEATURE}"]
    assert check.status == status
    if state == "NotRegistered":
        assert check.fix == ("az feature register --namespace Microsoft.Network --name "
                             "AllowPrivateLinkserviceUDR && az provider register --namespace "
                             "Microsoft.Network")
    assert next(r for r in arm.requests if r["path"] == FEATURE)["query"] == \
        "api-version=2021-07-01"


def test_the_feature_is_not_asked_for_without_a_direct_connect_pls(arm):
    serve(arm)
    doctor.run_checks(arm.client(), SUB, doctor.needs_from_graph([vm("a", "Standard_B1s")]))
    assert ("GET", FEATURE) not in arm.calls()


def test_quota_enough_is_ok_and_uses_the_sku_family(arm):
    serve(arm, cores_used=4)  # 6 free of 10
    needs = doctor.needs_from_graph([vm("a", "Standard_B2s"), vm("b", "Standard_B1s")])
    checks = by_name(doctor.run_checks(arm.client(), SUB, needs))
    assert checks["quota uksouth Total Regional vCPUs"].status == doctor.OK
    assert checks["quota uksouth Total Regional vCPUs"].detail.startswith("need 3 vCPUs")
    assert checks["quota uksouth Standard BS Family vCPUs"].status == doctor.OK
    skus = next(r for r in arm.requests if r["path"] == SKUS)
    assert "location%20eq%20%27uksouth%27" in skus["query"]
    assert "api-version=2021-07-01" in skus["query"]
    use = next(r for r in arm.requests if r["path"] == usages("uksouth"))
    assert use["query"] == "api-version=2024-07-01"


def test_a_restricted_or_unknown_size_is_reported(arm):
    serve(arm)
    needs = doctor.needs_from_graph([vm("a", "Standard_D2s_v5"), vm("b", "Standard_Nope")])
    checks = by_name(doctor.run_checks(arm.client(), SUB, needs))
    restricted = checks["size Standard_D2s_v5 in uksouth"]
    assert restricted.status == doctor.MISSING and "NotAvailableForSubscription" in \
        restricted.detail
    assert checks["size Standard_Nope in uksouth"].status == doctor.UNKNOWN
    # Part of the need is unknown: the regional figure can't be called ok.
    assert checks["quota uksouth Total Regional vCPUs"].status == doctor.UNKNOWN


def test_vtap_count_follows_next_link_and_compares_with_the_preview_limit(arm):
    serve(arm)
    needs = doctor.needs_from_graph([vm("a", "Standard_B1s"), VTAP])
    check = by_name(doctor.run_checks(arm.client(), SUB, needs))["vTAPs in the subscription"]
    assert check.status == doctor.OK
    assert check.detail.startswith("2 existing + 1 in this stack = 3")
    listed = [r for r in arm.requests if r["path"] == VTAPS]
    assert [r["query"] for r in listed] == ["api-version=2024-05-01",
                                            "api-version=2024-05-01&$skiptoken=abc"]


def test_too_many_vtaps_is_missing(arm):
    serve(arm)
    many = [VTAP] * (facts.MAX_VTAPS_PER_SUBSCRIPTION - 1)  # + 2 existing > limit
    needs = doctor.needs_from_graph([vm("a", "Standard_B1s"), *many])
    check = by_name(doctor.run_checks(arm.client(), SUB, needs))["vTAPs in the subscription"]
    assert check.status == doctor.MISSING and "az network vnet tap" in check.fix


def test_an_unreadable_check_is_unknown_never_ok(arm):
    serve(arm)
    arm.routes[("GET", PROVIDER)] = [(403, {"error": {
        "code": "AuthorizationFailed", "message": "The client 'x' does not have "
        "authorization to perform action 'Microsoft.Resources/subscriptions/providers/read'"}},
        {})]
    needs = doctor.needs_from_graph([vm("a", "Standard_B1s"), SCHEDULE])
    check = by_name(doctor.run_checks(arm.client(), SUB, needs))["provider Microsoft.DevTestLab"]
    assert check.status == doctor.UNKNOWN and "AuthorizationFailed (HTTP 403)" in check.detail


# --- the command ------------------------------------------------------------------------------

def _graph_file(tmp_path: Path, graph: list[dict[str, Any]]) -> Path:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    return path


def test_main_prints_each_check_and_exits_1_when_something_is_missing(arm, tmp_path, capsys):
    serve(arm)
    graph = _graph_file(tmp_path, [vm("a", "Standard_B2s"), SCHEDULE, VTAP])
    rc = doctor.main(["b2", "--subscription", SUB, "--graph", str(graph)], client=arm.client())
    out = capsys.readouterr().out
    assert rc == 1
    assert "missing  provider Microsoft.DevTestLab: NotRegistered" in out
    assert "fix: az provider register --namespace Microsoft.DevTestLab" in out
    assert "ok       quota uksouth Total Regional vCPUs: need 2 vCPUs, 4 used of 10" in out


def test_main_exits_0_when_all_is_ok_and_json_lists_the_checks(arm, tmp_path, capsys):
    serve(arm, provider_state="Registered")
    graph = _graph_file(tmp_path, [vm("a", "Standard_B2s"), SCHEDULE])
    rc = doctor.main(["b2", "--subscription", SUB, "--graph", str(graph), "--json"],
                     client=arm.client())
    checks = json.loads(capsys.readouterr().out)
    assert rc == 0 and {c["status"] for c in checks} == {"ok"} and len(checks) == 3


def test_main_without_a_subscription_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("ARM_SUBSCRIPTION_ID", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no az CLI to ask
    graph = _graph_file(tmp_path, [vm("a", "Standard_B2s")])
    assert doctor.main(["b2", "--graph", str(graph)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ARM_SUBSCRIPTION_ID" in err


def test_main_rejects_an_unknown_stack(capsys):
    assert doctor.main(["nope", "--subscription", SUB]) == 2
    assert "accepted:" in capsys.readouterr().err


def test_authentication_failure_is_one_line(arm, tmp_path, capsys, monkeypatch):
    from vtaplab.azure.arm import ArmClient
    from vtaplab.azure.credentials import CredentialError

    def no_token() -> str:
        raise CredentialError("Azure authentication failed: Azure CLI (from no ARM_* "
                              "credential set (az login)): Please run 'az login'")

    serve(arm)
    graph = _graph_file(tmp_path, [vm("a", "Standard_B2s"), SCHEDULE])
    client = ArmClient(token_provider=no_token, base_url=arm.base_url)
    assert doctor.main(["b2", "--subscription", SUB, "--graph", str(graph)],
                       client=client) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Azure CLI" in err and arm.requests == []


def test_doctor_is_a_command_with_help():
    import subprocess
    import sys

    from vtaplab import PROJECT_ROOT

    done = subprocess.run([sys.executable, "-m", "vtaplab", "doctor", "b2", "--help"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
                          check=False)
    assert done.returncode == 0 and "AllowPrivateLinkserviceUDR" in done.stdout


def test_the_recorded_answers_keep_the_spec_shapes():
    # The fixtures' keys are the spec examples' keys: a drifted fixture fails here.
    assert set(load("provider-devtestlab.json")) >= {"id", "namespace", "registrationState",
                                                     "resourceTypes"}
    assert set(load("feature-direct-connect.json")) == {"name", "properties", "id", "type"}
    usage = load("usages-uksouth.json")["value"][0]
    assert set(usage) == {"unit", "currentValue", "limit", "name"}
    assert set(usage["name"]) == {"value", "localizedValue"}
    sku = load("skus-uksouth.json")["value"][0]
    assert {"resourceType", "locations", "capabilities", "name", "tier", "size",
            "family"} <= set(sku)
    vtap = copy.deepcopy(load("vtaps-page1.json")["value"][0])
    assert vtap["type"] == "Microsoft.Network/virtualNetworkTaps"
    assert vtap["properties"]["destinationPort"] == facts.VXLAN_PORT


def test_the_subscription_falls_back_to_the_azure_clis_default(tmp_path, monkeypatch):
    fake_az = tmp_path / "bin" / "az"
    fake_az.parent.mkdir()
    fake_az.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'account show' ] && echo {SUB}\n")
    fake_az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_az.parent}")
    assert doctor.subscription_id("b2", tmp_path, None, environ={}) == (SUB, "az account show")
    assert doctor.subscription_id("b2", tmp_path, None,
                                  environ={"ARM_SUBSCRIPTION_ID": "x"}) == (
        "x", "$ARM_SUBSCRIPTION_ID")
    (tmp_path / "Pulumi.b2.yaml").write_text(
        "config:\n  azure-native:subscriptionId: from-file\n")
    assert doctor.subscription_id("b2", tmp_path, None, environ={})[0] == "from-file"


def test_a_graph_file_that_is_not_a_graph_is_one_line(tmp_path, capsys):
    bad = tmp_path / "g.json"
    bad.write_text('{"resources": 1}')
    assert doctor.main(["b2", "--subscription", SUB, "--graph", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a list of resources" in err
