"""The README's configuration table, generated from the settings so the two cannot drift."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from alphapanda.ops.config_docs import ALLOWED, DESCRIPTIONS, REAL_ACCOUNT
from alphapanda.settings import Settings, env_name, redact_url

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


def _allowed(variable: str, field: FieldInfo) -> str:
    """Allowed values: the Literal's choices, the numeric bounds, or a written note."""
    if variable in ALLOWED:
        return ALLOWED[variable]
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    literal = annotation if typing.get_origin(annotation) is typing.Literal else None
    if literal is None and len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
        literal = args[0]
    if literal is not None:
        return ", ".join(f"`{choice}`" for choice in typing.get_args(literal))
    if annotation is bool:
        return "`true`, `false`"
    low = high = None
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = f"≥ {meta.ge}"
        elif isinstance(meta, annotated_types.Gt):
            low = f"> {meta.gt}"
        elif isinstance(meta, annotated_types.Le):
            high = f"≤ {meta.le}"
    if low and high:
        return f"{low.removeprefix('≥ ')}–{high.removeprefix('≤ ')}"
    return low or high or ""


def setting_fields() -> Iterator[tuple[str, str, FieldInfo, Any]]:
    """(variable, field name, field, default) of every setting: top-level values first,
    then each group's fields."""
    defaults = Settings(_env_file=None)
    groups: list[tuple[str, BaseModel]] = []
    for name, field in Settings.model_fields.items():
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            groups.append((name, value))
        else:
            yield env_name((name,)), name, field, value
    for group_name, group in groups:
        for name, field in type(group).model_fields.items():
            yield env_name((group_name, name)), name, field, getattr(group, name)


def missing_descriptions() -> list[str]:
    """Settings without a description in ``config_docs`` (the test keeps this empty)."""
    return [variable for variable, *_ in setting_fields() if variable not in DESCRIPTIONS]


def config_table() -> str:
    """A markdown table: every variable, what it does, its type, allowed values, default,
    and whether a real account must set it."""
    rows = [
        "| variable | what it does | type | allowed | default | real account |",
        "|---|---|---|---|---|---|",
    ]
    for variable, name, field, value in setting_fields():
        cells = [
            f"`{variable}`",
            DESCRIPTIONS.get(variable, ""),
            _kind(field.annotation).replace("|", "\\|"),
            _allowed(variable, field),
            _default(name, value).replace("|", "\\|"),
            "**must set**" if variable in REAL_ACCOUNT else "",
        ]
        rows.append("| " + " | ".join(cells) + " |")
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
