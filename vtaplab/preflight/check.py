"""``python -m vtaplab check STACK``: the preflight — Azure's refusals, predicted from the graph.

Builds the stack's resource graph under Pulumi mocks (``vtaplab.preflight.mocks``; no cloud, no
CLI), runs every rule of ``vtaplab.preflight.rules`` and prints the findings as a table.
A scenario that exists to be refused (r1, b1: ``facts.SCENARIOS[s].expected_arm_codes``) shows
its predicted rejection beside the expected one, so ``check r1``
both predicts and confirms the experiment.

Exit status: 0 clean (or only expected rejections and advisories), 1 a mandatory finding the
scenarios do not expect — or an expected rejection that no rule predicts (the rules and the
program have drifted apart), 2 bad input.

``check --graph FILE`` runs the same on a graph JSON file (``graph STACK --json``);
``--diff OLD.json`` also prints what changed against an older graph (the review a pull
request gets).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtaplab import PROJECT_ROOT, facts
from vtaplab.preflight import mocks
from vtaplab.preflight.rules import MANDATORY, Finding, props_of, run_rules
from vtaplab.program import config

# Rules whose finding on a rejected scenario's attempt *is* the experiment: what the lab
# tries on purpose, to record what ARM says (an IP-based pool with the PE's IP has no known
# ARM code: the documentation calls it unsupported, the attempt records ARM's answer).
EXPERIMENT_RULES: frozenset[str] = frozenset({"VTAP001", "VTAP003", "VTAP004", "VTAP005"})


@dataclass
class Report:
    stack: str
    scenarios: tuple[str, ...]
    findings: list[Finding]
    expected: list[bool]  # per finding: does a scenario of the stack expect it?
    unpredicted: list[str] = field(default_factory=list)  # rejected scenarios with no finding

    @property
    def failing(self) -> list[Finding]:
        return [f for f, ok in zip(self.findings, self.expected, strict=True)
                if f.severity == MANDATORY and not ok]

    @property
    def exit_code(self) -> int:
        return 1 if self.failing or self.unpredicted else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "scenarios": list(self.scenarios),
            "findings": [{**f.to_dict(), "expected": ok}
                         for f, ok in zip(self.findings, self.expected, strict=True)],
            "predictions": {s: prediction(self, s) for s in self.scenarios
                            if expects_rejection(s)},
            "unpredicted": self.unpredicted,
            "exit_code": self.exit_code,
        }


def expects_rejection(scenario: str) -> bool:
    s = facts.SCENARIOS.get(scenario)
    return bool(s and s.expected_outcome == "rejected")


def is_expected(finding: Finding, scenarios: Sequence[str]) -> bool:
    """A finding the stack's scenarios expect: a predicted ARM code a scenario names, or the
    very thing a rejected scenario's attempt tries."""
    if finding.scenario is None:
        relevant = [s for s in scenarios if s in facts.SCENARIOS]
    else:  # an attempt: expected only by its own scenario, and only if the stack runs it
        relevant = [finding.scenario] if finding.scenario in scenarios else []
    for s in relevant:
        spec = facts.SCENARIOS[s]
        if finding.arm_code and finding.arm_code in spec.expected_arm_codes:
            return True
        if finding.scenario == s and expects_rejection(s) and finding.rule in EXPERIMENT_RULES:
            return True
    return False


def evaluate(graph: Sequence[Mapping[str, Any]], *, stack: str,
             scenarios: Sequence[str]) -> Report:
    findings = run_rules(graph)
    expected = [is_expected(f, scenarios) for f in findings]
    report = Report(stack, tuple(scenarios), findings, expected)
    for s in scenarios:
        if expects_rejection(s) and not _predicted_for(report, s):
            report.unpredicted.append(s)
    return report


def _predicted_for(report: Report, scenario: str) -> list[Finding]:
    codes = facts.SCENARIOS[scenario].expected_arm_codes
    return [f for f, ok in zip(report.findings, report.expected, strict=True)
            if ok and (f.scenario == scenario or (f.scenario is None and f.arm_code in codes))]


def prediction(report: Report, scenario: str) -> dict[str, Any]:
    spec = facts.SCENARIOS[scenario]
    found = _predicted_for(report, scenario)
    return {
        "expected_outcome": spec.expected_outcome,
        "expected_arm_codes": list(spec.expected_arm_codes),
        "predicted": [{"rule": f.rule, "arm_code": f.arm_code, "resource": f.resource}
                      for f in found],
        "matches": bool(found) and all(f.arm_code in (*spec.expected_arm_codes, None)
                                       for f in found),
    }


# --- scenarios of a stack or a graph ----------------------------------------------------------


def stack_scenarios(stack: str, root: Path) -> tuple[str, ...]:
    """The stack file's ``vtaplab:scenarios``."""
    values = config.read_stack_file(root / f"Pulumi.{stack}.yaml")
    raw = values.get(f"{config.NAMESPACE}:scenarios") or ()
    if isinstance(raw, str):
        raw = [s.strip() for s in raw.strip("[]").split(",")]
    return tuple(str(s) for s in raw if str(s) in facts.SCENARIOS)


def graph_scenarios(graph: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Scenarios a graph says it runs: resource tags and attempts' ``scenario`` inputs (or
    outputs: both carry them)."""
    out: list[str] = []
    for entry in graph:
        if not isinstance(entry, Mapping):
            continue
        inputs = props_of(entry)  # the policy pack's entries carry outputs
        tags = inputs.get("tags")
        for value in ((tags or {}).get("scenario") if isinstance(tags, Mapping) else None,
                      inputs.get("scenario")):
            for s in str(value or "").split("+"):
                if s in facts.SCENARIOS and s not in out:
                    out.append(s)
    return tuple(out)


# --- graph diff -------------------------------------------------------------------------------


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "__provider":  # a pickled dynamic provider: noise in a review
                continue
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def graph_diff(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    """Readable lines: resources added/removed (by URN), and changed inputs, path by path."""
    before = {str(e.get("urn")): e for e in old if isinstance(e, Mapping)}
    after = {str(e.get("urn")): e for e in new if isinstance(e, Mapping)}
    lines: list[str] = []
    for urn in sorted(after.keys() - before.keys()):
        lines.append(f"+ {after[urn].get('type')} {after[urn].get('name')}")
    for urn in sorted(before.keys() - after.keys()):
        lines.append(f"- {before[urn].get('type')} {before[urn].get('name')}")
    for urn in sorted(before.keys() & after.keys()):
        a, b = _flat(before[urn].get("inputs") or {}), _flat(after[urn].get("inputs") or {})
        changed = [k for k in sorted(a.keys() | b.keys()) if a.get(k, ...) != b.get(k, ...)]
        if changed:
            lines.append(f"~ {after[urn].get('type')} {after[urn].get('name')}")
            for k in changed:
                old_v = _show(a[k]) if k in a else "(absent)"
                new_v = _show(b[k]) if k in b else "(absent)"
                lines.append(f"    {k}: {old_v} -> {new_v}")
    return lines


def _show(value: Any, limit: int = 100) -> str:
    """A value for a diff line; a long one (cloud-init's customData...) as size and digest."""
    text = json.dumps(value, sort_keys=True)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"<{len(text)} chars, sha256 {digest}>"


# --- output -----------------------------------------------------------------------------------


def _status(f: Finding, expected: bool) -> str:
    if expected:
        return "EXPECTED"
    return "FAIL" if f.severity == MANDATORY else "advice"


def render(report: Report, *, markdown: bool = False) -> str:
    head = (f"vtaplab check {report.stack}: scenarios {', '.join(report.scenarios) or '(none)'}"
            f"; {len(report.findings)} finding(s), {len(report.failing)} failing")
    rows = [(_status(f, ok), f.rule, f.severity, f.resource, f.arm_code or "-", f.message)
            for f, ok in zip(report.findings, report.expected, strict=True)]
    lines = [f"**{head}**" if markdown else head, ""]
    if rows:
        cols = ("status", "rule", "severity", "resource", "ARM code", "what to do")
        if markdown:
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "---|" * len(cols))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        else:
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols[:5])]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths)
            lines.append(fmt.format(*cols[:5]))
            for r in rows:
                lines.append(fmt.format(*r[:5]))
                lines.append(f"    -> {r[5]}")
    else:
        lines.append("no findings: nothing Azure is known to refuse, no rule of the lab broken")
    for s in report.scenarios:
        if not expects_rejection(s):
            continue
        p = prediction(report, s)
        predicted = ", ".join(f"{x['arm_code'] or '(no ARM code: unsupported)'} by {x['rule']} "
                              f"on {x['resource']}" for x in p["predicted"]) or "NOTHING"
        verdict = "prediction matches the expected outcome" if p["matches"] else \
            "MISMATCH: the rules and the program have drifted"
        lines += ["", f"scenario {s} expects: {p['expected_outcome']} "
                      f"({' or '.join(p['expected_arm_codes'])})",
                  f"scenario {s} predicted: {predicted}", f"scenario {s}: {verdict}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtaplab check",
        description="Preflight a stack: the rules Azure would enforce, run on the program's "
                    "resource graph under mocks (no cloud). Exit 1 on a mandatory finding the "
                    "stack's scenarios do not expect.")
    parser.add_argument("stack", nargs="?", help="stack name: the STACK of a Pulumi.STACK.yaml")
    parser.add_argument("--graph", type=Path, metavar="FILE",
                        help="check a graph JSON file (python -m vtaplab graph STACK --json) "
                             "instead of building one")
    parser.add_argument("--scenarios", metavar="S1,S2",
                        help="scenarios the graph runs (default: the stack file's, or the "
                             "graph's own tags)")
    parser.add_argument("--diff", type=Path, metavar="OLD.json",
                        help="also print the graph's changes against an older graph JSON")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="findings as JSON")
    form.add_argument("--markdown", action="store_true", help="a Markdown table (PR comments)")
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if (args.stack is None) == (args.graph is None):
        print("vtaplab check: give a STACK or --graph FILE (exactly one)", file=sys.stderr)
        return 2
    try:
        graph, stack, scenarios = _load(args)
        old = _read_graph(args.diff) if args.diff else None
    except (OSError, ValueError) as error:
        print(f"vtaplab check: {error}", file=sys.stderr)
        return 2
    if args.scenarios:
        scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
        bad = [s for s in scenarios if s not in facts.SCENARIOS]
        if bad:
            print(f"vtaplab check: --scenarios: {', '.join(bad)} unknown; accepted: "
                  f"{', '.join(facts.SCENARIOS)}", file=sys.stderr)
            return 2
    report = evaluate(graph, stack=stack, scenarios=scenarios)
    if args.json:
        out = report.to_dict()
        if old is not None:
            out["diff"] = graph_diff(old, graph)
        print(json.dumps(out, indent=2))
    else:
        sys.stdout.write(render(report, markdown=args.markdown))
        if old is not None:
            diff = graph_diff(old, graph)
            body = "\n".join(diff) if diff else "(no change)"
            sys.stdout.write(f"\ngraph diff:\n```diff\n{body}\n```\n" if args.markdown
                             else f"\ngraph diff:\n{body}\n")
    return report.exit_code


def _read_graph(path: Path) -> list[dict[str, Any]]:
    from vtaplab.cli import MAX_GRAPH_BYTES, read_text_bounded

    try:
        data = json.loads(read_text_bounded(path, limit=MAX_GRAPH_BYTES, what="graph file"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error.msg}, line {error.lineno}); "
                         "accepted: the output of 'python -m vtaplab graph STACK --json'") from None
    if isinstance(data, Mapping) and isinstance(data.get("resources"), list):
        data = data["resources"]
    if not isinstance(data, list) or not all(isinstance(e, Mapping) for e in data):
        raise ValueError(f"{path}: not a resource graph; accepted: a JSON list of "
                         "{urn, type, name, parent, inputs} objects")
    return data


def _load(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str, tuple[str, ...]]:
    if args.graph is not None:
        graph = _read_graph(args.graph)
        return graph, args.graph.stem, graph_scenarios(graph)
    root = (args.root or PROJECT_ROOT).resolve()
    try:
        graph = mocks.build_graph(args.stack, root=root)
    except mocks.GraphError as error:
        raise ValueError(str(error)) from None
    return graph, args.stack, stack_scenarios(args.stack, root) or graph_scenarios(graph)
