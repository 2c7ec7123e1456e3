"""``GET /quotes/{instrument_token}`` and ``GET /quotes?tokens=…``: latest quotes.

Answered from the feed's in-process latest-quote state (the same state that feeds the
compacted topic ``market.quotes.latest``), so only the feed role has these routes.
A quote is the instrument's latest ``MarketTick`` (``docs/schema.md``).
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol, runtime_checkable

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

from alphapanda.api.app import ApiContext, context_of
from alphapanda.api.models import Problem
from alphapanda.streams.quotes import LatestQuotes

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


@runtime_checkable
class QuoteSource(Protocol):
    def latest_quotes(self) -> LatestQuotes | None: ...


def _quotes(ctx: ApiContext) -> LatestQuotes:
    control = ctx.control
    quotes = control.latest_quotes() if isinstance(control, QuoteSource) else None
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
