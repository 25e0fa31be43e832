"""``graph STACK --set KEY=VALUE``: config overrides on top of a stack file, checked by the
config loader (a bad one is one line, exit 2), threaded through ``mocks.build_run`` and
``build_graph``; and what ``--set proxyProbe=tcp`` changes in b3's and b4's graphs (the
consumer LB's probe, which VTAP024 then reports), and what it must not change (the default)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from components.internal_lb import HTTP_PROBE, PROBE, PROBE_PORT
from vtaplab import PROJECT_ROOT, facts
from vtaplab.preflight import mocks, rules

T_LB = "azure-native:network:LoadBalancer"
TCP = {"proxyProbe": "tcp"}
LB_FRONTED = ("b3", "b4")


def run_graph(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vtaplab", "graph", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def consumer_lb(graph: list[dict[str, Any]], stack: str) -> dict[str, Any]:
    found = [r for r in graph if r["type"] == T_LB and r["name"] == f"{stack}-ilb"]
    assert len(found) == 1, [r["name"] for r in graph if r["type"] == T_LB]
    return found[0]


@pytest.fixture(scope="module")
def tcp_graph_of() -> dict[str, list[dict[str, Any]]]:
    return {stack: mocks.build_graph(stack, overrides=TCP) for stack in LB_FRONTED}


# --- the TCP/22 variant of b3 and b4 -----------------------------------------------------------
@pytest.mark.parametrize("stack", LB_FRONTED)
def test_proxy_probe_tcp_gives_the_consumer_lb_the_tcp_22_probe(stack, tcp_graph_of, graph_of):
    lb = consumer_lb(tcp_graph_of[stack], stack)["inputs"]
    assert [(p["name"], p["protocol"], p["port"]) for p in lb["probes"]] == [
        (PROBE, "Tcp", PROBE_PORT)]
    assert "requestPath" not in lb["probes"][0]
    # the same cadence as the HTTP probe: only what the probe asks differs
    http = consumer_lb(graph_of(stack), stack)["inputs"]["probes"][0]
    assert http["name"] == HTTP_PROBE and http["protocol"] == "Http"
    for field in ("intervalInSeconds", "numberOfProbes", "probeThreshold"):
        assert lb["probes"][0][field] == http[field], field
    (rule,) = lb["loadBalancingRules"]
    assert rule["probe"]["id"].endswith(f"/probes/{PROBE}")


@pytest.mark.parametrize("stack", LB_FRONTED)
def test_proxy_probe_tcp_changes_nothing_but_the_consumer_lbs_probe(stack, tcp_graph_of,
                                                                      graph_of):
    default = {r["urn"]: r for r in graph_of(stack)}
    tcp = {r["urn"]: r for r in tcp_graph_of[stack]}
    assert set(tcp) == set(default)
    changed = sorted(r["name"] for urn, r in tcp.items() if r != default[urn])
    # so the proxies keep their health endpoint (user data) and its NSG rules: b4's upgrades
    # are gated by it, and only the probe source may reach it either way
    assert changed == [f"{stack}-ilb"]
    health = [r for r in tcp.values() if str(facts.HEALTH_PORT) in json.dumps(r["inputs"])]
    assert {r["type"] for r in health} >= {"azure-native:network:NetworkSecurityGroup"}


@pytest.mark.parametrize("stack", LB_FRONTED)
def test_vtap024_reports_the_tcp_probe_as_advisory_and_the_default_is_clean(stack,
                                                                            tcp_graph_of,
                                                                            graph_of):
    assert rules.run_rules(graph_of(stack)) == []
    found = rules.run_rules(tcp_graph_of[stack])
    assert [(f.rule, f.severity) for f in found] == [("VTAP024", rules.ADVISORY)]
    assert f"{stack}-ilb" in found[0].message and "rewrite failed" in found[0].message


def test_proxy_probe_only_touches_the_lb_fronted_scenarios(graph_of):
    # b2's vTAP points at its proxy's NIC: no consumer LB, nothing to probe
    assert mocks.build_graph("b2", overrides=TCP) == graph_of("b2")


@pytest.mark.parametrize("spelled", [{"proxyProbe": "http"}, {"vtaplab:proxyProbe": "http"}])
def test_the_default_spelled_out_is_the_committed_graph(spelled, graph_of):
    assert mocks.build_graph("b4", overrides=spelled) == graph_of("b4")


# --- the command line --------------------------------------------------------------------------
def test_graph_set_runs_the_program_with_the_override(tcp_graph_of):
    child = run_graph("b4", "--set", "vtaplab:proxyProbe=tcp", "--json")
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == tcp_graph_of["b4"]
    mermaid = run_graph("b3", "--set", "proxyProbe=tcp", "--set", "proxyCount=3", "--mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("flowchart LR\n")


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "proxyProbe"], ["'proxyProbe'", "not KEY=VALUE", "proxyProbe=tcp"]),
    (["--set", "=tcp"], ["'=tcp'", "not KEY=VALUE"]),
    (["--set", "proxyProb=tcp"], ["vtaplab:proxyProb", "unknown config key",
                                  "did you mean vtaplab:proxyProbe?"]),
    (["--set", "proxyProbe=udp"], ["--set proxyProbe=udp", "vtaplab:proxyProbe", "'udp'",
                                   "http or tcp"]),
    (["--set", "proxyCount=0"], ["--set proxyCount=0", "vtaplab:proxyCount", "from 1 to 10"]),
    (["--set", "proxyProbe=tcp", "--set", "vtaplab:proxyProbe=http"],
     ["vtaplab:proxyProbe is set twice"]),
    (["--set", "azure-native:location=eastus"], ["'azure-native'", "vtaplab namespace"]),
    (["--set", "proxyProbe=tcp", "--update-snapshots"], ["--update-snapshots"]),
])
def test_a_bad_set_is_one_line_exit_2(args, expected):
    child = run_graph("b4", *args)
    assert child.returncode == 2, child.stdout[-500:]
    assert child.stdout == ""
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1, child.stderr
    assert lines[0].startswith("vtaplab graph: ") and "accepted" in lines[0]
    assert "Traceback" not in child.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_a_secret_set_on_the_command_line_is_refused_without_showing_it():
    child = run_graph("b4", "--set", "sshPrivateKey=hunter2-secret")
    assert child.returncode == 2
    assert "vtaplab:sshPrivateKey is a secret" in child.stderr
    assert "hunter2" not in child.stderr
    twice = run_graph("b4", "--set", "sshPrivateKey=hunter2", "--set", "sshPrivateKey=hunter3")
    assert twice.returncode == 2 and "hunter" not in twice.stderr


# --- the API: build_run/build_graph -------------------------------------------------------------
def test_parse_and_normalise_overrides():
    assert mocks.parse_overrides(["proxyProbe=tcp", "runId=a=b"]) == {
        "proxyProbe": "tcp", "runId": "a=b"}
    assert mocks.normalise_overrides({"vtaplab:proxyProbe": "tcp", "proxyCount": "3"}) == {
        "proxyCount": "3", "proxyProbe": "tcp"}
    assert mocks.normalise_overrides(None) == {}
    with pytest.raises(mocks.GraphError, match="set twice"):
        mocks.normalise_overrides({"vtaplab:proxyProbe": "tcp", "proxyProbe": "http"})
    with pytest.raises(mocks.GraphError, match="is not text"):
        mocks.normalise_overrides({"proxyCount": 3})  # type: ignore[dict-item]


def test_build_run_refuses_a_bad_override_before_starting_an_interpreter(monkeypatch):
    def no_child(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a bad override started the program")

    monkeypatch.setattr(mocks.subprocess, "run", no_child)
    for bad, text in (({"proxyProbe": "udp"}, "http or tcp"),
                      ({"nope": "1"}, "unknown config key")):
        with pytest.raises(mocks.GraphError, match=text) as err:
            mocks.build_run("b4", overrides=bad)
        assert "\n" not in str(err.value)


def test_build_run_caches_per_overrides(monkeypatch):
    calls: list[list[str]] = []

    def fake_child(argv: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, json.dumps(
            {"resources": [{"argv": argv[argv.index("--root") + 2:]}], "outputs": {}}), "")

    monkeypatch.setattr(mocks, "_RUNS", {})
    monkeypatch.setattr(mocks.subprocess, "run", fake_child)
    assert mocks.build_graph("b4") == [{"argv": []}]
    assert mocks.build_graph("b4", overrides={"proxyProbe": "tcp"}) == [
        {"argv": ["--set", "proxyProbe=tcp"]}]
    # the same overrides spelled with the prefix: the same run, not a new one
    assert mocks.build_graph("b4", overrides={"vtaplab:proxyProbe": "tcp"}) == [
        {"argv": ["--set", "proxyProbe=tcp"]}]
    assert mocks.build_graph("b4") == [{"argv": []}]
    assert len(calls) == 2
