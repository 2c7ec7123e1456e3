"""Entry point of the ``alphapanda`` command: one Typer app, one module per command group."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from alphapanda.ops.preflight import StartupError
from alphapanda.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="alphapanda",
    help="Alpha Panda market feed: Kite Connect ticker → Kafka/Redpanda.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Markdown: docstring paragraphs reflow to the terminal instead of keeping the
    # source's line breaks.
    rich_markup_mode="markdown",
)


class CliContext:
    """Carries the settings source; settings are built once, on first use."""

    def __init__(self, env_file: Path | None) -> None:
        self._env_file = env_file
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self._env_file)
            except SettingsError as exc:
                typer.secho(str(exc), fg=typer.colors.RED, err=True)
                raise typer.Exit(2) from None
        return self._settings


@app.callback()
def _root(
    ctx: typer.Context,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="Read settings from this .env file.")
    ] = None,
) -> None:
    ctx.obj = CliContext(env_file)


def settings_from(ctx: typer.Context) -> Settings:
    """The settings of this invocation (for command modules)."""
    obj = ctx.find_root().obj
    assert isinstance(obj, CliContext)
    return obj.settings


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from alphapanda.cli import (  # noqa: F401
        api_cmd,
        auth_cmd,
        bench_cmd,
        config_cmd,
        db_cmd,
        derived_bench_cmd,
        doctor_cmd,
        feed_cmd,
        ha_cmd,
        instruments_cmd,
        record_cmd,
        sim_cmd,
        status_cmd,
    )


def _debug_requested() -> bool:
    # Read directly: the failure may be that the settings themselves could not be built.
    return os.environ.get("ALPHAPANDA_LOG__LEVEL", "").upper() == "DEBUG"


def main() -> None:
    _register()
    try:
        sys.exit(app())
    except (StartupError, SettingsError) as exc:
        # A set-up mistake: the message names the setting and the fix; a traceback
        # would only bury it.
        if _debug_requested():
            traceback.print_exc()
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        sys.exit(2)
