"""Maps and metric labels keyed by what the wire sends stay bounded: a server that sends
thousands of made-up text-message types and bad ticks for thousands of made-up
instruments is counted in full, under a bounded set of keys and labels."""

from __future__ import annotations

import asyncio

from alphapanda.pipeline.formatter import (
    MALFORMED_INSTRUMENTS_MAX,
    OTHER_INSTRUMENTS,
    REASON_OHLC_INCONSISTENT,
)
from alphapanda.testing import eventually
from tests.support.feed import assert_books_balance, feed_settings, new_feed
from tests.support.sim import running_simulator

JUNK = 3000
KNOWN_TEXT_KINDS = {"order", "error", "message", "unknown", "invalid"}


async def test_made_up_text_types_and_instruments_are_counted_under_bounded_keys(
    settings_for,  # type: ignore[no-untyped-def]
) -> None:
    async with running_simulator(ticks_per_second=200) as sim:
        feed, service = new_feed(feed_settings(settings_for, sim))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: service.readiness()[0], timeout=30.0, what="ready")
            connections = await sim.fault_junk(JUNK)
            assert connections >= 1
            bad = JUNK * connections
            await eventually(
                lambda: (
                    feed.formatter.malformed_by_reason().get(REASON_OHLC_INCONSISTENT, 0) >= bad
                ),
                timeout=30.0,
                what="every bad tick counted",
            )
            # The junk ticks are not in the simulator's count of market ticks sent.
            await sim.set_rate(0)

            async def settled() -> bool:
                sent = (await sim.stats())["total_ticks_sent"]
                acct = feed.accounting
                return acct.received_socket == sent + bad and acct.in_flight == 0

            await eventually(settled, timeout=30, what="everything published")
            samples = [s for source in feed.sources for s in source.samples()]
            service.request_stop()
    assert_books_balance(feed)
    # Every made-up text type is counted, under one label.
    text = {
        dict(s.labels)["type"]: s.value for s in samples if s.name == "kite_text_messages_total"
    }
    assert set(text) <= KNOWN_TEXT_KINDS
    assert text["unknown"] == bad
    # Every bad tick is counted (its high and low nulled); the per-instrument detail keeps at most
    # MALFORMED_INSTRUMENTS_MAX instruments by name, the rest under "other".
    assert feed.formatter.malformed_by_reason()[REASON_OHLC_INCONSISTENT] == bad
    by_instrument = feed.formatter.malformed_by_instrument()
    assert len(by_instrument) <= MALFORMED_INSTRUMENTS_MAX + 1
    assert (OTHER_INSTRUMENTS, REASON_OHLC_INCONSISTENT) in by_instrument
    assert sum(by_instrument.values()) == bad
