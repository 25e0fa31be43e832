"""Committed graph snapshots and diagrams: current for every stack, readable when not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers.graphs import b2_graph, node

from vtaplab import PROJECT_ROOT
from vtaplab.preflight import mocks, snapshots

ROOT = PROJECT_ROOT
STACKS = mocks.stack_names(ROOT)
_GRAPHS: dict[str, list[dict[str, Any]]] = {}


def program_graph(stack: str) -> list[dict[str, Any]]:
    if stack not in _GRAPHS:
        try:
            _GRAPHS[stack] = mocks.build_graph(stack, root=ROOT)
        except mocks.GraphError as error:
            pytest.fail(f"graph {stack}: {error}")
    return _GRAPHS[stack]


@pytest.mark.parametrize("stack", STACKS)
def test_snapshot_and_diagram_are_current(stack):
    problems = snapshots.stale(stack, program_graph(stack), ROOT)
    assert problems == [], ("\n\n".join(problems)
                            + f"\n\nIf the change is intended: {snapshots.UPDATE_COMMAND}")


def test_no_snapshot_of_a_stack_that_does_not_exist():
    for folder, suffix in ((snapshots.SNAPSHOT_DIR, ".json"), (snapshots.DIAGRAM_DIR, ".md")):
        orphans = [p.name for p in (ROOT / folder).glob(f"*{suffix}") if p.stem not in STACKS]
        assert orphans == [], f"{folder}: {orphans}; run {snapshots.UPDATE_COMMAND}"


@pytest.mark.skipif("b2" not in STACKS, reason="no Pulumi.b2.yaml")
def test_a_changed_program_fails_with_a_readable_diff():
    graph = json.loads(json.dumps(program_graph("b2")))
    nic = next(e for e in graph if e["inputs"].get("enableIPForwarding") is True)
    nic["inputs"]["enableIPForwarding"] = False
    graph = [e for e in graph if e["type"] != "azure-native:network:PublicIPAddress"
             or "client" not in e["name"]]
    problems = snapshots.stale("b2", graph, ROOT)
    text = "\n".join(problems)
    assert "tests/snapshots/b2.json differs" in text
    assert f"~ azure-native:network:NetworkInterface {nic['name']}" in text
    assert "    enableIPForwarding: true -> false" in text
    assert "- azure-native:network:PublicIPAddress" in text
    assert "docs/graphs/b2.md is not the current diagram" in text


def test_normalise_drops_pickles_and_digests_long_strings():
    graph = [{"urn": "b", "type": "t", "name": "n", "parent": None,
              "inputs": {"__provider": "gASV" * 10, "userData": "A" * 1000, "x": "short",
                         "osProfile": {"customData": "I2Nsb3VkLWNvbmZpZw=="}}},
             {"urn": "a", "type": "t", "name": "m", "parent": None, "inputs": {}}]
    out = snapshots.normalise(graph)
    assert [e["urn"] for e in out] == ["a", "b"]
    assert "__provider" not in out[1]["inputs"] and out[1]["inputs"]["x"] == "short"
    assert out[1]["inputs"]["userData"].startswith("<1000 chars, sha256 ")
    other = snapshots.normalise([{**graph[0], "inputs": {"userData": "A" * 999 + "B"}}])
    assert other[0]["inputs"]["userData"] != out[1]["inputs"]["userData"]
    assert out[1]["inputs"]["osProfile"]["customData"] == snapshots.CUSTOM_DATA


def test_update_writes_checks_and_prunes(tmp_path, monkeypatch):
    g = b2_graph()
    monkeypatch.setattr(snapshots, "build_graph", lambda stack, root=None: g)
    monkeypatch.setattr(snapshots, "stack_names", lambda root=None: ["b2"])
    monkeypatch.setattr(snapshots, "to_mermaid", lambda graph: "flowchart LR\n  a --> b\n")
    orphan = tmp_path / snapshots.SNAPSHOT_DIR / "gone.json"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("[]")
    written = snapshots.update(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == {
        "tests/snapshots/b2.json", "docs/graphs/b2.md", "tests/snapshots/gone.json"}
    assert not orphan.exists()
    assert snapshots.stale("b2", g, tmp_path) == []
    assert snapshots.update(tmp_path) == []  # idempotent
    assert "```mermaid\nflowchart LR" in (tmp_path / "docs/graphs/b2.md").read_text()
    assert snapshots.main(["--root", str(tmp_path)]) == 0
    node(g, "proxy-nic")["inputs"]["enableIPForwarding"] = False
    assert snapshots.main(["--root", str(tmp_path)]) == 1
    assert snapshots.main(["--root", str(tmp_path), "nope"]) == 2


def test_readme_embedded_diagram_is_kept_current(tmp_path, monkeypatch):
    g = b2_graph()
    monkeypatch.setattr(snapshots, "build_graph", lambda stack, root=None: g)
    monkeypatch.setattr(snapshots, "stack_names", lambda root=None: ["b2"])
    monkeypatch.setattr(snapshots, "to_mermaid", lambda graph: "flowchart LR\n  new\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n\n<!-- graph b2 -->\n```mermaid\nflowchart LR\n  old\n```\n\nend\n")
    assert "README.md embeds an outdated diagram of b2" in snapshots.stale("b2", g, tmp_path)
    assert tmp_path / "README.md" in snapshots.update(tmp_path)
    assert readme.read_text() == ("intro\n\n<!-- graph b2 -->\n```mermaid\nflowchart LR\n"
                                  "  new\n```\n\nend\n")
    assert snapshots.stale("b2", g, tmp_path) == []
