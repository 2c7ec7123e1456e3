"""``alphapanda ha status|handover``: the hot-standby group of ``ALPHAPANDA_HA__GROUP``."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import typer

from alphapanda.cli.app import app, settings_from
from alphapanda.ha.lease import group_status, request_handover

ha_app = typer.Typer(
    help="Hot standby: which instance of the group is active; hand over for a deploy.",
    no_args_is_help=True,
    epilog="Examples:\n\n  alphapanda ha status\n\n  alphapanda ha handover --group feed-a",
)
app.add_typer(ha_app, name="ha")


def _group(ctx: typer.Context, group: str | None) -> tuple[str, str]:
    settings = settings_from(ctx)
    name = group or settings.ha.group
    if not name:
        typer.secho("no group: set ALPHAPANDA_HA__GROUP or pass --group", fg="red", err=True)
        raise typer.Exit(2)
    return settings.database.url.get_secret_value(), name


def _instance_status(api_url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/status", timeout=5) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


@ha_app.command(
    "status",
    epilog="Examples:\n\n  alphapanda ha status\n\n  alphapanda ha status --group feed-a --json",
)
def status_cmd(
    ctx: typer.Context,
    group: str | None = typer.Option(None, help="The group. [default: ALPHAPANDA_HA__GROUP]"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Who is active, since when, the epoch, and each standby's lag."""
    url, name = _group(ctx, group)
    try:
        status = asyncio.run(group_status(url, name))
    except (OSError, TimeoutError) as exc:
        typer.secho(f"cannot reach PostgreSQL: {type(exc).__name__}", fg="red", err=True)
        raise typer.Exit(1) from None
    # A standby's lag: how far the newest tick it holds trails the active's newest.
    active_received = 0
    views = []
    for member in status["members"]:
        view = _instance_status(member["api_url"]) or {}
        ha = view.get("ha") or {}
        member["role"] = ha.get("role", "unreachable")
        member["last_received_at_ns"] = int((ha.get("last_received_at") or 0) * 1e9)
        if member["holds_lock"]:
            active_received = int(member["last_received_at_ns"])
        views.append(member)
    for member in views:
        last = member.pop("last_received_at_ns")
        member["lag_seconds"] = (
            None
            if member["holds_lock"] or not last or not active_received
            else max(0.0, (active_received - last) / 1e9)
        )
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    typer.echo(
        f"group {status['group']}: active {status['active'] or 'none'} "
        f"(epoch {status['epoch']}, since {status['active_since']})"
    )
    for member in status["members"]:
        lag = member["lag_seconds"]
        typer.echo(
            f"  {'*' if member['holds_lock'] else ' '} {member['instance']:<40} "
            f"{member['role']:<11} {member['api_url']:<28} "
            f"lag {'-' if lag is None else f'{lag:.3f} s'}"
        )


@ha_app.command(
    "handover",
    epilog="Examples:\n\n  alphapanda ha handover\n\n  alphapanda ha handover --group feed-a",
)
def handover_cmd(
    ctx: typer.Context,
    group: str | None = typer.Option(None, help="The group. [default: ALPHAPANDA_HA__GROUP]"),
) -> None:
    """Ask the active to hand over: it publishes everything it received, commits and
    exits; a warm standby continues after its last tick (for deploys)."""
    url, name = _group(ctx, group)
    if not asyncio.run(request_handover(url, name)):
        typer.secho(f"group {name} has no active", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"group {name}: hand-over requested (the active steps down within a second)")
