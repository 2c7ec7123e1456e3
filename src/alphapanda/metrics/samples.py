"""The one contract between components that count things and whoever reports them.

Hot-path components keep plain integers in their own objects (no locks, no I/O per
tick) and expose them as ``Sample``s when asked. The metrics collector pulls from every
source periodically and ships the figures to Redis and Prometheus. Pull, not push, so a
slow or dead Redis can never reach back into the tick path.

Components do not build ``Sample``s by hand: every metric is declared once in
``alphapanda.metrics.catalog`` and a component reports through its entry
(``catalog.TICKS_RECEIVED.sample(n)``). Which of them feed the Redis layout is
``alphapanda.metrics.redis_layout.DEFAULT_RULES``; every one reaches Prometheus and the snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal, NamedTuple, Protocol, runtime_checkable

log = logging.getLogger(__name__)

SampleKind = Literal["counter", "gauge"]


class Sample(NamedTuple):
    """One figure. ``name`` follows Prometheus conventions without the ``alphapanda_``
    prefix: counters end in ``_total``, units are spelled out (``_seconds``, ``_bytes``)."""

    name: str
    kind: SampleKind
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    help: str = ""


@runtime_checkable
class MetricsSource(Protocol):
    """Anything that can report its figures. Must be cheap and must not block."""

    def samples(self) -> Iterable[Sample]: ...


def gather(sources: Iterable[MetricsSource]) -> list[Sample]:
    """Every source's samples; a source that fails is left out (logged at debug), so one
    component's bug cannot take the others' figures down with it."""
    gathered: list[Sample] = []
    for source in sources:
        try:
            # list() first: a generator failing halfway must not leave half its figures.
            gathered.extend(list(source.samples()))
        except Exception:
            log.debug("metrics source %s failed", type(source).__name__, exc_info=True)
    return gathered
