"""``python -m vtaplab.bench.twin``: the twin against the hand-built emulator it replaced.

Runs, interleaved on the same machine in one go, ``emulate b2`` (one proxy mode) with the
engine of a git revision from before the twin (default ``LEGACY_REVISION``; its
``vtaplab/emulator/engine.py`` is extracted to a temporary directory and run against this
checkout) and with the twin, then the twin's ``emulate uksouth``; prints wall-clock seconds
per run, the medians and the ratio twin / legacy. The twin's graph is cached before timing
(``emulate`` reads it from ~/.cache/vtaplab/graphs); its build from the program under mocks is
timed on its own. Needs root, as ``emulate`` does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vtaplab import PROJECT_ROOT

LEGACY_REVISION = "12d62e2"     # the last commit with the hand-built topologies
RUN_TIMEOUT_S = 300


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return time.monotonic() - started, proc.returncode, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab.bench.twin",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--requests", type=int, default=10, help="emulate --requests")
    parser.add_argument("--mode", default="netdev", help="emulate --proxy-mode")
    parser.add_argument("--legacy", default=LEGACY_REVISION, help="git revision to compare")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        print(f"bench: --rounds {args.rounds} is not accepted; accepted: 1..20", file=sys.stderr)
        return 2
    source = subprocess.run(["git", "show", f"{args.legacy}:vtaplab/emulator/engine.py"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if source.returncode != 0:
        print(f"bench: --legacy {args.legacy!r}: no vtaplab/emulator/engine.py there",
              file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with tempfile.TemporaryDirectory(prefix="vtaplab-bench-") as tmp:
        (Path(tmp) / "legacy_engine.py").write_text(source.stdout)
        common = ["--proxy-mode", args.mode, "--requests", str(args.requests)]
        legacy = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                  "import legacy_engine; sys.exit(legacy_engine.main(sys.argv[1:]))", tmp,
                  "b2", *common, "--out", f"{tmp}/legacy"]
        twin = [sys.executable, "-m", "vtaplab", "emulate", "b2", *common, "--out",
                f"{tmp}/twin"]
        uksouth = [sys.executable, "-m", "vtaplab", "emulate", "uksouth", *common, "--out",
                   f"{tmp}/uksouth"]
        from vtaplab.emulator.topology import stack_graph

        for stack in ("b2", "uksouth"):
            started = time.monotonic()
            _graph, cached = stack_graph(stack)
            print(f"graph {stack}: {'cached' if cached else 'built'} in "
                  f"{time.monotonic() - started:.2f}s")
        times: dict[str, list[float]] = {"legacy b2": [], "twin b2": [], "twin uksouth": []}
        for i in range(args.rounds):
            for name, command in (("legacy b2", legacy), ("twin b2", twin),
                                  ("twin uksouth", uksouth)):
                seconds, rc, last = _timed(command, env)
                times[name].append(seconds)
                print(f"round {i + 1} {name:<13} {seconds:6.2f}s  exit {rc}  {last}")
                if rc not in (0, 1):
                    return 1
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"median {name:<13} {value:6.2f}s")
    print(f"ratio twin/legacy b2: {medians['twin b2'] / medians['legacy b2']:.2f} "
          "(target <= 1.5); twin uksouth "
          f"{medians['twin uksouth']:.2f}s (target <= 10)")
    return 0


if __name__ == "__main__":   # pragma: no cover
    raise SystemExit(main())
