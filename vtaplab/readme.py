"""README.md's generated blocks: the one place that finds, replaces and writes them, and the
config-key table it generates from ``vtaplab.program.config.KEYS`` (never stale).

A block is ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->`` (``config-keys``, ``results``);
the graph diagrams use their own marker (``vtaplab.preflight.snapshots``) and the same writer.
``python -m vtaplab.readme --update`` rewrites the config-key block; ``tests/test_readme.py``
fails when it is not current.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from vtaplab import PROJECT_ROOT
from vtaplab.program.config import KEYS

CONFIG_KEYS = "config-keys"


class BlockMissing(ValueError):
    """The text has no ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->`` block."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _block(name: str) -> re.Pattern[str]:
    begin, end = markers(name)
    return re.compile(rf"{re.escape(begin)}\n(?P<body>.*?){re.escape(end)}", re.DOTALL)


def block_body(text: str, name: str) -> str:
    """What the ``name`` block holds now (raises BlockMissing)."""
    match = _block(name).search(text)
    if match is None:
        begin, end = markers(name)
        raise BlockMissing(f"no {begin} ... {end} block")
    return match.group("body")


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the ``name`` block holding ``body`` and nothing else changed."""
    block_body(text, name)  # raises when the markers are missing
    begin, end = markers(name)
    return _block(name).sub(lambda _m: f"{begin}\n{body}{end}", text, count=1)


def write_changed(path: Path, new: str) -> bool:
    """Write ``new`` to ``path`` (atomically) when it differs; True when it changed."""
    if path.is_file() and path.read_text(encoding="utf-8") == new:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    return True


def _default(value: object) -> str:
    if value is None:
        return "*(required in the stack file)*"
    if value == "":
        return "*(empty)*"
    if isinstance(value, tuple):
        return "`[" + ", ".join(value) + "]`"
    return f"`{value}`"


def config_table() -> str:
    rows = ["| key (`vtaplab:`) | default | meaning |", "|---|---|---|"]
    rows += [f"| `{k.name}` | {_default(k.default)} | {k.description.replace('|', '/')} |"
             for k in KEYS]
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """``text`` with its config-key block replaced by the current table."""
    try:
        return replace_block(text, CONFIG_KEYS, config_table())
    except BlockMissing:
        raise BlockMissing("README.md has no <!-- config-keys:begin --> ... end block") from None


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
    except BlockMissing as exc:
        print(f"vtaplab.readme: {exc}", file=sys.stderr)
        return 2
    if new == text:
        print("README.md config-key table is current")
        return 0
    if args.update:
        write_changed(readme, new)
        print("wrote README.md")
        return 0
    print("README.md config-key table is stale: run python -m vtaplab.readme --update",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
