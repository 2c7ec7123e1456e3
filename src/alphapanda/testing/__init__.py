"""Test helpers that ship with the package: a virtual clock, ``eventually()``, an
in-memory Kite connector and a fake Kafka producer.

The model is trio's ``testing`` module: the fakes stand in at the feed's narrow
boundaries (``alphapanda.clock.Clock``, ``alphapanda.kite.transport.Connector``,
confluent-kafka's ``Producer``) so a pure unit test swaps them in without
monkeypatching, while the integration tests keep talking to the real services.
Nothing in the runtime imports this package.
"""

from __future__ import annotations

from alphapanda.testing.clock import VirtualClock
from alphapanda.testing.connector import MemoryConnector, MemorySocket
from alphapanda.testing.eventually import always, eventually
from alphapanda.testing.producer import FakeMessage, FakeProducer

__all__ = [
    "FakeMessage",
    "FakeProducer",
    "MemoryConnector",
    "MemorySocket",
    "VirtualClock",
    "always",
    "eventually",
]
