"""``python -m vtaplab report [EVIDENCE_DIR]``: FINDINGS.md, the write-up, drawn from verdicts.

Every sentence, figure and picture comes from a ``verdict.json`` (and the evidence files it
lists) or from the program's own resource graph: nothing is typed by hand, so the write-up can
never be out of date or claim more than was measured. The pictures are Mermaid, which GitHub
renders itself, so the report stays text and diffable:

- per scenario, the stack's topology (the program's graph under mocks, as ``graph --mermaid``
  draws it) with the verdict on it: the mirror path solid green with the packet counts where
  packets were seen, red and dashed from the hop where they stopped, an error node carrying
  ARM's code for a refused request, and how it was measured (Azure, emulated, predicted);
- charts where a picture says more than a table: packets and IP fragments per hop, msp's
  packets and requests per tenant, b3's failover (datagrams per interval per proxy);
- the results table (``vtaplab.judge.results``) and a link to every evidence file.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtaplab import facts
from vtaplab.judge import results
from vtaplab.readme import replace_block, write_changed

FINDINGS = "FINDINGS.md"
GREEN, RED, GREY = "#2e7d32", "#c62828", "#9e9e9e"
# What an outcome means for the drawing: did the mirror get through, stop, or never start?
THROUGH = {"delivered"}
PARTIAL = {"degraded"}
STOPPED = {"not-delivered", "error"}
REFUSED = {"rejected"}

GraphSource = Callable[[str], Sequence[Mapping[str, Any]]]


class ReportError(ValueError):
    """Input the report can't use (one line: what and what is accepted)."""


# --------------------------------------------------------------------------- reading


@dataclass
class Finding:
    """One scenario's verdict with the results row the table already computes from it."""

    row: dict[str, Any]
    verdict: dict[str, Any]
    verdict_path: Path

    @property
    def scenario(self) -> str:
        return str(self.row["scenario"])

    @property
    def outcome(self) -> str:
        return str(self.verdict.get("outcome") or "unknown")

    @property
    def how(self) -> str:
        return str(self.row.get("label") or "unlabelled")


def read(evidence: Path, paths: Sequence[Path] | None = None) -> list[Finding]:
    """Every ``verdict.json`` below ``evidence`` (or just ``paths``), in the results table's
    order."""
    if not evidence.is_dir():
        raise ReportError(f"report: {evidence} is not a directory; accepted: an evidence "
                          "folder holding <scenario>/verdict.json files (default: evidence)")
    if paths is None:
        paths = sorted(p for p in evidence.rglob("verdict.json") if not any(
            part.startswith(".") for part in p.relative_to(evidence).parts))
    paths = [p / "verdict.json" if p.is_dir() else p for p in paths]
    # A variant (b3's proxy-down run, b4's rewrite-gone and rolling-upgrade runs) is drawn
    # inside its scenario's section, not as a row.
    variant_paths = set()
    for path in paths:
        verdict = results.load_verdict(path)
        for variant in verdict.get("variants") or []:
            if isinstance(variant, dict) and variant.get("verdict"):
                variant_paths.add(_resolve(str(variant["verdict"]), path, evidence))
    rows = results.collect([p for p in paths if p.resolve() not in variant_paths],
                           root=evidence.parent)
    return [Finding(row, results.load_verdict(Path(row["verdict"])), Path(row["verdict"]))
            for row in rows]


def _resolve(name: str, verdict_path: Path, evidence: Path) -> Path:
    for base in (verdict_path.parent, evidence.parent, Path.cwd()):
        candidate = (base / name).resolve()
        if candidate.exists():
            return candidate
    return (evidence.parent / name).resolve()


# --------------------------------------------------------------------------- mermaid helpers


def _quote(text: object) -> str:
    """Text safe inside a Mermaid ``"..."`` label."""
    return str(text).replace('"', "'").replace("\n", "<br/>").replace("|", "/")


def _id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


@dataclass
class Hop:
    """One place on the mirror path where packets were counted."""

    name: str
    packets: int | None
    fragments: int | None = None
    reassembled: int | None = None
    node: str | None = None  # the graph resource it belongs to, when the evidence says so
    stage: int | None = None  # its place on the path; hops of one stage are parallel (b3's
    #                           proxies): the LB splits the mirror between them


def hops_of(verdict: Mapping[str, Any]) -> list[Hop]:
    """The per-hop figures a verdict carries (``hops``), in path order; the collector's own
    count when that is all there is."""
    out: list[Hop] = []
    for item in verdict.get("hops") or []:
        if not isinstance(item, Mapping):
            continue
        packets = item.get("packets", item.get("vxlan_packets"))
        out.append(Hop(name=str(item.get("hop") or item.get("name") or "?"),
                       packets=_int(packets),
                       fragments=_int(item.get("fragments")),
                       reassembled=_int(item.get("reassembled")),
                       node=str(item["node"]) if item.get("node") else None,
                       stage=_int(item.get("stage"))))
    if not out and verdict.get("vxlan_packets") is not None:
        out.append(Hop("collector", _int(verdict.get("vxlan_packets"))))
    return out


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stages(hops: Sequence[Hop]) -> list[list[int]]:
    """The hops' indices by stage, in path order: consecutive hops of one stage are one group
    (parallel: what the stage before sent is split between them); a hop without a stage is
    a group of its own."""
    groups: list[list[int]] = []
    for i, hop in enumerate(hops):
        if groups and hop.stage is not None and hops[groups[-1][-1]].stage == hop.stage:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _stage_packets(hops: Sequence[Hop], group: Sequence[int]) -> int | None:
    counts = [hops[i].packets for i in group]
    return None if None in counts else sum(c for c in counts if c is not None)


def loss_hop(hops: Sequence[Hop]) -> int | None:
    """The index of the first hop of the first stage that saw fewer packets than the stage
    before (parallel hops summed), or none."""
    groups = stages(hops)
    for before, now in itertools.pairwise(groups):
        sent, got = _stage_packets(hops, before), _stage_packets(hops, now)
        if sent is not None and got is not None and got < sent:
            return now[0]
    return None


def path_diagram(finding: Finding) -> str:
    """The mirror path as the evidence saw it, left to right: one node per hop with its count,
    solid green while packets flow, red dashed from where they stopped; an ARM error node for
    a refused request; how it was measured."""
    verdict, outcome = finding.verdict, finding.outcome
    lines = ["flowchart LR"]
    styles: list[str] = []
    link = 0
    how = f'how_{_id(finding.scenario)}'
    lines.append(f'  {how}(["{_quote(finding.how)}"])')
    styles.append(f"  style {how} fill:#eeeeee,stroke:{GREY}")
    hops = hops_of(verdict)
    arm = verdict.get("arm_error") if isinstance(verdict.get("arm_error"), Mapping) else None
    if outcome in REFUSED or (arm and not hops):
        src = f"src_{_id(finding.scenario)}"
        err = f"err_{_id(finding.scenario)}"
        spec = facts.SCENARIOS.get(finding.scenario)
        lines.append(f'  {src}["{_quote(spec.title if spec else finding.scenario)}"]')
        code = ((arm or {}).get("code") or ", ".join(finding.row.get("arm_codes") or [])
                or "refused")
        lines.append(f'  {err}{{{{"ARM: {_quote(code)}"}}}}')
        lines.append(f"  {src} -.-x|{_quote(outcome)}| {err}")
        styles.append(f"  style {err} fill:#ffebee,stroke:{RED},color:{RED}")
        styles.append(f"  linkStyle {link} stroke:{RED},stroke-width:2px,stroke-dasharray:5 5")
        lines.append(f"  {how} ~~~ {src}")
        return "\n".join(lines + styles)
    if not hops:
        # Nothing was counted: predicted, not applicable, or unknown. Say so, draw no flow.
        node = f"none_{_id(finding.scenario)}"
        lines.append(f'  {node}["{_quote(outcome)}: {_quote(verdict.get("reason") or "")}"]')
        styles.append(f"  style {node} fill:#fafafa,stroke:{GREY},stroke-dasharray:3 3")
        lines.append(f"  {how} ~~~ {node}")
        return "\n".join(lines + styles)
    lost_at = loss_hop(hops)
    stopped = outcome in STOPPED
    names = [f"h{i}_{_id(finding.scenario)}" for i in range(len(hops))]
    for i, hop in enumerate(hops):
        count = "?" if hop.packets is None else f"{hop.packets} pkts"
        frag = ""
        if hop.fragments:
            frag = f"<br/>{hop.fragments} fragments"
            if hop.reassembled is not None:
                frag += f", {hop.reassembled} reassembled"
        lines.append(f'  {names[i]}["{_quote(hop.name)}<br/>{count}{frag}"]')
        seen = (hop.packets or 0) > 0
        colour = GREEN if seen else RED
        fill = "#e8f5e9" if seen else "#ffebee"
        styles.append(f"  style {names[i]} fill:{fill},stroke:{colour}")
    groups = stages(hops)
    edges = [(src, dst, len(before) > 1 and len(now) == 1)
             for before, now in itertools.pairwise(groups)
             for src in before for dst in now]
    for src, dst, fan_in in edges:
        # A fan-out edge carries its target's packets, a fan-in edge its source's.
        now = hops[src].packets if fan_in else hops[dst].packets
        broken = (now == 0) or (lost_at is not None and dst >= lost_at and stopped)
        lossy = lost_at == dst and not broken
        label = "" if now is None else f"{now}"
        before = hops[src].packets
        if lossy and before is not None and now is not None and not fan_in:
            label = f"{now} of {before}"
        arrow = "-.->" if broken else "==>"
        lines.append(f"  {names[src]} {arrow}" + (f"|{label}| " if label else " ") + names[dst])
        if broken:
            styles.append(f"  linkStyle {link} stroke:{RED},stroke-width:2px,"
                          "stroke-dasharray:5 5")
        elif lossy:
            styles.append(f"  linkStyle {link} stroke:#ef6c00,stroke-width:3px")
        else:
            styles.append(f"  linkStyle {link} stroke:{GREEN},stroke-width:3px")
        link += 1
    lines.append(f"  {how} ~~~ {names[0]}")
    return "\n".join(lines + styles)


_LINK = re.compile(r"^\s*(\w+)\s+(-->|-\.->|-\.-x|-\.|==>|~~~|---)(?:\|[^|]*\|)?.*?\s(\w+)\s*$")


def topology_diagram(graph: Sequence[Mapping[str, Any]], finding: Finding) -> str:
    """The stack's topology from the program's graph with this scenario's verdict on it: the
    scenario's own links (and the provider's, when its traffic crosses them) green when the
    mirror arrived whole, orange when with losses, red dashed when it did not arrive; a refused
    request is an error node carrying ARM's code beside the scenario's source VM."""
    from vtaplab.preflight.diagrams import to_mermaid

    lines = to_mermaid(graph).rstrip("\n").splitlines()
    mine = f"_{_id(finding.scenario)}_"
    carries = finding.outcome in THROUGH | PARTIAL | STOPPED
    outcome = finding.outcome
    if outcome in THROUGH:
        style = f"stroke:{GREEN},stroke-width:3px"
    elif outcome in PARTIAL:
        style = "stroke:#ef6c00,stroke-width:3px"
    elif outcome in STOPPED | REFUSED:
        style = f"stroke:{RED},stroke-width:2px,stroke-dasharray:5 5"
    else:
        style = f"stroke:{GREY},stroke-width:2px,stroke-dasharray:3 3"
    styles: list[str] = []
    index = 0
    sources: list[str] = []
    for line in lines:
        match = _LINK.match(line)
        if match is None:
            continue
        a, b = match.group(1), match.group(3)
        ours = (mine in a or mine in b) and outcome not in REFUSED
        provider = a.startswith(("pls_provider", "lb_provider")) and carries
        if ours or provider:
            styles.append(f"  linkStyle {index} {style}")
        index += 1
    for line in lines:
        node = re.match(r"^\s*(vm_\w+)\[", line)
        if node and mine in node.group(1) and node.group(1).endswith("_src"):
            sources.append(node.group(1))
    extra: list[str] = []
    arm = finding.verdict.get("arm_error")
    codes = finding.row.get("arm_codes") or ([arm.get("code")] if isinstance(arm, Mapping)
                                             and arm.get("code") else [])
    if outcome in REFUSED and sources:
        err = f"err_{_id(finding.scenario)}"
        extra.append(f'  {err}{{{{"ARM: {_quote(", ".join(codes) or "refused")}"}}}}')
        extra.append(f"  {sources[0]} -.-x|{_quote(finding.scenario)} refused| {err}")
        styles.append(f"  linkStyle {index} stroke:{RED},stroke-width:2px,"
                      "stroke-dasharray:5 5")
        styles.append(f"  style {err} fill:#ffebee,stroke:{RED},color:{RED}")
    return "\n".join([*lines, *extra, *styles])


def xy_chart(title: str, labels: Sequence[str], y_label: str, *,
             bars: Sequence[Sequence[int]] = (), lines: Sequence[Sequence[int]] = ()) -> str:
    """A Mermaid xychart — GitHub renders these natively. Mermaid draws bar series over each
    other (no grouping, no legend), so callers put the larger series first and say in the
    caption which is which."""
    top = max([1, *(v for values in (*bars, *lines) for v in values)])
    out = ["xychart-beta", f'  title "{_quote(title)}"',
           "  x-axis [" + ", ".join(f'"{_quote(label)}"' for label in labels) + "]",
           f'  y-axis "{_quote(y_label)}" 0 --> {int(top * 1.1) + 1}']
    out += ["  bar [" + ", ".join(str(int(v)) for v in values) + "]" for values in bars]
    out += ["  line [" + ", ".join(str(int(v)) for v in values) + "]" for values in lines]
    return "\n".join(out)


# --------------------------------------------------------------------------- charts




def charts(finding: Finding) -> list[tuple[str, str]]:
    """(caption, mermaid) for every chart the verdict has the figures for."""
    verdict = finding.verdict
    out: list[tuple[str, str]] = []
    hops = [h for h in hops_of(verdict) if h.packets is not None]
    if len(hops) >= 2:
        bars = [[int(h.packets or 0) for h in hops]]
        caption = "Packets per hop"
        if any(h.fragments for h in hops):
            bars.append([int(h.fragments or 0) for h in hops])
            caption += " (light bars) and the IP fragments among them (dark bars)"
        out.append((caption, xy_chart(f"{finding.scenario}: packets per hop",
                                      [h.name for h in hops], "packets", bars=bars)))
    tenants = [t for t in verdict.get("tenant_table") or [] if isinstance(t, Mapping)]
    if tenants:
        labels = [f"{t.get('tenant')} (VNI {t.get('vni')})" for t in tenants]
        out.append(("Per tenant: VXLAN packets at the collector",
                    xy_chart(f"{finding.scenario}: packets per tenant", labels, "packets",
                             bars=[[int(t.get("packets") or 0) for t in tenants]])))
        out.append(("Per tenant: HTTP requests the tenant's client sent (bars) and those seen "
                    "at the collector under its VNI (line)",
                    xy_chart(f"{finding.scenario}: requests per tenant", labels, "requests",
                             bars=[[int(t.get("sent") or 0) for t in tenants]],
                             lines=[[int(t.get("requests") or 0) for t in tenants]])))
    failover = verdict.get("failover")
    if isinstance(failover, Mapping) and failover.get("intervals"):
        intervals = [i for i in failover["intervals"] if isinstance(i, Mapping)]
        backends = sorted({b for i in intervals for b in (i.get("per_backend") or {})})
        labels = [f"{float(i.get('t', 0)):.1f}" for i in intervals]
        series = [[int((i.get("per_backend") or {}).get(b, 0)) for i in intervals]
                  for b in backends]
        what = facts.FAILOVER_CAUSES.get(str(failover.get("cause") or "down"), "went down")
        marks = [m for m in failover.get("marks") or [] if isinstance(m, Mapping)]
        if marks:   # several windows (a rolling upgrade): each proxy out, then back
            events = "; ".join(
                f"{m.get('backend')} {what} at {m.get('down_at_s', '?')} s, out of the LB at "
                f"{m.get('removed_at_s', '?')} s, back at {m.get('back_at_s', '?')} s"
                for m in marks)
        else:
            events = (f"{failover.get('backend')} {what} at {failover.get('down_at_s', '?')} s "
                      f"and was out of the LB at {failover.get('removed_at_s', '?')} s (window "
                      f"{failover.get('window_s', '?')} s)")
        caption = (f"Failover: packets the LB sent each proxy per "
                   f"{failover.get('interval_s', '?')} s (one line each, in the order "
                   f"{', '.join(backends)}; x: seconds from the first); {events}")
        out.append((caption, xy_chart(f"{finding.scenario}: failover", labels, "datagrams",
                                      lines=series)))
    return out


# --------------------------------------------------------------------------- writing


def summary(findings: Sequence[Finding]) -> list[str]:
    """Plain sentences, each from the verdicts: what works, what is refused and with which
    code, what is degraded and where, what is only predicted or emulated."""
    by: dict[str, list[Finding]] = {}
    for f in findings:
        by.setdefault(f.outcome, []).append(f)
    lines: list[str] = []

    def names(items: Sequence[Finding]) -> str:
        return ", ".join(f"**{f.scenario}** ({f.how})" for f in items)

    if by.get("delivered"):
        lines.append(f"- **Works** — the mirror arrived whole: {names(by['delivered'])}.")
    if by.get("degraded"):
        parts = []
        for f in by["degraded"]:
            hops = hops_of(f.verdict)
            at = loss_hop(hops)
            judged = f.verdict.get("loss_at")
            where = (f" lost at {judged}" if judged else
                     f" lost at {hops[at].name}" if at is not None else "")
            parts.append(f"**{f.scenario}** ({f.how}{where}: {f.verdict.get('reason', '')})")
        lines.append("- **Degraded** — VXLAN and HTTP arrive but not everything: "
                     + "; ".join(parts) + ".")
    if by.get("rejected"):
        parts = [f"**{f.scenario}** with `{', '.join(f.row.get('arm_codes') or ['?'])}` "
                 f"({f.how})" for f in by["rejected"]]
        lines.append("- **Refused by Azure Resource Manager**: " + "; ".join(parts) + ".")
    if by.get("not-delivered"):
        lines.append(f"- **Not delivered**: {names(by['not-delivered'])}.")
    if by.get("accepted"):
        lines.append(f"- **Accepted by ARM where a refusal was expected** (the platform "
                     f"changed?): {names(by['accepted'])}.")
    if by.get("not-applicable"):
        lines.append(f"- **Not expressible**: {names(by['not-applicable'])}.")
    for outcome in ("unknown", "error"):
        if by.get(outcome):
            lines.append(f"- **{outcome.capitalize()}**: {names(by[outcome])}.")
    measured = sorted({f.how for f in findings})
    lines.append("")
    lines.append("How each was measured: " + ", ".join(
        f"{how} ({sum(f.how == how for f in findings)})" for how in measured)
        + ". Emulated verdicts rest on the documented behaviours and named assumptions "
        "listed in their `verdict.json`; predicted ones come from the preflight rules on the "
        "program's graph, without traffic or an ARM call.")
    return lines


@dataclass
class Report:
    text: str
    diagrams: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)
    """Per scenario, its section's lines (heading first)."""


def _table(markdown: str) -> list[str]:
    """The results table alone (its rows), without the results file's own sections."""
    return [line for line in markdown.splitlines() if line.startswith("|")]


def _fence(block: str) -> list[str]:
    return ["```mermaid", block, "```"]


def _stack_of(finding: Finding) -> str | None:
    """The committed stack whose graph to draw: the verdict's own stack, else the stack named
    after its scenario (an emulated or predicted verdict names its runner, not a stack)."""
    from vtaplab.preflight.mocks import stack_names

    known = set(stack_names())
    stack = finding.verdict.get("stack")
    if isinstance(stack, str) and stack in known:
        return stack
    return finding.scenario if finding.scenario in known else None


def build(findings: Sequence[Finding], *, base: Path, graph_of: GraphSource | None,
          command: str) -> Report:
    """FINDINGS.md's text for ``findings``; links relative to ``base`` (the file's folder)."""
    if not findings:
        raise ReportError("report: no verdict.json found; accepted: an evidence folder "
                          "holding <scenario>/verdict.json files")
    diagrams: list[str] = []
    sections: dict[str, list[str]] = {}
    lines_of_summary = summary(findings)
    out = ["# vtaplab findings", "",
           f"Generated by `{command}` from {len(findings)} verdict file(s); every figure below "
           "is read from a verdict or an evidence file it lists. Do not edit by hand.", "",
           "## Summary", "", *lines_of_summary, "", "## Results", "",
           *_table(results.render_markdown([f.row for f in findings], base=base)), ""]
    for f in findings:
        start = len(out)
        spec = facts.SCENARIOS.get(f.scenario)
        out += [f"## {f.scenario} — {spec.title if spec else f.scenario}", "",
                f"**{f.outcome}** ({f.how}); expected: {f.row.get('expected') or '-'}; "
                f"matches: {results._match(f.row.get('matches_expected'))}.", ""]
        if f.verdict.get("reason"):
            out += [f"> {f.verdict['reason']}", ""]
        block = path_diagram(f)
        diagrams.append(block)
        out += ["The mirror path as the evidence saw it:", "", *_fence(block), ""]
        for caption, chart in charts(f) + _variant_charts(f, base):
            diagrams.append(chart)
            out += [caption + ":", "", *_fence(chart), ""]
        stack = _stack_of(f)
        if graph_of is not None and stack is not None:
            try:
                graph = graph_of(stack)
            except Exception as exc:  # a stack that doesn't build: say so, draw the rest
                out += [f"_Topology of stack {stack} unavailable: {exc}_", ""]
            else:
                block = topology_diagram(graph, f)
                diagrams.append(block)
                out += [f"The program's topology (stack `{stack}`), coloured by the verdict:",
                        "", *_fence(block), ""]
        seen = []
        if f.verdict.get("vnis"):
            seen.append(f"VNIs seen: {', '.join(str(v) for v in f.verdict['vnis'])}")
        if f.verdict.get("outer_sources"):
            seen.append("outer sources: " + ", ".join(f.verdict["outer_sources"]))
        if f.verdict.get("vxlan_packets") and f.verdict.get("outer_udp_source_ports"):
            seen.append("distinct outer UDP source ports: "
                        f"{f.verdict['outer_udp_source_ports']}")
        if seen:
            out += ["- " + "; ".join(seen), ""]
        files = f.row.get("files") or []
        if files:
            out += ["Evidence: " + ", ".join(_evidence_link(p, base) for p in files), ""]
        out += [f"Verdict: {results._link(str(f.verdict_path), base)}", ""]
        sections[f.scenario] = out[start:]
    return Report("\n".join(out).rstrip() + "\n", diagrams, lines_of_summary, sections)


def _variant_charts(finding: Finding, base: Path) -> list[tuple[str, str]]:
    """The charts of a scenario's variant runs (b3's proxy-down, b4's no-proxy-rule and
    rolling-upgrade), captioned with its name."""
    out: list[tuple[str, str]] = []
    for variant in finding.row.get("variants") or []:
        # Where matrix writes a variant: beside its scenario's verdict, under the variant's name.
        candidates = [Path(str(variant.get("verdict") or "")),
                      finding.verdict_path.parent / str(variant.get("name")) / "verdict.json"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            continue
        verdict = results.load_verdict(path)
        inner = Finding(finding.row, verdict, path)
        out += [(f"{variant.get('name')}: {caption}", chart) for caption, chart in
                charts(inner) if "ailover" in caption]
    return out


def _evidence_link(path: str, base: Path) -> str:
    """A link to an evidence file that is there; the bare name of one that is not (a sample
    kept without its captures)."""
    if Path(path).exists():
        return results._link(path, base)
    return f"`{Path(path).name}` (not kept here)"


README_BLOCK = "findings"


def readme_section(report: Report, *, scenario: str, sample: str) -> str:
    """The README's sample: the summary and one scenario's pictures (no evidence links: the
    README sits elsewhere), pointing at the full sample."""
    lines = [f"Generated by `python -m vtaplab report` from the verdicts of an emulator run "
             f"(the full sample: [{sample}]({sample})).", "", *report.summary, ""]
    section = report.sections.get(scenario, [])
    for line in section:
        if line.startswith(("Evidence: ", "Verdict: ")):
            continue
        lines.append("#" + line if line.startswith("## ") else line)
    return "\n".join(lines).rstrip() + "\n"


def mermaid_blocks(markdown: str) -> list[str]:
    """The Mermaid blocks of a Markdown text (what GitHub would render)."""
    return [m.group(1).strip("\n") for m in
            re.finditer(r"^```mermaid\n(.*?)^```", markdown, flags=re.M | re.S)]


def write(evidence: Path, *, graph_of: GraphSource | None, command: str,
          paths: Sequence[Path] | None = None, out: Path | None = None) -> Path:
    """``evidence/FINDINGS.md`` (or ``out``) from the verdicts below ``evidence`` (or
    ``paths``); links are relative to the file's folder."""
    path = out or evidence / FINDINGS
    report = build(read(evidence, paths), base=path.parent, graph_of=graph_of,
                   command=command)
    path.write_text(report.text)
    return path


def cached_graphs() -> GraphSource:
    """The program's graph per stack under mocks, built once per stack."""
    from vtaplab.preflight.mocks import build_graph

    cache: dict[str, Sequence[Mapping[str, Any]]] = {}

    def graph_of(stack: str) -> Sequence[Mapping[str, Any]]:
        if stack not in cache:
            cache[stack] = build_graph(stack)
        return cache[stack]

    return graph_of


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtaplab report",
        description="Write EVIDENCE_DIR/FINDINGS.md from the verdicts under it.")
    parser.add_argument("evidence", nargs="?", type=Path, default=Path("evidence"),
                        help="the evidence folder (default: evidence)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the report here instead of EVIDENCE_DIR/FINDINGS.md")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also rewrite this README's findings block (the sample: the "
                             "summary and b2's pictures, pointing at --out)")
    parser.add_argument("--no-topology", action="store_true",
                        help="skip the program's topology diagrams (no Pulumi mocks run)")
    args = parser.parse_args(argv)
    command = "python -m vtaplab report " + str(args.evidence)
    graphs = None if args.no_topology else cached_graphs()
    try:
        path = write(args.evidence, graph_of=graphs, command=command, out=args.out)
        if args.readme is not None:
            report = build(read(args.evidence), base=path.parent, graph_of=graphs,
                           command=command)
            sample = os.path.relpath(path, args.readme.parent)
            text = args.readme.read_text(encoding="utf-8")
            write_changed(args.readme, replace_block(
                text, README_BLOCK, readme_section(report, scenario="b2", sample=sample)))
    except (ReportError, ValueError, OSError) as exc:
        print(str(exc) if str(exc).startswith("report:") else f"report: {exc}",
              file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
