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


# Top-level command → the modules that define it. Only those are imported for a run of
# that command, so ``alphapanda sim`` or ``alphapanda doctor`` starts without importing
# what the other commands need (the API app, SQLAlchemy, alembic): seconds, per run.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "api": ("api_cmd",),
    "auth": ("auth_cmd",),
    "bench": ("bench_cmd", "derived_bench_cmd"),
    "config": ("config_cmd",),
    "db": ("db_cmd",),
    "doctor": ("doctor_cmd",),
    "feed": ("feed_cmd",),
    "ha": ("ha_cmd",),
    "instruments": ("instruments_cmd",),
    "record": ("record_cmd",),
    "replay": ("record_cmd",),
    "sim": ("sim_cmd",),
    "status": ("status_cmd",),
}
# Root options that take a value (the command name is the first other argument).
_ROOT_OPTIONS_WITH_VALUE = frozenset({"--env-file"})


def command_name(argv: list[str]) -> str | None:
    """The top-level command named in ``argv`` (``None``: none, or root ``--help``)."""
    args = iter(argv)
    for arg in args:
        if arg in _ROOT_OPTIONS_WITH_VALUE:
            next(args, None)
        elif arg.startswith("-"):
            if arg in ("--help", "-h"):
                return None
        else:
            return arg
    return None


def _register(argv: list[str] | None = None) -> None:
    """Import the command modules (each adds its commands to ``app``): only the one a
    known command needs, every one for help or an unknown name."""
    import importlib

    name = command_name(sys.argv[1:] if argv is None else argv)
    wanted = COMMAND_MODULES.get(name or "")
    if wanted is None:
        wanted = tuple(dict.fromkeys(m for ms in COMMAND_MODULES.values() for m in ms))
    for module in wanted:
        importlib.import_module(f"alphapanda.cli.{module}")


def _debug_requested() -> bool:
    # Read directly: the failure may be that the settings themselves could not be built.
    return os.environ.get("ALPHAPANDA_LOG__LEVEL", "").upper() == "DEBUG"


# The modules of the optional ``bench`` extra (pyproject.toml): the benchmarks import
# them, the feed does not, so a plain install has none of them.
BENCH_EXTRA_MODULES = frozenset({"aiokafka", "httpx", "matplotlib", "psutil"})


def missing_bench_extra(argv: list[str], exc: ModuleNotFoundError) -> str | None:
    """The module of the ``bench`` extra whose absence stopped a benchmark (``None``:
    something else is missing, a real error)."""
    if command_name(argv) == "bench" and exc.name in BENCH_EXTRA_MODULES:
        return exc.name
    return None


def main() -> None:
    _register()
    try:
        sys.exit(app())
    except ModuleNotFoundError as exc:
        missing = missing_bench_extra(sys.argv[1:], exc)
        if missing is None:
            raise
        typer.secho(
            f"this benchmark needs {missing}, one of the optional benchmark dependencies: "
            "pip install 'alphapanda[bench]' (from a checkout: pip install -e '.[bench]')",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(2)
    except (StartupError, SettingsError) as exc:
        # A set-up mistake: the message names the setting and the fix; a traceback
        # would only bury it.
        if _debug_requested():
            traceback.print_exc()
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        sys.exit(2)
