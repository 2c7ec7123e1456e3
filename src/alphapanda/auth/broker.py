"""``BrokerAuthenticator``: what the feed hands to the ticker client as its token source.

It knows nothing of databases or login flows: it asks ``AuthService.get_access_token()``
(the public API, via the narrow ``AccessTokenSource`` protocol) before every connection
attempt, so a token stored by ``alphapanda auth login`` / ``set-token`` is used at the
next handshake without restarting the feed.
"""

from __future__ import annotations

from typing import Protocol


class AccessTokenSource(Protocol):
    """The one method of ``AuthService`` the broker side may use."""

    async def get_access_token(self) -> str: ...


class BrokerAuthenticator:
    """Credentials for the Kite ticker: the API key, and a fresh token per attempt.

    Satisfies ``alphapanda.kite.ports.TokenProvider``."""

    def __init__(self, api_key: str, auth: AccessTokenSource) -> None:
        self._api_key = api_key
        self._auth = auth

    @property
    def api_key(self) -> str:
        return self._api_key

    async def get_access_token(self) -> str:
        """The current access token (raises ``AuthRequired`` / ``TokenExpired``)."""
        return await self._auth.get_access_token()

    def __repr__(self) -> str:
        return f"BrokerAuthenticator(api_key={self._api_key!r})"
