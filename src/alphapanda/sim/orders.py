"""Order postbacks as Kite sends them on the ticker socket: ``{"type": "order", "data": {...}}``.

``order_postback()`` builds the ``data`` object with every field Kite's postback
carries (Kite Connect v3 "order updates over WebSocket"), filled with plausible values;
the caller's fields override them, so a test can send exactly what it wants to check.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

_IST: Final = timedelta(hours=5, minutes=30)
_ORDER_IDS = itertools.count(1)


def order_postback(
    overrides: Mapping[str, Any] | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """A complete Kite order-update object; ``overrides`` replace or add fields."""
    now = now or datetime.now(UTC)
    # Kite's timestamps here are naive IST strings.
    stamp = (now + _IST).strftime("%Y-%m-%d %H:%M:%S")
    order_id = f"{(now + _IST):%y%m%d}{next(_ORDER_IDS):09d}"
    order: dict[str, Any] = {
        "account_id": "AB1234",
        "unfilled_quantity": 0,
        "checksum": "",
        "placed_by": "AB1234",
        "order_id": order_id,
        "exchange_order_id": "1000000" + order_id[-9:],
        "parent_order_id": None,
        "status": "COMPLETE",
        "status_message": None,
        "status_message_raw": None,
        "order_timestamp": stamp,
        "exchange_update_timestamp": stamp,
        "exchange_timestamp": stamp,
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "instrument_token": 408065,
        "order_type": "MARKET",
        "transaction_type": "BUY",
        "validity": "DAY",
        "product": "CNC",
        "quantity": 1,
        "disclosed_quantity": 0,
        "price": 0,
        "trigger_price": 0,
        "average_price": 1500.5,
        "filled_quantity": 1,
        "pending_quantity": 0,
        "cancelled_quantity": 0,
        "market_protection": 0,
        "meta": {},
        "tag": None,
        "guid": f"sim{order_id}",
    }
    order.update(overrides or {})
    return order


def order_message(order: Mapping[str, Any]) -> str:
    """The text message carrying ``order`` on the ticker socket."""
    return msgspec.json.encode({"type": "order", "data": order}).decode()
