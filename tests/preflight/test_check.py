"""``python -m vtaplab check``: on hand-built graphs, graph files and every committed stack."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
from helpers.graphs import (
    OPERATOR,
    STACKS,
    UNKNOWN,
    _attempts,
    _mutations,
    b1_graph,
    b2_graph,
    node,
    r1_graph,
)

from vtaplab import PROJECT_ROOT, facts
from vtaplab.preflight import check, mocks, rules

ROOT = PROJECT_ROOT


def failing(report: check.Report) -> list[str]:
    return sorted(f.rule for f in report.failing)


# --- expectations -------------------------------------------------------------------------------


def test_r1_prediction_is_shown_as_expected_and_passes():
    report = check.evaluate(r1_graph(), stack="r1", scenarios=["r1"])
    assert report.exit_code == 0
    assert [f.arm_code for f in report.findings] == [facts.ARM_PE_AS_VTAP_DESTINATION]
    assert report.expected == [True]
    text = check.render(report)
    assert "EXPECTED" in text and facts.ARM_PE_AS_VTAP_DESTINATION in text
    assert "scenario r1: prediction matches the expected outcome" in text


def test_b1_predictions_are_expected():
    report = check.evaluate(b1_graph(), stack="b1", scenarios=["b1"])
    assert report.exit_code == 0 and all(report.expected)
    pred = check.prediction(report, "b1")
    assert pred["matches"]
    assert {p["arm_code"] for p in pred["predicted"]} <= {*facts.SCENARIOS["b1"].expected_arm_codes,
                                                          None}
    assert facts.ARM_MODIFY_PE_NIC in {p["arm_code"] for p in pred["predicted"]}


def test_a_rejection_in_a_scenario_that_does_not_expect_it_fails():
    # r1's vTAP, in a stack that says it runs b2: nobody expects that rejection.
    report = check.evaluate(r1_graph(), stack="x", scenarios=["b2"])
    assert failing(report) == ["VTAP001"] and report.exit_code == 1
    assert "FAIL" in check.render(report)


def test_expected_rejection_not_predicted_fails():
    report = check.evaluate(b2_graph(), stack="r1", scenarios=["r1"])
    assert report.findings == [] and report.unpredicted == ["r1"]
    assert report.exit_code == 1
    assert "MISMATCH" in check.render(report)


def test_advisory_alone_passes():
    g = b2_graph()
    del node(g, "col-ilb")["inputs"]["loadBalancingRules"][0]["probe"]
    report = check.evaluate(g, stack="b2", scenarios=["b2"])
    assert [f.rule for f in report.findings] == ["VTAP023"] and report.exit_code == 0


# --- the mutated b2 graph is caught -------------------------------------------------------------




def _assert_mutations_caught(graph: list[dict[str, Any]]) -> None:
    assert check.evaluate(graph, stack="b2", scenarios=["b2"]).exit_code == 0
    for what, (rule_id, mutated) in _mutations(graph).items():
        report = check.evaluate(mutated, stack="b2", scenarios=["b2"])
        assert failing(report) == [rule_id], what
        assert report.exit_code == 1, what


def test_mutated_hand_built_b2_graph_is_caught():
    _assert_mutations_caught(b2_graph())


# --- the command line ---------------------------------------------------------------------------


def test_graph_file_json_output(tmp_path, capsys):
    path = tmp_path / "r1.json"
    path.write_text(json.dumps(r1_graph()))
    assert check.main(["--graph", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scenarios"] == ["r1"]  # from the attempt's inputs
    assert [f["rule"] for f in out["findings"]] == ["VTAP001"]
    assert out["findings"][0]["expected"] is True
    assert out["predictions"]["r1"]["matches"] is True


def test_graph_file_with_explicit_scenarios_and_diff(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(b2_graph()))
    g = b2_graph()
    node(g, "proxy-nic")["inputs"]["enableIPForwarding"] = False
    new.write_text(json.dumps(g))
    assert check.main(["--graph", str(new), "--scenarios", "b2", "--diff", str(old),
                       "--markdown"]) == 1
    out = capsys.readouterr().out
    assert "| FAIL | VTAP020 |" in out
    assert "~ azure-native:network:NetworkInterface proxy-nic" in out
    assert "enableIPForwarding: true -> false" in out


def test_graph_diff_lists_added_removed_changed():
    old = b2_graph()
    new = [e for e in copy.deepcopy(old) if e["name"] != "src-vm"]
    node(new, "col-pls")["inputs"]["ipConfigurations"].append({"name": "nat2"})
    new.append({"urn": "urn:x", "type": "t:x:Y", "name": "y", "parent": None, "inputs": {}})
    lines = check.graph_diff(old, new)
    assert "+ t:x:Y y" in lines
    assert "- azure-native:compute:VirtualMachine src-vm" in lines
    assert '    ipConfigurations[2].name: (absent) -> "nat2"' in lines
    assert check.graph_diff(old, copy.deepcopy(old)) == []
    # A long value (cloud-init user data) shows as its size and digest, not 60 kB of base64.
    node(new, "src-nic")["inputs"]["tags"] = {"blob": "x" * 5000}
    line = next(x for x in check.graph_diff(old, new) if "tags.blob" in x)
    assert "(absent) -> <5002 chars, sha256 " in line and len(line) < 120


@pytest.mark.parametrize("argv, needle", [
    ([], "give a STACK or --graph FILE"),
    (["b2", "--graph", "x.json"], "give a STACK or --graph FILE"),
    (["--graph", "/nonexistent/graph.json"], "/nonexistent/graph.json"),
    (["no-such-stack"], "no-such-stack"),
])
def test_bad_input_is_one_line(argv, needle, capsys):
    assert check.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_bad_graph_files(tmp_path, capsys):
    for content, needle in (("{", "not JSON"), ('{"a": 1}', "not a resource graph"),
                            ("[1, 2]", "not a resource graph")):
        path = tmp_path / "g.json"
        path.write_text(content)
        assert check.main(["--graph", str(path)]) == 2
        assert needle in capsys.readouterr().err
    path = tmp_path / "g.json"
    path.write_text(json.dumps(b2_graph()))
    assert check.main(["--graph", str(path), "--scenarios", "zz"]) == 2
    assert "accepted: r1" in capsys.readouterr().err


def test_unknown_ids_in_a_graph_file_do_not_crash(tmp_path, capsys):
    g = b2_graph()
    for e in g:
        for key in ("networkSecurityGroup", "virtualNetworkTap",
                    "destinationNetworkInterfaceIPConfiguration"):
            if key in e["inputs"]:
                e["inputs"][key] = {"id": UNKNOWN}
    path = tmp_path / "g.json"
    path.write_text(json.dumps(g))
    assert check.main(["--graph", str(path), "--scenarios", "b2"]) == 0
    assert "no findings" in capsys.readouterr().out


# --- every committed stack ----------------------------------------------------------------------


class _Graphs:
    """Each committed stack's graph (``mocks.build_graph``: built once per stack and process)."""

    def __getitem__(self, stack: str) -> list[dict[str, Any]]:
        try:
            return mocks.build_graph(stack, root=ROOT)
        except mocks.GraphError as error:
            pytest.fail(f"graph {stack}: {error}")


@pytest.fixture(scope="session")
def stack_graphs() -> _Graphs:
    if not STACKS:
        pytest.skip("no Pulumi.<stack>.yaml committed yet")
    return _Graphs()




@pytest.mark.parametrize("stack", STACKS)
def test_committed_stack(stack, stack_graphs):
    graph = stack_graphs[stack]
    scenarios = check.stack_scenarios(stack, ROOT)
    assert scenarios, f"Pulumi.{stack}.yaml names no scenario"
    report = check.evaluate(graph, stack=stack, scenarios=scenarios)
    assert report.failing == [], check.render(report)
    for s in scenarios:
        if check.expects_rejection(s):
            if not _attempts(graph, s):
                pytest.skip(f"stack {stack}: the program declares no attempt for {s} yet "
                            "(components.rejected_attempt.RejectedAttempt), so there is nothing "
                            "to predict")
            pred = check.prediction(report, s)
            expected = set(facts.SCENARIOS[s].expected_arm_codes)
            predicted = {p["arm_code"] for p in pred["predicted"]}
            assert pred["matches"] and predicted & expected, (s, pred)
            assert predicted - {None} <= expected, (s, pred)
        else:
            # b2, a: clean — no mandatory finding at all, expected or not.
            mine = [f for f in report.findings if f.severity == rules.MANDATORY
                    and f.scenario in (None, s)]
            assert not [f for f in mine if not check.is_expected(f, [s])], check.render(report)
    if set(scenarios) <= {"b2", "a"}:
        assert [f for f in report.findings if f.severity == rules.MANDATORY] == []


@pytest.mark.parametrize("stack", [s for s in ("b2",) if s in STACKS])
def test_mutated_committed_b2_graph_is_caught(stack, stack_graphs):
    _assert_mutations_caught(stack_graphs[stack])


def test_check_command_end_to_end(stack_graphs):
    stack = "b2" if "b2" in STACKS else STACKS[0]
    stack_graphs[stack]  # the program builds: the command's failure would be its own
    done = subprocess.run([sys.executable, "-m", "vtaplab", "check", stack], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"vtaplab check {stack}:" in done.stdout
    assert OPERATOR not in done.stdout  # the hand-built graphs' operator: not this graph




@pytest.mark.parametrize("stack", [s for s in ("r1", "b1") if s in STACKS])
def test_committed_stack_with_its_attempts_predicts_the_rejection(stack, stack_graphs):
    """What ``check`` says of the attempts the program declares: the stack's own PE is
    recognised through the graph's ids, and the prediction is exactly the expected one."""
    graph = stack_graphs[stack]
    assert _attempts(graph, stack), f"the program declares no attempt for {stack}"
    report = check.evaluate(graph, stack=stack, scenarios=[stack])
    assert report.exit_code == 0, check.render(report)
    pred = check.prediction(report, stack)
    codes = {p["arm_code"] for p in pred["predicted"]}
    assert pred["matches"] and codes - {None} <= set(facts.SCENARIOS[stack].expected_arm_codes)
    assert codes & set(facts.SCENARIOS[stack].expected_arm_codes)
    assert all(f"{stack}-pe" in f.message for f in report.findings), check.render(report)


# --- every rule fires on the program's own graphs, as the program shapes them ----------------


def _by_type(graph: list[dict[str, Any]], typ: str) -> list[dict[str, Any]]:
    return [e for e in graph if e["type"] == typ]


def _tap(graph: list[dict[str, Any]]) -> dict[str, Any]:
    taps = _by_type(graph, rules.T_TAP)
    assert len(taps) == 1
    return taps[0]


def _pls_lb(graph: list[dict[str, Any]]) -> dict[str, Any]:
    pls = _by_type(graph, rules.T_PLS)[0]
    fe_id = pls["inputs"]["loadBalancerFrontendIpConfigurations"][0]["id"]
    lb_name = fe_id.split("/loadBalancers/")[1].split("/")[0]
    return next(e for e in _by_type(graph, rules.T_LB)
                if e["inputs"].get("loadBalancerName") == lb_name)


def _collector_nic(graph: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in _by_type(graph, rules.T_NIC)
                if e["inputs"].get("ipConfigurations")[0].get("loadBalancerBackendAddressPools")
                or "col" in e["name"])


def _nsg_of(graph: list[dict[str, Any]], nic: dict[str, Any]) -> dict[str, Any]:
    name = nic["inputs"]["networkSecurityGroup"]["id"].rsplit("/", 1)[-1]
    return next(e for e in _by_type(graph, rules.T_NSG)
                if e["inputs"].get("networkSecurityGroupName") == name)


def _set_all_locations(graph: list[dict[str, Any]], region: str) -> None:
    for e in graph:
        if "location" in e["inputs"]:
            e["inputs"]["location"] = region


def _m_pe_nic_destination(g):
    pe = _by_type(g, rules.T_PE)[0]
    nic = pe["inputs"]["customNetworkInterfaceName"]
    tap = _tap(g)["inputs"]
    old = tap["destinationNetworkInterfaceIPConfiguration"]["id"]
    tap["destinationNetworkInterfaceIPConfiguration"]["id"] = (
        old.split("/networkInterfaces/")[0] + f"/networkInterfaces/{nic}/ipConfigurations/pe")


def _m_firewall_destination(g):
    tap = _tap(g)["inputs"]
    old = tap["destinationNetworkInterfaceIPConfiguration"]["id"]
    tap["destinationNetworkInterfaceIPConfiguration"]["id"] = (
        old.split("/networkInterfaces/")[0] + "/azureFirewalls/fw/ipConfigurations/c")


def _m_ip_pool_behind_pls(g):
    _pls_lb(g)["inputs"]["backendAddressPools"].append(
        {"name": "by-ip", "loadBalancerBackendAddresses": [{"name": "x",
                                                            "ipAddress": "10.40.3.4"}]})


def _m_destination_across_vnets(g):
    col = _collector_nic(g)
    tap = _tap(g)["inputs"]
    old = tap["destinationNetworkInterfaceIPConfiguration"]["id"]
    tap["destinationNetworkInterfaceIPConfiguration"]["id"] = (
        old.split("/networkInterfaces/")[0]
        + f"/networkInterfaces/{col['inputs']['networkInterfaceName']}/ipConfigurations/"
        + col["inputs"]["ipConfigurations"][0]["name"])


def _m_eleven_vtaps(g):
    tap = _tap(g)
    for i in range(facts.MAX_VTAPS_PER_SUBSCRIPTION):
        g.append({**copy.deepcopy(tap), "urn": f"{tap['urn']}-{i}", "name": f"{tap['name']}-{i}"})


def _m_deny_vxlan_at_collector(g):
    _nsg_of(g, _collector_nic(g))["inputs"]["securityRules"].append({
        "name": "deny-vxlan", "priority": 150, "protocol": "Udp", "access": "Deny",
        "direction": "Inbound", "sourceAddressPrefix": "VirtualNetwork", "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": "4789"})


def _m_tcp_only_lb(g):
    for r in _pls_lb(g)["inputs"]["loadBalancingRules"]:
        r["protocol"] = "Tcp"


def _m_no_probe(g):
    for r in _pls_lb(g)["inputs"]["loadBalancingRules"]:
        r.pop("probe", None)


def _m_password(g):
    vm = _by_type(g, rules.T_VM)[0]
    vm["inputs"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] = False


def _m_dc_nat_count(g):
    _by_type(g, rules.T_PLS)[0]["inputs"]["ipConfigurations"].pop()


def _m_dc_dynamic_destination(g):
    dest = _by_type(g, rules.T_PLS)[0]["inputs"]["destinationIPAddress"]
    nic = next(e for e in _by_type(g, rules.T_NIC)
               if e["inputs"]["ipConfigurations"][0].get("privateIPAddress") == dest)
    nic["inputs"]["ipConfigurations"][0]["privateIPAllocationMethod"] = "Dynamic"


REAL_MUTATIONS = {
    "vTAP at the PE's NIC": ("b2", {"VTAP001"}, _m_pe_nic_destination),
    "vTAP at a firewall": ("b2", {"VTAP002"}, _m_firewall_destination),
    "IP-based pool behind the PLS": ("b2", {"VTAP005"}, _m_ip_pool_behind_pls),
    "vTAP across unpeered VNets": ("b2", {"VTAP006"}, _m_destination_across_vnets),
    "region without vTAP": ("b2", {"VTAP007"}, lambda g: _set_all_locations(g, "westeurope")),
    "eleven vTAPs": ("b2", {"VTAP009"}, _m_eleven_vtaps),
    "NSG drops VXLAN at the collector": ("b2", {"VTAP021"}, _m_deny_vxlan_at_collector),
    "PLS's ILB without a UDP rule": ("b2", {"VTAP022"}, _m_tcp_only_lb),
    "ILB rule without a probe": ("b2", {"VTAP023"}, _m_no_probe),
    "password login": ("b2", {"VTAP041"}, _m_password),
    "Direct Connect outside its regions": ("a", {"VTAP010"},
                                           lambda g: _set_all_locations(g, "uksouth")),
    "Direct Connect with 1 NAT IP": ("a", {"VTAP011"}, _m_dc_nat_count),
    "Direct Connect to a dynamic IP": ("a", {"VTAP012"}, _m_dc_dynamic_destination),
}


@pytest.mark.parametrize("what", sorted(REAL_MUTATIONS))
def test_each_rule_fires_on_the_programs_own_graph(what, stack_graphs):
    stack, want, mutate = REAL_MUTATIONS[what]
    if stack not in STACKS:
        pytest.skip(f"no Pulumi.{stack}.yaml")
    graph = copy.deepcopy(stack_graphs[stack])
    assert check.evaluate(graph, stack=stack, scenarios=[stack]).findings == []
    mutate(graph)
    found = {f.rule for f in check.evaluate(graph, stack=stack, scenarios=[stack]).findings}
    assert found == want, what
