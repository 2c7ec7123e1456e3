"""``AuthService``'s choice of token, without PostgreSQL.

The service builds two collaborators: a ``DatabaseLifecycle`` (engine, migrations) and a
``TokenStore`` (two queries). Both are replaced here by small fakes with the same
methods, so the tests exercise the service's own logic: which token wins, when an
expired one is refused, what counts as "database unavailable", the cache, the login
exchange and the metrics. Storing and reading real rows is covered by the integration
tests in ``tests/integration/test_auth.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError

from alphapanda.auth import service as auth_service
from alphapanda.auth.expiry import token_expiry
from alphapanda.auth.service import (
    AuthRequired,
    AuthService,
    LoginFailed,
    SessionClient,
    TokenExpired,
)
from alphapanda.auth.store import StoredToken, TokenSource
from alphapanda.db.engine import Database
from alphapanda.db.lifecycle import DatabaseNotStarted
from alphapanda.metrics import catalog
from alphapanda.settings import Settings
from alphapanda.testing import VirtualClock

pytestmark = pytest.mark.unit

API_KEY = "key-under-test"
API_SECRET = "api-secret-7f3a"
API_ROOT = "http://127.0.0.1:1"
# 2026-11-25 09:30 IST: a token issued now expires at 06:00 IST on the 26th.
ISSUED = dt.datetime(2026, 11, 25, 4, 0, tzinfo=dt.UTC)
EXPIRY = dt.datetime(2026, 11, 26, 0, 30, tzinfo=dt.UTC)


class FakeLifecycle:
    """What ``AuthService`` uses of ``DatabaseLifecycle``; ``down`` makes the database
    unreachable (``start`` returns the error, ``ensure_schema`` raises it)."""

    def __init__(self, database: Database, owner: str) -> None:
        self.database = database
        self._owner = owner
        self._engine: object | None = None
        self.down: BaseException | None = None

    @property
    def engine(self) -> object:
        if self._engine is None:
            raise DatabaseNotStarted(f"{self._owner} not started")
        return self._engine

    @property
    def started(self) -> bool:
        return self._engine is not None

    async def start(self) -> BaseException | None:
        self._engine = object()
        return self.down

    async def ensure_schema(self) -> None:
        _ = self.engine
        if self.down is not None:
            raise self.down

    async def close(self) -> None:
        self._engine = None


@dataclass
class FakeStore:
    """``TokenStore``'s two methods over a list; ``failure`` is raised by ``latest``."""

    rows: list[StoredToken] = field(default_factory=list)
    failure: BaseException | None = None
    gate: asyncio.Event | None = None
    reads: int = 0

    def add(self, token: str, issued: dt.datetime = ISSUED, user_id: str | None = None) -> None:
        expires = token_expiry(issued)
        self.rows.append(StoredToken(API_KEY, SecretStr(token), user_id, "manual", issued, expires))

    async def latest(self, api_key: str) -> StoredToken | None:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        mine = [row for row in self.rows if row.api_key == api_key]
        return max(mine, key=lambda row: row.created_at) if mine else None

    async def save(
        self,
        api_key: str,
        access_token: SecretStr,
        *,
        user_id: str | None,
        source: TokenSource,
        created_at: dt.datetime,
        expires_at: dt.datetime,
    ) -> StoredToken:
        row = StoredToken(api_key, access_token, user_id, source, created_at, expires_at)
        self.rows.append(row)
        return row


@dataclass
class Fakes:
    store: FakeStore
    lifecycles: list[FakeLifecycle]

    @property
    def db(self) -> FakeLifecycle:
        (lifecycle,) = self.lifecycles
        return lifecycle


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    made = Fakes(FakeStore(), [])

    def lifecycle(database: Database, owner: str) -> FakeLifecycle:
        made.lifecycles.append(FakeLifecycle(database, owner))
        return made.lifecycles[-1]

    monkeypatch.setattr(auth_service, "DatabaseLifecycle", lifecycle)
    monkeypatch.setattr(auth_service, "TokenStore", lambda _engine: made.store)
    return made


def settings(configured: str = "") -> Settings:
    return Settings(
        _env_file=None,
        kite={
            "api_key": API_KEY,
            "api_secret": API_SECRET,
            "access_token": configured,
            "api_root": API_ROOT,
        },
    )


def clock_at(when: dt.datetime) -> VirtualClock:
    return VirtualClock(wall_ns=round(when.timestamp()) * 10**9)


def service(
    configured: str = "",
    clock: VirtualClock | None = None,
    *,
    cache_ttl: float = 0.0,
    session: SessionClient | None = None,
) -> AuthService:
    def session_client(_api_key: str, _root: str) -> SessionClient:
        assert session is not None, "this test does not log in"
        return session

    return AuthService(
        settings(configured),
        clock=(clock or clock_at(ISSUED)).now,
        cache_ttl=cache_ttl,
        session_client=session_client,
    )


# -- which token -------------------------------------------------------------------------


async def test_without_a_stored_token_the_configured_token_is_used(fakes: Fakes) -> None:
    async with service("configured-tok") as auth:
        assert await auth.get_access_token() == "configured-tok"
        status = await auth.status()
    assert (status.source, status.has_token, status.expires_at) == ("settings", True, None)
    assert status.seconds_left is None and not status.expired


async def test_without_any_token_login_is_required_and_the_status_says_why(
    fakes: Fakes,
) -> None:
    async with service("") as auth:
        with pytest.raises(AuthRequired, match=f"no access token stored for api key {API_KEY}"):
            await auth.get_access_token()
        status = await auth.status()
    assert (status.source, status.has_token) == ("none", False)
    assert "auth login" in status.detail and "ALPHAPANDA_KITE__ACCESS_TOKEN" in status.detail


async def test_a_missing_token_is_not_reported_as_expired(fakes: Fakes) -> None:
    async with service("") as auth:
        with pytest.raises(AuthRequired) as raised:
            await auth.get_access_token()
    assert not isinstance(raised.value, TokenExpired)


async def test_a_stored_token_wins_over_the_configured_one(fakes: Fakes) -> None:
    fakes.store.add("stored-tok", user_id="AB1234")
    clock = clock_at(ISSUED + dt.timedelta(hours=1))
    async with service("configured-tok", clock) as auth:
        assert await auth.get_access_token() == "stored-tok"
        status = await auth.status()
    assert (status.source, status.has_token, status.user_id) == ("database", True, "AB1234")
    assert status.issued_at == ISSUED and status.expires_at == EXPIRY
    assert status.seconds_left == (EXPIRY - ISSUED - dt.timedelta(hours=1)).total_seconds()


async def test_the_newest_stored_token_is_the_current_one(fakes: Fakes) -> None:
    fakes.store.add("older", issued=ISSUED)
    fakes.store.add("newer", issued=ISSUED + dt.timedelta(minutes=5))
    async with service(clock=clock_at(ISSUED + dt.timedelta(minutes=6))) as auth:
        assert await auth.get_access_token() == "newer"


async def test_an_expired_stored_token_is_refused_rather_than_the_configured_one_used(
    fakes: Fakes,
) -> None:
    fakes.store.add("stored-tok")
    async with service("configured-tok", clock_at(EXPIRY)) as auth:
        with pytest.raises(TokenExpired, match="expired at 2026-11-26T00:30:00"):
            await auth.get_access_token()
        status = await auth.status()
    assert status.expired and not status.has_token
    assert (status.source, status.seconds_left) == ("database", 0.0)
    assert "auth set-token" in status.detail


async def test_a_stored_token_is_valid_until_the_instant_of_its_expiry(fakes: Fakes) -> None:
    fakes.store.add("stored-tok")
    clock = clock_at(EXPIRY - dt.timedelta(seconds=1))
    async with service(clock=clock) as auth:
        assert await auth.get_access_token() == "stored-tok"
        assert (await auth.status()).seconds_left == 1.0
        clock.advance(1)
        with pytest.raises(TokenExpired):
            await auth.get_access_token()


# -- database unavailable ----------------------------------------------------------------


OUTAGES = [
    pytest.param(ConnectionRefusedError(111, "Connection refused"), id="refused"),
    pytest.param(TimeoutError(), id="timeout"),
    pytest.param(asyncpg.CannotConnectNowError("the database system is starting up"), id="pg"),
    pytest.param(asyncpg.InterfaceError("connection is closed"), id="interface"),
    pytest.param(OperationalError("SELECT 1", {}, OSError("gone")), id="sqlalchemy"),
]


@pytest.mark.parametrize("outage", OUTAGES)
async def test_an_unavailable_database_falls_back_to_the_configured_token(
    fakes: Fakes, outage: BaseException
) -> None:
    fakes.store.failure = outage
    async with service("configured-tok") as auth:
        assert await auth.get_access_token() == "configured-tok"
        assert auth.db_errors == 1
        assert (await auth.status()).source == "settings"


async def test_an_unavailable_database_without_a_configured_token_requires_login(
    fakes: Fakes,
) -> None:
    fakes.store.failure = ConnectionRefusedError(111, "Connection refused")
    async with service("") as auth:
        with pytest.raises(AuthRequired, match="PostgreSQL is unreachable"):
            await auth.get_access_token()


async def test_a_database_down_at_start_is_counted_and_not_raised(fakes: Fakes) -> None:
    async with service("configured-tok") as auth:
        assert auth.db_errors == 0
    fakes.lifecycles.clear()
    auth = service("configured-tok")
    fakes.db.down = ConnectionRefusedError(111, "Connection refused")
    async with auth:
        assert auth.db_errors == 1
        # Migrations fail too on the first lookup: the fallback, and one more error.
        assert await auth.get_access_token() == "configured-tok"
        assert auth.db_errors == 2


async def test_the_last_token_read_is_used_while_the_database_is_down_and_it_is_valid(
    fakes: Fakes,
) -> None:
    fakes.store.add("stored-tok")
    clock = clock_at(ISSUED + dt.timedelta(hours=1))
    async with service("configured-tok", clock) as auth:
        assert await auth.get_access_token() == "stored-tok"
        fakes.store.failure = ConnectionRefusedError(111, "Connection refused")
        assert await auth.get_access_token() == "stored-tok"
        assert (await auth.status()).source == "database"
        # Once it has expired, the configured token is what is left.
        clock.advance((EXPIRY - clock.now()).total_seconds())
        assert await auth.get_access_token() == "configured-tok"


async def test_the_database_is_used_again_as_soon_as_it_answers(fakes: Fakes) -> None:
    fakes.store.failure = ConnectionRefusedError(111, "Connection refused")
    async with service("configured-tok") as auth:
        assert await auth.get_access_token() == "configured-tok"
        fakes.store.failure = None
        fakes.store.add("stored-tok")
        assert await auth.get_access_token() == "stored-tok"


async def test_an_error_that_is_not_an_outage_is_raised_not_hidden_by_the_fallback(
    fakes: Fakes,
) -> None:
    fakes.store.failure = KeyError("access_token")
    async with service("configured-tok") as auth:
        with pytest.raises(KeyError):
            await auth.get_access_token()
        assert auth.db_errors == 0


async def test_a_service_never_started_is_a_bug_not_an_outage(fakes: Fakes) -> None:
    auth = service("configured-tok")
    with pytest.raises(DatabaseNotStarted, match="AuthService not started"):
        await auth.get_access_token()


async def test_a_closed_service_refuses_lookups(fakes: Fakes) -> None:
    async with service("configured-tok") as auth:
        assert await auth.get_access_token() == "configured-tok"
    with pytest.raises(DatabaseNotStarted):
        await auth.get_access_token()


def test_a_hung_lookup_gives_up_after_the_lookup_timeout(fakes: Fakes) -> None:
    # On a virtual-time loop the timeout elapses at once; the store never answers.
    loop_clock = VirtualClock(autojump_threshold=0)
    fakes.store.gate = asyncio.Event()

    async def main() -> tuple[str, float]:
        async with service("configured-tok") as auth:
            started = asyncio.get_running_loop().time()
            token = await auth.get_access_token()
            return token, asyncio.get_running_loop().time() - started

    token, waited = loop_clock.run(main())
    assert token == "configured-tok"
    assert waited == pytest.approx(auth_service.DB_LOOKUP_TIMEOUT)


# -- the cache ---------------------------------------------------------------------------


async def test_lookups_are_cached_for_the_cache_ttl(fakes: Fakes) -> None:
    fakes.store.add("stored-tok")
    async with service(clock=clock_at(ISSUED), cache_ttl=3600) as auth:
        for _ in range(5):
            assert await auth.get_access_token() == "stored-tok"
        await auth.status()
    assert fakes.store.reads == 1


async def test_without_a_cache_every_call_looks_up(fakes: Fakes) -> None:
    fakes.store.add("stored-tok")
    async with service(cache_ttl=0) as auth:
        for _ in range(3):
            await auth.get_access_token()
    assert fakes.store.reads == 3 and auth.lookups == 3


async def test_errors_are_cached_too(fakes: Fakes) -> None:
    async with service("", cache_ttl=3600) as auth:
        for _ in range(5):
            with pytest.raises(AuthRequired):
                await auth.get_access_token()
    assert fakes.store.reads == 1


async def test_a_cached_token_does_not_outlive_its_expiry(fakes: Fakes) -> None:
    fakes.store.add("stored-tok")
    clock = clock_at(EXPIRY - dt.timedelta(seconds=1))
    async with service(clock=clock, cache_ttl=3600) as auth:
        assert await auth.get_access_token() == "stored-tok"
        clock.advance(1)
        with pytest.raises(TokenExpired):
            await auth.get_access_token()
    assert fakes.store.reads == 2


async def test_invalidating_the_cache_sees_a_token_stored_elsewhere(fakes: Fakes) -> None:
    async with service("", cache_ttl=3600) as auth:
        with pytest.raises(AuthRequired):
            await auth.get_access_token()
        fakes.store.add("from-another-process")
        with pytest.raises(AuthRequired):
            await auth.get_access_token()
        auth.invalidate_cache()
        assert await auth.get_access_token() == "from-another-process"


async def test_concurrent_callers_share_one_lookup(fakes: Fakes) -> None:
    fakes.store.add("stored-tok")
    fakes.store.gate = asyncio.Event()
    async with service(cache_ttl=3600) as auth:
        callers = [asyncio.create_task(auth.get_access_token()) for _ in range(10)]
        await asyncio.sleep(0)
        fakes.store.gate.set()
        tokens = await asyncio.gather(*callers)
    assert tokens == ["stored-tok"] * 10
    assert fakes.store.reads == 1


# -- storing a token ---------------------------------------------------------------------


@pytest.mark.parametrize("empty", ["", "   ", SecretStr("\t")])
async def test_an_empty_token_is_refused_and_nothing_stored(
    fakes: Fakes, empty: str | SecretStr
) -> None:
    async with service() as auth:
        with pytest.raises(ValueError, match="access token is empty"):
            await auth.set_token(empty)
    assert fakes.store.rows == []


async def test_a_set_token_expires_at_the_next_flush_and_replaces_a_cached_answer(
    fakes: Fakes,
) -> None:
    async with service("", clock_at(ISSUED), cache_ttl=3600) as auth:
        with pytest.raises(AuthRequired):
            await auth.get_access_token()
        status = await auth.set_token(SecretStr("manual-tok"), user_id="AB1234")
        assert await auth.get_access_token() == "manual-tok"
    (row,) = fakes.store.rows
    assert (row.api_key, row.source, row.user_id) == (API_KEY, "manual", "AB1234")
    assert (row.created_at, row.expires_at) == (ISSUED, EXPIRY)
    assert (status.source, status.has_token, status.expires_at) == ("database", True, EXPIRY)


@pytest.mark.parametrize("pasted", [" manual-tok", "manual-tok\n", "\tmanual-tok  "])
async def test_whitespace_around_a_pasted_token_is_not_stored(fakes: Fakes, pasted: str) -> None:
    # Kite's tokens hold no whitespace; sending it along would only earn HTTP 403s.
    async with service() as auth:
        await auth.set_token(pasted)
        assert await auth.get_access_token() == "manual-tok"
    assert fakes.store.rows[0].access_token.get_secret_value() == "manual-tok"


async def test_storing_needs_the_database(fakes: Fakes) -> None:
    async with service("configured-tok") as auth:
        fakes.db.down = ConnectionRefusedError(111, "Connection refused")
        with pytest.raises(ConnectionRefusedError):
            await auth.set_token("manual-tok")
    assert fakes.store.rows == []


# -- login -------------------------------------------------------------------------------


@dataclass
class FakeSession:
    """``KiteConnect.generate_session``: answers ``response`` or raises ``failure``."""

    response: Any = None
    failure: Exception | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def generate_session(self, request_token: str, api_secret: str) -> dict[str, Any]:
        self.calls.append((request_token, api_secret))
        if self.failure is not None:
            raise self.failure
        return self.response  # type: ignore[no-any-return]


async def test_login_exchanges_the_request_token_and_stores_the_access_token(
    fakes: Fakes,
) -> None:
    session = FakeSession({"access_token": "issued-tok", "user_id": "AB1234"})
    async with service(session=session) as auth:
        status = await auth.login("req-tok")
        assert await auth.get_access_token() == "issued-tok"
    assert session.calls == [("req-tok", API_SECRET)]
    (row,) = fakes.store.rows
    assert (row.source, row.user_id) == ("login", "AB1234")
    assert status.has_token and auth.logins == 1 and auth.login_failures == 0


async def test_a_user_id_that_is_not_text_is_dropped(fakes: Fakes) -> None:
    session = FakeSession({"access_token": "issued-tok", "user_id": 1234})
    async with service(session=session) as auth:
        await auth.login("req-tok")
    assert fakes.store.rows[0].user_id is None


@pytest.mark.parametrize(
    "response",
    [{}, {"access_token": ""}, {"access_token": 42}, None, ["access_token"]],
    ids=["missing", "empty", "not-text", "none", "not-a-dict"],
)
async def test_a_session_without_an_access_token_is_a_failed_login(
    fakes: Fakes, response: object
) -> None:
    async with service(session=FakeSession(response)) as auth:
        with pytest.raises(LoginFailed, match="carried no access_token"):
            await auth.login("req-tok")
    assert (auth.logins, auth.login_failures) == (0, 1)
    assert fakes.store.rows == []


async def test_a_refused_login_names_the_error_but_not_the_secrets(fakes: Fakes) -> None:
    failure = RuntimeError(f"invalid checksum for req-tok-9c1e with {API_SECRET}")
    async with service(session=FakeSession(failure=failure)) as auth:
        with pytest.raises(LoginFailed) as raised:
            await auth.login(SecretStr("req-tok-9c1e"))
    message = str(raised.value)
    assert message.startswith("Kite login failed: RuntimeError: invalid checksum")
    assert "req-tok-9c1e" not in message and API_SECRET not in message
    # The original exception (whose text holds the secrets) is not chained.
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert auth.login_failures == 1 and fakes.store.rows == []


# -- metrics -----------------------------------------------------------------------------


def by_name(auth: AuthService) -> dict[str, tuple[float, tuple[tuple[str, str], ...]]]:
    return {s.name: (s.value, s.labels) for s in auth.samples()}


async def test_before_any_lookup_only_the_counters_are_reported(fakes: Fakes) -> None:
    async with service("configured-tok") as auth:
        names = set(by_name(auth))
    assert names == {
        catalog.AUTH_TOKEN_LOOKUPS.name,
        catalog.AUTH_DB_ERRORS.name,
        catalog.AUTH_LOGINS.name,
        catalog.AUTH_LOGIN_FAILURES.name,
    }


async def test_samples_report_a_stored_tokens_validity_and_time_left(fakes: Fakes) -> None:
    fakes.store.add("stored-tok")
    clock = clock_at(EXPIRY - dt.timedelta(seconds=90))
    async with service(clock=clock, cache_ttl=3600) as auth:
        await auth.get_access_token()
        samples = by_name(auth)
        assert samples[catalog.AUTH_TOKEN_VALID.name] == (1.0, (("source", "database"),))
        assert samples[catalog.AUTH_TOKEN_SECONDS_LEFT.name] == (90.0, ())
        assert samples[catalog.AUTH_TOKEN_LOOKUPS.name] == (1.0, ())
        # No I/O in samples(): the cached answer is judged against the clock.
        clock.advance(90)
        samples = by_name(auth)
    assert samples[catalog.AUTH_TOKEN_VALID.name] == (0.0, (("source", "database"),))
    assert samples[catalog.AUTH_TOKEN_SECONDS_LEFT.name] == (0.0, ())
    assert fakes.store.reads == 1


async def test_samples_report_the_configured_token_without_an_expiry(fakes: Fakes) -> None:
    fakes.store.failure = ConnectionRefusedError(111, "Connection refused")
    async with service("configured-tok", cache_ttl=3600) as auth:
        await auth.get_access_token()
        samples = by_name(auth)
    assert samples[catalog.AUTH_TOKEN_VALID.name] == (1.0, (("source", "settings"),))
    assert catalog.AUTH_TOKEN_SECONDS_LEFT.name not in samples
    assert samples[catalog.AUTH_DB_ERRORS.name] == (1.0, ())


async def test_samples_report_no_token_when_login_is_required(fakes: Fakes) -> None:
    async with service("", cache_ttl=3600) as auth:
        with pytest.raises(AuthRequired):
            await auth.get_access_token()
        samples = by_name(auth)
    assert samples[catalog.AUTH_TOKEN_VALID.name] == (0.0, (("source", "none"),))


async def test_samples_count_logins_and_failures(fakes: Fakes) -> None:
    session = FakeSession({"access_token": "issued-tok"})
    async with service(session=session) as auth:
        await auth.login("req-1")
        session.failure = ConnectionResetError("reset")
        with pytest.raises(LoginFailed):
            await auth.login("req-2")
        samples = by_name(auth)
    assert samples[catalog.AUTH_LOGINS.name] == (1.0, ())
    assert samples[catalog.AUTH_LOGIN_FAILURES.name] == (1.0, ())
