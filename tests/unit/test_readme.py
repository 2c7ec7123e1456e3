"""The README is part of the product: its two commands and its configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from alphapanda.ops.config_table import render_readme

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_settings() -> None:
    # Regenerate with: .venv/bin/python -m alphapanda.ops.config_table
    assert render_readme(README) == README


def test_quick_start_holds_exactly_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    commands = [line.split("#")[0].strip() for b in blocks for line in b.splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
