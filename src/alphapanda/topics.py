"""Topic names, in one place, checked by one validator."""

from __future__ import annotations

import re
from typing import Final

# Kafka's own rule: 1..249 characters of [a-zA-Z0-9._-]; "." and ".." are reserved.
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


def validate_topic_name(name: str) -> str:
    """Return ``name`` if Kafka (and Redpanda) accept it as a topic name, else raise ValueError."""
    if name in (".", "..") or not _LEGAL.match(name):
        raise ValueError(
            f"invalid topic name {name!r}: use 1-249 characters of letters, digits, '.', '_', '-'"
        )
    return name


class TopicNames:
    """Every topic the feed writes. Consumers of Alpha Panda read ``MARKET_TICKS``.

    ``ALPHAPANDA_KAFKA__TOPIC_PREFIX`` namespaces them (e.g. ``paper.``) so that several
    environments, or test runs, can share one cluster; the default prefix is empty.
    """

    MARKET_TICKS: Final[str] = validate_topic_name("market.ticks")
    MARKET_CANDLES: Final[str] = "market.candles."  # + interval, e.g. market.candles.1m
    MARKET_QUOTES_LATEST: Final[str] = validate_topic_name("market.quotes.latest")
    MARKET_FEED_EVENTS: Final[str] = validate_topic_name("market.feed.events")
    ZERODHA_ORDERS_UPDATES: Final[str] = validate_topic_name("zerodha.orders.updates")

    @staticmethod
    def market_ticks(prefix: str = "") -> str:
        return validate_topic_name(prefix + TopicNames.MARKET_TICKS)

    @staticmethod
    def market_candles(interval: str, prefix: str = "") -> str:
        return validate_topic_name(prefix + TopicNames.MARKET_CANDLES + interval)

    @staticmethod
    def market_quotes_latest(prefix: str = "") -> str:
        return validate_topic_name(prefix + TopicNames.MARKET_QUOTES_LATEST)

    @staticmethod
    def market_feed_events(prefix: str = "") -> str:
        return validate_topic_name(prefix + TopicNames.MARKET_FEED_EVENTS)

    @staticmethod
    def zerodha_orders_updates(prefix: str = "") -> str:
        return validate_topic_name(prefix + TopicNames.ZERODHA_ORDERS_UPDATES)
