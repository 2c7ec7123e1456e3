"""The simulator's HTTP side: fault switches, figures, and Kite's session endpoint.

Served by uvicorn inside the simulator's own event loop, so a route acts on the
WebSocket server directly (no threads, no locks beyond the sender's own).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Generator
from typing import Any, Protocol
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from alphapanda.sim.sessions import LoginError


class SimulatorControl(Protocol):
    """What the admin routes need from the simulator."""

    async def drop_connections(self) -> int: ...
    def stall(self, seconds: float) -> None: ...
    async def send_malformed(self) -> int: ...
    async def expire_tokens(self) -> int: ...
    async def send_order_update(self, api_key: str, order: dict[str, Any]) -> int: ...
    def accept_token(self, access_token: str) -> None: ...
    def set_rate(self, ticks_per_second: float) -> None: ...
    def login(self, api_key: str, request_token: str, checksum: str) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...


class TokenBody(BaseModel):
    access_token: str


def build_admin_app(sim: SimulatorControl) -> FastAPI:
    """The admin API. Every route is documented in the README's Simulator section."""
    app = FastAPI(title="alphapanda simulator admin", docs_url=None, redoc_url=None)

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return sim.stats()

    @app.post("/faults/drop")
    async def fault_drop() -> dict[str, int]:
        return {"dropped": await sim.drop_connections()}

    @app.post("/faults/stall")
    async def fault_stall(seconds: float = Query(..., gt=0, le=3600)) -> dict[str, float]:
        sim.stall(seconds)
        return {"stalled_for": seconds}

    @app.post("/faults/malformed")
    async def fault_malformed() -> dict[str, int]:
        return {"sent": await sim.send_malformed()}

    @app.post("/faults/expire-token")
    async def fault_expire_token() -> dict[str, int]:
        return {"closed": await sim.expire_tokens()}

    @app.post("/token")
    async def set_token(body: TokenBody) -> dict[str, bool]:
        if not body.access_token:
            raise HTTPException(422, "access_token must not be empty")
        sim.accept_token(body.access_token)
        return {"accepted": True}

    @app.post("/orders/postback")
    async def order_postback_route(
        request: Request, api_key: str = Query(..., min_length=1)
    ) -> dict[str, Any]:
        # The body (optional JSON object) overrides fields of a complete Kite order.
        from alphapanda.sim.orders import order_postback

        raw = await request.body()
        try:
            overrides = json.loads(raw) if raw.strip() else {}
        except ValueError:
            overrides = None
        if not isinstance(overrides, dict):
            raise HTTPException(422, "body must be a JSON object of order fields")
        order = order_postback(overrides)
        return {"sent": await sim.send_order_update(api_key, order), "order": order}

    @app.post("/rate")
    async def set_rate(ticks_per_second: float = Query(..., ge=0)) -> dict[str, float]:
        sim.set_rate(ticks_per_second)
        return {"ticks_per_second": ticks_per_second}

    @app.post("/session/token")
    async def session_token(request: Request) -> JSONResponse:
        # Kite's login exchange, as kiteconnect.KiteConnect.generate_session calls it:
        # a form-encoded POST (parsed by hand: no python-multipart dependency for this).
        form = parse_qs((await request.body()).decode("utf-8", "replace"))

        def field(name: str) -> str:
            return (form.get(name) or [""])[0]

        try:
            data = sim.login(field("api_key"), field("request_token"), field("checksum"))
        except LoginError as exc:
            return JSONResponse(
                {
                    "status": "error",
                    "error_type": exc.error_type,
                    "message": exc.message,
                    "data": None,
                },
                status_code=exc.status,
            )
        return JSONResponse({"status": "success", "data": data})

    return app


class AdminServer(uvicorn.Server):
    """uvicorn on a socket we already bound, in the caller's loop, leaving the process's
    signal handlers alone (the CLI and test runners own those)."""

    def __init__(self, sim: SimulatorControl, sock: socket.socket) -> None:
        config = uvicorn.Config(
            build_admin_app(sim), log_level="warning", access_log=False, lifespan="off"
        )
        super().__init__(config)
        self._sock = sock

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets=sockets or [self._sock])
