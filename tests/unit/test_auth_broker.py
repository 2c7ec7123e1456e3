"""``BrokerAuthenticator``: the API key, and a fresh token from the auth service on every
connection attempt (so a token stored meanwhile is used at the next handshake)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from alphapanda.auth import BrokerAuthenticator, TokenExpired
from alphapanda.kite.ports import TokenProvider

pytestmark = pytest.mark.unit


@dataclass
class Tokens:
    """An ``AccessTokenSource`` that answers each call with the next token or error."""

    answers: list[str | Exception]
    calls: int = 0

    async def get_access_token(self) -> str:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_every_attempt_asks_the_source_again() -> None:
    source = Tokens(["tok-1", "tok-2"])
    broker = BrokerAuthenticator("key-b", source)
    assert await broker.get_access_token() == "tok-1"
    assert await broker.get_access_token() == "tok-2"
    assert source.calls == 2


async def test_the_sources_refusal_reaches_the_ticker_unchanged() -> None:
    expired = TokenExpired("expired at 06:00 IST")
    broker = BrokerAuthenticator("key-b", Tokens([expired]))
    with pytest.raises(TokenExpired) as raised:
        await broker.get_access_token()
    assert raised.value is expired


async def test_it_is_a_token_provider_showing_only_its_api_key() -> None:
    broker = BrokerAuthenticator("key-b", Tokens(["tok-secret-1"]))
    assert isinstance(broker, TokenProvider)
    assert broker.api_key == "key-b"
    assert repr(broker) == "BrokerAuthenticator(api_key='key-b')"
