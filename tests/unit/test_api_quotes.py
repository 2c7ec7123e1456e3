"""Latest quotes and recent candles from the feed's in-process state, and the vendored
chart library; 503 when the feed runs without derived streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from alphapanda.api.quotes import MAX_TOKENS
from alphapanda.streams.quotes import LatestQuotes
from tests.support.api import FakeFeed, build_app, client_of
from tests.support.quotes import update
from tests.unit.test_candles import OPEN_NSE, tick

pytestmark = pytest.mark.unit


@dataclass
class QuotingFeed(FakeFeed):
    """A feed with derived streams on: latest quotes and candle history."""

    quotes: LatestQuotes = field(default_factory=LatestQuotes)
    candle_requests: list[tuple[int, int]] = field(default_factory=list)

    def latest_quotes(self) -> LatestQuotes | None:
        return self.quotes

    def recent_candles(self, token: int, limit: int) -> dict[str, Any] | None:
        self.candle_requests.append((token, limit))
        return {"interval": "1m", "bars": [{"close": 1.5}] * min(limit, 2), "open": None}


@dataclass
class UnderivedFeed(QuotingFeed):
    """Has the quote methods, but derived streams are turned off (they return None)."""

    def latest_quotes(self) -> LatestQuotes | None:
        return None

    def recent_candles(self, token: int, limit: int) -> dict[str, Any] | None:
        return None


def _feed_with_quotes(*prices: tuple[int, float]) -> QuotingFeed:
    feed = QuotingFeed()
    update(feed.quotes, (tick(token, OPEN_NSE, price) for token, price in prices))
    return feed


async def _get(control: Any, path: str) -> Any:
    async with client_of(build_app(control)) as http:
        return await http.get(path)


async def test_one_quote_is_the_instruments_latest_tick() -> None:
    feed = _feed_with_quotes((7, 100.0), (7, 101.5), (9, 3.0))
    response = await _get(feed, "/quotes/7")
    assert response.status_code == 200
    body = response.json()
    assert body["instrument_token"] == 7
    assert body["last_price"] == 101.5


async def test_an_instrument_without_a_quote_is_404() -> None:
    response = await _get(_feed_with_quotes((7, 1.0)), "/quotes/8")
    assert response.status_code == 404
    assert response.json() == {"detail": "no quote for this instrument yet"}


async def test_several_quotes_name_the_missing_tokens_in_request_order() -> None:
    feed = _feed_with_quotes((7, 1.0), (9, 2.0))
    response = await _get(feed, "/quotes?tokens=9, 5,7,,9,3")
    assert response.status_code == 200
    body = response.json()
    assert {t: q["last_price"] for t, q in body["quotes"].items()} == {"9": 2.0, "7": 1.0}
    assert body["missing"] == [5, 3]  # duplicates and empty items ignored


async def test_without_tokens_every_quote_is_returned() -> None:
    feed = _feed_with_quotes((7, 1.0), (9, 2.0))
    response = await _get(feed, "/quotes")
    assert response.status_code == 200
    assert sorted(response.json()["quotes"]) == ["7", "9"]
    assert response.json()["missing"] == []


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "12345678901", "7,x"])
async def test_a_token_list_with_a_non_token_is_422_naming_it(bad: str) -> None:
    response = await _get(_feed_with_quotes((7, 1.0)), f"/quotes?tokens={bad}")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("tokens: ")
    assert "is not a token" in response.json()["detail"]


async def test_a_token_list_longer_than_the_maximum_is_422() -> None:
    tokens = ",".join(str(t) for t in range(1, MAX_TOKENS + 2))
    response = await _get(_feed_with_quotes((7, 1.0)), f"/quotes?tokens={tokens}")
    assert response.status_code == 422
    assert response.json() == {"detail": f"tokens: at most {MAX_TOKENS}"}


async def test_the_error_echo_of_a_bad_token_is_cut_short() -> None:
    response = await _get(_feed_with_quotes((7, 1.0)), "/quotes?tokens=" + "y" * 500)
    assert response.status_code == 422
    assert "y" * 21 not in response.json()["detail"]


async def test_candles_pass_the_token_and_limit_to_the_feed() -> None:
    feed = QuotingFeed()
    response = await _get(feed, "/candles/7?limit=2")
    assert response.status_code == 200
    assert response.json() == {"interval": "1m", "bars": [{"close": 1.5}] * 2, "open": None}
    assert feed.candle_requests == [(7, 2)]


async def test_candles_default_to_the_last_hour_of_bars() -> None:
    feed = QuotingFeed()
    await _get(feed, "/candles/7")
    assert feed.candle_requests == [(7, 60)]


@pytest.mark.parametrize("limit", ["0", "61", "x"])
async def test_a_candle_limit_outside_1_to_60_is_422(limit: str) -> None:
    feed = QuotingFeed()
    response = await _get(feed, f"/candles/7?limit={limit}")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("limit:")
    assert feed.candle_requests == []


@pytest.mark.parametrize("path", ["/quotes/7", "/quotes", "/candles/7"])
async def test_503_when_derived_streams_are_turned_off(path: str) -> None:
    response = await _get(UnderivedFeed(), path)
    assert response.status_code == 503
    assert response.json() == {"detail": "derived streams are turned off"}


@pytest.mark.parametrize("path", ["/quotes/7", "/quotes", "/candles/7"])
async def test_503_when_the_feed_has_no_quote_state_at_all(path: str) -> None:
    response = await _get(FakeFeed(), path)
    assert response.status_code == 503


async def test_the_monitor_role_has_no_quote_routes() -> None:
    response = await _get(None, "/quotes/7")
    assert response.status_code == 404


async def test_the_chart_library_is_served_from_the_package_and_cached() -> None:
    response = await _get(QuotingFeed(), "/static/vendor/lightweight-charts.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "public, max-age=86400"
    assert len(response.content) > 10_000
    assert b"LightweightCharts" in response.content
