"""The program against what Azure documents (``vtaplab.facts``, the program's block) and what
a real engine does with its options, under mocks: create-only VM properties replace the VM,
every resource joining a VNet waits for its last subnet write, no machine-specific value
enters an input, a tag change never replays an attempt, every run step is bounded.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.graphs import strings
from helpers.program import VM, of_type

from components.evidence_run import bounded
from vtaplab import PROJECT_ROOT, facts
from vtaplab.preflight import mocks
from vtaplab.program import budget

ROOT = PROJECT_ROOT
NETWORK = "azure-native:network:"
JOINERS = {NETWORK + t for t in ("NetworkInterface", "LoadBalancer", "PrivateEndpoint",
                                 "PrivateLinkService")}
LOCAL, REMOTE = "command:local:Command", "command:remote:Command"
REJECTED_ATTEMPT = "pulumi-python:dynamic:Resource"


def get_path(inputs: dict[str, Any], dotted: str) -> Any:
    value: Any = inputs
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"{dotted}: no {part!r}"
        value = value[part]
    return value


# ----------------------------------------------------------------------------- the VM


def test_vms_are_replaced_when_a_create_only_property_changes(committed_stack, graph_of):
    vms = of_type(graph_of(committed_stack), VM)
    assert vms
    for vm in vms:
        options = vm.get("options") or {}
        # ARM answers PropertyChangeNotAllowed to an in-place change of these
        # (facts.VM_CREATE_ONLY_SOURCE); a fixed VM name means delete first.
        assert options.get("replaceOnChanges") == sorted(facts.VM_CREATE_ONLY_INPUTS), vm["name"]
        assert options.get("deleteBeforeReplace") is True, vm["name"]
        for path in facts.VM_CREATE_ONLY_INPUTS:  # each names an input the VM really sends
            assert get_path(vm["inputs"], path) not in (None, "", []), (vm["name"], path)


# ----------------------------------------------------------------------------- VNets


def test_everything_joining_a_vnet_waits_for_its_last_subnet(committed_stack, graph_of):
    resources = graph_of(committed_stack)
    subnets = of_type(resources, NETWORK + "Subnet")
    by_urn = {r["urn"]: r for r in resources}
    last: dict[str, str] = {}  # VNet name -> URN of its last subnet (no sibling waits for it)
    for subnet in subnets:
        vnet = subnet["inputs"]["virtualNetworkName"]
        siblings = [s for s in subnets if s["inputs"]["virtualNetworkName"] == vnet]
        waited_for = {u for s in siblings for u in s["dependencies"]}
        if subnet["urn"] not in waited_for:
            assert vnet not in last, f"{vnet}: subnets are not chained"
            last[vnet] = subnet["urn"]
    joiners = [r for r in resources if r["type"] in JOINERS]
    assert joiners
    for resource in joiners:
        vnets = {s.split("/virtualNetworks/", 1)[1].split("/", 1)[0]
                 for s in strings(resource["inputs"]) if "/subnets/" in s}
        assert vnets, resource["name"]
        for vnet in vnets:
            assert last[vnet] in resource["dependencies"], (
                f"{resource['name']} joins {vnet} before {by_urn[last[vnet]]['name']}")


# ----------------------------------------------------------------------------- machine-independent


def _root_with_home_key(tmp_path: Path, stack: str) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("__main__.py", "Pulumi.yaml", "tests"):
        (root / name).symlink_to(ROOT / name)
    # The operator's key from their home directory, as the config allows.
    (root / f"Pulumi.{stack}.yaml").write_text(
        (ROOT / f"Pulumi.{stack}.yaml").read_text()
        + "  vtaplab:sshPrivateKeyFile: ~/.ssh/id_ed25519\n")
    return root


@pytest.mark.skipif(not (ROOT / "Pulumi.b2.yaml").is_file(), reason="no Pulumi.b2.yaml")
def test_two_home_directories_with_the_same_key_give_identical_inputs(tmp_path, monkeypatch):
    root = _root_with_home_key(tmp_path, "b2")
    runs = []
    for home in ("alice", "bob"):
        ssh = tmp_path / home / ".ssh"
        ssh.mkdir(parents=True)
        shutil.copy(ROOT / mocks.MOCK_PRIVATE_KEY_FILE, ssh / "id_ed25519")
        monkeypatch.setenv("HOME", str(tmp_path / home))
        runs.append(mocks.build_graph("b2", root=root))
    first, second = runs
    assert [r["urn"] for r in first] == [r["urn"] for r in second]
    differing = [a["name"] for a, b in zip(first, second, strict=True)
                 if a["inputs"] != b["inputs"]]
    assert differing == []
    # and no input names a home directory at all
    for resource in first:
        for text in strings(resource["inputs"]):
            assert str(tmp_path) not in text, resource["name"]


def test_no_command_names_a_home_directory_or_an_absolute_key_path(committed_stack, graph_of):
    for command in of_type(graph_of(committed_stack), LOCAL):
        create = command["inputs"]["create"]
        assert "~" not in create and "/home/" not in create and "/root/" not in create
        assert str(Path.home()) not in create, command["name"]
        for flag in ("--key-file ", "--ssh-key-file "):
            if flag in create:
                assert not create.split(flag, 1)[1].startswith("/"), command["name"]


def test_a_tag_change_never_replays_a_rejected_attempt(committed_stack, graph_of):
    attempts = of_type(graph_of(committed_stack), REJECTED_ATTEMPT)
    for attempt in attempts:
        assert "tags" in attempt["inputs"]
        assert "tags" in (attempt.get("options") or {}).get("ignoreChanges", []), attempt["name"]


# ----------------------------------------------------------------------------- bounded steps


def test_every_run_step_is_bounded(committed_stack, graph_of):
    commands = [r for r in graph_of(committed_stack) if r["type"] in (LOCAL, REMOTE)]
    for command in commands:
        timeouts = (command.get("options") or {}).get("customTimeouts") or {}
        assert timeouts.get("create", "").endswith("s"), command["name"]
        assert int(timeouts["create"][:-1]) > 0
        if command["type"] == REMOTE:
            limit = command["inputs"]["connection"]["dialErrorLimit"]
            assert 0 < limit <= budget.dial_limit(budget.READY_SECONDS), command["name"]
            # the command itself ends within its budget, even if the VM stops answering
            seconds = int(timeouts["create"][:-1])
            assert command["inputs"]["create"].startswith(f"timeout -k 10 {seconds} sh -c ")


def test_bounded_runs_the_command_unchanged_and_stops_it_at_its_budget():
    done = subprocess.run(["sh", "-c", bounded("echo 'a b' && [ 1 -eq 1 ]", 5)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (0, "a b\n")
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", bounded("sleep 20", 1)], capture_output=True,
                          timeout=30, check=False)
    assert done.returncode == 124 and time.monotonic() - started < 10  # timeout's own code


def test_traffic_budget_grows_with_the_traffic_and_the_capture():
    small = budget.run_budget(60, 20, traffic_timeout=10, drain_seconds=5)
    big = budget.run_budget(600, 2000, traffic_timeout=10, drain_seconds=5)
    assert big.traffic > small.traffic and big.fetch > small.fetch
    # every request may take its whole curl timeout
    assert small.traffic >= 20 * 2 * 10 + 5
    assert small.settle >= facts.VTAP_SOURCE_BLIP_SECONDS


def test_no_component_reads_config_itself():
    # Settings come in through each component's args (LinuxVm's shutdown: LabConfig's
    # auto_shutdown_time), so a component never disagrees with the validated config.
    readers = [p.name for p in sorted((ROOT / "components").glob("*.py"))
               if "pulumi.Config(" in p.read_text(encoding="utf-8")
               or "from_config(" in p.read_text(encoding="utf-8")]
    assert readers == []
