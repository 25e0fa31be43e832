"""The results table from verdict fixtures (tests/fixtures/verdicts/): offline, Azure, and a
changed platform answer; the README block rewrite; the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vtaplab import PROJECT_ROOT, facts, matrix
from vtaplab.judge import results

ROOT = PROJECT_ROOT
FIXTURES = ROOT / "tests" / "fixtures" / "verdicts"


# The offline fixtures hold every scenario the offline matrix runs.
OFFLINE_SCENARIOS = [s for s in facts.SCENARIOS if s not in matrix.OFFLINE_PENDING]


def rows_of(case: str) -> list[dict]:
    return results.collect([FIXTURES / case], root=ROOT)


def table_rows(markdown: str) -> dict[str, list[str]]:
    """scenario -> the cells of its line in the first table."""
    out: dict[str, list[str]] = {}
    for line in markdown.splitlines():
        m = re.match(r"\| \*\*(\w+)\*\* \|", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = [c.strip() for c in line.strip("|").split(" | ")]
    return out


def test_offline_fixtures_give_every_scenario_in_catalogue_order():
    rows = rows_of("offline")
    assert [r["scenario"] for r in rows] == OFFLINE_SCENARIOS
    labels = {r["scenario"]: r["label"] for r in rows}
    assert labels == {"r1": "predicted", "b1": "predicted", "b2": "emulated", "a": "predicted",
                      "c1": "predicted", "b3": "emulated", "msp": "emulated",
                      "b4": "emulated"}


def test_results_md_has_outcome_expected_match_code_and_links(tmp_path):
    rows = rows_of("offline")
    md, js = results.write(rows, tmp_path)
    text = md.read_text()
    cells = table_rows(text)
    assert cells["r1"][3:7] == ["rejected", "rejected", "yes",
                                f"`{facts.ARM_PE_AS_VTAP_DESTINATION}`"]
    assert cells["a"][3:6] == ["unknown", "unknown", "n/a"]
    assert cells["c1"][2:5] == ["predicted", "not-applicable", "not-applicable"]
    assert cells["b2"][2:6] == ["emulated", "delivered", "delivered", "yes"]
    # every evidence file of every verdict is linked, relative to RESULTS.md
    for row in rows:
        verdict = json.loads(Path(row["verdict"]).read_text())
        for name in verdict["files"]:
            assert f"[{Path(name).name}](" in text, (row["scenario"], name)
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert all((tmp_path / link).resolve().is_relative_to(ROOT) for link in links)
    b3 = text.split("## b3")[1].split("## msp")[0]
    assert "variant proxy-down: **delivered**" in b3
    assert "tried: `python -m vtaplab emulate b3" in b3
    data = json.loads(js.read_text())
    assert [r["scenario"] for r in data["rows"]] == OFFLINE_SCENARIOS


def test_links_point_at_the_files(tmp_path):
    # A verdict next to its evidence: the links RESULTS.md writes open those files.
    out = tmp_path / "evidence"
    case = out / "b2" / "b2"
    case.mkdir(parents=True)
    (case / "collector.pcap").write_bytes(b"x")
    verdict = json.loads((FIXTURES / "azure" / "b2" / "verdict.json").read_text())
    verdict["files"] = [str(case / "collector.pcap")]
    (case / "verdict.json").write_text(json.dumps(verdict))
    md, _ = results.write(results.collect([case], root=tmp_path), out)
    links = re.findall(r"\]\(([^)]+)\)", md.read_text())
    assert "b2/b2/collector.pcap" in links and "b2/b2/verdict.json" in links
    assert all((out / link).is_file() for link in links)


def test_no_changes_when_every_outcome_is_the_expected_one():
    assert results.changes(rows_of("offline")) == []
    assert results.changes(rows_of("azure")) == []


def test_a_changed_platform_answer_is_reported():
    rows = rows_of("changed")
    lines = results.changes(rows)
    assert len(lines) == 2
    assert lines[0].startswith("r1 (measured on Azure, stack uksouth): expected rejected, got "
                               "accepted")
    assert lines[1].startswith("b2 (measured on Azure, stack uksouth): expected delivered, got "
                               "not-delivered")
    cells = table_rows(results.render_readme_block(rows))
    assert cells["r1"][5] == "**NO**" and cells["b2"][5] == "**NO**"


def test_a_change_against_the_previous_run_is_reported_too():
    # Scenario a has no expected outcome: only the previous run tells a change apart.
    now = [dict(r) for r in rows_of("offline") if r["scenario"] == "a"]
    before = [{**now[0], "outcome": "delivered"}]
    assert results.changes(now, before) == [
        "a (predicted): was delivered in the previous run, now unknown"]
    assert results.changes(now, [{**now[0], "label": "measured on Azure",
                                  "outcome": "delivered"}]) == []


def test_a_b3_variant_that_fails_is_a_change():
    rows = rows_of("offline")
    b3 = next(r for r in rows if r["scenario"] == "b3")
    b3["variants"][0]["outcome"] = "not-delivered"
    assert [ln for ln in results.changes([b3]) if "variant proxy-down" in ln]


def test_readme_block_is_stable_and_without_run_figures():
    block = results.render_readme_block(rows_of("offline"))
    assert block == results.render_readme_block(rows_of("offline"))
    assert "VXLAN packets" not in block and "](" not in block
    assert "delivered; proxy-down: delivered" in block


def test_update_readme_touches_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{results.BEGIN}\nold\n{results.END}\nafter\n")
    rows = rows_of("offline")
    assert results.update_readme(readme, rows) is True
    text = readme.read_text()
    assert text.startswith("# t\n\nbefore\n" + results.BEGIN + "\n")
    assert text.endswith(results.END + "\nafter\n")
    assert results.readme_block(text).strip() == results.readme_text(
        rows, command="python -m vtaplab matrix --offline").strip()
    assert results.update_readme(readme, rows) is False  # idempotent


def test_update_readme_without_markers_refuses(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    with pytest.raises(results.ReadmeBlockMissing):
        results.update_readme(readme, rows_of("offline"))
    assert readme.read_text() == "# no block\n"


def test_label_inferred_from_the_path_when_absent(tmp_path):
    verdict = json.loads((FIXTURES / "azure" / "r1" / "verdict.json").read_text())
    verdict.pop("label")
    for where, label in (("offline", "emulated"), ("uksouth", "measured on Azure")):
        d = tmp_path / where / "r1"
        d.mkdir(parents=True)
        (d / "verdict.json").write_text(json.dumps(verdict))
        assert results.row_of(d, root=tmp_path)["label"] == label


def test_cli_writes_both_files_and_rejects_garbage(tmp_path):
    shutil.copytree(FIXTURES / "azure", tmp_path / "in")
    done = subprocess.run([sys.executable, "-m", "vtaplab.judge.results", str(tmp_path / "in"),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "RESULTS.md").is_file()
    assert (tmp_path / "out" / "results.json").is_file()
    (tmp_path / "bad.json").write_text("[]")
    done = subprocess.run([sys.executable, "-m", "vtaplab.judge.results",
                           str(tmp_path / "bad.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
