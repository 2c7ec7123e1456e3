"""Which instrument tokens exist: the check behind a subscription request.

A token the catalog does not know is refused before anything is subscribed. The
registry answers when the feed streams from it; the instrument dump answers otherwise,
and also whenever the database cannot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from alphapanda.db.lifecycle import DB_UNAVAILABLE
from alphapanda.instruments.dump import load_instrument_dump
from alphapanda.registry import loader as registry_loader
from alphapanda.registry.service import InstrumentRegistryService

log = logging.getLogger(__name__)


class InstrumentCatalog(Protocol):
    """Which instrument tokens exist (the registry, or the instrument dump)."""

    async def unknown_tokens(self, tokens: Sequence[int]) -> list[int]:
        """The tokens of ``tokens`` that no instrument has."""
        ...


class CsvInstrumentCatalog:
    """The instruments of a Kite instrument-dump CSV, read once on first use."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._tokens: frozenset[int] | None = None

    async def unknown_tokens(self, tokens: Sequence[int]) -> list[int]:
        if self.path is None:  # no CSV configured: it knows no instrument
            return sorted(set(tokens))
        if self._tokens is None:
            instruments, _errors = await asyncio.to_thread(load_instrument_dump, self.path)
            self._tokens = frozenset(i.instrument_token for i in instruments)
        return sorted(set(tokens) - self._tokens)


class RegistryInstrumentCatalog:
    """Known instruments from the registry (PostgreSQL). When the database cannot answer,
    the ``fallback`` catalog does (the instrument dump the registry itself falls back to),
    so a database outage does not stop subscription changes."""

    def __init__(
        self,
        registry: InstrumentRegistryService,
        fallback: InstrumentCatalog,
        timeout: float = 2.0,
    ) -> None:
        self._registry = registry
        self._fallback = fallback
        self._timeout = timeout
        self.fallbacks = 0

    async def unknown_tokens(self, tokens: Sequence[int]) -> list[int]:
        try:
            async with asyncio.timeout(self._timeout), self._registry.engine.connect() as conn:
                return await registry_loader.unknown_tokens(conn, tokens)
        except DB_UNAVAILABLE as exc:
            self.fallbacks += 1
            log.warning(
                "instrument registry unreachable (%s); checking tokens against the dump",
                type(exc).__name__,
            )
            return await self._fallback.unknown_tokens(tokens)
