"""``TokenStore``'s mapping between rows and ``StoredToken``, and the promise that a
token is never shown in a repr. Which row is the newest is SQL, covered against
PostgreSQL by ``tests/integration/test_auth.py``."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import SecretStr

from alphapanda.auth.store import StoredToken, TokenStore
from tests.support.scripted_db import Answer, ScriptedEngine, compiled_params

pytestmark = pytest.mark.unit

ISSUED = dt.datetime(2026, 11, 25, 4, 0, tzinfo=dt.UTC)
EXPIRES = dt.datetime(2026, 11, 26, 0, 30, tzinfo=dt.UTC)
TOKEN = "access-token-must-not-show-5d2c"


def test_a_stored_tokens_repr_never_shows_the_token() -> None:
    stored = StoredToken("k", SecretStr(TOKEN), "AB1234", "login", ISSUED, EXPIRES)
    assert TOKEN not in repr(stored) and TOKEN not in str(stored)
    assert "AB1234" in repr(stored)


def test_the_stores_repr_shows_nothing_of_its_engine() -> None:
    assert repr(TokenStore(ScriptedEngine().engine)) == "TokenStore()"


async def test_saving_writes_one_row_in_a_transaction_and_returns_what_was_written() -> None:
    scripted = ScriptedEngine()
    scripted.connection.answers = [Answer()]
    stored = await TokenStore(scripted.engine).save(
        "k", SecretStr(TOKEN), user_id=None, source="manual", created_at=ISSUED, expires_at=EXPIRES
    )
    assert stored == StoredToken("k", SecretStr(TOKEN), None, "manual", ISSUED, EXPIRES)
    assert scripted.opened == ["begin"]
    params = compiled_params(scripted.connection.statements[0])
    assert params == {
        "api_key": "k",
        "access_token": TOKEN,
        "user_id": None,
        "source": "manual",
        "created_at": ISSUED,
        "expires_at": EXPIRES,
    }


async def test_the_latest_row_becomes_a_stored_token_with_a_secret() -> None:
    scripted = ScriptedEngine()
    scripted.connection.answers = [Answer([(TOKEN, "AB1234", "login", ISSUED, EXPIRES)])]
    stored = await TokenStore(scripted.engine).latest("k")
    assert stored == StoredToken("k", SecretStr(TOKEN), "AB1234", "login", ISSUED, EXPIRES)
    assert isinstance(stored.access_token, SecretStr)
    assert "k" in compiled_params(scripted.connection.statements[0]).values()


async def test_no_row_is_no_token() -> None:
    scripted = ScriptedEngine()
    scripted.connection.answers = [Answer()]
    assert await TokenStore(scripted.engine).latest("k") is None
