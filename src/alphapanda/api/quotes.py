"""``GET /quotes/{instrument_token}``, ``GET /quotes?tokens=…`` and ``GET /candles/{token}``.

Answered from the feed's in-process state (the same state that feeds the compacted
topic ``market.quotes.latest`` and the candle topics), so only the feed role has these
routes. A quote is the instrument's latest ``MarketTick`` (``docs/schema.md``). Also
serves the vendored charting library the status page loads (no CDN: works offline).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from typing import Annotated, Any, Protocol, runtime_checkable

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from alphapanda.api.app import ApiContext, context_of
from alphapanda.api.models import Problem
from alphapanda.market_tick import MarketTick

Ctx = Annotated[ApiContext, Depends(context_of)]
# Tokens one GET /quotes may ask for (the feed streams at most 9,000 instruments).
MAX_TOKENS = 9000

router = APIRouter(tags=["quotes"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No quote for this instrument yet"},
    422: {"model": Problem, "description": "Invalid instrument token(s)"},
    429: {"model": Problem, "description": "Rate limited; see Retry-After"},
    503: {"model": Problem, "description": "Derived streams are turned off"},
}


class QuoteBook(Protocol):
    """The latest quotes as the routes read them: the feed's ``LatestQuotes``, or the
    API process's view of them (``alphapanda.api.bridge``)."""

    def get(self, token: int) -> MarketTick | None: ...

    def many(self, tokens: Iterable[int]) -> dict[int, MarketTick]: ...

    def tokens(self) -> list[int]: ...


@runtime_checkable
class QuoteSource(Protocol):
    def latest_quotes(self) -> QuoteBook | None: ...

    def recent_candles(self, token: int, limit: int) -> dict[str, Any] | None: ...


_CHART_JS = "lightweight-charts.standalone.production.js"


def quote_book(control: object) -> QuoteBook | None:
    """``control``'s latest quotes (None: it has none, or derived streams are off)."""
    return control.latest_quotes() if isinstance(control, QuoteSource) else None


def _quotes(ctx: ApiContext) -> QuoteBook:
    quotes = quote_book(ctx.control)
    if quotes is None:
        raise HTTPException(status_code=503, detail="derived streams are turned off")
    return quotes


def _parse_tokens(text: str) -> list[int]:
    tokens = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or len(item) > 10:
            raise HTTPException(status_code=422, detail=f"tokens: {item[:20]!r} is not a token")
        tokens.append(int(item))
    if len(tokens) > MAX_TOKENS:
        raise HTTPException(status_code=422, detail=f"tokens: at most {MAX_TOKENS}")
    return list(dict.fromkeys(tokens))


@router.get(
    "/quotes/{instrument_token}",
    responses=_ERRORS,
    summary="Latest quote of one instrument",
)
async def quote(instrument_token: int, ctx: Ctx) -> JSONResponse:
    tick = _quotes(ctx).get(instrument_token)
    if tick is None:
        raise HTTPException(status_code=404, detail="no quote for this instrument yet")
    return JSONResponse(msgspec.to_builtins(tick))


@router.get(
    "/quotes",
    responses={k: v for k, v in _ERRORS.items() if k != 404},
    summary="Latest quotes of several instruments (all when tokens is absent)",
)
async def quotes(
    ctx: Ctx,
    tokens: Annotated[str | None, Query(description="Comma-separated instrument tokens")] = None,
) -> JSONResponse:
    state = _quotes(ctx)
    wanted = _parse_tokens(tokens) if tokens is not None else state.tokens()
    found = state.many(wanted)
    body: dict[str, Any] = {
        "quotes": {str(t): msgspec.to_builtins(tick) for t, tick in found.items()},
        "missing": [t for t in wanted if t not in found],
    }
    return JSONResponse(body)


@router.get(
    "/candles/{instrument_token}",
    responses={k: v for k, v in _ERRORS.items() if k != 404},
    summary="Recent closed bars of the charted interval (1m) and the bar being built",
)
async def candles(
    instrument_token: int,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=60)] = 60,
) -> JSONResponse:
    control = ctx.control
    recent = (
        control.recent_candles(instrument_token, limit)
        if isinstance(control, QuoteSource)
        else None
    )
    if recent is None:
        raise HTTPException(status_code=503, detail="derived streams are turned off")
    return JSONResponse(recent)


@router.get("/static/vendor/lightweight-charts.js", include_in_schema=False)
async def chart_library() -> Response:
    return Response(
        _chart_js(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@functools.cache
def _chart_js() -> bytes:
    return (resources.files("alphapanda.api") / "static" / "vendor" / _CHART_JS).read_bytes()
