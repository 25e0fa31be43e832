"""The policy pack's validators, called directly with pulumi-policy's own argument objects.

A ``PolicyPack`` is never constructed here (it starts a server and never returns); the
validators get ``StackValidationArgs`` of ``PolicyResource``s whose props are wrapped in
pulumi-policy's unknown-checking proxies, as the analyzer hands them over during a preview.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

import pytest
from helpers.graphs import UNKNOWN, b1_graph, b2_graph, node, r1_graph
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    PolicyResourceOptions,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from vtaplab import PROJECT_ROOT
from vtaplab.preflight import check, rules

ROOT = PROJECT_ROOT
sys.path.insert(0, str(ROOT / "policy"))
import vtaplab_policies  # noqa: E402


def stack_args(graph: list[dict[str, Any]]) -> StackValidationArgs:
    opts = PolicyResourceOptions(False, [], None, [], None, [], None)  # type: ignore[arg-type]
    by_urn: dict[str, PolicyResource] = {}
    resources = []
    for e in graph:
        r = PolicyResource(e["type"], unknown_checking_proxy(e["inputs"]), e["urn"], e["name"],
                           opts, None, None, [], {})
        by_urn[e["urn"]] = r
        resources.append((r, e["parent"]))
    for r, parent in resources:
        r.parent = by_urn.get(parent) if parent else None
    stack = PolicyResource("pulumi:pulumi:Stack", unknown_checking_proxy({}),
                           "urn:pulumi:b2::vtaplab::pulumi:pulumi:Stack::vtaplab-b2", "vtaplab-b2",
                           opts, None, None, [], {})
    return StackValidationArgs([stack, *(r for r, _ in resources)], {})


def run_pack(graph: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str]]:
    """(policy, enforcement, urn, message) of every violation every policy reports."""
    args = stack_args(graph)
    out: list[tuple[str, str, str | None, str]] = []
    for policy in vtaplab_policies.policies():
        level = policy.enforcement_level.value if policy.enforcement_level else "?"

        def report(message: str, urn: str | None = None, _p: str = policy.name,
                   _l: str = level) -> None:
            out.append((_p, _l, urn, message))

        assert policy.validate(args, report) is None
    return out


def check_findings(graph: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    report = check.evaluate(graph, stack="x", scenarios=check.graph_scenarios(graph))
    return sorted((f.rule, f.urn, f.message) for f in report.findings)


def pack_findings(graph: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    out = []
    for _policy, _level, urn, message in run_pack(graph):
        rule_id = message.split(" ", 1)[0]
        assert rule_id in rules.RULES_BY_ID, message
        out.append((rule_id, urn, _strip(message)))
    return sorted(out)


def _strip(message: str) -> str:
    """The rule's own message out of a violation message."""
    rest = message.split(" ", 1)[1]
    if rest.startswith("[ARM: "):
        rest = rest.split("] ", 1)[1]
    rest = rest.removeprefix("expected: ")
    if rest.startswith("expected by scenario "):
        rest = rest.split(": ", 1)[1]
    return rest


def _mutated_b2() -> list[dict[str, Any]]:
    g = b2_graph()
    node(g, "proxy-nic")["inputs"]["enableIPForwarding"] = False
    node(g, "src-nsg")["inputs"]["securityRules"][0]["sourceAddressPrefix"] = "*"
    node(g, "src-vm")["inputs"]["hardwareProfile"]["vmSize"] = "Standard_D4s_v6"
    del node(g, "col-ilb")["inputs"]["loadBalancingRules"][0]["probe"]
    g.append({"urn": "urn:pulumi:b2::vtaplab::azure-native:network:VirtualNetworkPeering::p",
              "type": rules.T_PEERING, "name": "p", "parent": None,
              "inputs": {"virtualNetworkName": "b2-vnet"}})
    return g


GRAPHS = {"b2": b2_graph, "r1": r1_graph, "b1": b1_graph, "b2-mutated": _mutated_b2}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_validators_give_the_same_findings_as_check(name):
    graph = GRAPHS[name]()
    assert pack_findings(graph) == check_findings(graph)


def test_mutated_b2_is_blocked_by_mandatory_policies():
    found = run_pack(_mutated_b2())
    by_policy = {(p, level) for p, level, _u, _m in found}
    assert {("proxy-nic-ip-forwarding", "mandatory"), ("no-open-inbound", "mandatory"),
            ("vtap-source-not-v6", "mandatory"), ("no-network-bridge", "mandatory"),
            ("lb-health-probe", "advisory")} == by_policy


def test_expected_rejection_is_advisory_with_its_arm_code():
    found = run_pack(r1_graph())
    assert len(found) == 1
    policy, level, urn, message = found[0]
    assert (policy, level) == (vtaplab_policies.EXPECTED_POLICY, "advisory")
    assert urn == node(r1_graph(), "r1-vtap-pe-destination")["urn"]
    assert message.startswith("VTAP001 [ARM: CannotSetPrivateLinkServiceOrPrivateEndpoint")
    assert "expected by scenario r1" in message


def test_clean_b2_reports_nothing():
    assert run_pack(b2_graph()) == []


def test_unknown_props_do_not_raise_during_preview():
    g = b2_graph()
    for e in g:
        for key in ("networkSecurityGroup", "virtualNetworkTap", "enableIPForwarding",
                    "destinationNetworkInterfaceIPConfiguration", "loadBalancingRules"):
            if key in e["inputs"]:
                e["inputs"][key] = UNKNOWN
    # The proxies raise UnknownValueError when an unknown is read: the validators must not.
    assert run_pack(g) == []
    assert vtaplab_policies.plain(unknown_checking_proxy({"a": [UNKNOWN, {"b": UNKNOWN}]})) == {
        "a": [UNKNOWN, {"b": UNKNOWN}]}


def test_one_policy_per_rule_with_matching_enforcement():
    policies = vtaplab_policies.policies()
    assert all(isinstance(p, StackValidationPolicy) for p in policies)
    names = [p.name for p in policies]
    assert len(names) == len(set(names))
    by_name = {p.name: p for p in policies}
    for r in rules.RULES:
        p = by_name[r.name]
        assert r.id in p.description
        want = EnforcementLevel.MANDATORY if r.severity == rules.MANDATORY else \
            EnforcementLevel.ADVISORY
        assert p.enforcement_level == want
        if r.arm_code:
            assert r.arm_code in p.description


def test_pack_entry_point_is_the_only_place_a_pack_is_built():
    """__main__.py builds the pack; nothing else in policy/ or vtaplab/ constructs one."""
    builders = []
    for path in [*ROOT.glob("policy/*.py"), *ROOT.glob("vtaplab/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "PolicyPack":
                builders.append(path.relative_to(ROOT).as_posix())
    assert builders == ["policy/__main__.py"]
    yaml_text = (ROOT / "policy" / "PulumiPolicy.yaml").read_text()
    assert "name: python" in yaml_text
    reqs = (ROOT / "policy" / "requirements.txt").read_text()
    assert "pulumi-policy" in reqs


def test_validators_agree_with_check_on_the_committed_stacks():
    """The program's own graphs (r1/b1 with the attempts they declare, b2 broken as
    test_check breaks it): the pack reports exactly what ``check`` reports."""
    from helpers.graphs import STACKS, _attempts, _mutations

    from vtaplab.preflight.mocks import GraphError, build_graph

    if not STACKS:
        pytest.skip("no Pulumi.<stack>.yaml committed yet")
    graphs: dict[str, list[dict[str, Any]]] = {}
    for stack in STACKS:
        try:
            graph = build_graph(stack, root=ROOT)
        except GraphError as error:
            pytest.fail(f"graph {stack}: {error}")
        if stack in ("r1", "b1"):
            assert _attempts(graph, stack), f"the program declares no attempt for {stack}"
        graphs[stack] = graph
    if "b2" in graphs:
        for what, (_rule, mutated) in _mutations(graphs["b2"]).items():
            graphs[f"b2 with {what}"] = mutated
    compared = 0
    for name, graph in graphs.items():
        assert pack_findings(graph) == check_findings(graph), name
        compared += bool(check_findings(graph))
    assert compared >= 2  # not only clean graphs
