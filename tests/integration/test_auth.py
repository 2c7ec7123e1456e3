"""AuthService against real PostgreSQL (own schema per test): storing, expiry, fallback,
login through the official kiteconnect client, and secrets kept out of logs and reprs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import websockets

from alphapanda.auth import (
    AuthRequired,
    AuthService,
    BrokerAuthenticator,
    LoginFailed,
    TokenExpired,
    token_expiry,
)
from alphapanda.kite.tokens import TokenProvider
from alphapanda.settings import Settings
from alphapanda.testing import VirtualClock, eventually
from tests.support.services import SHARED_DATABASE, free_port
from tests.support.sim import running_simulator

ALPHAPANDA = [sys.executable, "-m", "alphapanda"]
SECRET = "api-secret-must-not-leak-7f3a"
DEADLINE = 10.0


@pytest.fixture
def make_settings(
    settings_for: Callable[..., Settings], schema: str, unique: str
) -> Callable[..., Settings]:
    def build(**kite: object) -> Settings:
        values: dict[str, object] = {
            "api_key": f"key{unique}",
            "api_secret": SECRET,
            "access_token": "",
        }
        values.update(kite)
        return settings_for(database={"url": SHARED_DATABASE, "schema_name": schema}, kite=values)

    return build


def clock_at(when: dt.datetime) -> VirtualClock:
    return VirtualClock(wall_ns=round(when.timestamp()) * 10**9)


def move_to(clock: VirtualClock, when: dt.datetime) -> None:
    clock.advance((when - clock.now()).total_seconds())


async def test_set_token_then_get_access_token(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with AuthService(settings) as auth:
        with pytest.raises(AuthRequired, match="no access token stored"):
            await auth.get_access_token()
        before = dt.datetime.now(dt.UTC)
        status = await auth.set_token("tok-set-1", user_id="AB1234")
        assert await auth.get_access_token() == "tok-set-1"
    assert status.source == "database" and status.has_token and status.user_id == "AB1234"
    assert status.expires_at == token_expiry(status.issued_at)  # type: ignore[arg-type]
    assert status.issued_at is not None and status.issued_at >= before
    assert status.seconds_left is not None and 0 < status.seconds_left <= 86400

    # Persisted: a fresh service (another process, a restart) reads the same token.
    async with AuthService(settings) as again:
        assert await again.get_access_token() == "tok-set-1"
        current = await again.status()
        assert current.expires_at == status.expires_at and current.source == "database"


async def test_token_stored_elsewhere_is_picked_up(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(access_token="configured-fallback")
    async with AuthService(settings) as feed_side, AuthService(settings) as cli_side:
        assert await feed_side.get_access_token() == "configured-fallback"
        assert (await feed_side.status()).source == "settings"
        await cli_side.set_token("tok-from-cli")

        # The feed's 1 s cache expires and it sees the new token.
        async def sees_new_token() -> bool:
            return await feed_side.get_access_token() == "tok-from-cli"

        await eventually(sees_new_token, timeout=DEADLINE, interval=0.05)
        assert (await feed_side.status()).source == "database"


async def test_expired_token(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(access_token="configured-fallback")
    issued = dt.datetime(2026, 11, 25, 4, 0, tzinfo=dt.UTC)  # 09:30 IST
    clock = clock_at(issued)
    async with AuthService(settings, clock=clock.now, cache_ttl=0) as auth:
        await auth.set_token("tok-day-1")
        expiry = dt.datetime(2026, 11, 26, 0, 30, tzinfo=dt.UTC)  # 06:00 IST next day
        move_to(clock, expiry - dt.timedelta(seconds=1))
        assert await auth.get_access_token() == "tok-day-1"
        assert (await auth.status()).seconds_left == 1

        move_to(clock, expiry)
        # Expired: a clear error, not the older configured fallback (that would 403).
        with pytest.raises(TokenExpired, match="expired at 2026-11-26T00:30:00"):
            await auth.get_access_token()
        status = await auth.status()
        assert status.expired and not status.has_token and status.seconds_left == 0
        assert "auth login" in status.detail

        await auth.set_token("tok-day-2")
        assert await auth.get_access_token() == "tok-day-2"
        assert (await auth.status()).expires_at == dt.datetime(2026, 11, 27, 0, 30, tzinfo=dt.UTC)


async def test_expired_error_is_cached_so_polling_is_cheap(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    clock = clock_at(dt.datetime(2026, 11, 25, 4, 0, tzinfo=dt.UTC))
    async with AuthService(settings, clock=clock.now, cache_ttl=60) as auth:
        await auth.set_token("tok")
        clock.advance(dt.timedelta(days=2).total_seconds())
        lookups = auth.lookups
        for _ in range(20):
            with pytest.raises(TokenExpired):
                await auth.get_access_token()
        assert auth.lookups == lookups + 1


async def test_unreachable_database_falls_back_to_configured_token(
    settings_for: Callable[..., Settings], unique: str
) -> None:
    dead = f"postgresql+asyncpg://alphapanda@127.0.0.1:{free_port()}/alphapanda"
    with_token = settings_for(
        database={"url": dead}, kite={"api_key": f"k{unique}", "access_token": "configured"}
    )
    async with AuthService(with_token) as auth:
        assert await auth.get_access_token() == "configured"
        assert (await auth.status()).source == "settings"
        assert auth.db_errors >= 1
    without = settings_for(database={"url": dead}, kite={"access_token": ""})
    async with AuthService(without) as auth:
        with pytest.raises(AuthRequired, match="PostgreSQL is unreachable"):
            await auth.get_access_token()


async def test_broker_authenticator_uses_the_public_api(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    async with AuthService(settings) as auth:
        broker = BrokerAuthenticator(settings.kite.api_key, auth)
        assert isinstance(broker, TokenProvider) and isinstance(auth, TokenProvider)
        with pytest.raises(AuthRequired):
            await broker.get_access_token()
        await auth.set_token("tok-broker")
        assert await broker.get_access_token() == "tok-broker"


async def test_secrets_never_in_logs_reprs_or_errors(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    token, request_token = "tok-secret-9c1e", "req-secret-41bb"
    # Login against a port nobody listens on: the failure must not echo the secrets.
    settings = make_settings(api_root=f"http://127.0.0.1:{free_port()}")
    caplog.set_level(logging.DEBUG)
    async with AuthService(settings) as auth:
        status = await auth.set_token(token)
        assert await auth.get_access_token() == token
        with pytest.raises(LoginFailed) as failed:
            await auth.login(request_token)
        stored = await auth._require_store().latest(settings.kite.api_key)
        texts = [
            repr(auth),
            str(auth),
            repr(status),
            repr(stored),
            repr(auth._require_store()),
            repr(BrokerAuthenticator(settings.kite.api_key, auth)),
            str(failed.value),
            repr(failed.value),
            repr(settings),
            str(settings.kite),
            *(s.__repr__() for s in auth.samples()),
        ]
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records]
    assert any("stored a new access token" in t for t in texts)  # logging was captured
    for text in texts:
        for secret in (token, request_token, SECRET):
            assert secret not in text, text
    # Raised ``from None``: a traceback printer never shows the kiteconnect exception.
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def run_cli(
    schema: str, api_key: str, *args: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
        ALPHAPANDA_DATABASE__SCHEMA_NAME=schema,
        ALPHAPANDA_KITE__API_KEY=api_key,
        ALPHAPANDA_KITE__ACCESS_TOKEN="",
        COLUMNS="200",
    )
    env.update(extra_env)
    return subprocess.run(
        [*ALPHAPANDA, "--env-file", "/nonexistent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_auth_cli_set_token_and_status(schema: str, unique: str) -> None:
    key = f"cli{unique}"
    missing = run_cli(schema, key, "auth", "status")
    assert missing.returncode == 1 and "MISSING" in missing.stdout, missing.stdout

    stored = run_cli(schema, key, "auth", "set-token", "tok-cli-5d2e", "--user-id", "XY1")
    assert stored.returncode == 0, stored.stderr
    status = run_cli(schema, key, "auth", "status")
    assert status.returncode == 0, status.stderr
    assert "valid" in status.stdout and "06:00 IST" in status.stdout and "XY1" in status.stdout
    for result in (stored, status):
        assert "tok-cli-5d2e" not in result.stdout + result.stderr


async def test_login_through_the_official_client_against_the_simulator(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    request_token = "req-login-0a1b2c"
    caplog.set_level(logging.DEBUG)
    async with running_simulator(
        api_key=settings.kite.api_key, api_secret=SECRET, ticks_per_second=10
    ) as sim:
        settings = make_settings(api_root=sim.admin_url, ws_url=sim.ws_url)
        async with AuthService(settings) as auth:
            status = await auth.login(request_token)
            token = await auth.get_access_token()
            # A request token is single-use: the second exchange is refused, clearly.
            with pytest.raises(LoginFailed, match="Token is invalid or has expired"):
                await auth.login(request_token)
            assert auth.logins == 1 and auth.login_failures == 1
        login_records = list(caplog.records)
        # The stored token is a real one: the simulator's handshake accepts it.
        async with websockets.connect(sim.ws_url_with_auth(access_token=token)) as ws:
            assert await ws.recv() is not None
        assert (await sim.stats())["logins"] == 1
    assert status.source == "database" and status.user_id == "AP0001" and status.has_token
    assert status.expires_at == token_expiry(status.issued_at)  # type: ignore[arg-type]
    # Everything logged during the login flow (the test's own websockets client logs its
    # URL at DEBUG afterwards; that is not ours to check here).
    assert any(r.name.startswith("alphapanda") for r in login_records)
    for record in login_records:
        for secret in (token, request_token, SECRET):
            assert secret not in record.getMessage() and secret not in str(record.args)


async def test_login_with_a_wrong_secret_fails_without_echoing_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    async with running_simulator(
        api_key=settings.kite.api_key, api_secret=SECRET, ticks_per_second=10
    ) as sim:
        wrong = make_settings(api_root=sim.admin_url, api_secret="wrong-secret-e1f2")
        async with AuthService(wrong) as auth:
            with pytest.raises(LoginFailed, match="Invalid `checksum`") as failed:
                await auth.login("req-9")
            with pytest.raises(AuthRequired):
                await auth.get_access_token()
    assert "wrong-secret-e1f2" not in str(failed.value) and "req-9" not in str(failed.value)


async def test_auth_login_cli_against_the_simulator(
    schema: str, unique: str, make_settings: Callable[..., Settings]
) -> None:
    key = f"cli{unique}"
    async with running_simulator(api_key=key, api_secret=SECRET, ticks_per_second=10) as sim:
        result = await asyncio.to_thread(
            run_cli,
            schema,
            key,
            "auth",
            "login",
            "--request-token",
            "req-cli-77",
            ALPHAPANDA_KITE__API_ROOT=sim.admin_url,
            ALPHAPANDA_KITE__API_SECRET=SECRET,
        )
    assert result.returncode == 0, result.stderr
    assert "logged in" in result.stdout and "AP0001" in result.stdout
    assert "06:00 IST" in result.stdout
    async with AuthService(make_settings(api_key=key)) as auth:
        token = await auth.get_access_token()
    assert token not in result.stdout + result.stderr and SECRET not in result.stdout
