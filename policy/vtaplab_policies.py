"""vtaplab's rules as pulumi-policy stack validations: the same functions ``check`` runs.

One ``StackValidationPolicy`` per rule of ``vtaplab.preflight.rules`` (named like the rule, enforced
``mandatory`` or ``advisory`` like its severity), reporting the findings the stack's scenarios
do *not* expect; and one advisory policy, ``expected-rejections``, reporting the ones they do
(r1's vTAP at the PE's NIC, b1's NIC edit), so a preview of r1 shows its predicted rejection
without being blocked by it — exactly what ``python -m vtaplab check`` does.

A stack policy receives each resource's *outputs* (not its inputs): the rules read both
shapes (see ``vtaplab.preflight.rules``). During a real preview, ids of resources not yet
created are unknown: pulumi-policy's props raise on reading an unknown, so the props are
unwrapped into plain values with Pulumi's unknown sentinels left in place, which the rules
treat as "unknown" (never a finding), and references are followed through the engine's
property dependencies instead.

Importable and testable: nothing here constructs a ``PolicyPack`` (``__main__.py`` does).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the pack runs from policy/: vtaplab lives one level up
    sys.path.insert(0, str(ROOT))

from vtaplab.preflight import check, rules  # noqa: E402  (after the sys.path insert)

PACK_NAME = "vtaplab"
EXPECTED_POLICY = "expected-rejections"


def plain(value: Any) -> Any:
    """pulumi-policy's unknown-checking proxies -> plain dicts/lists, unknowns kept as the
    sentinel strings (reading a proxied unknown would raise)."""
    if isinstance(value, Mapping):
        target = _target(value)
        return {str(k): plain(v) for k, v in target.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in _target(value)]
    return value


def _target(proxy: Any) -> Any:
    """The wrapped container of a pulumi-policy proxy, or the container itself."""
    if type(proxy).__name__ in {"_DictProxy", "_ListProxy", "_DictSecretsProxy",
                                "_ListSecretsProxy"}:
        try:
            return proxy["__target"]
        except (KeyError, IndexError, TypeError):
            pass
    return proxy


def graph_from_resources(resources: Iterable[Any]) -> list[dict[str, Any]]:
    """The stack's ``PolicyResource`` list as the graph the rules read.

    A stack policy gets each resource's *outputs* (the engine's AnalyzeStack), so the entries
    carry ``outputs``, not ``inputs``, and the engine's ``propertyDependencies`` (input
    property -> URNs), which link resources whose ids are still unknown in a preview.
    """
    graph: list[dict[str, Any]] = []
    for r in resources:
        if r.resource_type == "pulumi:pulumi:Stack" or r.resource_type.startswith(
                "pulumi:providers:"):
            continue
        parent = getattr(r, "parent", None)
        deps = getattr(r, "property_dependencies", None) or {}
        graph.append({"urn": r.urn, "type": r.resource_type, "name": r.name,
                      "parent": getattr(parent, "urn", None),
                      "outputs": plain(r.props) if r.props is not None else {},
                      "propertyDependencies": {
                          str(k): [d.urn for d in v if getattr(d, "urn", None)]
                          for k, v in deps.items()}})
    return graph


def report_for(args: StackValidationArgs) -> check.Report:
    graph = graph_from_resources(args.resources)
    return check.evaluate(graph, stack="(preview)", scenarios=check.graph_scenarios(graph))


def violation_message(finding: rules.Finding, *, expected: bool = False) -> str:
    code = f" [ARM: {finding.arm_code}]" if finding.arm_code else ""
    lead = f"expected by scenario {finding.scenario}: " if expected and finding.scenario else (
        "expected: " if expected else "")
    return f"{finding.rule}{code} {lead}{finding.message}"


def rule_validator(rule: rules.Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        report = report_for(args)
        for f, ok in zip(report.findings, report.expected, strict=True):
            if f.rule == rule.id and not ok:
                report_violation(violation_message(f), f.urn or None)
    validate.__name__ = f"validate_{rule.id}"
    return validate


def expected_validator(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    report = report_for(args)
    for f, ok in zip(report.findings, report.expected, strict=True):
        if ok:
            report_violation(violation_message(f, expected=True), f.urn or None)


def policies() -> list[StackValidationPolicy]:
    out = [
        StackValidationPolicy(
            name=r.name,
            description=f"{r.id}: {r.description}"
                        + (f" ARM: {r.arm_code}." if r.arm_code else ""),
            enforcement_level=(EnforcementLevel.MANDATORY if r.severity == rules.MANDATORY
                               else EnforcementLevel.ADVISORY),
            validate=rule_validator(r),
        )
        for r in rules.RULES
    ]
    out.append(StackValidationPolicy(
        name=EXPECTED_POLICY,
        description="Rejections the stack's scenarios exist to provoke (r1, b1), predicted "
                    "before ARM answers; reported, never blocking.",
        enforcement_level=EnforcementLevel.ADVISORY,
        validate=expected_validator,
    ))
    return out
