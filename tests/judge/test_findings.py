"""FINDINGS.md is drawn from verdicts only, and every diagram renders as a person sees it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import browser

from vtaplab import PROJECT_ROOT
from vtaplab.judge import findings
from vtaplab.readme import block_body

B2_HOPS = [
    {"hop": "vm-src NIC (vTAP)", "node": "b2-src", "packets": 400, "fragments": 120,
     "reassembled": 60},
    {"hop": "proxy in", "node": "b2-proxy", "packets": 400, "fragments": 120},
    {"hop": "proxy out", "node": "b2-proxy", "packets": 400, "fragments": 120},
    {"hop": "provider ILB", "node": "provider-ilb", "packets": 311, "fragments": 31},
    {"hop": "collector", "node": "provider-col", "packets": 311, "fragments": 31,
     "reassembled": 0},
]


def _verdict(scenario: str, outcome: str, **extra: Any) -> dict[str, Any]:
    base = {"scenario": scenario, "outcome": outcome, "vxlan_packets": 0, "vnis": [],
            "outer_sources": [], "outer_udp_source_ports": 0,
            "inner_http": {"requests": [], "responses": []}, "arm_error": None,
            "expected": "-", "matches_expected": True, "files": [], "reason": f"{outcome} reason",
            "label": "emulated"}
    base.update(extra)
    return base


def _evidence(tmp_path: Path) -> Path:
    evidence = tmp_path / "evidence"
    verdicts = [
        _verdict("r1", "rejected", label="predicted", arm_error={
            "code": "CannotSetPrivateLinkServiceOrPrivateEndpointNetworkInterfaceAsDestination"
                    "OfVirtualNetworkTap", "message": "no"}),
        _verdict("b2", "degraded", vxlan_packets=311, vnis=[4711],
                 outer_sources=["10.40.2.5"], outer_udp_source_ports=17, hops=B2_HOPS,
                 reason="fragments lost at the provider ILB"),
        _verdict("c1", "not-applicable", label="predicted"),
        _verdict("msp", "delivered", vxlan_packets=900, vnis=[1001, 1002],
                 tenant_table=[{"tenant": "t1", "vni": 1001, "sent": 6, "requests": 6,
                                "responses": 6, "packets": 450, "delivered": True},
                               {"tenant": "t2", "vni": 1002, "sent": 6, "requests": 6,
                                "responses": 6, "packets": 451, "delivered": True}]),
        _verdict("b3", "delivered", vxlan_packets=700, failover={
            "backend": "b3-proxy1", "down_at": 1.0, "window_s": 0.4,
            "intervals": [{"t": 0.0, "per_backend": {"b3-proxy1": 50, "b3-proxy2": 48}},
                          {"t": 0.5, "per_backend": {"b3-proxy1": 20, "b3-proxy2": 70}},
                          {"t": 1.0, "per_backend": {"b3-proxy1": 0, "b3-proxy2": 99}}]}),
        _verdict("a", "unknown", label="predicted"),
    ]
    for verdict in verdicts:
        folder = evidence / "offline" / verdict["scenario"]
        folder.mkdir(parents=True)
        (folder / "verdict.json").write_text(json.dumps(verdict))
    return evidence


def test_summary_says_what_each_verdict_says(tmp_path):
    evidence = _evidence(tmp_path)
    text = findings.build(findings.read(evidence), base=evidence, graph_of=None,
                          command="test").text
    summary = text.split("## Results")[0]
    assert "**Works**" in summary and "**msp** (emulated)" in summary
    assert "**Degraded**" in summary and "lost at provider ILB" in summary
    assert "CannotSetPrivateLinkService" in summary and "**r1**" in summary
    assert "**Not expressible**: **c1**" in summary
    assert "**Unknown**: **a** (predicted)" in summary
    for scenario in ("r1", "b2", "c1", "msp", "b3", "a"):
        assert f"## {scenario} — " in text


def test_figures_are_the_verdicts_figures(tmp_path):
    """Every number drawn on an edge or a bar is one a verdict holds."""
    evidence = _evidence(tmp_path)
    report = findings.build(findings.read(evidence), base=evidence, graph_of=None,
                            command="test")
    held = set()
    for path in evidence.rglob("verdict.json"):
        held |= {int(n) for n in re.findall(r"\d+", path.read_text())}
    drawn = set()
    for block in report.diagrams:
        for label in re.findall(r"\|([^|]+)\|", block):  # edge labels
            drawn |= {int(n) for n in re.findall(r"\b\d+\b", label)}
        for bars in re.findall(r"(?:bar|line) \[([^\]]*)\]", block):
            drawn |= {int(n) for n in bars.split(",")}
    assert drawn and drawn <= held, drawn - held
    b2 = next(b for b in report.diagrams if "h0_b2" in b)
    assert "311 of 400" in b2  # the lossy hop says how many of how many
    assert "stroke:#ef6c00" in b2  # drawn as loss, not as a clean path


def test_loss_is_located_at_the_first_hop_that_saw_fewer():
    hops = findings.hops_of({"hops": B2_HOPS})
    assert findings.loss_hop(hops) == 3 and hops[3].name == "provider ILB"
    assert findings.loss_hop(findings.hops_of({"hops": B2_HOPS[:3]})) is None


def test_parallel_proxies_split_the_mirror_rather_than_lose_it():
    # b3/b4: the LB splits what the vTAP sent between the proxies (one stage, parallel).
    hops = [{"hop": "vtap", "packets": 100, "stage": 0},
            {"hop": "b4-ilb-out", "packets": 100, "stage": 1},
            {"hop": "p1-out", "packets": 70, "stage": 2},
            {"hop": "p12-out", "packets": 30, "stage": 2},
            {"hop": "pls-out", "packets": 100, "stage": 3}]
    parsed = findings.hops_of({"hops": hops})
    assert findings.stages(parsed) == [[0], [1], [2, 3], [4]]
    assert findings.loss_hop(parsed) is None
    # Drawn: the LB to each proxy, each proxy to the PLS, never one proxy to the other.
    verdict = _verdict("b4", "delivered", hops=hops)
    drawn = findings.path_diagram(findings.Finding(
        row={"scenario": "b4", "how": "emulated"}, verdict=verdict,
        verdict_path=Path("b4/verdict.json")))
    assert "h1_b4 ==>|70| h2_b4" in drawn and "h1_b4 ==>|30| h3_b4" in drawn
    assert "h2_b4 ==>|70| h4_b4" in drawn and "h3_b4 ==>|30| h4_b4" in drawn
    assert "h2_b4 ==>|30| h3_b4" not in drawn and " of " not in drawn
    # A proxy stage that got less than the LB sent is the loss.
    hops[3]["packets"] = 10
    assert findings.loss_hop(findings.hops_of({"hops": hops})) == 2


def test_refused_request_is_an_error_node_with_the_code(tmp_path):
    evidence = _evidence(tmp_path)
    report = findings.build(findings.read(evidence), base=evidence, graph_of=None,
                            command="test")
    r1 = next(b for b in report.diagrams if "err_r1" in b)
    assert "ARM: CannotSetPrivateLinkService" in r1 and "-.-x" in r1


def test_no_verdicts_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert findings.main([str(tmp_path / "empty"), "--no-topology"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no verdict.json" in err
    assert findings.main([str(tmp_path / "missing"), "--no-topology"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_every_diagram_renders_in_a_real_browser(tmp_path, graph_of):
    """Chromium + Mermaid 11 (what GitHub runs): no syntax error, no empty drawing; the
    screenshots stay in the test's temporary folder for a person to look at."""
    evidence = _evidence(tmp_path)
    report = findings.build(findings.read(evidence), base=evidence,
                            graph_of=lambda stack: graph_of(stack), command="test")
    try:
        rendered = browser.render(report.diagrams, tmp_path)
    except browser.BrowserError as exc:
        pytest.fail(f"{exc}: run ./bootstrap.sh")
    assert len(rendered) == len(report.diagrams)
    bad = [(r.index, r.error or "empty") for r in rendered if not r.ok or r.empty]
    assert bad == [], [(i, e, report.diagrams[i][:200]) for i, e in bad]
    for i, block in enumerate(report.diagrams[:6]):
        browser.screenshot(block, tmp_path / f"diagram-{i}.png")


def test_the_browser_check_catches_a_broken_diagram(tmp_path):
    try:
        rendered = browser.render(["flowchart LR\n  a -->> b", "flowchart LR\n  a --> b"],
                                  tmp_path)
    except browser.BrowserError as exc:
        pytest.fail(f"{exc}: run ./bootstrap.sh")
    assert [r.ok for r in rendered] == [False, True]
    assert "Parse error" in rendered[0].error


SAMPLE = PROJECT_ROOT / "docs" / "FINDINGS-sample.md"
SAMPLE_EVIDENCE = PROJECT_ROOT / "tests" / "fixtures" / "findings"


def test_the_committed_sample_and_the_readme_section_are_current(graph_of):
    """docs/FINDINGS-sample.md and the README's findings block are what the report makes of
    the committed sample verdicts (an emulator run's); regenerate with
    python -m vtaplab report tests/fixtures/findings --out docs/FINDINGS-sample.md
    --readme README.md"""
    report = findings.build(findings.read(SAMPLE_EVIDENCE), base=SAMPLE.parent,
                            graph_of=lambda stack: graph_of(stack),
                            command="python -m vtaplab report tests/fixtures/findings")
    assert report.text == SAMPLE.read_text(encoding="utf-8"), "the sample is stale"
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert block_body(readme, findings.README_BLOCK) == findings.readme_section(
        report, scenario="b2", sample="docs/FINDINGS-sample.md"), "the README's sample is stale"
    assert report.text.count("```mermaid") >= 2 * 7   # a path and a topology per scenario


def test_every_diagram_of_the_sample_renders_in_a_real_browser(tmp_path):
    """The committed sample is a matrix --offline write-up: every one of its Mermaid blocks
    renders (no syntax error, no empty drawing) in Chromium with Mermaid 11."""
    blocks = findings.mermaid_blocks(SAMPLE.read_text(encoding="utf-8"))
    assert len(blocks) >= 14
    try:
        rendered = browser.render(blocks, tmp_path)
    except browser.BrowserError as exc:
        pytest.fail(f"{exc}: run ./bootstrap.sh")
    bad = [(r.index, r.error or "empty") for r in rendered if not r.ok or r.empty]
    assert bad == [], [(i, e, blocks[i][:200]) for i, e in bad]
    for i in (0, 1, len(blocks) - 1):
        browser.screenshot(blocks[i], tmp_path / f"sample-{i}.png")
