"""The help a newcomer reads: examples, visible defaults, no internal names, one flag name
per idea (old spellings still accepted, hidden)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.core
import typer.main
from typer.testing import CliRunner

from alphapanda.cli.app import _register, app

_register()
ROOT: Any = typer.main.get_command(app)

# The commands this pass covers (sim, bench, auth and api are reworded separately).
COMMANDS = [
    ("feed",),
    ("record",),
    ("replay",),
    ("status",),
    ("doctor",),
    ("config", "show"),
    ("db", "upgrade"),
    ("db", "current"),
    ("instruments", "fetch"),
    ("instruments", "find"),
    ("instruments", "load"),
    ("instruments", "stream"),
    ("instruments", "unstream"),
    ("instruments", "list"),
]
INTERNAL_NAMES = re.compile(
    r"AuthService|PipelineMetricsCollector|MessageProducer|InstrumentRegistryService|"
    r"TickerClient|MarketFeedService|BrokerAuthenticator"
)


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def _command(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_examples_and_no_internal_names(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert "Examples:" in text
    assert f"alphapanda {' '.join(path)}" in text.split("Examples:", 1)[1]
    assert not INTERNAL_NAMES.search(text), INTERNAL_NAMES.search(text)
    assert " ." not in text.replace(" ...", "")  # "full ." / "Port ." typos


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_option_shows_its_default(path: tuple[str, ...]) -> None:
    command = _command(path)
    for param in command.params:
        if not isinstance(param, typer.core.TyperOption) or param.hidden or param.name == "help":
            continue
        if param.required or (param.is_flag and param.default is False):
            continue  # required, or an off-by-default switch: nothing to show
        shown = param.show_default is not False and param.default is not None
        assert shown or "[default:" in (param.help or ""), f"{path} {param.opts}"


@pytest.mark.parametrize(
    ("path", "old", "new", "value"),
    [
        (("feed",), "--run-for", "run_for", "5"),
        (("instruments", "load"), "--stream-mode", "old_stream_mode", "quote"),
    ],
)
def test_old_flag_spellings_still_work_but_are_hidden(
    path: tuple[str, ...], old: str, new: str, value: str
) -> None:
    command = _command(path)
    args = [*([] if path[-1] != "load" else ["README.md"]), old, value]
    ctx = command.make_context(path[-1], args)
    assert ctx.params[new] in (5.0, "quote")
    assert old not in _help(path)


def test_replay_has_no_default_destination() -> None:
    to = next(p for p in _command(("replay",)).params if p.name == "to")
    assert to.required
