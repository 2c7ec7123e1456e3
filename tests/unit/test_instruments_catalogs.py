"""Known-instrument catalogs: the dump answers, and stands in when the registry cannot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from alphapanda.instruments.catalogs import CsvInstrumentCatalog, RegistryInstrumentCatalog

CSV = Path(__file__).resolve().parents[2] / "data" / "instruments.csv"
NIFTY_50 = 256265  # the first instrument of the shipped dump


async def test_the_dump_knows_its_own_tokens_only() -> None:
    catalog = CsvInstrumentCatalog(CSV)
    assert await catalog.unknown_tokens([NIFTY_50, 1, 2, 1]) == [1, 2]


async def test_without_a_dump_no_token_is_known() -> None:
    assert await CsvInstrumentCatalog(None).unknown_tokens([3, NIFTY_50]) == [3, NIFTY_50]


class _Engine:
    """``engine.connect()`` of a database that is down (refuses) or hangs."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.attempts = 0

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        self.attempts += 1
        if self.hang:
            await asyncio.Event().wait()
        raise ConnectionRefusedError("database down")
        yield  # pragma: no cover - never reached


class _Registry:
    def __init__(self, hang: bool = False) -> None:
        self.engine = _Engine(hang)


class _Dump:
    def __init__(self) -> None:
        self.asked: list[Sequence[int]] = []

    async def unknown_tokens(self, tokens: Sequence[int]) -> list[int]:
        self.asked.append(list(tokens))
        return [t for t in tokens if t != NIFTY_50]


async def test_a_registry_that_refuses_falls_back_to_the_dump_and_counts_it() -> None:
    registry, dump = _Registry(), _Dump()
    catalog = RegistryInstrumentCatalog(registry, dump)  # type: ignore[arg-type]
    assert await catalog.unknown_tokens([NIFTY_50, 5]) == [5]
    assert dump.asked == [[NIFTY_50, 5]]
    assert (catalog.fallbacks, registry.engine.attempts) == (1, 1)


async def test_a_registry_that_hangs_is_given_up_after_the_timeout() -> None:
    registry, dump = _Registry(hang=True), _Dump()
    catalog = RegistryInstrumentCatalog(registry, dump, timeout=0.05)  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        assert await catalog.unknown_tokens([7]) == [7]
    assert catalog.fallbacks == 1
