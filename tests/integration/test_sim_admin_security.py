"""The simulator's admin API: loopback by default, and with ``admin_token`` every admin
route needs ``Authorization: Bearer`` while Kite's own login routes stay open."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from alphapanda.sim.config import SimConfig
from tests.support.sim import running_simulator


def test_admin_listens_on_loopback_by_default() -> None:
    assert SimConfig().admin_host == "127.0.0.1"
    assert SimConfig().admin_token is None


async def test_admin_token_guards_the_admin_routes_only() -> None:
    async with (
        running_simulator(admin_token=SecretStr("adm-7f3a")) as sim,
        httpx.AsyncClient(base_url=sim.admin_url) as http,
    ):
        assert (await http.get("/stats")).status_code == 401
        wrong = await http.post("/faults/drop", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await http.get("/stats", headers={"Authorization": "Bearer adm-7f3a"})
        assert ok.status_code == 200
        # Kite's endpoints answer without the admin token (their own checks apply).
        login = await http.get("/connect/login", params={"api_key": sim.api_key})
        assert login.status_code == 302
        assert "request_token=" in login.headers["location"]
        refused = await http.get("/connect/login", params={"api_key": "someone-else"})
        assert refused.status_code == 400
        session = await http.post(
            "/session/token",
            content=b"api_key=x&request_token=y&checksum=z",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert session.status_code == 403  # reached the login check, not the token gate
