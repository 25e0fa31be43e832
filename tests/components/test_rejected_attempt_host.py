"""RejectedAttempt's provider in the SDK's real dynamic-provider host, driven as the engine does.

The engine stores ``__provider`` (the provider pickled by ``pulumi.dynamic``) in every stack's
state and, for check/diff/create/update/delete, starts ``python -u -m pulumi.dynamic`` with the
project root as working directory and speaks gRPC to it (tests/helpers/engine.py). Here that
host runs for real against the loopback fake ARM (``VTAPLAB_ARM_ENDPOINT``), authenticated by
the real ``DefaultAzureCredential`` restricted to its Azure CLI credential
(``AZURE_TOKEN_CREDENTIALS=AzureCliCredential``) with a stand-in ``az`` on PATH that prints a
test token — no request leaves loopback.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dill
import pytest
import yaml
from helpers import engine
from helpers.fake_arm import PE, PE_ROUTES, TOKEN, FakeArm, fixture, running
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime.proto import provider_pb2

from components.rejected_attempt import AttemptProvider, RejectedAttempt
from vtaplab import PROJECT_ROOT
from vtaplab.azure.arm import ENDPOINT_ENV

# The contract: what every existing stack's state names. Change it and refresh/destroy of those
# stacks fails in the provider host ("No module named ..."): never, without a state migration.
PICKLED_PROVIDER = ("components.rejected_attempt", "AttemptProvider")
RESOURCE_TYPE = "pulumi-python:dynamic/vtaplab:RejectedAttempt"

RG = PE.split("/providers/")[0]
VTAP = RG + "/providers/Microsoft.Network/virtualNetworkTaps/vtap-r1"
URN = f"urn:pulumi:r1::vtaplab::{RESOURCE_TYPE}::r1-attempt"


def _project_python() -> Path:
    """The interpreter the provider plugin script runs: Pulumi.yaml's runtime virtualenv,
    relative to the project root (pulumi-resource-pulumi-python, PULUMI_RUNTIME_VIRTUALENV)."""
    spec = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    venv = Path(spec["runtime"]["options"]["virtualenv"])
    return (venv if venv.is_absolute() else PROJECT_ROOT / venv) / "bin" / "python"


def _fake_az(bin_dir: Path) -> None:
    """``az account get-access-token`` answering the test token (AzureCliCredential's call)."""
    bin_dir.mkdir()
    answer = json.dumps({"accessToken": TOKEN, "expires_on": int(time.time()) + 3600,
                         "tokenType": "Bearer"})
    script = bin_dir / "az"
    script.write_text(f"#!/bin/sh\necho '{answer}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    yield from running(*PE_ROUTES)


@pytest.fixture
def host(arm, tmp_path):
    _fake_az(tmp_path / "bin")
    env = engine.base_env(AZURE_TOKEN_CREDENTIALS="AzureCliCredential",
                          **{ENDPOINT_ENV: arm.base_url})
    env["PATH"] = f"{tmp_path / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    with engine.dynamic_provider_host(PROJECT_ROOT, _project_python(), env) as stub:
        yield stub


def _inputs(tmp_path: Path, **over: Any) -> dict[str, Any]:
    """The resource's inputs as the program registers them, plus ``__provider`` as the SDK
    serializes it (pulumi.dynamic.dynamic.serialize_provider, the Resource constructor's)."""
    props: dict[str, Any] = {
        "scenario": "r1", "attempt": "vtap-pe-destination", "stack": "r1",
        "private_endpoint_id": PE, "target_id": VTAP, "location": "uksouth",
        "tags": {"lab": "vtaplab", "expires-on": "2026-11-30T08:00Z"}, "port": 4789,
        "evidence_root": str(tmp_path / "evidence"),
        "__provider": serialize_provider(AttemptProvider())}
    props.update(over)
    return props


def _check(stub, olds: dict[str, Any], news: dict[str, Any]) -> provider_pb2.CheckResponse:
    return stub.Check(provider_pb2.CheckRequest(
        urn=URN, olds=engine.struct(olds), news=engine.struct(news), name="r1-attempt",
        type=RESOURCE_TYPE), timeout=engine.CALL_TIMEOUT)


def _create(stub, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    res = stub.Create(provider_pb2.CreateRequest(
        urn=URN, properties=engine.struct(inputs), timeout=60, preview=False, name="r1-attempt",
        type=RESOURCE_TYPE), timeout=engine.CALL_TIMEOUT)
    return res.id, engine.unstruct(res.properties)


def _diff(stub, rid: str, olds: dict[str, Any], news: dict[str, Any]) -> provider_pb2.DiffResponse:
    return stub.Diff(provider_pb2.DiffRequest(
        id=rid, urn=URN, olds=engine.struct(olds), news=engine.struct(news), name="r1-attempt",
        type=RESOURCE_TYPE), timeout=engine.CALL_TIMEOUT)


def test_real_host_checks_creates_diffs_updates_and_deletes_an_attempt(host, arm, tmp_path):
    # ARM takes the PUT, then fails the operation with the code r1 is about: the vTAP may
    # exist (Failed), so the resource records created_id and destroy deletes it.
    arm.add("PUT", VTAP, 201, fixture("accepted-vtap-201.json"),
            {"Azure-AsyncOperation": "{base}/ops/r1"})
    arm.add("GET", "/ops/r1", 200, {"status": "Failed",
                                     **fixture("error-r1-pe-as-vtap-destination.json")})
    arm.add("DELETE", VTAP, 404, {"error": {"code": "ResourceNotFound", "message": "gone"}})
    inputs = _inputs(tmp_path)

    checked = _check(host, {}, inputs)
    assert list(checked.failures) == []
    bad = _check(host, {}, _inputs(tmp_path, attempt="frob"))
    assert [f.property for f in bad.failures] == ["attempt"]

    rid, outs = _create(host, engine.unstruct(checked.inputs))
    assert rid.startswith("r1-vtap-pe-destination-")
    assert outs["outcome"] == "rejected" and outs["matches_expected"] is True
    assert outs["created_id"] == VTAP and outs["__provider"] == inputs["__provider"]
    assert ("PUT", VTAP) in arm.calls()
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in arm.requests)  # the real credential
    verdict = json.loads(Path(outs["verdict_path"]).read_text())
    assert verdict["outcome"] == "rejected"
    assert TOKEN not in json.dumps(outs)

    # Nothing changed: no diff.
    assert _diff(host, rid, outs, inputs).changes == provider_pb2.DiffResponse.DIFF_NONE

    # matrix rewrites expires-on: an in-place update, never a replacement (= a new ARM PUT).
    retagged = _inputs(tmp_path, tags={"lab": "vtaplab", "expires-on": "2026-12-01T08:00Z"})
    diff = _diff(host, rid, outs, retagged)
    assert diff.changes == provider_pb2.DiffResponse.DIFF_SOME
    assert list(diff.replaces) == []
    requests_before = len(arm.requests)
    updated = host.Update(provider_pb2.UpdateRequest(
        id=rid, urn=URN, olds=engine.struct(outs), news=engine.struct(retagged),
        name="r1-attempt", type=RESOURCE_TYPE), timeout=engine.CALL_TIMEOUT)
    new_outs = engine.unstruct(updated.properties)
    assert new_outs["tags"] == retagged["tags"]
    assert {k: new_outs[k] for k in ("outcome", "arm_code", "created_id", "verdict_path")} == \
        {k: outs[k] for k in ("outcome", "arm_code", "created_id", "verdict_path")}
    assert len(arm.requests) == requests_before  # no ARM request for a tag

    # A different target is a different request: replaced, deleted first.
    moved = _diff(host, rid, new_outs, _inputs(tmp_path, target_id=VTAP + "2"))
    assert list(moved.replaces) == ["target_id"] and moved.deleteBeforeReplace

    host.Delete(provider_pb2.DeleteRequest(id=rid, urn=URN, properties=engine.struct(new_outs),
                                           name="r1-attempt", type=RESOURCE_TYPE),
                timeout=engine.CALL_TIMEOUT)
    assert arm.calls()[-1] == ("DELETE", VTAP)


def test_tags_change_alone_never_replaces(tmp_path):
    # The same rule as above, without a host: every tag change, including adding a tag.
    provider = AttemptProvider()
    olds = {**_inputs(tmp_path), "outcome": "rejected"}
    for tags in ({}, {"lab": "vtaplab"}, {"lab": "vtaplab", "expires-on": "x", "new": "y"}):
        d = provider.diff("id", olds, _inputs(tmp_path, tags=tags))
        assert d.changes and d.replaces == []


class _Recorder(dill.Unpickler):
    """Unpickles while recording every global the pickle names (module, qualified name)."""

    def __init__(self, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.globals: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.globals.append((module, name))
        return super().find_class(module, name)


def test_pickled_provider_reference_is_the_contract():
    data = base64.b64decode(serialize_provider(AttemptProvider()))
    rec = _Recorder(data)
    provider = rec.load()
    project = [(m, n) for m, n in rec.globals
               if m.split(".")[0] in {"components", "vtaplab", "__main__"}]
    assert project == [PICKLED_PROVIDER], (
        f"the pickled provider now names {project}; existing stacks' state names "
        f"{PICKLED_PROVIDER} and could no longer be refreshed or destroyed")
    # By reference, not by value: the class body is not in the pickle.
    assert b"def create" not in data and b"run_attempt" not in data
    assert isinstance(provider, AttemptProvider) and provider._client_factory is None
    assert RejectedAttempt._resource_type_name == RESOURCE_TYPE.removeprefix("pulumi-python:")


def test_host_outside_the_project_root_cannot_load_the_provider(tmp_path):
    """Why the pickled reference is a contract: the host finds ``components`` only because the
    engine starts it in the project root. Started anywhere else, it can't even check."""
    import grpc

    with engine.dynamic_provider_host(tmp_path, _project_python(), engine.base_env()) as stub:
        with pytest.raises(grpc.RpcError) as error:
            _check(stub, {}, _inputs(tmp_path))
    assert "No module named 'components'" in (error.value.details() or "")
