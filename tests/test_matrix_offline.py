"""``python -m vtaplab matrix --offline`` end to end: emulator runs (root) and the preflight
predictions, RESULTS.md with every scenario labelled and linked, and the README's results block
equal to what this run generates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vtaplab import PROJECT_ROOT, facts, matrix
from vtaplab.judge import results

ROOT = PROJECT_ROOT
LABELS = {"r1": "predicted", "b1": "predicted", "a": "predicted", "c1": "predicted",
          "b2": "emulated", "b3": "emulated", "msp": "emulated"}


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    if os.geteuid() != 0:
        pytest.skip("matrix --offline runs the emulator, which needs root (network namespaces)")
    evidence = tmp_path_factory.mktemp("matrix") / "evidence"
    done = subprocess.run([sys.executable, "-m", "vtaplab", "matrix", "--offline",
                           "--requests", "2", "--evidence", str(evidence)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    return evidence, done


def test_offline_matrix_passes_and_labels_every_scenario(offline_run):
    evidence, done = offline_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((evidence / "results.json").read_text())
    got = {r["scenario"]: (r["label"], r["outcome"], r["matches_expected"]) for r in data["rows"]}
    assert list(got) == [s for s in facts.SCENARIOS if s not in matrix.OFFLINE_PENDING]
    assert {s: v[0] for s, v in got.items()} == LABELS
    assert got["b2"][1:] == ("delivered", True)
    assert got["b3"][1:] == ("delivered", True)
    assert got["msp"][1:] == ("delivered", True)
    assert got["r1"][1:] == ("rejected", True)
    assert got["b1"][1:] == ("rejected", True)
    assert got["c1"][1:] == ("not-applicable", True)
    assert got["a"][1:] == ("unknown", None)  # a prediction can't measure Direct Connect


def test_results_md_links_resolve_to_evidence_files(offline_run):
    evidence, _ = offline_run
    text = (evidence / "RESULTS.md").read_text()
    offline = [s for s in facts.SCENARIOS if s not in matrix.OFFLINE_PENDING]
    for s in offline:
        assert f"## {s} — {LABELS[s]}" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) > 2 * len(offline)
    missing = [link for link in links if not (evidence / link).is_file()]
    assert missing == [], missing
    # the emulated rows link their collector capture; the predictions their check report
    assert "offline/b2/collector.pcap" in links and "offline/r1/check.json" in links
    assert "offline/b3/proxy-down/verdict.json" in links


def test_emulated_verdicts_come_from_the_emulator(offline_run):
    evidence, _ = offline_run
    for s in ("b2", "b3", "msp"):
        v = json.loads((evidence / "offline" / s / "verdict.json").read_text())
        assert v["tried"].startswith(f"python -m vtaplab emulate {s} ")
        assert v["emulator_exit"] == 0 and v["vxlan_packets"] > 0
    msp = json.loads((evidence / "offline" / "msp" / "verdict.json").read_text())
    assert len(msp["vnis"]) == 3   # the default tenants, in the emulator as in the program


def test_readme_results_block_is_this_runs_output(offline_run):
    evidence, _ = offline_run
    readme = (ROOT / "README.md").read_text()
    try:
        block = results.readme_block(readme)
    except results.ReadmeBlockMissing:
        pytest.skip(f"README.md has no {results.BEGIN} ... {results.END} block yet (the lead "
                    "adds it)")
    rows = results.collect([evidence / "offline"], root=ROOT)
    want = results.readme_text(rows, command="python -m vtaplab matrix --offline")
    assert block.strip() == want.strip(), (
        "README's results block is stale: run 'venv/bin/python -m vtaplab matrix --offline "
        "--readme' and commit the block")
