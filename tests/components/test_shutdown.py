"""Cost guardrails in the program: every VM of every committed stack has its auto-shutdown
schedule and every resource of a VM the expires-on tag; both follow the stack's config and
nothing in them comes from the clock."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from components import shutdown
from vtaplab import PROJECT_ROOT, matrix
from vtaplab.preflight import mocks
from vtaplab.program import config

ROOT = PROJECT_ROOT
SCHEDULE = "azure-native:devtestlab:GlobalSchedule"
VM = "azure-native:compute:VirtualMachine"


def test_every_vm_has_its_daily_shutdown(committed_stack, graph_of):
    g = graph_of(committed_stack)
    vms = {e["inputs"]["vmName"]: e for e in g if e["type"] == VM}
    schedules = [e for e in g if e["type"] == SCHEDULE]
    assert vms
    assert sorted(s["inputs"]["name"] for s in schedules) == sorted(
        f"shutdown-computevm-{name}" for name in vms)
    for s in schedules:
        inputs = s["inputs"]
        vm_name = inputs["name"][len("shutdown-computevm-"):]
        assert inputs["targetResourceId"] == mocks.azure_id(VM, vms[vm_name]["name"],
                                                            vms[vm_name]["inputs"])
        assert inputs["taskType"] == "ComputeVmShutdownTask" and inputs["status"] == "Enabled"
        assert inputs["dailyRecurrence"] == {"time": "1900"} and inputs["timeZoneId"] == "UTC"
        assert s["parent"] == vms[vm_name]["parent"]  # a child of its LinuxVm
        # the schedule is in the VM's resource group and region
        assert inputs["resourceGroupName"] == vms[vm_name]["inputs"]["resourceGroupName"]
        assert inputs["location"] == vms[vm_name]["inputs"]["location"]


def _taggable(type_: str) -> bool:
    """Whether azure-native's resource class takes ``tags`` (a tap configuration does not)."""
    _, module, name = type_.split(":")
    package = importlib.import_module(f"pulumi_azure_native.{module}")
    return "tags" in inspect.signature(getattr(package, name)._internal_init).parameters


def test_vm_resources_carry_expires_on(committed_stack, graph_of):
    g = graph_of(committed_stack)
    vm_parents = {e["parent"] for e in g if e["type"] == VM}
    tagged = [e for e in g if e["parent"] in vm_parents and e["type"].startswith("azure-native:")
              and _taggable(e["type"])]
    assert tagged
    for e in tagged:
        assert e["inputs"]["tags"][shutdown.EXPIRES_TAG] == shutdown.UNSET, e["urn"]


def _stack_root(tmp_path: Path, extra: str) -> Path:
    """A project root whose Pulumi.b2.yaml adds ``extra`` config (the program is ROOT's)."""
    for name in ("__main__.py", "Pulumi.yaml", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "Pulumi.b2.yaml").write_text((ROOT / "Pulumi.b2.yaml").read_text() + extra)
    return tmp_path


def test_config_sets_the_time_and_the_tag(tmp_path):
    if not (ROOT / "Pulumi.b2.yaml").is_file():
        pytest.skip("no Pulumi.b2.yaml committed")
    when = matrix.expires_on(matrix.dt.datetime(2026, 11, 26, 6, 5, tzinfo=matrix.dt.UTC))
    root = _stack_root(tmp_path, f"  vtaplab:autoShutdownTime: \"0630\"\n"
                                 f"  vtaplab:expiresOn: \"{when}\"\n")
    g = mocks.build_graph("b2", root=root)
    schedules = [e for e in g if e["type"] == SCHEDULE]
    assert schedules and all(s["inputs"]["dailyRecurrence"] == {"time": "0630"}
                             for s in schedules)
    vms = [e for e in g if e["type"] == VM]
    assert all(v["inputs"]["tags"]["expires-on"] == "2026-11-26T15:00Z" for v in vms)


def test_off_means_no_schedule(tmp_path):
    if not (ROOT / "Pulumi.b2.yaml").is_file():
        pytest.skip("no Pulumi.b2.yaml committed")
    g = mocks.build_graph("b2", root=_stack_root(tmp_path, "  vtaplab:autoShutdownTime: off\n"))
    assert [e for e in g if e["type"] == SCHEDULE] == []
    assert [e for e in g if e["type"] == VM]


def test_bad_time_is_one_line_naming_the_key(tmp_path):
    if not (ROOT / "Pulumi.b2.yaml").is_file():
        pytest.skip("no Pulumi.b2.yaml committed")
    with pytest.raises(mocks.GraphError) as caught:
        mocks.build_graph("b2", root=_stack_root(tmp_path, "  vtaplab:autoShutdownTime: 7pm\n"))
    assert "vtaplab:autoShutdownTime" in str(caught.value) and "accepted" in str(caught.value)


def test_the_key_matrix_sets_is_a_declared_config_key():
    namespace, key = matrix.EXPIRES_KEY.split(":")
    assert namespace == config.NAMESPACE and key in config.KEYS_BY_NAME
    # what matrix writes is what the config accepts
    assert config.shutdown_settings({key: matrix.expires_on(matrix.dt.datetime.now(
        matrix.dt.UTC))})[1]
