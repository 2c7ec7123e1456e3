"""``alphapanda status``: a live terminal view of the feed.

Reads the control API's ``/status`` (the feed process or ``alphapanda api``), or, with
``--source redis`` (or when the API is unreachable under ``--source auto``), the
collector's last snapshot in Redis. Both give the same ``StatusView`` document, so the
view is the same whichever answered.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Annotated, Literal

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from alphapanda.api.models import StatusView
from alphapanda.api.status import status_from_snapshot
from alphapanda.cli.app import app, settings_from
from alphapanda.metrics.collector import redis_from_url
from alphapanda.metrics.reader import MetricsReader
from alphapanda.settings import Settings

Source = Literal["auto", "api", "redis"]
_HTTP_TIMEOUT = 2.0


class StatusUnavailable(Exception):
    """No source answered; the message says which and why."""


def fetch_api(url: str) -> StatusView:
    """GET ``<url>/status`` (stdlib only: the CLI needs no HTTP client dependency)."""
    request = urllib.request.Request(
        url.rstrip("/") + "/status", headers={"Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise StatusUnavailable(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailable(f"{url}: {reason}") from None
    return StatusView.model_validate(body)


async def _read_redis(settings: Settings) -> StatusView:
    client = redis_from_url(settings.redis.url.get_secret_value(), timeout=_HTTP_TIMEOUT)
    try:
        snapshot = await MetricsReader(client, settings.metrics.namespace).snapshot()
    except Exception as exc:  # any failure to read is "unavailable", named by type only
        raise StatusUnavailable(f"Redis: {type(exc).__name__}") from None
    finally:
        await client.aclose()
    feed = settings.feed
    return status_from_snapshot(snapshot, feed.buffer_capacity, feed.buffer_policy)


def fetch_redis(settings: Settings) -> StatusView:
    return asyncio.run(_read_redis(settings))


def fetch(settings: Settings, url: str, source: Source) -> StatusView:
    if source == "api":
        return fetch_api(url)
    if source == "redis":
        return fetch_redis(settings)
    try:
        return fetch_api(url)
    except StatusUnavailable:
        return fetch_redis(settings)


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}{unit}"
    return f"{int(value):,}{unit}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.2f} ms" if value < 1 else f"{value:.1f} s"


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k}={v:,}" for k, v in sorted(values.items())) or "none"


_STATE_STYLE = {
    "connected": "green",
    "connecting": "yellow",
    "backoff": "yellow",
    "auth_required": "red",
    "stopped": "red",
}


def render(view: StatusView, origin: str) -> Group:
    """The status as rich renderables (pure; tests render it to text)."""
    if not view.available:
        return Group(Text(f"{origin}: no metrics available (is the feed running?)", "red"))
    ready = "-" if view.ready is None else ("yes" if view.ready else "NO")
    summary = Table(title=f"alphapanda status — {origin}", show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    latency = view.send_latency_seconds
    rows = [
        ("source", f"{view.source} (updated {view.updated_at or '-'})"),
        ("ready", ready),
        ("ticks/s", _num(view.ticks_per_second)),
        ("ticks received", _num(view.ticks_received)),
        ("last tick age", _seconds(view.last_tick_age_seconds)),
        ("sends ok / failed", f"{_num(view.sends_ok)} / {_num(view.sends_failed)}"),
        ("send latency p50 / p99", f"{_seconds(latency.p50)} / {_seconds(latency.p99)}"),
        (
            "buffer",
            f"{_num(view.buffer.depth)} of {_num(view.buffer.capacity)} ({view.buffer.policy})",
        ),
        ("spool", f"{_num(view.spool.messages)} messages, {_num(view.spool.bytes)} bytes"),
        ("drops", _pairs(view.drops)),
        ("malformed", _pairs(view.malformed)),
        ("subscriptions", _pairs(view.subscriptions)),
    ]
    for label, value in rows:
        summary.add_row(label, value)
    connections = Table(title="connections")
    for column in ("shard", "state", "since", "instruments", "ticks", "reconnects", "last frame"):
        connections.add_column(column, justify="right" if column != "state" else "left")
    connections.add_column("last disconnect")
    for c in view.connections:
        style = _STATE_STYLE.get(c.state, "")
        connections.add_row(
            c.shard,
            Text(c.state, style),
            c.since or "-",
            _num(c.instruments),
            _num(c.ticks_received),
            _num(c.reconnect_count),
            _seconds(c.last_frame_age_seconds),
            c.last_disconnect_reason or "-",
        )
    if not view.connections:
        connections.add_row("-", "no connections reported", "", "", "", "", "", "")
    return Group(summary, connections)


@app.command(
    "status",
    epilog="Examples:\n\n"
    "  alphapanda status\n\n"
    "  alphapanda status --once --source redis\n\n"
    "  alphapanda status --url http://127.0.0.1:18081",
)
def status(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(help="Base URL of the feed's control API (or of `alphapanda api`).")
    ] = "http://127.0.0.1:18080",
    source: Annotated[
        str,
        typer.Option(
            help="Where to read: auto (the API, else Redis), api or redis (the metrics the "
            "feed flushes there)."
        ),
    ] = "auto",
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot and exit (1 if nothing answers).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """Show what the feed is doing: throughput, latency, buffer, spool, connections."""
    if source not in ("auto", "api", "redis"):
        raise typer.BadParameter("must be auto, api or redis", param_hint="--source")
    chosen: Source = source  # type: ignore[assignment]
    settings = settings_from(ctx)
    console = Console()
    origin = "redis" if chosen == "redis" else url
    if once:
        try:
            view = fetch(settings, url, chosen)
            if view.source == "feed" and view.ticks_per_second is None:
                # The feed measures ticks/s between two reads; give it a second one.
                time.sleep(1.0)
                view = fetch(settings, url, chosen)
        except StatusUnavailable as exc:
            typer.secho(f"status unavailable: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        console.print(render(view, origin))
        if not view.available:
            raise typer.Exit(1)
        return
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                try:
                    live.update(render(fetch(settings, url, chosen), origin))
                except StatusUnavailable as exc:
                    live.update(Text(f"status unavailable: {exc} (retrying)", "red"))
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
