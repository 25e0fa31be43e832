"""The results table — ``evidence/RESULTS.md`` and ``evidence/results.json`` — from verdict files.

Nothing here is typed by hand: every row is one ``verdict.json`` (``vtaplab.judge.verdict``'s
format),
read back from disk. Besides a verdict's own keys a row uses the extra keys ``vtaplab matrix``
writes into the verdicts it produces, each optional:

  label    "measured on Azure" | "emulated" | "predicted" (default: from the path — a verdict
           under ``evidence/emulator/`` or ``evidence/offline/`` that says nothing is "emulated",
           any other one "measured on Azure")
  tried    one line: what was run to get this verdict (a command, a stack, a rule set)
  stack    the stack (or "emulator", "preflight") the verdict comes from
  variants verdicts of the same scenario under a fault, e.g. b3 with one proxy down

Outcomes are ``facts.OUTCOMES``, explained in RESULTS.md from ``vtaplab.judge.outcome.MEANINGS``;
a degraded row also says what is missing and where it was lost first, and every traffic row
gives the outer IP fragments seen vs reassembled at the collector. A prediction may have the
outcome ``unknown`` (nothing in the rules decides it, scenario a).

The README shows the same rows without the run-dependent figures (packet counts, links into
the git-ignored evidence directory), between ``<!-- results:begin -->`` and
``<!-- results:end -->``: :func:`update_readme` rewrites that block and nothing else.

    python -m vtaplab.judge.results [VERDICT.json | DIR ...] [--out evidence] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vtaplab import PROJECT_ROOT, facts
from vtaplab.judge.outcome import MEANINGS
from vtaplab.judge.verdict import load_verdict
from vtaplab.readme import BlockMissing, block_body, markers, replace_block, write_changed

README_BLOCK = "results"
BEGIN, END = markers(README_BLOCK)
LABELS = ("measured on Azure", "emulated", "predicted")
EMULATED_DIRS = ("emulator", "offline")


# The README has no ``<!-- results:begin -->`` ... ``<!-- results:end -->`` block.
ReadmeBlockMissing = BlockMissing


def _label(verdict: dict[str, Any], path: Path) -> str:
    label = verdict.get("label")
    if isinstance(label, str) and label in LABELS:
        return label
    parts = set(path.resolve().parts)
    return "emulated" if parts & set(EMULATED_DIRS) else "measured on Azure"


def _arm_codes(verdict: dict[str, Any]) -> list[str]:
    codes: list[str] = []
    err = verdict.get("arm_error")
    if isinstance(err, dict) and err.get("code"):
        codes.append(str(err["code"]))
    for extra in verdict.get("arm_errors") or []:
        if isinstance(extra, dict) and extra.get("code") and str(extra["code"]) not in codes:
            codes.append(str(extra["code"]))
    return codes


def _file_path(name: str, verdict_path: Path, root: Path) -> Path:
    """A verdict's file entry as a path: absolute as is; relative ones are relative to the
    project root (``build_verdict(root=...)``) or else to the verdict's own directory."""
    path = Path(name)
    if path.is_absolute():
        return path
    for base in (root, verdict_path.parent):
        if (base / path).exists():
            return base / path
    return root / path


def row_of(verdict_path: Path, *, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """One results row from one verdict file (raises ValueError when it isn't one)."""
    verdict_path = Path(verdict_path)
    if verdict_path.is_dir():
        verdict_path = verdict_path / "verdict.json"
    verdict = load_verdict(verdict_path)
    scenario = str(verdict.get("scenario") or "?")
    spec = facts.SCENARIOS.get(scenario)
    files = [_file_path(str(f), verdict_path, root) for f in verdict.get("files") or []]
    variants = []
    for variant in verdict.get("variants") or []:
        if not isinstance(variant, dict):
            continue
        variants.append({"name": str(variant.get("name")), "outcome": variant.get("outcome"),
                         "reason": variant.get("reason"),
                         "verdict": str(_file_path(str(variant.get("verdict")), verdict_path,
                                                   root)) if variant.get("verdict") else None})
    return {
        "scenario": scenario,
        "approach": spec.title if spec else scenario,
        "label": _label(verdict, verdict_path),
        "stack": verdict.get("stack"),
        "tried": verdict.get("tried"),
        "outcome": verdict.get("outcome"),
        "reason": verdict.get("reason"),
        "expected": verdict.get("expected") or (spec.expected if spec else None),
        "expected_outcome": spec.expected_outcome if spec else None,
        "matches_expected": verdict.get("matches_expected"),
        "arm_codes": _arm_codes(verdict),
        "vxlan_packets": verdict.get("vxlan_packets"),
        "vnis": verdict.get("vnis") or [],
        "outer_sources": verdict.get("outer_sources") or [],
        "variants": variants,
        "loss_at": verdict.get("loss_at"),
        "missing_figures": list(verdict.get("missing_figures") or []),
        "fragments_at_collector": verdict.get("fragments_at_collector"),
        "verdict": str(verdict_path),
        "files": [str(f) for f in files],
    }


def _order(row: dict[str, Any]) -> tuple[int, str, str]:
    ids = list(facts.SCENARIOS)
    position = ids.index(row["scenario"]) if row["scenario"] in ids else len(ids)
    return position, LABELS.index(row["label"]) if row["label"] in LABELS else 9, \
        str(row["stack"] or "")


def collect(paths: Iterable[Path], *, root: Path = PROJECT_ROOT) -> list[dict[str, Any]]:
    """Rows for verdict files (or directories holding ``verdict.json`` one level down), in
    the scenario catalogue's order."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir() and not (path / "verdict.json").is_file():
            found += sorted(path.glob("*/verdict.json"))
        else:
            found.append(path)
    return sorted((row_of(p, root=root) for p in found), key=_order)


# --------------------------------------------------------------------------- rendering


def _match(value: object) -> str:
    return {True: "yes", False: "**NO**", None: "n/a"}.get(value, "?")  # type: ignore[arg-type]


def _cell(text: object) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _link(path: str, base: Path) -> str:
    target = Path(path)
    try:
        rel = os.path.relpath(target, base)
    except ValueError:  # another drive
        rel = str(target)
    return f"[{target.name}]({rel})"


def expected_text(row: dict[str, Any]) -> str:
    outcome = row["expected_outcome"]
    return "unknown" if outcome is None else str(outcome)


def render_markdown(rows: Sequence[dict[str, Any]], *, base: Path) -> str:
    """RESULTS.md: the summary table, then per row what was tried and every evidence file."""
    lines = ["# vtaplab results", "",
             "Generated from verdict files by `vtaplab.judge.results` — not typed. Labels: "
             "**measured on Azure** (a deployed stack), **emulated** (the local network-"
             "namespace emulator, `python -m vtaplab emulate`), **predicted** (the preflight "
             "rules on the program's resource graph, `python -m vtaplab check`; no traffic, "
             "no ARM call).", "",
             "Outcomes: " + "; ".join(f"**{name}**: {text}" for name, text in MEANINGS.items())
             + ".", "",
             "| scenario | approach | how | outcome | expected | matches | ARM code | evidence |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join([
            f"**{row['scenario']}**", _cell(row["approach"]), row["label"],
            _cell(row["outcome"]), expected_text(row), _match(row["matches_expected"]),
            ", ".join(f"`{c}`" for c in row["arm_codes"]) or "-",
            _link(row["verdict"], base)]) + " |")
    for row in rows:
        lines += ["", f"## {row['scenario']} — {row['label']}"
                      + (f" (stack {row['stack']})" if row["stack"] else ""), ""]
        lines.append(f"- approach: {row['approach']}")
        if row["tried"]:
            lines.append(f"- tried: `{row['tried']}`")
        lines.append(f"- outcome: **{row['outcome']}** — {row['reason'] or ''}".rstrip(" —"))
        lines.append(f"- expected: {expected_text(row)} — {row['expected'] or ''}".rstrip(" —"))
        lines.append(f"- matches expected: {_match(row['matches_expected'])}")
        if row["arm_codes"]:
            lines.append("- ARM code: " + ", ".join(f"`{c}`" for c in row["arm_codes"]))
        if row["vxlan_packets"]:
            lines.append(f"- VXLAN packets at the collector: {row['vxlan_packets']}; VNIs: "
                         f"{', '.join(map(str, row['vnis'])) or '-'}; outer sources: "
                         f"{', '.join(row['outer_sources']) or '-'}")
        if row["missing_figures"]:
            lines.append("- missing: " + "; ".join(row["missing_figures"])
                         + (f" (lost first at {row['loss_at']})" if row["loss_at"] else ""))
        frags = row["fragments_at_collector"]
        if frags:
            lines.append(f"- outer IP fragments at the collector: "
                         f"{frags.get('fragment_frames_seen')} fragment frames seen, "
                         f"{frags.get('datagrams_reassembled')} datagrams reassembled, "
                         f"{frags.get('datagrams_incomplete')} incomplete — "
                         f"{frags.get('answer')}")
        for variant in row["variants"]:
            where = f" ({_link(variant['verdict'], base)})" if variant["verdict"] else ""
            lines.append(f"- variant {variant['name']}: **{variant['outcome']}** — "
                         f"{variant['reason'] or ''}{where}")
        lines.append("- evidence: " + ", ".join(
            [_link(row["verdict"], base), *(_link(f, base) for f in row["files"])]))
    return "\n".join(lines) + "\n"


def render_readme_block(rows: Sequence[dict[str, Any]]) -> str:
    """The README's results table: only what a re-run gives again (no counts, no links into
    the git-ignored evidence directory)."""
    lines = ["| scenario | approach | how | outcome | expected | matches | ARM code |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        outcome = str(row["outcome"])
        for variant in row["variants"]:
            outcome += f"; {variant['name']}: {variant['outcome']}"
        lines.append("| " + " | ".join([
            f"**{row['scenario']}**", _cell(row["approach"]), row["label"], _cell(outcome),
            expected_text(row), _match(row["matches_expected"]),
            ", ".join(f"`{c}`" for c in row["arm_codes"]) or "-"]) + " |")
    return "\n".join(lines) + "\n"


def to_json(rows: Sequence[dict[str, Any]], *, base: Path) -> dict[str, Any]:
    def rel(p: str) -> str:
        try:
            return os.path.relpath(p, base)
        except ValueError:
            return p

    return {"format": "vtaplab-results/1",
            "rows": [{**r, "verdict": rel(r["verdict"]), "files": [rel(f) for f in r["files"]],
                      "variants": [{**v, "verdict": rel(v["verdict"]) if v["verdict"] else None}
                                   for v in r["variants"]]}
                     for r in rows]}


def write(rows: Sequence[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """``out_dir/RESULTS.md`` and ``out_dir/results.json`` (links relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir.resolve()
    md, js = out_dir / "RESULTS.md", out_dir / "results.json"
    md.write_text(render_markdown(rows, base=base), encoding="utf-8")
    js.write_text(json.dumps(to_json(rows, base=base), indent=2) + "\n", encoding="utf-8")
    return md, js


# --------------------------------------------------------------------------- the README block


def readme_block(text: str) -> str:
    """What is between the markers now (raises ReadmeBlockMissing)."""
    return block_body(text, README_BLOCK).strip("\n")


def readme_text(rows: Sequence[dict[str, Any]], *, command: str) -> str:
    return (f"Generated by `{command}` from its verdict files (`vtaplab/judge/results.py`); "
            "the full table with every evidence file is `evidence/RESULTS.md` after a run.\n\n"
            + render_readme_block(rows))


def update_readme(readme: Path, rows: Sequence[dict[str, Any]], *,
                  command: str = "python -m vtaplab matrix --offline") -> bool:
    """Rewrite only the marked block of ``readme``; True when it changed."""
    text = Path(readme).read_text(encoding="utf-8")
    new = replace_block(text, README_BLOCK, "\n" + readme_text(rows, command=command))
    return write_changed(Path(readme), new)


# --------------------------------------------------------------------------- changes


def changes(rows: Sequence[dict[str, Any]],
            previous: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """What the platform answered differently: outcomes unlike the expected one, and (given
    an earlier results.json's rows) outcomes unlike the earlier run's with the same label."""
    lines: list[str] = []
    for row in rows:
        where = f"{row['scenario']} ({row['label']}" + (
            f", stack {row['stack']})" if row["stack"] else ")")
        if row["matches_expected"] is False:
            lines.append(f"{where}: expected {expected_text(row)}, got {row['outcome']} — "
                         f"{row['reason'] or ''}".rstrip(" —"))
        for variant in row["variants"]:
            if row["expected_outcome"] and variant["outcome"] != row["expected_outcome"]:
                lines.append(f"{where} variant {variant['name']}: expected "
                             f"{row['expected_outcome']}, got {variant['outcome']}")
    for row in rows:
        for old in previous or ():
            if (old.get("scenario"), old.get("label"), old.get("stack")) != (
                    row["scenario"], row["label"], row["stack"]):
                continue
            if old.get("outcome") != row["outcome"] and row["outcome"] != "error" \
                    and old.get("outcome") != "error":
                lines.append(f"{row['scenario']} ({row['label']}): was {old.get('outcome')} "
                             f"in the previous run, now {row['outcome']}")
    return lines


def load_previous(path: Path) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    rows = data.get("rows") if isinstance(data, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else None


# --------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m vtaplab.judge.results",
                                description="Write RESULTS.md and results.json from verdicts.")
    p.add_argument("verdicts", nargs="*", type=Path,
                   help="verdict.json files or directories (default: evidence/offline)")
    p.add_argument("--out", type=Path, default=Path("evidence"), help="default: evidence")
    p.add_argument("--readme", type=Path, default=None,
                   help="also rewrite this README's results block")
    args = p.parse_args(argv)
    try:
        rows = collect(args.verdicts or [Path("evidence/offline")], root=Path.cwd())
    except ValueError as exc:
        print(f"results: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("results: no verdict.json found; accepted: verdict files or directories "
              "holding SCENARIO/verdict.json", file=sys.stderr)
        return 2
    md, js = write(rows, args.out)
    print(f"results: {len(rows)} row(s) -> {md}, {js}")
    if args.readme is not None:
        try:
            changed = update_readme(args.readme, rows)
        except (OSError, ReadmeBlockMissing) as exc:
            print(f"results: --readme {args.readme}: {exc}", file=sys.stderr)
            return 2
        print(f"results: {args.readme} {'updated' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
