"""deploy/: every PromQL expression of the alert rules and the Grafana dashboard parses
with a real PromQL parser (promql-parser), and every metric name they use is one a
running feed (the real ``open_feed`` wiring, with a stored token and some drops) exports
on /metrics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import promql_parser
import pytest
import yaml

from alphapanda.assembly import open_feed
from alphapanda.auth import AuthService
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import feed_settings
from tests.support.services import free_port, port_open
from tests.support.sim import running_simulator

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "alphapanda-feed.json"
# Series Prometheus itself makes for every scrape target.
PROMETHEUS_OWN = {"up"}
SettingsFor = Callable[..., Settings]


def _rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _expressions() -> list[tuple[str, str]]:
    found = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in _rules()]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.append((f"panel {panel['title']!r}", target["expr"]))
    return found


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.mark.unit
def test_every_expression_parses() -> None:
    expressions = _expressions()
    assert len(expressions) > 20
    for where, expr in expressions:
        try:
            promql_parser.parse(expr)
        except Exception as exc:  # the parser raises its own error types
            raise AssertionError(f"{where}: {exc}\n{expr}") from None


@pytest.mark.unit
def test_the_rules_cover_what_operators_need() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    for needed in (
        "AlphapandaFeedDown",
        "AlphapandaFeedNotReady",
        "AlphapandaLastTickOld",
        "AlphapandaReconnectStorm",
        "AlphapandaAuthRequired",
        "AlphapandaNoValidTokenBy0830",
        "AlphapandaTokenExpiringSoon",
        "AlphapandaSpooling",
        "AlphapandaSpoolGrowing",
        "AlphapandaTicksDropped",
        "AlphapandaTicksUnaccounted",
    ):
        assert needed in alerts, needed
    # Market-aware: the morning window, the 08:30 deadline, no 05:00 expiry noise, and
    # tick alerts only in session.
    assert "alphapanda:login_window == 0" in alerts["AlphapandaAuthRequired"]["expr"]
    assert ">= 510" in alerts["AlphapandaNoValidTokenBy0830"]["expr"]
    assert "< 300" in alerts["AlphapandaTokenExpiringSoon"]["expr"]
    for name in ("AlphapandaLastTickOld", "AlphapandaTickRateZero"):
        assert "alphapanda:streamed_session_open == 1" in alerts[name]["expr"]


async def test_every_metric_used_is_exported_by_a_running_feed(
    settings_for: SettingsFor, schema: str
) -> None:
    async with running_simulator(ticks_per_second=20000) as sim:
        settings = feed_settings(
            settings_for, sim, buffer_capacity=16, buffer_policy="drop_oldest", batch_max=8
        )
        settings = settings.model_copy(
            update={
                "database": settings.database.model_copy(update={"schema_name": schema}),
                "api": settings.api.model_copy(update={"port": free_port()}),
                "kite": settings.kite.model_copy(
                    update={"access_token": settings.kite.access_token}
                ),
            }
        )
        async with AuthService(settings) as auth:
            await auth.set_token(sim.access_token)
        async with open_feed(settings, registry=False) as feed, asyncio.TaskGroup() as tg:
            service = MarketFeedService(feed)
            tg.create_task(service.run())
            await eventually(lambda: feed.readiness()[0], timeout=60, what="feed ready")
            await eventually(lambda: feed.accounting.dropped_total > 0, timeout=30)
            # The API serves from its own process, which may still be starting.
            await eventually(lambda: port_open(settings.api.port), timeout=60, what="the API")
            url = f"http://127.0.0.1:{settings.api.port}/metrics"
            async with httpx.AsyncClient() as http:
                text = (await http.get(url)).text
            service.request_stop()
    assert "alphapanda_auth_token_seconds_left" in text, "the token's time left is exported"
    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for where, expr in _expressions():
        unknown = _metric_names(expr) - exported - recorded - PROMETHEUS_OWN
        assert not unknown, f"{where} uses metrics the feed does not export: {unknown}"
