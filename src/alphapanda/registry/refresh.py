"""The daily refresh: Kite's instrument dump → the registry, and expired contracts out.

Kite publishes a new dump every morning (new weekly options, new futures series) and
contracts expire; a registry that is never refreshed streams dead tokens. ``refresh``
downloads the dump with the stored access token, upserts it, and optionally stops
streaming every contract whose expiry date has passed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from alphapanda.auth import AuthService
from alphapanda.instruments.dump import RowError, parse_instrument_dump
from alphapanda.instruments.fetch import fetch_instrument_dump
from alphapanda.registry.lookup import RetiredInstrument
from alphapanda.registry.service import InstrumentRegistryService, LoadReport
from alphapanda.settings import Settings


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What ``instruments fetch`` did, per exchange asked for (``ALL`` for the whole dump)."""

    loaded: dict[str, LoadReport]
    retired: tuple[RetiredInstrument, ...]


async def refresh(
    settings: Settings,
    registry: InstrumentRegistryService,
    auth: AuthService,
    exchanges: Sequence[str] = (),
    *,
    retire_expired_before: dt.date | None = None,
) -> RefreshReport:
    """Download the dump (every exchange, or each of ``exchanges``) and upsert it; with
    ``retire_expired_before``, stop streaming contracts that expired before that date.
    Raises ``AuthRequired`` without a usable token, ``FetchError`` when Kite refuses."""
    token = await auth.get_access_token()
    kite = settings.kite
    loaded: dict[str, LoadReport] = {}
    for exchange in exchanges or (None,):
        text = await asyncio.to_thread(
            fetch_instrument_dump, kite.api_root, kite.api_key, token, exchange
        )
        instruments, errors = parse_instrument_dump(text)
        if not instruments and not errors:
            errors = [RowError(1, f"Kite returned no instruments for {exchange or 'ALL'}")]
        loaded[exchange or "ALL"] = await registry.upsert(instruments, errors)
    retired: list[RetiredInstrument] = []
    if retire_expired_before is not None:
        retired = await registry.retire_expired(retire_expired_before)
    return RefreshReport(loaded, tuple(retired))
