"""``AuthService``: the one place that knows the current Kite access token.

``get_access_token()`` resolves, in this order:

1. the newest token stored in PostgreSQL for ``settings.kite.api_key`` — if it has
   expired (06:00 IST flush, see ``expiry``), ``TokenExpired`` is raised rather than
   falling back to an older configured token that would only earn HTTP 403s;
2. when the database holds no token for the key, ``settings.kite.access_token`` (the
   configured fallback; empty means "none");
3. otherwise ``AuthRequired``.

If PostgreSQL is unreachable, the last token read from it is used while it is still
valid, then the configured fallback. Results (tokens and errors alike) are cached for
``cache_ttl`` (1 s) so a client polling while ``auth_required`` costs one query a second,
whoever polls. A token stored by another process (``alphapanda auth set-token``) is
therefore seen within about a second and used at the feed's next handshake.

Secrets (API secret, request and access tokens) are ``SecretStr`` here and are never
logged, shown in a repr or put in an exception message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from alphapanda.auth.expiry import is_expired, seconds_left, token_expiry
from alphapanda.auth.store import StoredToken, TokenSource, TokenStore
from alphapanda.db.engine import Database
from alphapanda.db.lifecycle import (
    DB_UNAVAILABLE,
    DatabaseLifecycle,
    DatabaseNotStarted,
    DatabaseService,
)
from alphapanda.metrics.samples import Sample
from alphapanda.settings import Settings

log = logging.getLogger(__name__)

TokenOrigin = Literal["database", "settings", "none"]
LOGIN_TIMEOUT = 15.0
DB_LOOKUP_TIMEOUT = 3.0


class AuthRequired(Exception):
    """No usable access token: someone must log in (``alphapanda auth login``)."""


class TokenExpired(AuthRequired):
    """The current access token has passed its 06:00 IST expiry."""


class LoginFailed(Exception):
    """The request_token → access_token exchange was refused or failed."""


class SessionClient(Protocol):
    """The part of ``kiteconnect.KiteConnect`` the login uses (blocking)."""

    def generate_session(self, request_token: str, api_secret: str) -> dict[str, Any]: ...


def kite_session_client(api_key: str, root: str) -> SessionClient:
    """The official client, pointed at ``root`` (Kite, or the simulator in tests)."""
    from kiteconnect import KiteConnect

    client: SessionClient = KiteConnect(api_key, root=root, timeout=int(LOGIN_TIMEOUT))
    return client


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class AuthStatus:
    """What the API, CLI and metrics show about the token (never the token itself)."""

    api_key: str
    has_token: bool
    source: TokenOrigin
    expires_at: dt.datetime | None
    seconds_left: float | None
    issued_at: dt.datetime | None = None
    user_id: str | None = None
    expired: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Resolved:
    token: SecretStr | None
    origin: TokenOrigin
    stored: StoredToken | None
    error: AuthRequired | None


class AuthService(DatabaseService):
    """Kite access tokens: login flow, manual setting, persistence and expiry.

    Satisfies ``alphapanda.kite.tokens.TokenProvider``. Use as an async context manager.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database | None = None,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        cache_ttl: float = 1.0,
        session_client: Callable[[str, str], SessionClient] = kite_session_client,
    ) -> None:
        self._kite = settings.kite
        self._db = DatabaseLifecycle(
            database or Database.from_settings(settings.database), "AuthService"
        )
        self._clock = clock
        self._cache_ttl = cache_ttl
        self._session_client = session_client
        self._store: TokenStore | None = None
        self._lock = asyncio.Lock()
        self._cached: _Resolved | None = None
        self._cached_at = 0.0
        self._last_db_token: StoredToken | None = None
        self._db_down = False
        # Plain counters for samples(); no I/O there.
        self.lookups = 0
        self.db_errors = 0
        self.logins = 0
        self.login_failures = 0

    def __repr__(self) -> str:
        return f"AuthService(api_key={self._kite.api_key!r}, db={self._db.database.display_url!r})"

    @property
    def api_key(self) -> str:
        return self._kite.api_key

    async def start(self) -> None:
        """Create the engine and migrate; a down database only degrades to the fallback."""
        unreachable = await self._db.start()
        self._store = TokenStore(self._db.engine)
        if unreachable is not None:
            self.db_errors += 1
            log.warning("auth: PostgreSQL unreachable at start (%s)", type(unreachable).__name__)

    async def close(self) -> None:
        await self._db.close()

    def _require_store(self) -> TokenStore:
        if self._store is None or not self._db.started:
            raise DatabaseNotStarted("AuthService not started")
        return self._store

    # -- TokenProvider --------------------------------------------------------------

    async def get_access_token(self) -> str:
        """The current access token; raises ``TokenExpired`` / ``AuthRequired``."""
        resolved = await self._resolve_cached()
        if resolved.error is not None:
            raise resolved.error
        assert resolved.token is not None
        return resolved.token.get_secret_value()

    async def _resolve_cached(self) -> _Resolved:
        async with self._lock:  # single flight: concurrent callers share one lookup
            cached = self._cached
            if cached is not None and self._fresh(cached):
                return cached
            resolved = await self._resolve()
            self._cached, self._cached_at = resolved, time.monotonic()
            return resolved

    def _fresh(self, cached: _Resolved) -> bool:
        if time.monotonic() - self._cached_at >= self._cache_ttl:
            return False
        # A cached token must not outlive its expiry, not even by the cache's second.
        stored = cached.stored
        return (
            cached.token is None
            or stored is None
            or not is_expired(stored.expires_at, self._clock())
        )

    async def _resolve(self) -> _Resolved:
        self.lookups += 1
        now = self._clock()
        store = self._require_store()  # a service never started is a bug, not an outage
        try:
            # Bounded: a hung database must not hold a connection attempt for long.
            async with asyncio.timeout(DB_LOOKUP_TIMEOUT):
                await self._db.ensure_schema()
                stored = await store.latest(self.api_key)
        except DB_UNAVAILABLE as exc:
            self.db_errors += 1
            if not self._db_down:
                log.warning(
                    "auth: PostgreSQL unreachable (%s); using fallback token", type(exc).__name__
                )
            self._db_down = True
            last = self._last_db_token
            if last is not None and not is_expired(last.expires_at, now):
                return _Resolved(last.access_token, "database", last, None)
            return self._fallback("PostgreSQL is unreachable")
        if self._db_down:
            log.info("auth: PostgreSQL reachable again")
            self._db_down = False
        if stored is None:
            return self._fallback(f"no access token stored for api key {self.api_key}")
        self._last_db_token = stored
        if is_expired(stored.expires_at, now):
            error = TokenExpired(
                f"access token for api key {self.api_key} expired at "
                f"{stored.expires_at.isoformat()}; run `alphapanda auth login` or "
                "`alphapanda auth set-token`"
            )
            return _Resolved(None, "none", stored, error)
        return _Resolved(stored.access_token, "database", stored, None)

    def _fallback(self, why: str) -> _Resolved:
        configured = self._kite.access_token
        if configured.get_secret_value():
            return _Resolved(configured, "settings", None, None)
        error = AuthRequired(
            f"{why} and no ALPHAPANDA_KITE__ACCESS_TOKEN configured; "
            "run `alphapanda auth login` or `alphapanda auth set-token`"
        )
        return _Resolved(None, "none", None, error)

    def invalidate_cache(self) -> None:
        """Forget the cached lookup (the next ``get_access_token`` queries again)."""
        self._cached = None

    # -- status -----------------------------------------------------------------------

    async def status(self) -> AuthStatus:
        """Token presence, origin and expiry, for the API, the CLI and metrics."""
        resolved = await self._resolve_cached()
        return self._status_of(resolved)

    def _status_of(self, resolved: _Resolved) -> AuthStatus:
        now = self._clock()
        stored = resolved.stored
        if stored is None:
            detail = str(resolved.error) if resolved.error else ""
            return AuthStatus(
                self.api_key,
                resolved.token is not None,
                resolved.origin,
                None,
                None,
                detail=detail,
            )
        expired = is_expired(stored.expires_at, now)
        return AuthStatus(
            api_key=self.api_key,
            has_token=not expired,
            source="database",
            expires_at=stored.expires_at,
            seconds_left=max(0.0, seconds_left(stored.expires_at, now)),
            issued_at=stored.created_at,
            user_id=stored.user_id,
            expired=expired,
            detail=str(resolved.error) if resolved.error else "",
        )

    # -- storing tokens -----------------------------------------------------------------

    async def set_token(
        self, access_token: SecretStr | str, user_id: str | None = None
    ) -> AuthStatus:
        """Store an access token obtained elsewhere; it expires at the next 06:00 IST."""
        secret = access_token if isinstance(access_token, SecretStr) else SecretStr(access_token)
        if not secret.get_secret_value().strip():
            raise ValueError("access token is empty")
        return await self._store_token(secret, user_id, "manual")

    async def login(self, request_token: SecretStr | str) -> AuthStatus:
        """Exchange a login ``request_token`` for an access token with the official
        ``kiteconnect`` client (at ``settings.kite.api_root``) and store it."""
        request = (
            request_token if isinstance(request_token, SecretStr) else SecretStr(request_token)
        )
        secrets = (request.get_secret_value(), self._kite.api_secret.get_secret_value())
        client = self._session_client(self.api_key, self._kite.api_root)
        try:
            session = await asyncio.to_thread(
                client.generate_session,
                request.get_secret_value(),
                api_secret=self._kite.api_secret.get_secret_value(),
            )
        except Exception as exc:
            self.login_failures += 1
            # The original exception is dropped (``from None``): its text or its
            # traceback locals could echo the request token or the checksum input.
            message = _scrub(f"{type(exc).__name__}: {exc}", secrets)
            log.error("auth: Kite login failed (%s)", type(exc).__name__)
            raise LoginFailed(f"Kite login failed: {message}") from None
        token = session.get("access_token") if isinstance(session, dict) else None
        if not isinstance(token, str) or not token:
            self.login_failures += 1
            raise LoginFailed("Kite login failed: the session response carried no access_token")
        user_id = session.get("user_id")
        self.logins += 1
        return await self._store_token(
            SecretStr(token), user_id if isinstance(user_id, str) else None, "login"
        )

    async def _store_token(
        self, token: SecretStr, user_id: str | None, source: TokenSource
    ) -> AuthStatus:
        issued = self._clock()
        await self._db.ensure_schema()
        stored = await self._require_store().save(
            self.api_key,
            token,
            user_id=user_id,
            source=source,
            created_at=issued,
            expires_at=token_expiry(issued),
        )
        self._last_db_token = stored
        self.invalidate_cache()
        log.info(
            "auth: stored a new access token for api key %s (%s, expires %s)",
            self.api_key,
            source,
            stored.expires_at.isoformat(),
        )
        return self._status_of(_Resolved(token, "database", stored, None))

    # -- metrics ------------------------------------------------------------------------

    def samples(self) -> Iterable[Sample]:
        """Token expiry and auth counters from what is already known (no I/O)."""
        cached = self._cached
        if cached is not None:
            status = self._status_of(cached)
            yield Sample(
                "auth_token_valid",
                "gauge",
                float(status.has_token),
                (("source", status.source),),
                "1 while a usable access token is known",
            )
            if status.seconds_left is not None:
                yield Sample(
                    "auth_token_seconds_left",
                    "gauge",
                    status.seconds_left,
                    (),
                    "Seconds until the access token's 06:00 IST expiry",
                )
        yield Sample("auth_token_lookups_total", "counter", float(self.lookups))
        yield Sample("auth_db_errors_total", "counter", float(self.db_errors))
        yield Sample("auth_logins_total", "counter", float(self.logins))
        yield Sample("auth_login_failures_total", "counter", float(self.login_failures))


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text
