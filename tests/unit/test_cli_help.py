"""The help a newcomer reads: examples, visible defaults, no internal names, one flag name
per idea (old spellings still accepted, hidden)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
import typer.core
import typer.main
from typer.testing import CliRunner

from alphapanda.cli.app import _register, app
from alphapanda.cli.bench_cmd import soak_seconds

_register()
ROOT: Any = typer.main.get_command(app)


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the app, groups included, as name paths."""
    found = [path] if path else []
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            found += _walk(sub, (*path, name))
    return found


# Every command, found by walking the app: a new command is checked without listing it.
COMMANDS = _walk(ROOT)
# Class names of our own code (CamelCase with an internal suffix) and the official
# client's: a user never types them.
INTERNAL_NAMES = re.compile(
    r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Service|Collector|Producer|Client|Authenticator|"
    r"Registry|Publisher|Spool|Config|Settings|Error|Failed)\b|\bKiteConnect\b|\bKiteTicker\b"
)
# Ids of an outside document the repo does not have: its name, section signs, and
# requirement-style ids (a capital and a digit). Built from pieces so that this file does
# not cite anything itself (the repository-wide citation test reads it too).
_DOCUMENT = "S" + "PEC"
_SECTION_SIGN = "\u00a7"
OUTSIDE_IDS = re.compile(rf"{_DOCUMENT}|{_SECTION_SIGN}|\b[A-Z]\d{{1,2}}\b")
# A full stop left alone after a space: "ltp, quote or full .", "Port .".
TYPO = r" \.(?=\s|$)"


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def _command(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


def test_the_walk_finds_every_command_group() -> None:
    expected = {
        ("feed",),
        ("sim",),
        ("api",),
        ("auth", "login"),
        ("auth", "set-token"),
        ("auth", "status"),
        ("bench", "decode"),
        ("bench", "e2e"),
        ("bench", "burst"),
        ("bench", "soak"),
        ("bench", "chaos"),
        ("bench", "derived"),
        ("instruments", "stream"),
    }
    assert expected <= set(COMMANDS)


def test_the_patterns_catch_what_they_are_for() -> None:
    for bad in ("uses AuthService", "PipelineMetricsCollector", "via MessageProducer"):
        assert INTERNAL_NAMES.search(bad), bad
    for bad in (f"see {_DOCUMENT} 4", f"{_SECTION_SIGN}5", "rule K" + "1"):
        assert OUTSIDE_IDS.search(bad), bad
    assert not INTERNAL_NAMES.search("Kite Connect app, PostgreSQL, Redis, Kafka")
    for typo in ("ltp, quote or full .", "Port . [default: 18080]"):
        assert re.search(TYPO, typo), typo
    assert not re.search(TYPO, "[default: .alphapanda/soak] and more ...")


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_examples_and_no_internal_names(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert "Examples:" in text
    assert f"alphapanda {' '.join(path)}" in text.split("Examples:", 1)[1]
    assert not INTERNAL_NAMES.search(text), INTERNAL_NAMES.search(text)
    assert not OUTSIDE_IDS.search(text), OUTSIDE_IDS.search(text)
    assert not re.search(TYPO, text)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_option_shows_its_default(path: tuple[str, ...]) -> None:
    command = _command(path)
    for param in getattr(command, "params", []):
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
        (("bench", "soak"), "--minutes", "minutes", "5"),
        (("bench", "soak"), "--out", "out", "/tmp/x"),
        (("sim",), "--ticks-per-second", "ticks_per_second", "5"),
    ],
)
def test_old_flag_spellings_still_work_but_are_hidden(
    path: tuple[str, ...], old: str, new: str, value: str
) -> None:
    command = _command(path)
    args = [*([] if path[-1] != "load" else ["README.md"]), old, value]
    ctx = command.make_context(path[-1], args)
    assert str(ctx.params[new]) in ("5.0", "quote", "/tmp/x")
    help_text = _help(path)
    assert not re.search(rf"{re.escape(old)}(?![-\w])", help_text), old


# One flag name per idea: the same idea is spelled the same way in every command.
CANONICAL = {
    ("bench", "soak"): ("--seconds", "--rate", "--out-dir"),
    ("bench", "e2e"): ("--seconds", "--rate"),
    ("bench", "derived"): ("--seconds", "--rate"),
    ("bench", "burst"): ("--seconds",),
    ("bench", "chaos"): ("--rate",),
    ("sim",): ("--rate",),
    ("feed",): ("--seconds",),
}


@pytest.mark.parametrize("path", list(CANONICAL), ids=" ".join)
def test_one_flag_name_per_idea(path: tuple[str, ...]) -> None:
    visible = {
        opt
        for param in _command(path).params
        if isinstance(param, typer.core.TyperOption) and not param.hidden
        for opt in param.opts
    }
    assert set(CANONICAL[path]) <= visible
    assert not visible & {"--run-for", "--minutes", "--ticks-per-second", "--out"}


def test_soak_minutes_and_seconds_mean_the_same_length() -> None:
    soak = _command(("bench", "soak"))
    by_minutes = soak.make_context("soak", ["--minutes", "2"]).params
    by_seconds = soak.make_context("soak", ["--seconds", "120"]).params
    assert soak_seconds(by_minutes["seconds"], by_minutes["minutes"]) == 120.0
    assert soak_seconds(by_seconds["seconds"], by_seconds["minutes"]) == 120.0
    assert soak_seconds(None, None) == 600.0
    with pytest.raises(typer.BadParameter):
        soak_seconds(60.0, 1.0)


def test_api_and_auth_login_help_say_what_they_do() -> None:
    api = _help(("api",))
    assert "18080" in api and "127.0.0.1" in api
    login = _help(("auth", "login"))
    assert "kite.zerodha.com" in login and "ALPHAPANDA_KITE__REDIRECT_URL" in login


def test_replay_has_no_default_destination() -> None:
    to = next(p for p in _command(("replay",)).params if p.name == "to")
    assert to.required
