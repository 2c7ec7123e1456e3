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

    @staticmethod
    def market_ticks(prefix: str = "") -> str:
        return validate_topic_name(prefix + TopicNames.MARKET_TICKS)
