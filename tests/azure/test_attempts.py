"""The rejected attempts (r1, b1) and their Pulumi dynamic provider, against the fake ARM.

The ARM bodies under tests/fixtures/arm/ have the shape of real ARM answers (error envelope,
resource bodies, async-operation status); the messages are written after Azure's, the codes
are the ones the lab is about (vtaplab.facts).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_arm import NIC_ID, PE, PE_ROUTES, TOKEN, FakeArm, fixture, running

from components.rejected_attempt import AttemptProvider
from vtaplab import facts
from vtaplab.azure import arm_bodies, attempts

NIC = fixture("pe-nic.json")
IPCONF_ID = NIC["properties"]["ipConfigurations"][0]["id"]
RG = PE.split("/providers/")[0]
VTAP = RG + "/providers/Microsoft.Network/virtualNetworkTaps/vtap-r1"
ILB = RG + "/providers/Microsoft.Network/loadBalancers/ilb-src"
POOL = ILB + "/backendAddressPools/pool-vtap"
IP_POOL = ILB + "/backendAddressPools/pool-pe-ip"


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    yield from running(*PE_ROUTES)


def _evidence_has_no_token(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN not in path.read_text(), path


def _r1(arm: FakeArm, tmp_path: Path) -> attempts.AttemptOutcome:
    return attempts.attempt_r1(arm.client(), private_endpoint_id=PE, vtap_id=VTAP,
                               location="uksouth", tags={"lab": "vtaplab"},
                               evidence_dir=tmp_path / "evidence" / "r1" / "r1", root=tmp_path)


def test_r1_expected_code_is_rejected_and_matches(arm, tmp_path):
    arm.add("PUT", VTAP, 400, fixture("error-r1-pe-as-vtap-destination.json"))
    out = _r1(arm, tmp_path)
    assert out.outcome == "rejected" and out.matches_expected
    assert out.arm_code == facts.ARM_PE_AS_VTAP_DESTINATION
    assert out.created_id is None and out.warning is None
    # exactly the request the lab is about: the PE NIC's ip-configuration as destination
    put = next(r for r in arm.requests if r["method"] == "PUT")
    assert put["body"]["properties"] == {
        "destinationNetworkInterfaceIPConfiguration": {"id": IPCONF_ID},
        "destinationPort": 4789}
    assert put["body"] == arm_bodies.vtap_body(arm_bodies.VtapParams(
        location="uksouth", destination_nic_ip_configuration_id=IPCONF_ID,
        tags={"lab": "vtaplab"}))
    assert arm.calls() == [("GET", PE), ("GET", NIC_ID), ("PUT", VTAP)]
    # the full answer is the evidence
    assert out.evidence_path == "evidence/r1/r1/arm-response.json"
    rec = json.loads((tmp_path / out.evidence_path).read_text())
    assert rec["response"]["status"] == 400
    assert rec["response"]["body"] == fixture("error-r1-pe-as-vtap-destination.json")
    assert rec["response"]["headers"]["x-ms-request-id"] == "fake-request-id"
    assert rec["request"]["method"] == "PUT" and rec["request"]["url"].endswith(
        VTAP + "?api-version=2024-05-01")
    _evidence_has_no_token(tmp_path)


def test_b1_nic_edit_expected_code_is_rejected_and_matches(arm, tmp_path):
    arm.add("PUT", NIC_ID, 400, fixture("error-b1-modify-pe-nic.json"))
    out = attempts.attempt_b1_nic(arm.client(), private_endpoint_id=PE, backend_pool_id=POOL,
                                  evidence_dir=tmp_path / "b1", root=tmp_path)
    assert (out.outcome, out.matches_expected) == ("rejected", True)
    assert out.arm_code == facts.ARM_MODIFY_PE_NIC
    assert out.evidence_path == "b1/arm-response-nic.json"
    put = next(r for r in arm.requests if r["method"] == "PUT")
    ipconf = put["body"]["properties"]["ipConfigurations"][0]["properties"]
    assert ipconf["loadBalancerBackendAddressPools"] == [{"id": POOL}]
    assert ipconf["privateIPAddress"] == "10.30.3.4"  # the rest of the NIC as it was
    assert "etag" not in put["body"]


def test_b1_ip_pool_records_what_arm_says(arm, tmp_path):
    arm.add("PUT", IP_POOL, 400, fixture("error-pls-ip-based-lb.json"))
    out = attempts.attempt_b1_ip_pool(arm.client(), private_endpoint_id=PE, pool_id=IP_POOL,
                                      evidence_dir=tmp_path / "b1", root=tmp_path)
    # Azure documents the limitation but no code: a refusal is recorded, matching nothing.
    assert (out.outcome, out.matches_expected) == ("rejected", None)
    put = next(r for r in arm.requests if r["method"] == "PUT")
    (addr,) = put["body"]["properties"]["loadBalancerBackendAddresses"]
    assert addr["properties"]["ipAddress"] == "10.30.3.4"
    assert addr["properties"]["virtualNetwork"]["id"] == PE.split(
        "/privateEndpoints/")[0] + "/virtualNetworks/vnet-consumer"
    assert out.evidence_path == "b1/arm-response-ip-pool.json"


def test_r1_accepted_warns_and_is_deleted_on_undo(arm, tmp_path, caplog):
    arm.add("PUT", VTAP, 201, fixture("accepted-vtap-201.json"))
    arm.add("DELETE", VTAP, 200, None)
    with caplog.at_level(logging.WARNING, logger="vtaplab.azure.attempts"):
        out = _r1(arm, tmp_path)
    assert out.outcome == "accepted" and not out.matches_expected
    assert out.created_id == VTAP
    assert "the platform changed: Azure now allows" in out.warning
    assert "the platform changed" in caplog.text
    rec = json.loads((tmp_path / out.evidence_path).read_text())
    assert rec["response"]["status"] == 201 and rec["warning"] == out.warning
    attempts.undo(arm.client(), out)
    assert arm.calls()[-1] == ("DELETE", VTAP)


def test_accepted_nic_edit_is_restored_on_undo(arm, tmp_path):
    arm.add("PUT", NIC_ID, 200, fixture("pe-nic.json"))
    out = attempts.attempt_b1_nic(arm.client(), private_endpoint_id=PE, backend_pool_id=POOL,
                                  evidence_dir=tmp_path / "b1", root=tmp_path)
    assert out.outcome == "accepted" and out.restore_body is not None
    attempts.undo(arm.client(), out)
    edit, restore = [r for r in arm.requests if r["method"] == "PUT"]
    assert edit["body"]["properties"]["ipConfigurations"][0]["properties"][
        "loadBalancerBackendAddressPools"] == [{"id": POOL}]
    restored = restore["body"]["properties"]["ipConfigurations"][0]["properties"]
    assert "loadBalancerBackendAddressPools" not in restored
    assert restore["body"]["properties"] == NIC["properties"]


@pytest.mark.parametrize("status,name", [
    (403, "error-authorization-failed.json"),
    (409, "error-feature-not-registered.json"),
    # the other scenario's code is not this scenario's expected rejection
    (400, "error-b1-modify-pe-nic.json"),
])
def test_other_arm_errors_are_error_never_the_expected_rejection(arm, tmp_path, status, name):
    arm.add("PUT", VTAP, status, fixture(name))
    out = _r1(arm, tmp_path)
    assert out.outcome == "error" and not out.matches_expected
    assert out.arm_code == fixture(name)["error"]["code"]
    rec = json.loads((tmp_path / out.evidence_path).read_text())
    assert rec["response"]["body"] == fixture(name)
    verdict = attempts.verdict_from_evidence("r1", tmp_path / "evidence" / "r1" / "r1",
                                             root=tmp_path)
    assert verdict["outcome"] == "error" and verdict["matches_expected"] is False


def test_missing_private_endpoint_is_an_error(tmp_path):
    fake = FakeArm()
    try:
        out = _r1(fake, tmp_path)
    finally:
        fake.close()
    assert out.outcome == "error" and out.arm_code == "ResourceNotFound" and out.status == 404
    assert fake.calls("PUT") == []


def test_network_failure_is_an_error(tmp_path):
    from vtaplab.azure.arm import ArmClient

    client = ArmClient(token_provider=lambda: TOKEN, base_url="http://127.0.0.1:9",
                       max_retries=0, timeout=2)
    out = attempts.attempt_r1(client, private_endpoint_id=PE, vtap_id=VTAP,
                              location="uksouth", evidence_dir=tmp_path, root=tmp_path)
    assert out.outcome == "error" and out.arm_code == "NetworkError" and out.status == 0


def test_b1_verdict_combines_both_attempts(arm, tmp_path):
    arm.add("PUT", NIC_ID, 400, fixture("error-b1-modify-pe-nic.json"))
    arm.add("PUT", IP_POOL, 201, {"id": IP_POOL, "properties": {}})
    ev = tmp_path / "evidence" / "b1" / "b1"
    attempts.attempt_b1_nic(arm.client(), private_endpoint_id=PE, backend_pool_id=POOL,
                            evidence_dir=ev, root=tmp_path)
    attempts.attempt_b1_ip_pool(arm.client(), private_endpoint_id=PE, pool_id=IP_POOL,
                                evidence_dir=ev, root=tmp_path)
    verdict = attempts.verdict_from_evidence("b1", ev, root=tmp_path)
    assert verdict["scenario"] == "b1"
    assert verdict["outcome"] == "rejected" and verdict["matches_expected"] is True
    assert verdict["arm_error"]["code"] == facts.ARM_MODIFY_PE_NIC
    assert [a["outcome"] for a in verdict["attempts"]] == ["rejected", "accepted"]
    assert any("the platform changed" in w for w in verdict["warnings"])
    assert verdict["files"] == ["evidence/b1/b1/arm-response-nic.json",
                                "evidence/b1/b1/arm-response-ip-pool.json"]


# --- the dynamic provider, called directly --------------------------------------------------

def _props(tmp_path: Path, **over: object) -> dict:
    props = {"scenario": "r1", "attempt": "vtap-pe-destination", "stack": "r1",
             "private_endpoint_id": PE, "target_id": VTAP, "location": "uksouth",
             "tags": {}, "port": 4789, "evidence_root": str(tmp_path / "evidence")}
    props.update(over)
    return props


def test_provider_create_rejected_writes_evidence_and_verdict(arm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arm.add("PUT", VTAP, 400, fixture("error-r1-pe-as-vtap-destination.json"))
    provider = AttemptProvider(client_factory=arm.client)
    res = provider.create(_props(tmp_path))
    outs = res.outs
    assert outs["outcome"] == "rejected" and outs["matches_expected"] is True
    assert outs["arm_code"] == facts.ARM_PE_AS_VTAP_DESTINATION
    assert outs["evidence_path"] == "evidence/r1/r1/arm-response.json"
    assert outs["verdict_path"] == "evidence/r1/r1/verdict.json"
    verdict = json.loads((tmp_path / outs["verdict_path"]).read_text())
    assert verdict["outcome"] == "rejected" and verdict["matches_expected"] is True
    assert verdict["arm_error"]["code"] == facts.ARM_PE_AS_VTAP_DESTINATION
    assert outs["created_id"] == "" and outs["restore_body"] == ""
    assert TOKEN not in json.dumps(outs)
    # delete of a rejected attempt touches nothing
    before = len(arm.requests)
    provider.delete(res.id, outs)
    assert len(arm.requests) == before


def test_provider_accepted_is_deleted_on_destroy(arm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arm.add("PUT", VTAP, 201, fixture("accepted-vtap-201.json"))
    arm.add("DELETE", VTAP, 202, None, {"Location": "{base}/ops/del"})
    arm.add("GET", "/ops/del", 204, None)
    provider = AttemptProvider(client_factory=arm.client)
    res = provider.create(_props(tmp_path))
    assert res.outs["outcome"] == "accepted" and res.outs["created_id"] == VTAP
    assert res.outs["warning"].startswith("the platform changed")
    provider.delete(res.id, res.outs)
    assert arm.calls()[-2:] == [("DELETE", VTAP), ("GET", "/ops/del")]


def test_provider_accepted_nic_edit_is_restored_on_destroy(arm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arm.add("PUT", NIC_ID, 200, fixture("pe-nic.json"))
    provider = AttemptProvider(client_factory=arm.client)
    res = provider.create(_props(tmp_path, scenario="b1", attempt="nic-pool", stack="b1",
                                 target_id=POOL))
    assert res.outs["outcome"] == "accepted"
    provider.delete(res.id, json.loads(json.dumps(res.outs)))  # as state round-trips it
    last = arm.requests[-1]
    assert (last["method"], last["path"]) == ("PUT", NIC_ID)
    assert last["body"]["properties"] == NIC["properties"]


def test_provider_diff(tmp_path):
    provider = AttemptProvider()
    olds = {**_props(tmp_path), "outcome": "rejected"}
    assert not provider.diff("id", olds, _props(tmp_path)).changes
    d = provider.diff("id", olds, _props(tmp_path, target_id=VTAP + "2"))
    assert d.changes and d.replaces == ["target_id"] and d.delete_before_replace
    d = provider.diff("id", {**olds, "outcome": "error"}, _props(tmp_path))
    assert d.changes and d.replaces == ["outcome"]


def test_provider_check_names_bad_inputs(tmp_path):
    provider = AttemptProvider()
    res = provider.check({}, _props(tmp_path, attempt="frob"))
    assert [f.property for f in res.failures] == ["attempt"]
    assert "vtap-pe-destination" in res.failures[0].reason
    res = provider.check({}, _props(tmp_path, scenario="b1"))
    assert [f.property for f in res.failures] == ["scenario"]


# --- the bodies -----------------------------------------------------------------------------

def test_vtap_kwargs_and_body_come_from_the_same_params():
    p = arm_bodies.VtapParams(location="uksouth",
                              destination_lb_frontend_ip_configuration_id="/x/frontend",
                              tags={"a": "b"})
    kwargs = arm_bodies.vtap_resource_kwargs(p)
    body = arm_bodies.vtap_body(p)
    assert kwargs["destination_load_balancer_front_end_ip_configuration"] == {"id": "/x/frontend"}
    assert body == {"location": "uksouth", "tags": {"a": "b"}, "properties": {
        "destinationLoadBalancerFrontEndIPConfiguration": {"id": "/x/frontend"},
        "destinationPort": 4789}}


def test_vtap_kwargs_construct_the_azure_native_resource_type():
    from pulumi_azure_native import network

    sig = network.VirtualNetworkTapArgs.__init__.__code__.co_varnames
    kwargs = arm_bodies.vtap_resource_kwargs(arm_bodies.VtapParams(
        location="uksouth", destination_nic_ip_configuration_id="/x/ipconf"))
    assert set(kwargs) <= set(sig)


@pytest.mark.parametrize("kwargs,match", [
    ({}, "exactly one destination"),
    ({"destination_nic_ip_configuration_id": "/a",
      "destination_lb_frontend_ip_configuration_id": "/b"}, "exactly one destination"),
    ({"destination_nic_ip_configuration_id": "/a", "port": 70000}, "UDP port"),
])
def test_vtap_params_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        arm_bodies.VtapParams(location="uksouth", **kwargs)


# --- as a Pulumi resource (mock runtime) ---------------------------------------------------

def test_rejected_attempt_registers_without_secrets_and_serializes_by_reference():
    import base64

    import dill
    import pulumi
    from pulumi.dynamic.dynamic import serialize_provider

    from components.rejected_attempt import RejectedAttempt

    registered: list = []

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            registered.append((args.typ, args.name, dict(args.inputs)))
            return f"{args.name}-id", {**args.inputs, "outcome": "rejected"}

        def call(self, args):
            raise NotImplementedError(args.token)

    pulumi.runtime.set_mocks(Mocks(), project="vtaplab", stack="r1", preview=False)
    res = RejectedAttempt("r1-attempt", scenario="r1", attempt="vtap-pe-destination",
                          stack="r1", private_endpoint_id=PE, target_id=VTAP,
                          location="uksouth")

    @pulumi.runtime.test
    def check():
        def verify(outcome):
            ((typ, name, inputs),) = registered
            assert name == "r1-attempt"
            assert typ == "pulumi-python:dynamic/vtaplab:RejectedAttempt"
            assert inputs["private_endpoint_id"] == PE and inputs["target_id"] == VTAP
            assert not {k for k in inputs if "token" in k.lower() or "secret" in k.lower()}
            assert outcome == "rejected"
        return res.outcome.apply(verify)

    check()
    # the provider pickles by reference: no client, no credential inside
    provider = dill.loads(base64.b64decode(serialize_provider(AttemptProvider())))
    assert isinstance(provider, AttemptProvider) and provider._client_factory is None


def test_async_failure_with_the_expected_code_is_rejected_and_cleaned_up(arm, tmp_path,
                                                                         monkeypatch):
    # ARM may take the PUT (201) and fail the operation afterwards with the same code; the
    # vTAP may then exist in a Failed state, so destroy deletes it.
    monkeypatch.chdir(tmp_path)
    arm.add("PUT", VTAP, 201, fixture("accepted-vtap-201.json"),
            {"Azure-AsyncOperation": "{base}/ops/r1"})
    arm.add("GET", "/ops/r1", 200, {"status": "Failed",
                                     **fixture("error-r1-pe-as-vtap-destination.json")})
    arm.add("DELETE", VTAP, 404, {"error": {"code": "ResourceNotFound", "message": "gone"}})
    provider = AttemptProvider(client_factory=arm.client)
    res = provider.create(_props(tmp_path))
    assert res.outs["outcome"] == "rejected" and res.outs["matches_expected"] is True
    assert res.outs["created_id"] == VTAP
    rec = json.loads((tmp_path / res.outs["evidence_path"]).read_text())
    assert rec["operation_failed"] is True
    assert rec["response"]["body"]["status"] == "Failed"
    assert [a["status"] for a in rec["operation"]] == [201, 200]  # the PUT's 201, the poll
    provider.delete(res.id, res.outs)  # a 404 on delete is fine
    assert arm.calls()[-1] == ("DELETE", VTAP)


def test_async_failure_of_a_nic_edit_never_deletes_the_nic(arm, tmp_path):
    arm.add("PUT", NIC_ID, 200, fixture("pe-nic.json"), {"Azure-AsyncOperation": "{base}/ops/n"})
    arm.add("GET", "/ops/n", 200, {"status": "Failed",
                                    **fixture("error-b1-modify-pe-nic.json")})
    out = attempts.attempt_b1_nic(arm.client(), private_endpoint_id=PE, backend_pool_id=POOL,
                                  evidence_dir=tmp_path / "b1", root=tmp_path)
    assert out.outcome == "rejected" and out.created_id is None and out.restore_body is None
    attempts.undo(arm.client(), out)
    assert arm.calls("DELETE") == [] and len(arm.calls("PUT")) == 1
