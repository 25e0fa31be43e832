"""``python -m vtaplab bench WHAT``: benchmarks that print figures measured side by side."""

from __future__ import annotations

import importlib
import sys

BENCHES: dict[str, str] = {
    "decode": "vtaplab.bench.decode",
    "failover": "vtaplab.bench.failover",
    "proxy": "vtaplab.bench.proxy",
}


def usage() -> str:
    return ("usage: python -m vtaplab bench {" + ",".join(BENCHES) + "} [ARGS...]\n\n"
            "'python -m vtaplab bench WHAT --help' tells more.")


def main(argv: list[str]) -> int:
    if argv and argv[0] in {"-h", "--help"}:
        print(usage())
        return 0
    if not argv or argv[0] not in BENCHES:
        got = repr(argv[0]) if argv else "nothing"
        print(f"vtaplab bench: got {got}; accepted: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHES[argv[0]]).main(argv[1:]))
