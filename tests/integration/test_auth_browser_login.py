"""``alphapanda auth login`` without arguments, end to end against the simulator: the
CLI prints the login URL and listens on the loopback redirect URL; the "browser" (an
HTTP client following redirects) opens the URL; the simulator redirects back with a
request token; the CLI exchanges it, stores the token and says when it expires."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from alphapanda.auth import AuthService
from alphapanda.settings import Settings
from tests.support.services import SHARED_DATABASE, SHARED_REDIS, free_port
from tests.support.sim import running_simulator

ROOT = Path(__file__).resolve().parents[2]


async def test_browser_login_round_trip_stores_a_token(schema: str) -> None:
    redirect = f"http://127.0.0.1:{free_port()}/kite/callback"
    async with running_simulator(redirect_url=redirect) as sim:
        admin = sim.admin_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
        env.update(
            ALPHAPANDA_KITE__API_ROOT=admin,
            ALPHAPANDA_KITE__API_KEY=sim.api_key,
            ALPHAPANDA_KITE__API_SECRET=sim.api_secret,
            ALPHAPANDA_KITE__REDIRECT_URL=redirect,
            ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
            ALPHAPANDA_DATABASE__SCHEMA_NAME=schema,
            ALPHAPANDA_REDIS__URL=SHARED_REDIS,
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "alphapanda",
            "--env-file",
            "/nonexistent",
            "auth",
            "login",
            "--no-browser",
            "--timeout",
            "60",
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        printed = ""
        while "waiting" not in printed:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the CLI ended before printing the login URL"
            printed += line.decode()
        url = re.search(r"(http://\S+/connect/login\?\S+)", printed)
        assert url, printed
        assert f"api_key={sim.api_key}" in url.group(1)
        # The browser: Kite's page, then the redirect to our loopback listener.
        async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
            page = await browser.get(url.group(1))
        assert page.status_code == 200 and "Logged in" in page.text
        assert str(page.url).startswith(redirect + "?")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text = printed + out.decode()
        assert proc.returncode == 0, err.decode()[-3000:]
        assert "logged in; access token stored" in text
        assert "expires at:" in text and "IST" in text and "time left:" in text
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kite={"api_key": sim.api_key},
        database={"url": SHARED_DATABASE, "schema_name": schema},
    )
    async with AuthService(settings) as auth:
        status = await auth.status()
    assert status.has_token and status.source == "database"
    # Never echoed.
    assert sim.api_secret not in text


def test_a_redirect_url_off_loopback_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env["ALPHAPANDA_KITE__REDIRECT_URL"] = "http://example.com:18770/kite/callback"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alphapanda",
            "--env-file",
            "/nonexistent",
            "auth",
            "login",
            "--no-browser",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "ALPHAPANDA_KITE__REDIRECT_URL" in result.stderr and "loopback" in result.stderr
    assert "Traceback" not in result.stderr
