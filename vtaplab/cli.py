"""``python -m vtaplab COMMAND ...``: a thin dispatcher.

Each command lives in its own module exposing ``main(argv: list[str]) -> int`` with its own
argparse parser. Modules are imported only when their command runs, so ``decode`` never pays
for importing the Pulumi SDK and ``graph`` never needs tshark.

What every command shares lives here too: the exit status of an interrupted command (130) and
the bounded whole-file reads of files a user names (a huge file or /dev/zero is one line, not
an out-of-memory).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# Exit status of an interrupted command (Ctrl-C, SIGTERM), every command alike: 128 + SIGINT,
# what a shell reports for a program killed by Ctrl-C (README, "Exit status").
EXIT_INTERRUPTED = 130

# Bounds of the whole-file reads of files a user names (a huge file or /dev/zero must stop
# with one line, not grow until out of memory). Each is far above what a real run writes: a
# traffic log line is ~100 bytes (10000 requests x 2 URLs x 10 tenants is ~20 MB); the
# largest committed stack's graph is a few MB; stack outputs are kilobytes.
MAX_TRAFFIC_LOG_BYTES = 64 << 20
MAX_GRAPH_BYTES = 64 << 20
MAX_OUTPUTS_BYTES = 16 << 20

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
    "doctor": ("vtaplab.azure.doctor", "is this subscription ready (providers, quota, vTAPs)"),
    "matrix": ("vtaplab.matrix", "run stacks, write evidence/RESULTS.md"),
    "report": ("vtaplab.judge.findings", "write FINDINGS.md (the write-up) from verdicts"),
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
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "vtaplab":
            raise   # our own code missing is a bug, not an environment to fix
        # A package the command needs isn't in this interpreter: the project's venv has it.
        print(f"vtaplab {name}: this Python ({sys.executable}) has no package "
              f"{exc.name.split('.')[0]!r}; accepted: the project's venv (./bootstrap.sh, "
              f"then venv/bin/python -m vtaplab {name} ...)", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest))
    except KeyboardInterrupt:
        # A command without its own handler: one line and 130, never a traceback.
        print(f"vtaplab {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, or a one-line error saying so."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; accepted: an integer >= 1")
    return value


def int_option(name: str, text: str, low: int, high: int) -> int:
    """A command-line integer within ``low..high``, or ValueError with one line naming the
    option, the value and the accepted range."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"{name} {text!r} is not accepted; accepted: {low}..{high}")
    return value


class InputTooLarge(ValueError):
    """A file a user named is larger than the bound its reader accepts."""


def read_bytes_bounded(path: Path, *, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of ``path``, or ``InputTooLarge`` naming ``what``, the file and
    the bound. Reads one byte past the bound (never more), so a size ``stat`` can't tell
    (/dev/zero, a pipe) is caught too. ``OSError`` (missing, unreadable) goes to the caller."""
    with Path(path).open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputTooLarge(f"{what} {path}: larger than {_size(limit)} (reading stopped "
                            f"there); accepted: a {what} of at most {_size(limit)}")
    return data


def read_text_bounded(path: Path, *, limit: int, what: str) -> str:
    """``read_bytes_bounded`` decoded as UTF-8; undecodable bytes are a one-line ValueError."""
    data = read_bytes_bounded(path, limit=limit, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path}: not UTF-8 text (byte {exc.start}); accepted: a text "
                         f"{what}") from None


def _size(limit: int) -> str:
    return f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit} bytes"
