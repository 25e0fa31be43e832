"""The policy pack started as the engine starts it, fed what the engine feeds a stack policy.

``policy/`` runs under the Python language host: ``<venv>/bin/python -u -m pulumi.policy
ENGINE policy/`` in ``policy/``, the venv from ``PulumiPolicy.yaml`` (tests/helpers/engine.py).
AnalyzeStack then gets each resource's *outputs*: azure-native's response shape — ``id``,
``name``, ``type``, references as ids (the NIC inside a tap configuration's id), no path
parameters such as ``networkInterfaceName`` or ``vmName`` — or, in a first preview, outputs
whose ids are all unknown, linked only by ``propertyDependencies``. The shapes are built here
from the hand-made b2 graph by the rules azure-native follows (recorded state:
pulumi/pulumi-azure-native ``provider/pkg/provider/testdata/recorded/TestProviderUpgrade/
upgrade-networked-vm/2.76.0/stack.json``; preview: the provider's ``Create`` with
``preview``, ``PreviewOutputs``).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helpers import engine
from helpers.graphs import PROXY_IPCFG, SUB, arm_id, b1_graph, b2_graph, node, r1_graph
from pulumi.runtime.proto import analyzer_pb2

from vtaplab import PROJECT_ROOT, arm_ids
from vtaplab.preflight import check, rules

PACK = PROJECT_ROOT / "policy"
STACK_URN = "urn:pulumi:b2::vtaplab::pulumi:pulumi:Stack::vtaplab-b2"
MANDATORY = analyzer_pb2.EnforcementLevel.Value("MANDATORY")

# azure-native type -> (ARM provider/collection path, parent path-parameter, own path-parameter)
_SHAPES: dict[str, tuple[str, str | None, str]] = {
    kind.token: (f"{kind.provider or 'Microsoft.Resources'}/{kind.path}", kind.parent_input,
                 kind.name_input)
    for kind in arm_ids.TYPES
}


def _own_id(entry: dict[str, Any]) -> str | None:
    """The id ARM would report for a hand-built graph entry (vtaplab.arm_ids' table)."""
    if entry["type"] not in arm_ids.BY_TOKEN:
        return None
    subscription = SUB.rsplit("/", 1)[-1]
    return arm_ids.id_from_inputs(subscription, entry["type"], entry["name"], entry["inputs"])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _replace_ids(value: Any, ids: set[str]) -> Any:
    """Every id taken from another resource's output, unknown (a first preview)."""
    if isinstance(value, str):
        return engine.UNKNOWN if any(_owned_by(value, i) for i in ids) else value
    if isinstance(value, dict):
        return {k: _replace_ids(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_ids(v, ids) for v in value]
    return value


def _owned_by(ref: str, own_id: str) -> bool:
    ref, own_id = ref.lower(), own_id.lower()
    return ref == own_id or ref.startswith(own_id + "/")


def as_engine_resources(graph: list[dict[str, Any]], *, preview: bool) -> list[Any]:
    """The graph's resources as AnalyzeStack receives them (see the module docstring)."""
    graph = copy.deepcopy(graph)
    ids = {e["urn"]: i for e in graph if (i := _own_id(e))}
    by_name = {(e["type"], rules.Node("", e["type"], "", None, e["inputs"]).azure_name): e["urn"]
               for e in graph if e["type"] in _SHAPES}
    by_urn = {e["urn"]: e for e in graph}
    outputs: dict[str, dict[str, Any]] = {}
    deps: dict[str, dict[str, list[str]]] = {}
    for e in graph:
        shape = _SHAPES.get(e["type"])
        if shape is None:
            # Components register no outputs here; a dynamic resource's outputs hold its inputs
            # (in a preview exactly its inputs: the dynamic provider has no preview of Create).
            out = {} if e["type"].startswith("vtaplab:index:") else e["inputs"]
            outputs[e["urn"]] = _replace_ids(out, set(ids.values())) if preview else out
            deps[e["urn"]] = {k: sorted({u for s in _strings(v) for u, i in ids.items()
                                         if _owned_by(s, i)}) for k, v in out.items()}
            continue
        _path, parent_key, own_key = shape
        path_params = {own_key, "resourceGroupName", *([parent_key] if parent_key else [])}
        # propertyDependencies: the input's value came from these resources' outputs.
        deps[e["urn"]] = {}
        for key, value in e["inputs"].items():
            urns = {u for s in _strings(value) for u, i in ids.items()
                    if u != e["urn"] and _owned_by(s, i)}
            if key in path_params and key != own_key:
                typ = rules.T_RG if key == "resourceGroupName" else next(
                    t for t, (_p, _pk, own) in _SHAPES.items() if own.startswith(
                        key.removesuffix("Name")) and t != e["type"])
                if (typ, value) in by_name:
                    urns.add(by_name[(typ, value)])
            if urns:
                deps[e["urn"]][key] = sorted(urns)
        out = {k: v for k, v in e["inputs"].items() if k not in path_params}
        if preview:
            out = _replace_ids(out, set(ids.values()))
            out.update({"id": engine.UNKNOWN, "name": engine.UNKNOWN, "type": engine.UNKNOWN})
        else:
            out.update({"id": ids[e["urn"]], "name": e["inputs"][own_key],
                        "type": _path})
            if e["type"] == rules.T_NIC:
                for cfg in out.get("ipConfigurations", []):
                    cfg["id"] = f"{ids[e['urn']]}/ipConfigurations/{cfg['name']}"
                out["tapConfigurations"] = []  # written before its tap configurations
        outputs[e["urn"]] = out
    if not preview:  # the response schema embeds what a reference points at
        nic_cfgs = {c["id"].lower(): c for e in graph if e["type"] == rules.T_NIC
                    for c in outputs[e["urn"]].get("ipConfigurations", [])}
        for e in graph:
            out = outputs[e["urn"]]
            dest = out.get("destinationNetworkInterfaceIPConfiguration")
            if e["type"] == rules.T_TAP and dest and dest["id"].lower() in nic_cfgs:
                out["destinationNetworkInterfaceIPConfiguration"] = copy.deepcopy(
                    nic_cfgs[dest["id"].lower()])
        for e in graph:
            out = outputs[e["urn"]]
            if e["type"] == rules.T_TAP_CONFIG:
                tap = next(u for u, i in ids.items() if i.lower() ==
                           out["virtualNetworkTap"]["id"].lower())
                out["virtualNetworkTap"] = copy.deepcopy(outputs[tap])
    resources = [engine.stack_resource(STACK_URN, "pulumi:pulumi:Stack", {})]
    for e in graph:
        resources.append(engine.stack_resource(
            e["urn"], e["type"], outputs[e["urn"]], parent=e["parent"] or STACK_URN,
            property_dependencies=deps.get(e["urn"])))
    assert by_urn  # the graph was not empty
    return resources


def broken_b2() -> list[dict[str, Any]]:
    """b2 with the two mistakes the engine's outputs used to hide: a v6 tapped VM, and the vTAP
    sent straight to the collector's NIC in the provider VNet (no peering)."""
    g = b2_graph()
    node(g, "src-vm")["inputs"]["hardwareProfile"]["vmSize"] = "Standard_D2s_v6"
    node(g, "b2-vtap")["inputs"]["destinationNetworkInterfaceIPConfiguration"] = {
        "id": arm_id("networkInterfaces", "col-nic", "ipConfigurations", "ipconfig1")}
    return g


@pytest.fixture(scope="module")
def analyzer():
    with engine.policy_pack_host(PACK, project="vtaplab", stack="b2") as a:
        yield a


def _violations(analyzer, graph, *, preview: bool) -> set[tuple[str, str, int]]:
    response = analyzer.analyze_stack(as_engine_resources(graph, preview=preview))
    return {(d.policyName, d.urn, d.enforcementLevel) for d in response.diagnostics}


@pytest.mark.parametrize("preview", [False, True], ids=["outputs", "preview-outputs"])
def test_engine_started_pack_blocks_v6_source_and_cross_vnet_destination(analyzer, preview):
    g = broken_b2()
    found = _violations(analyzer, g, preview=preview)
    assert ("vtap-source-not-v6", node(g, "src-vm")["urn"], MANDATORY) in found
    assert ("vtap-same-network-and-region", node(g, "b2-src0")["urn"], MANDATORY) in found
    # The same graph, as inputs, under check: the two shapes agree on these rules.
    report = check.evaluate(g, stack="b2", scenarios=("b2",))
    assert {"VTAP006", "VTAP008"} <= {f.rule for f in report.findings}


@pytest.mark.parametrize("preview", [False, True], ids=["outputs", "preview-outputs"])
def test_engine_started_pack_passes_a_sound_b2(analyzer, preview):
    assert _violations(analyzer, b2_graph(), preview=preview) == set()


def test_output_shape_has_no_path_parameters():
    """The stand-in shape is the engine's: no networkInterfaceName/vmName, ids instead."""
    res = {r.urn: engine.unstruct(r.properties)
           for r in as_engine_resources(b2_graph(), preview=False)}
    g = b2_graph()
    cfg = res[node(g, "b2-src0")["urn"]]
    assert "networkInterfaceName" not in cfg and "resourceGroupName" not in cfg
    assert "/networkInterfaces/src-nic/tapConfigurations/" in cfg["id"]
    assert cfg["virtualNetworkTap"]["destinationNetworkInterfaceIPConfiguration"]["id"] == \
        PROXY_IPCFG
    vm = res[node(g, "src-vm")["urn"]]
    assert "vmName" not in vm and vm["name"] == "src-vm"
    preview = {r.urn: r for r in as_engine_resources(b2_graph(), preview=True)}
    p_cfg = preview[node(g, "b2-src0")["urn"]]
    assert engine.unstruct(p_cfg.properties)["id"] == engine.UNKNOWN
    assert list(p_cfg.propertyDependencies["networkInterfaceName"].urns) == [
        node(g, "src-nic")["urn"]]


def test_pack_venv_is_the_project_venv():
    """PulumiPolicy.yaml's virtualenv resolves (from policy/) to an interpreter that exists:
    the engine runs the pack with it and Pulumi never creates a pack's venv."""
    python = engine.policy_python(PACK)
    assert python.exists(), python
    assert python.parent.parent.resolve() == (PROJECT_ROOT / "venv").resolve()


def _more_broken_b2() -> list[dict[str, Any]]:
    """broken_b2 plus mistakes other rules catch: forwarding off on the proxy, SSH open to
    the internet, a peering that bridges the two sides."""
    g = broken_b2()
    node(g, "proxy-nic")["inputs"]["enableIPForwarding"] = False
    node(g, "src-nsg")["inputs"]["securityRules"][0]["sourceAddressPrefix"] = "*"
    g.append({"urn": "urn:pulumi:b2::vtaplab::azure-native:network:VirtualNetworkPeering::p",
              "type": rules.T_PEERING, "name": "p", "parent": None,
              "inputs": {"virtualNetworkPeeringName": "p", "virtualNetworkName": "b2-vnet",
                         "resourceGroupName": "rg-vtaplab-b2",
                         "remoteVirtualNetwork": {"id": arm_id("virtualNetworks", "col-vnet")}}})
    return g


@pytest.mark.parametrize("make", [broken_b2, _more_broken_b2])
def test_outputs_and_inputs_give_the_same_findings(analyzer, make):
    """After `up` (outputs known), the engine-started pack reports what `check` reports on the
    program's inputs: every rule reads both shapes."""
    g = make()
    report = check.evaluate(g, stack="b2", scenarios=("b2",))
    from_inputs = {(rules.RULES_BY_ID[f.rule].name, f.urn) for f in report.findings}
    from_outputs = {(p, u) for p, u, _level in _violations(analyzer, g, preview=False)}
    assert from_outputs == from_inputs
    assert len(from_inputs) >= 2


@pytest.mark.parametrize("preview", [False, True], ids=["outputs", "preview-outputs"])
@pytest.mark.parametrize("make", [r1_graph, b1_graph])
def test_rejected_scenarios_are_advisory_not_blocking(analyzer, make, preview):
    """r1/b1 exist to be refused: the pack predicts it (expected-rejections, advisory) and
    blocks nothing, also when the PE's id is still unknown."""
    found = _violations(analyzer, make(), preview=preview)
    assert found and {p for p, _u, _l in found} == {"expected-rejections"}
    assert {level for _p, _u, level in found} == {
        analyzer_pb2.EnforcementLevel.Value("ADVISORY")}


@pytest.mark.parametrize("probe", ["http", "tcp"])
def test_b4_program_graph_through_the_engine_started_pack(analyzer, probe):
    """b4 as the program builds it (under mocks, with ``--set proxyProbe``), in the engine's
    outputs shape: the scale set's rules read it; the reference lab's TCP/22 probe on the
    vTAP's LB is flagged, advisory only, and the deployed HTTP probe is clean; the same
    findings as ``check`` on the inputs."""
    from vtaplab.preflight.mocks import build_graph

    g = copy.deepcopy(build_graph("b4", overrides={"proxyProbe": probe}))
    found = _violations(analyzer, g, preview=False)
    names = {p for p, _u, _l in found}
    if probe == "http":
        assert found == set()
    else:
        assert names == {rules.RULES_BY_ID["VTAP024"].name}
        assert {level for _p, _u, level in found} == {
            analyzer_pb2.EnforcementLevel.Value("ADVISORY")}
    report = check.evaluate(g, stack="b4", scenarios=("b4",))
    assert {rules.RULES_BY_ID[f.rule].name for f in report.findings} == names


def test_b4_scale_set_without_its_health_extension_is_blocked_by_the_pack(analyzer):
    """The scale set itself, in the outputs shape: rolling upgrades without the Application
    Health extension are refused (VTAP025, mandatory), as check refuses them on inputs."""
    from vtaplab.preflight.mocks import build_graph

    g = copy.deepcopy(build_graph("b4"))
    vmss = next(r for r in g if r["type"] == "azure-native:compute:VirtualMachineScaleSet")
    vmss["inputs"]["virtualMachineProfile"].pop("extensionProfile")
    found = _violations(analyzer, g, preview=False)
    assert (rules.RULES_BY_ID["VTAP025"].name, vmss["urn"], MANDATORY) in found
