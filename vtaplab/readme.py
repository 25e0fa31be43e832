"""The README's config-key table, generated from ``vtaplab.program.config.KEYS`` (never stale).

``python -m vtaplab.readme --update`` rewrites the block between ``<!-- config-keys:begin -->``
and ``<!-- config-keys:end -->``; ``tests/test_readme.py`` fails when the block is not current.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from vtaplab import PROJECT_ROOT

BLOCK = re.compile(r"(<!-- config-keys:begin -->\n)(?P<body>.*?)(<!-- config-keys:end -->)",
                   re.DOTALL)


def _default(value: object) -> str:
    if value is None:
        return "*(required in the stack file)*"
    if value == "":
        return "*(empty)*"
    if isinstance(value, tuple):
        return "`[" + ", ".join(value) + "]`"
    return f"`{value}`"


def config_table() -> str:
    from vtaplab.program.config import KEYS

    rows = ["| key (`vtaplab:`) | default | meaning |", "|---|---|---|"]
    rows += [f"| `{k.name}` | {_default(k.default)} | {k.description.replace('|', '/')} |"
             for k in KEYS]
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """``text`` with its config-key block replaced by the current table."""
    if not BLOCK.search(text):
        raise ValueError("README.md has no <!-- config-keys:begin --> ... end block")
    return BLOCK.sub(lambda m: m.group(1) + config_table() + m.group(3), text, count=1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab.readme",
                                     description="Check (default) or rewrite the README's "
                                                 "config-key table from "
                                                 "vtaplab.program.config.KEYS.")
    parser.add_argument("--update", action="store_true", help="rewrite the block in place")
    args = parser.parse_args(argv)
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    try:
        new = render(text)
    except ValueError as exc:
        print(f"vtaplab.readme: {exc}", file=sys.stderr)
        return 2
    if new == text:
        print("README.md config-key table is current")
        return 0
    if args.update:
        Path(readme).write_text(new, encoding="utf-8")
        print("wrote README.md")
        return 0
    print("README.md config-key table is stale: run python -m vtaplab.readme --update",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
