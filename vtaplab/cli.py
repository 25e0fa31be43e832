"""``python -m vtaplab COMMAND ...``: a thin dispatcher.

Each command lives in its own module exposing ``main(argv: list[str]) -> int`` with its own
argparse parser. Modules are imported only when their command runs, so ``decode`` never pays
for importing the Pulumi SDK and ``graph`` never needs tshark.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "emulate": ("vtaplab.emulator.engine",
                "run a scenario's data path locally in network namespaces"),
    "decode": ("vtaplab.judge.decode", "decode a capture (pcap/pcapng) into a verdict"),
    "graph": ("vtaplab.preflight.graph",
              "print a stack's resource graph, built under Pulumi mocks"),
    "check": ("vtaplab.preflight.check",
              "preflight: the rules ARM would enforce, on a stack's graph"),
    "evidence": ("vtaplab.azure.collect", "re-run capture + traffic on a deployed stack over SSH"),
    "matrix": ("vtaplab.matrix", "run stacks, write evidence/RESULTS.md"),
    "cost": ("vtaplab.preflight.cost", "estimate a stack's hourly cost from its graph"),
    "bench": ("vtaplab.bench.cli", "benchmarks: 'bench decode', 'bench proxy'"),
    # Run by pulumi-command during `pulumi up`: their command lines are stored in every
    # deployed stack's state, so they name the dispatcher, never a module path.
    "fastpath": ("vtaplab.azure.fastpath", "deallocate + start a tapped VM (a step of pulumi up)"),
    "fetch": ("vtaplab.azure.fetch", "bring a run's evidence back over SFTP (a step of pulumi up)"),
}


def usage() -> str:
    lines = ["usage: python -m vtaplab COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "'python -m vtaplab COMMAND --help' tells more."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vtaplab: unknown command {name!r}; accepted: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[name][0]).main(rest))


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, or a one-line error saying so."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; accepted: an integer >= 1")
    return value
