"""The ticker client's two boundaries: where a connection gets its access token, and
where its ticks go.

``TokenProvider`` (an *access* token; "token" alone means an instrument token elsewhere)
is asked before every
connection attempt, so a token refreshed by ``AuthService`` is picked up on the next
reconnect without restarting anything. ``TickSink`` is the downstream buffer; its
``put_many`` may block, which is how backpressure reaches the socket reader.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from alphapanda.kite.protocol import Tick
from alphapanda.settings import KiteSettings


class TokenUnavailable(Exception):
    """A provider has no usable token (none stored, or it expired): someone must log in.

    A connection then waits in state ``auth_required``, asking the provider again every
    ``auth_poll_interval``, instead of backing off as after a failure.
    """


@runtime_checkable
class TokenProvider(Protocol):
    """Source of the current Kite access token (``AuthService`` implements it)."""

    async def get_access_token(self) -> str: ...


@runtime_checkable
class TickSink(Protocol):
    """The downstream of every connection. May block (backpressure); the reader awaits it."""

    async def put_many(self, ticks: list[Tick]) -> None: ...


class StaticTokenProvider:
    """The token configured in ``settings.kite.access_token`` (dev, tests, manual ops)."""

    def __init__(self, settings: KiteSettings) -> None:
        self._token: SecretStr = settings.access_token

    async def get_access_token(self) -> str:
        return self._token.get_secret_value()

    def __repr__(self) -> str:
        return "StaticTokenProvider(access_token=********)"
