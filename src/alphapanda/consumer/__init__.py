"""The consumer SDK: what a strategy needs to read the feed.

* ``FeedConsumer`` — async iterators of typed, schema-version-checked records:
  ``ticks()`` (``MarketTick``), ``candles(interval)`` (``Candle``), ``feed_events()``
  (``FeedEvent``), ``order_updates()`` (``OrderUpdate``), or ``records(...)`` for
  several streams at once.
* ``LatestQuotes.bootstrap()`` — every instrument's current quote at start, from the
  compacted topic ``market.quotes.latest``.
* ``GapTracker`` — which instruments are paused or had a hole, from the feed events.

See ``examples/candle_printer.py``.
"""

from alphapanda.consumer.gaps import GapTracker
from alphapanda.consumer.quotes import LatestQuotes
from alphapanda.consumer.records import Record, UnsupportedSchemaVersion, decode_record
from alphapanda.consumer.stream import FeedConsumer
from alphapanda.pipeline.formatter import MarketTick
from alphapanda.pipeline.wire import MarketTickEvent
from alphapanda.streams.candles import Candle
from alphapanda.streams.records import (
    CandleEvent,
    FeedEvent,
    FeedEventRecord,
    OrderUpdate,
    OrderUpdateEvent,
)

__all__ = [
    "Candle",
    "CandleEvent",
    "FeedConsumer",
    "FeedEvent",
    "FeedEventRecord",
    "GapTracker",
    "LatestQuotes",
    "MarketTick",
    "MarketTickEvent",
    "OrderUpdate",
    "OrderUpdateEvent",
    "Record",
    "UnsupportedSchemaVersion",
    "decode_record",
]
