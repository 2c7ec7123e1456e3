"""A fresh install with no streaming set and no CSV: the feed streams nothing (no
made-up instruments), says what to do, and starts streaming as soon as instruments are
chosen. Real simulator, Kafka, PostgreSQL (a private schema)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from alphapanda.assembly import open_feed
from alphapanda.instruments.sources import RegistryInstruments
from alphapanda.registry import InstrumentRegistryService
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.services import SHARED_DATABASE
from tests.support.sim import INSTRUMENTS_CSV, running_simulator


async def test_fresh_install_waits_for_a_streaming_set(
    settings_for: Callable[..., Settings], schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_simulator(ticks_per_second=200) as sim:
        settings = settings_for(
            kite={"ws_url": sim.ws_url, "api_key": sim.api_key, "access_token": sim.access_token},
            database={"url": SHARED_DATABASE, "schema_name": schema},
        )
        assert settings.feed.instruments_csv is None
        caplog.set_level(logging.WARNING, logger="alphapanda.assembly")
        async with (
            open_feed(settings, api=False, metrics=False) as feed,
            asyncio.TaskGroup() as tg,
        ):
            service = MarketFeedService(feed)
            runner = tg.create_task(service.run())
            await eventually(lambda: service.ready.is_set(), timeout=20, what="feed started")
            assert isinstance(feed.instruments, RegistryInstruments)
            assert feed.instruments.source == "unconfigured"
            assert feed.client.subscriptions() == {}
            assert "alphapanda instruments stream" in caplog.text

            # The operator chooses instruments: the running feed follows.
            async with InstrumentRegistryService(settings) as registry:
                await registry.load_dump(INSTRUMENTS_CSV)
                tokens = await registry.resolve(["NSE:NIFTY 50", "MCX:" + _mcx_symbol()])
                await registry.stream(tokens, "quote")
            await eventually(
                lambda: set(feed.client.subscriptions()) == set(tokens),
                timeout=20,
                what="subscribed",
            )
            assert feed.instruments.source == "database"
            await eventually(
                lambda: feed.accounting.snapshot()["received"] > 0, timeout=20, what="ticks"
            )
            service.request_stop()
            await runner


def _mcx_symbol() -> str:
    for line in INSTRUMENTS_CSV.read_text().splitlines():
        if line.endswith(",MCX"):
            return line.split(",")[2]
    raise AssertionError("no MCX instrument in the universe")
