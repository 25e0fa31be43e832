"""The ARM id table: every type the program registers has a row, and ids built from a row
parse back to it and name resources the graph really has."""

from __future__ import annotations

import json

import pytest
from helpers.graphs import strings

from vtaplab import PROJECT_ROOT, arm_ids
from vtaplab.preflight import mocks

SNAPSHOTS = sorted((PROJECT_ROOT / "tests" / "snapshots").glob("*.json"))


def test_every_azure_type_the_program_registers_has_a_row(committed_stack, graph_of):
    types = {r["type"] for r in graph_of(committed_stack) if r["type"].startswith("azure-native:")}
    assert types, "the program registers no azure-native resource"
    assert sorted(types - set(arm_ids.BY_TOKEN)) == []


@pytest.mark.parametrize("row", arm_ids.TYPES, ids=lambda row: row.token)
def test_an_id_built_from_a_row_parses_back_to_that_row(row: arm_ids.ArmType):
    names = [f"n{i}" for i in range(len(row.collections))]
    built = arm_ids.build("sub-1", "rg-1", row.token, *names)
    ref = arm_ids.parse(built)
    assert ref is not None and ref.resource_group == "rg-1" and ref.subscription == "sub-1"
    if row.token == arm_ids.RESOURCE_GROUP:
        assert built == "/subscriptions/sub-1/resourceGroups/rg-1"
        assert ref.names == ("rg-1",)
    else:
        assert ref.provider == row.provider and ref.names == tuple(names)
    assert arm_ids.type_of(ref) == row
    if row.provider:  # a sub-resource's id (an ip-configuration) still names its row
        sub = arm_ids.parse(built + "/ipConfigurations/c")
        assert sub is not None and arm_ids.type_of(sub, len(row.collections)) == row


def test_one_row_per_type_and_per_collection_path():
    assert len(arm_ids.BY_TOKEN) == len(arm_ids.TYPES)
    assert len(arm_ids.BY_PATH) == len(arm_ids.TYPES)
    for row in arm_ids.TYPES:
        assert len(row.name_inputs) == len(row.collections), row.token


def test_build_refuses_the_wrong_number_of_names():
    with pytest.raises(ValueError, match="subnetName"):
        arm_ids.build("s", "rg", "azure-native:network:Subnet", "only-the-vnet")


def test_parse_reads_partial_ids_and_refuses_free_text():
    ref = arm_ids.parse("/providers/Microsoft.Network/networkInterfaces/nic/ipConfigurations/pe")
    assert ref is not None and ref.collections == ("networkInterfaces", "ipConfigurations")
    assert ref.resource_group is None and ref.name_of("IPCONFIGURATIONS") == "pe"
    for text in ("", "nic-1", "/subscriptions/x", 42, None):
        assert arm_ids.parse(text) is None
    assert arm_ids.segment("/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/"
                           "virtualNetworks/v/subnets/a", "virtualNetworks") == "v"


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: p.stem)
def test_every_id_in_a_snapshot_names_a_resource_of_that_graph(snapshot):
    """The program wires resources together by the ids the mocks hand out; each such id,
    read back through the table, is the id the table builds for a resource in the graph."""
    graph = json.loads(snapshot.read_text(encoding="utf-8"))
    own = {mocks.azure_id(r["type"], r["name"], r["inputs"]).lower()
           for r in graph if r["type"] in arm_ids.BY_TOKEN}
    checked = 0
    # Azure resources only: an attempt's target is what it would create, by design absent.
    for resource in (r for r in graph if r["type"] in arm_ids.BY_TOKEN):
        for text in strings(resource["inputs"]):
            ref = arm_ids.parse(text)
            if ref is None or ref.subscription != mocks.SUBSCRIPTION_ID:
                continue
            # The resource itself, or the one holding it inline (a LB's pool, a NIC's config).
            targets = [arm_ids.build(ref.subscription, str(ref.resource_group), row.token,
                                     *ref.names[:depth])
                       for depth in range(len(ref.collections), 0, -1)
                       if (row := arm_ids.type_of(ref, depth)) is not None]
            assert targets, f"{snapshot.stem}: no row for {text}"
            assert any(t.lower() in own for t in targets), f"{snapshot.stem}: {text} names nothing"
            checked += 1
    assert checked, f"{snapshot.stem}: no id to check"
