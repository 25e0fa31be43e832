"""The README keeps its promises: the test command CI runs, generated tables that are current."""

from __future__ import annotations

import re

from vtaplab import PROJECT_ROOT, readme
from vtaplab.program.config import KEYS

ROOT = PROJECT_ROOT
TEXT = (ROOT / "README.md").read_text(encoding="utf-8")


def test_config_key_table_is_generated_and_current():
    assert readme.render(TEXT) == TEXT, "run: venv/bin/python -m vtaplab.readme --update"
    for key in KEYS:
        assert f"| `{key.name}` |" in TEXT


def test_render_replaces_only_the_block():
    text = "before\n<!-- config-keys:begin -->\nstale\n<!-- config-keys:end -->\nafter\n"
    out = readme.render(text)
    assert out.startswith("before\n") and out.endswith("after\n")
    assert "stale" not in out and "| `proxyMode` |" in out


def test_exactly_two_setup_commands_open_the_readme_and_ci_runs_the_second():
    first_screen = TEXT.split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", first_screen)
    assert len(commands) == 2, commands
    assert commands[0].startswith("./bootstrap.sh && ") and "emulate b2" in commands[0]
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in ci and "<!-- test-command -->\n```sh\n" + commands[1] in TEXT
