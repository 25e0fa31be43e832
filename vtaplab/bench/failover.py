"""``python -m vtaplab bench failover``: the LB's HTTP probe against a TCP/22 probe, side by side.

Runs the twin of a stack with an LB before two or more proxies (default b4) under one fault
that hits one proxy (``no-proxy-rule``, ``proxy-down`` or ``rolling-upgrade``), once with the
probe the program deploys (``proxyProbe=http``: ``vtap-health.py``) and once with the reference
lab's TCP/22 (``--set proxyProbe=tcp``), interleaved for ``--rounds`` rounds in one go; prints
per probe the medians of the failover window, the datagrams lost inside the windows and after
them, the outcomes, and the ratios TCP/22 over HTTP. Figures come from each run's
``verdict.json`` (``failover``), nothing else. Needs root, as ``emulate`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vtaplab import PROJECT_ROOT
from vtaplab.cli import int_option

PROBES = ("http", "tcp")
FAULTS = ("no-proxy-rule", "proxy-down", "rolling-upgrade")
ROUNDS_RANGE = (1, 20)
REQUESTS_RANGE = (3, 100)
RUN_TIMEOUT_S = 300


class BenchError(ValueError):
    """Bad input or a run that gave no verdict: one line."""


def window_figures(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """A verdict's failover as figures: the longest window (None when the LB never took the
    proxy out), datagrams lost inside the windows and after them (all of them after, when it
    never did), the outcome."""
    failover = verdict.get("failover")
    if not isinstance(failover, Mapping):
        raise BenchError(f"verdict of scenario {verdict.get('scenario')!r} has no failover; "
                         "accepted: a run with a proxy at fault behind an LB")
    windows = failover.get("windows") or [failover]
    never = any(w.get("removed_at") is None for w in windows)
    inside = sum(int(w.get("lost_in_window") or 0) for w in windows if w.get("removed_at"))
    after = sum(int(w.get("lost_after_window") or 0) for w in windows if w.get("removed_at"))
    after += sum(int(w.get("lost_in_window") or 0) for w in windows
                 if w.get("removed_at") is None)
    sizes = [float(w["window_s"]) for w in windows if w.get("window_s") is not None]
    return {"window_s": None if never or not sizes else max(sizes), "lost_in": inside,
            "lost_after": after, "outcome": str(verdict.get("outcome"))}


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of one probe (windows only where the LB took the proxy out)."""
    windows = [r["window_s"] for r in rows if r["window_s"] is not None]
    return {
        "rounds": len(rows),
        "window_s": statistics.median(windows) if windows else None,
        "never_out": sum(1 for r in rows if r["window_s"] is None),
        "lost_in": statistics.median(r["lost_in"] for r in rows),
        "lost_after": statistics.median(r["lost_after"] for r in rows),
        "outcomes": dict(Counter(r["outcome"] for r in rows)),
    }


def ratio(tcp: float | None, http: float | None) -> str:
    if tcp is None or http is None:
        return "n/a"
    if http == 0:
        return "inf" if tcp else "1.00"
    return f"{tcp / http:.2f}"


def render(stack: str, fault: str, table: Mapping[str, Mapping[str, Any]]) -> str:
    http, tcp = table["http"], table["tcp"]
    lines = [f"bench failover {stack}, fault {fault}: medians over {http['rounds']} round(s) "
             "per probe, interleaved", "",
             f"{'probe':<8} {'window s':>9} {'never out':>9} {'lost in':>8} "
             f"{'lost after':>10}  outcomes"]
    for probe in PROBES:
        row = table[probe]
        window = "-" if row["window_s"] is None else f"{row['window_s']:.3f}"
        outcomes = ", ".join(f"{k} x{v}" for k, v in sorted(row["outcomes"].items()))
        lines.append(f"{probe:<8} {window:>9} {row['never_out']:>9} {row['lost_in']:>8g} "
                     f"{row['lost_after']:>10g}  {outcomes}")
    lines += ["", "tcp/http: window " + ratio(tcp["window_s"], http["window_s"])
              + ", lost in the windows " + ratio(tcp["lost_in"], http["lost_in"])
              + ", lost after them " + ratio(tcp["lost_after"], http["lost_after"])]
    return "\n".join(lines)


def _run(stack: str, probe: str, fault: str, requests: int, out: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "vtaplab", "emulate", stack, "--set", f"proxyProbe={probe}",
            "--fault", fault, "--requests", str(requests), "--proxy-mode", "netdev",
            "--out", str(out)]
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        return window_figures(json.loads((out / "verdict.json").read_text()))
    except (OSError, ValueError) as exc:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        raise BenchError(f"emulate {stack} ({probe}, {fault}) gave no verdict (exit "
                         f"{proc.returncode}): {tail[0] or exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab bench failover",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="b4", help="a stack with an LB before two or more "
                                                      "proxies (default b4; b3 too)")
    parser.add_argument("--fault", default="no-proxy-rule",
                        help=f"{', '.join(FAULTS)} (default no-proxy-rule)")
    parser.add_argument("--rounds", default="3", help="runs per probe (1-20, default 3)")
    parser.add_argument("--requests", default="10", help="emulate --requests (3-100)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args(argv)
    try:
        if args.fault not in FAULTS:
            raise BenchError(f"--fault {args.fault!r} is not accepted; accepted: "
                             f"{', '.join(FAULTS)}")
        rounds = int_option("--rounds", args.rounds, *ROUNDS_RANGE)
        requests = int_option("--requests", args.requests, *REQUESTS_RANGE)
        if os.geteuid() != 0:
            raise BenchError("must run as root (the twin's namespaces need it)")
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PROBES}
        with tempfile.TemporaryDirectory(prefix="vtaplab-bench-failover-") as tmp:
            for index in range(rounds):       # interleaved: the same machine state for both
                for probe in PROBES:
                    runs[probe].append(_run(args.stack, probe, args.fault, requests,
                                            Path(tmp) / f"{probe}-{index}"))
    except ValueError as exc:   # BenchError and int_option's
        print(f"bench failover: {exc}", file=sys.stderr)
        return 2
    table = {probe: summarise(rows) for probe, rows in runs.items()}
    if args.json:
        print(json.dumps({"stack": args.stack, "fault": args.fault, "probes": table},
                         indent=2))
    else:
        print(render(args.stack, args.fault, table))
    return 0


if __name__ == "__main__":   # pragma: no cover
    raise SystemExit(main())
