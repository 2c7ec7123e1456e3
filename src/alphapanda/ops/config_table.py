"""The README's configuration table, generated from the settings so the two cannot drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from alphapanda.settings import TOP_LEVEL_FIELDS, Settings, env_name, redact_url

START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def _default(field_name: str, value: Any) -> str:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if not secret:
            return "(empty)"
        return f"`{redact_url(secret)}`" if field_name == "url" else "(dev value; set it)"
    if isinstance(value, tuple):
        return "`" + ",".join(map(str, value)) + "`" if value else "(empty)"
    if value is None:
        return "(unset)"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def _kind(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "")


def config_table() -> str:
    """A markdown table: every variable, its type and its default."""
    rows = ["| variable | type | default |", "|---|---|---|"]
    defaults = Settings(_env_file=None)
    for name in TOP_LEVEL_FIELDS:
        field = Settings.model_fields[name]
        kind = _kind(field.annotation).replace("|", "\\|")
        value = _default(name, getattr(defaults, name)).replace("|", "\\|")
        rows.append(f"| `{env_name((name,))}` | {kind} | {value} |")
    for group_name in Settings.model_fields:
        if group_name in TOP_LEVEL_FIELDS:
            continue
        group: BaseModel = getattr(defaults, group_name)
        for name, field in type(group).model_fields.items():
            kind = _kind(field.annotation).replace("|", "\\|")
            value = _default(name, getattr(group, name)).replace("|", "\\|")
            rows.append(f"| `{env_name((group_name, name))}` | {kind} | {value} |")
    return "\n".join(rows)


def render_readme(text: str) -> str:
    """``text`` with the table between the markers replaced by the current one."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError("README has no config-table markers")
    return pattern.sub(lambda _: f"{START}\n{config_table()}\n{END}", text)


def main() -> None:
    readme = Path("README.md")
    readme.write_text(render_readme(readme.read_text()))


if __name__ == "__main__":
    main()
