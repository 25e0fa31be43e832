"""``python -m vtaplab graph STACK [--set KEY=VALUE]... [--json|--mermaid]``: the program's
resource graph, no cloud.

The graph comes from the program under mocks (``mocks.run_here``, in this fresh interpreter),
with the stack file's config plus each ``--set`` (checked by the config loader: a bad one is
one line, exit 2); ``--mermaid`` draws it (``diagrams.to_mermaid``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vtaplab import PROJECT_ROOT
from vtaplab.preflight import snapshots
from vtaplab.preflight.diagrams import to_mermaid
from vtaplab.preflight.mocks import GraphError, parse_overrides, run_here


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtaplab graph",
        description="Print a stack's resource graph, built by running the program under "
                    "Pulumi mocks (no cloud, no Pulumi CLI).",
    )
    parser.add_argument("stack", nargs="?", help="stack name: the STACK of a Pulumi.STACK.yaml")
    parser.add_argument("--update-snapshots", action="store_true",
                        help="rewrite tests/snapshots, docs/graphs and the README's diagrams "
                             "for every committed stack")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run the program with this config value on top of the stack "
                             "file's (repeatable; KEY with or without vtaplab:), e.g. "
                             "--set proxyProbe=tcp")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="resources as JSON (default)")
    form.add_argument("--mermaid", action="store_true", help="a mermaid flowchart")
    form.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.update_snapshots:
        if args.set:
            print("vtaplab graph: --set is not accepted with --update-snapshots; accepted: "
                  "--set with a STACK (snapshots are the committed stack files' graphs)",
                  file=sys.stderr)
            return 2
        return snapshots.main(["--update"])
    if not args.stack:
        print("vtaplab graph: name a STACK (a Pulumi.STACK.yaml), or --update-snapshots",
              file=sys.stderr)
        return 2
    try:
        run = run_here(args.stack, args.root, parse_overrides(args.set))
    except GraphError as error:
        print(f"vtaplab graph: {error}", file=sys.stderr)
        return 2
    if args.run:
        print(json.dumps({"resources": run.resources, "outputs": run.outputs}))
    elif args.mermaid:
        sys.stdout.write(to_mermaid(run.resources))
    else:
        print(json.dumps(run.resources, indent=2, sort_keys=True))
    return 0
